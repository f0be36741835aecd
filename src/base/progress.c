/* progress.c - see progress.h. */
#include "progress.h"

#include "clock.h"

#include <string.h>
#include <unistd.h>

#define TTY_EVERY_MS 100.0  /* redraw a terminal line at most this often */
#define LOG_EVERY_MS 5000.0 /* and write a log line this often */
#define BAR_WIDTH    20

void lv_progress_start(lv_progress *p, FILE *f, const char *label, int64_t done, int64_t total) {
    memset(p, 0, sizeof *p);
    p->f = f;
    p->tty = isatty(fileno(f));
    size_t n = strlen(label);
    if (n < sizeof p->label) /* a long name keeps its end, which tells files apart */
        memcpy(p->label, label, n + 1);
    else
        snprintf(p->label, sizeof p->label, "...%s", label + n - (sizeof p->label - 4));
    p->total = total;
    p->done = p->first = done;
    p->t0 = p->t_drawn = lv_now_ms();
}

/* "1:02:03" or "2:03" into buf. */
static void fmt_time(char *buf, size_t cap, double s) {
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

/* The unit for sizes around n bytes: KiB below a MiB, GiB from one. */
static void unit_for(int64_t n, double *div, const char **name) {
    *div = n < (1 << 20) ? 1024.0 : n < (1LL << 30) ? 1048576.0 : 1073741824.0;
    *name = n < (1 << 20) ? "KiB" : n < (1LL << 30) ? "MiB" : "GiB";
}

static void draw(lv_progress *p, const char *end) {
    double now = lv_now_ms(), secs = (now - p->t0) / 1000.0;
    double rate = secs > 0 ? (double)(p->done - p->first) / secs : 0; /* bytes/s this run */
    const double mib = 1048576.0;
    double div;
    const char *unit;
    unit_for(p->total > 0 ? p->total : p->done, &div, &unit);
    char bar[BAR_WIDTH + 3] = "", tail[48] = "";
    if (p->total > 0) {
        int full = (int)((double)p->done / (double)p->total * BAR_WIDTH);
        if (full > BAR_WIDTH) full = BAR_WIDTH;
        bar[0] = '[';
        for (int i = 0; i < BAR_WIDTH; i++) bar[1 + i] = i < full ? '#' : '.';
        bar[BAR_WIDTH + 1] = ']';
        bar[BAR_WIDTH + 2] = '\0';
    }
    if (end) {
        char t[32];
        fmt_time(t, sizeof t, secs);
        snprintf(tail, sizeof tail, "%s in %s", end, t);
    } else if (p->total > 0 && rate > 0) {
        char t[32];
        fmt_time(t, sizeof t, (double)(p->total - p->done) / rate);
        snprintf(tail, sizeof tail, "ETA %s", t);
    }
    char line[256];
    if (p->total > 0)
        snprintf(line, sizeof line, "%s  %s  %.1f/%.1f %s  %3d%%  %.1f MiB/s  %s", p->label, bar,
                 p->done / div, p->total / div, unit, (int)(100.0 * p->done / p->total), rate / mib,
                 tail);
    else
        snprintf(line, sizeof line, "%s  %.1f %s  %.1f MiB/s  %s", p->label, p->done / div, unit,
                 rate / mib, tail);
    if (p->tty)
        fprintf(p->f, "\r%s\033[K%s", line, end ? "\n" : ""); /* \033[K: clear the old tail */
    else
        fprintf(p->f, "%s\n", line);
    fflush(p->f);
    p->t_drawn = now;
    p->drawn = p->tty && !end;
}

void lv_progress_update(lv_progress *p, int64_t done) {
    p->done = done;
    double now = lv_now_ms();
    if (now - p->t_drawn >= (p->tty ? TTY_EVERY_MS : LOG_EVERY_MS)) draw(p, NULL);
}

void lv_progress_end(lv_progress *p, bool ok) {
    draw(p, ok ? "done" : "failed");
}
