/*
 * progress.h - a one-line progress bar for a long byte transfer (a model
 * download), on a stream of the caller's choice (stderr).
 *
 *   model.safetensors  [#########...........]  45.2/131.6 MiB  34%  12.3 MiB/s  ETA 0:07
 *
 * On a terminal the line is redrawn in place with '\r' (at most ten times
 * a second); anywhere else (a log file, a pipe) a whole line is written
 * every few seconds and once at the end, so a log holds a readable record
 * instead of thousands of carriage returns. The rate counts only the bytes
 * of this run: a resumed download starts at the resumed size without
 * claiming its speed.
 *
 * Side effects: writes to the stream; nothing else.
 */
#ifndef LV_PROGRESS_H
#define LV_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    FILE *f;            /* where the bar goes */
    bool tty;           /* f is a terminal: redraw in place */
    char label[64];     /* the file name, shortened to fit */
    int64_t total;      /* bytes expected; <= 0 when unknown */
    int64_t done;       /* bytes so far, the resumed part included */
    int64_t first;      /* done when this run started (the resumed part) */
    double t0, t_drawn; /* lv_now_ms at the start and at the last line drawn */
    bool drawn;         /* a tty line is on screen (needs its newline at the end) */
} lv_progress;

/* Starts a bar for label with `done` of `total` bytes already there. */
void lv_progress_start(lv_progress *p, FILE *f, const char *label, int64_t done, int64_t total);

/* The transfer has reached `done` bytes; draws when it is time to. */
void lv_progress_update(lv_progress *p, int64_t done);

/* The final line: with the average rate and "done" when ok, else "failed". */
void lv_progress_end(lv_progress *p, bool ok);

#endif
