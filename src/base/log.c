/* log.c - see log.h. One atomic level; each line is written with one fprintf
 * so lines from different threads do not interleave mid-line. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

static _Atomic int g_level = LV_LOG_INFO;
static char g_tag[72]; /* "[tag] ", or "" */

void lv_log_set_tag(const char *tag) {
    if (tag && *tag)
        snprintf(g_tag, sizeof g_tag, "[%.63s] ", tag);
    else
        g_tag[0] = '\0';
}

void lv_log_set_level(lv_log_level level) {
    atomic_store(&g_level, (int)level);
}

int lv_log_parse_level(const char *s) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0) return i;
    if (strcasecmp(s, "warning") == 0) return LV_LOG_WARN;
    return -1;
}

const char *lv_log_configure(const char *name) {
    if (!name) name = getenv("LOG_LEVEL");
    if (!name) return NULL;
    int l = lv_log_parse_level(name);
    if (l < 0) return name;
    lv_log_set_level((lv_log_level)l);
    return NULL;
}

bool lv_log_enabled(lv_log_level level) {
    return (int)level <= atomic_load(&g_level);
}

void lv_log(lv_log_level level, const char *fmt, ...) {
    if ((int)level > atomic_load(&g_level)) return;
    static const char tag[] = "EWID";
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%02d:%02d:%02d.%03ld %c %s%s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, tag[level], g_tag, line);
}
