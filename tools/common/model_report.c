/* model_report.c - see model_report.h. */
#include "common/model_report.h"

#include "base/clock.h"
#include "base/log.h"
#include "base/sysmem.h"

#include <stdio.h>
#include <unistd.h>

/* The progress display of the one model a tool loads. */
static struct {
    bool tty;       /* stderr is a terminal: one line redrawn with \r */
    bool open;      /* a redrawn line is on screen, not yet ended */
    double last_ms; /* when a line was last written */
} g;

#define TTY_EVERY_MS   100.0  /* a terminal's line is redrawn at most this often */
#define PLAIN_EVERY_MS 1000.0 /* a log gets a line at most this often */

/* bytes as "4.00 GiB", "128 KiB". */
static void bytes_text(char *out, size_t cap, double b) {
    if (b >= 1 << 30)
        snprintf(out, cap, "%.2f GiB", b / (1 << 30));
    else if (b >= 1 << 20)
        snprintf(out, cap, "%.1f MiB", b / (1 << 20));
    else
        snprintf(out, cap, "%.0f KiB", b / (1 << 10));
}

static void on_progress(void *ud, const llava_load_progress *p) {
    (void)ud;
    if (!lv_log_enabled(LV_LOG_INFO)) return;
    double now = lv_now_ms();
    char line[160], done[32], all[32];
    bytes_text(all, sizeof all, (double)p->bytes_mapped);
    if (p->tensors_loaded == 0 && !p->done) { /* the files are mapped */
        snprintf(line, sizeof line, "load: %d file%s, %s mapped, %d tensors", p->n_files,
                 p->n_files == 1 ? "" : "s", all, p->n_tensors);
    } else {
        if (!p->done && now - g.last_ms < (g.tty ? TTY_EVERY_MS : PLAIN_EVERY_MS)) return;
        bytes_text(done, sizeof done, (double)p->bytes_loaded);
        snprintf(line, sizeof line, "load: %d/%d tensors, %s of %s, %.1f s", p->tensors_loaded,
                 p->n_tensors, done, all, p->seconds);
    }
    g.last_ms = now;
    if (!g.tty) {
        if (!p->done) LV_INFO("%s", line); /* the summary says the rest */
        return;
    }
    fprintf(stderr, "\r%s\033[K", line); /* \033[K: clear what a longer line left */
    g.open = !p->done;
    if (p->done) fputc('\n', stderr);
    fflush(stderr);
}

void tool_report_load(llava *m) {
    g.tty = isatty(STDERR_FILENO);
    g.open = false;
    g.last_ms = 0;
    llava_set_progress(m, on_progress, NULL);
}

/* n as "7.24B", "303M", "21.0K". */
static void count_text(char *out, size_t cap, int64_t n) {
    if (n >= 1000000000)
        snprintf(out, cap, "%.2fB", n / 1e9);
    else if (n >= 1000000)
        snprintf(out, cap, "%.0fM", n / 1e6);
    else
        snprintf(out, cap, "%.1fK", n / 1e3);
}

void tool_report_model(const llava *m, int64_t kv_bytes, const char *kv_what) {
    if (!lv_log_enabled(LV_LOG_INFO)) return;
    if (g.open) fputc('\n', stderr); /* a failed load leaves its progress line open */
    g.open = false;
    llava_info in;
    llava_get_info(m, &in);
    char total[16], text[16], vision[16], proj[16];
    count_text(total, sizeof total, in.params_text + in.params_vision + in.params_projector);
    count_text(text, sizeof text, in.params_text);
    count_text(vision, sizeof vision, in.params_vision);
    count_text(proj, sizeof proj, in.params_projector);
    LV_INFO("model: %s (%s), %s parameters (text %s, vision %s, projector %s)", in.arch,
            in.text_arch, total, text, vision, proj);
    LV_INFO("weights: %s; vision %s", in.weights, in.vision_weights);
    if (in.image_tokens_max > in.image_tokens_base)
        LV_INFO("context: %d tokens; an image takes %d (base view) to %d tokens (%dx%d)", in.ctx,
                in.image_tokens_base, in.image_tokens_max, in.max_w, in.max_h);
    else
        LV_INFO("context: %d tokens; an image takes %d tokens", in.ctx, in.image_tokens_base);
    char mapped[32], resident[32], per_pos[32], kv[32], one[48];
    bytes_text(mapped, sizeof mapped, (double)in.load.bytes_mapped);
    int64_t rss = lv_rss_bytes();
    bytes_text(resident, sizeof resident, rss > 0 ? (double)rss : 0);
    bytes_text(per_pos, sizeof per_pos, (double)in.kv_bytes_per_pos);
    if (kv_bytes <= 0) {
        kv_bytes = (int64_t)in.kv_bytes_per_pos * in.ctx;
        snprintf(one, sizeof one, "one sequence of %d", in.ctx);
        kv_what = one;
    }
    bytes_text(kv, sizeof kv, (double)kv_bytes);
    LV_INFO("memory: weights %s mapped, %s resident (the process); KV cache %s a token, %s at "
            "most (%s)",
            mapped, resident, per_pos, kv, kv_what);
    LV_INFO("loaded in %.1f s (%d tensors from %d file%s, on %s)", in.load.seconds,
            in.load.tensors_loaded, in.load.n_files, in.load.n_files == 1 ? "" : "s",
            llava_device(m));
}
