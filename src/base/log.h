/*
 * log.h - leveled logging to stderr.
 *
 * The level is set once by the program (from --log-level or LOG_LEVEL, read
 * in main, never inside a library constructor) with lv_log_set_level.
 */
#ifndef LV_LOG_H
#define LV_LOG_H

#include <stdbool.h>

typedef enum { LV_LOG_ERROR = 0, LV_LOG_WARN, LV_LOG_INFO, LV_LOG_DEBUG } lv_log_level;

void lv_log_set_level(lv_log_level level);
/* Parses "error", "warn", "info", "debug" (case-insensitive); returns -1 if unknown. */
int lv_log_parse_level(const char *s);
/* For a program's main: sets the level from name (a --log-level flag), or
 * when name is NULL from $LOG_LEVEL, or leaves the default (info). Returns
 * the unknown name if it cannot be parsed (the level is then unchanged),
 * NULL on success. */
const char *lv_log_configure(const char *name);
/* A name written in brackets after the level letter of every line from now
 * on ("12:00:00.000 I [r1] ..."), so one log can tell a program's instances
 * apart (llava-server --replica-id). Set once by main before other threads
 * log; NULL or "" removes it. Copied (at most 63 bytes). */
void lv_log_set_tag(const char *tag);
void lv_log(lv_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whether lines of this level are written (for output that does not go
 * through lv_log, such as a progress line redrawn in place). */
bool lv_log_enabled(lv_log_level level);

#define LV_ERROR(...) lv_log(LV_LOG_ERROR, __VA_ARGS__)
#define LV_WARN(...)  lv_log(LV_LOG_WARN, __VA_ARGS__)
#define LV_INFO(...)  lv_log(LV_LOG_INFO, __VA_ARGS__)
#define LV_DEBUG(...) lv_log(LV_LOG_DEBUG, __VA_ARGS__)

#endif
