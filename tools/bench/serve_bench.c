/*
 * serve_bench.c - `llava-bench serve` (serve_bench.h).
 *
 *   llava-bench serve --model PATH [--streams N] [--tokens T] [--threads K]
 *                     [--image FILE] [--prompt TEXT] [--repeat R] [--device cpu|ref|cuda[:N]]
 *
 * Loads the model on the --device backend (default cpu), then runs twice on one scheduler
 * configuration each: 1 stream (parallel 1), then N streams submitted at
 * once (parallel N). Every stream is the same greedy request with
 * ignore_eos and max_tokens T, so each generates exactly T tokens; with
 * --image each stream also encodes the image (its prefill and vision time
 * count). Reported for each run (best of R, default 1):
 *   aggregate tok/s = N·T / (last stream done − first submitted)
 *   decode tok/s    = Σ(T − 1) / Σ per-stream (done − first token), × N:
 *                     the steady decode rate with the batch full
 *   mean time to first token
 * and the ratio N-stream / 1-stream of the aggregate, of the best runs and
 * the least and most within one round (a round runs gen_run, 1 stream and
 * N streams back to back, so a machine whose speed drifts between rounds
 * still gives a fair ratio). For reference it
 * also times the same request through gen_run (llava-cli's path: a
 * scheduler of one on the caller's thread, the same turn as the threaded
 * scheduler's lone stream).
 */
#include "bench/serve_bench.h"

#include "base/log.h"
#include "common/model_report.h"
#include "common/tool_args.h"
#include "engine/request.h"
#include "base/clock.h"
#include "engine/run.h"
#include "engine/scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double agg_tps;    /* all tokens / wall */
    double decode_tps; /* steady decode, all streams */
    double ttft_ms;    /* mean */
    double wall_s;
} run_figs;

typedef struct {
    llava *m;
    int32_t *ids;
    int n_ids;
    const img_tensor *px; /* NULL: text only */
    int tokens;
} bench_req;

/* A job for the request (the image copied: the job owns its tensors). */
static sched_job *make_job(const bench_req *r, int k, lv_err *err) {
    sched_job *j = sched_job_new();
    if (!j) return lv_fail(err, LV_ERR_NOMEM, "out of memory"), NULL;
    j->ids = malloc((size_t)r->n_ids * sizeof *j->ids);
    if (!j->ids) goto nomem;
    memcpy(j->ids, r->ids, (size_t)r->n_ids * sizeof *j->ids);
    j->n_ids = r->n_ids;
    if (r->px) {
        size_t n = (size_t)r->px->n_tiles * 3 * r->px->tile_h * r->px->tile_w;
        j->images = calloc(1, sizeof *j->images);
        if (!j->images) goto nomem;
        j->images[0] = *r->px;
        j->images[0].data = malloc(n * sizeof(float));
        j->n_images = 1;
        if (!j->images[0].data) goto nomem;
        memcpy(j->images[0].data, r->px->data, n * sizeof(float));
    }
    gen_params_default(&j->params, r->m);
    sample_params_default(&j->params.sampling);
    j->params.max_tokens = r->tokens;
    j->params.ignore_eos = true;
    snprintf(j->rid, sizeof j->rid, "bench-%d", k);
    return j;
nomem:
    sched_job_release(j);
    lv_fail(err, LV_ERR_NOMEM, "out of memory");
    return NULL;
}

/* The request once through gen_run: tokens/s over the wall time, and decode tokens/s. */
static lv_status run_gen(const bench_req *r, run_figs *f, lv_err *err) {
    memset(f, 0, sizeof *f);
    gen_params p;
    gen_params_default(&p, r->m);
    sample_params_default(&p.sampling);
    p.max_tokens = r->tokens;
    p.ignore_eos = true;
    gen_result res;
    double t0 = lv_now_ms();
    lv_status st = gen_run(r->m, r->ids, r->n_ids, r->px, r->px ? 1 : 0, &p, NULL, &res, err);
    if (st) return st;
    f->wall_s = (lv_now_ms() - t0) / 1e3;
    f->agg_tps = res.n_ids / f->wall_s;
    f->decode_tps =
        res.timings.decode_ms > 0 ? res.timings.n_decode / (res.timings.decode_ms / 1e3) : 0;
    f->ttft_ms = res.timings.vision_ms + res.timings.prefill_ms;
    gen_result_free(&res);
    return LV_OK;
}

static lv_status run_streams(const bench_req *r, int streams, run_figs *f, lv_err *err) {
    memset(f, 0, sizeof *f);
    sched *w;
    sched_config cfg = {.queue_size = streams, .parallel = streams, .ctx_size = 0};
    lv_status st = sched_new(r->m, &cfg, &w, err);
    if (!st && (st = sched_start(w, err))) sched_free(w);
    if (st) return st;
    sched_job **jobs = calloc((size_t)streams, sizeof *jobs);
    if (!jobs) {
        sched_free(w);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    for (int k = 0; k < streams && !st; k++)
        if (!(jobs[k] = make_job(r, k, err))) st = LV_ERR_NOMEM;
    double t0 = lv_now_ms();
    for (int k = 0; k < streams && !st; k++) st = sched_submit(w, jobs[k], err);
    double t_end = t0, decode_ms = 0, ttft = 0;
    long n_tok = 0, n_decode = 0;
    for (int k = 0; k < streams && !st; k++) {
        sched_job_wait(jobs[k]);
        if (jobs[k]->st) {
            *err = jobs[k]->err;
            st = jobs[k]->st;
            break;
        }
        if (jobs[k]->t_done_ms > t_end) t_end = jobs[k]->t_done_ms;
        n_tok += jobs[k]->result.n_ids;
        n_decode += jobs[k]->result.n_ids - 1;
        decode_ms += jobs[k]->t_done_ms - jobs[k]->t_first_ms;
        ttft += jobs[k]->t_first_ms - jobs[k]->t_submit_ms;
    }
    if (!st) {
        f->wall_s = (t_end - t0) / 1e3;
        f->agg_tps = n_tok / f->wall_s;
        f->decode_tps = decode_ms > 0 ? n_decode / (decode_ms / 1e3) * streams : 0;
        f->ttft_ms = ttft / streams;
    }
    sched_free(w);
    for (int k = 0; k < streams; k++) sched_job_release(jobs[k]);
    free(jobs);
    return st;
}

static void usage_text(FILE *f) {
    fprintf(f, "usage: llava-bench serve --model PATH [--streams N] [--tokens T] "
               "[--threads K] [--image FILE] [--prompt TEXT] [--repeat R]\n"
               "                         [--device cpu|ref|cuda[:N]]   (default cpu)\n"
               "                         [--tensor-parallel N] [--tp-whole-tower]\n");
}

int serve_bench_main(int argc, char **argv) {
    const char *model = NULL, *image = NULL, *prompt = "Describe the image in detail.";
    const char *device = "cpu";
    int streams = 8, tokens = 64, threads = 0, repeat = 1, tp = 0;
    bool tp_whole_tower = false;
    const tool_opt opts[] = {
        TOOL_STR("model", 'm', &model),
        TOOL_STR("device", 0, &device),
        TOOL_INT("streams", 0, &streams, 1, 256),
        TOOL_INT("tokens", 0, &tokens, 2, 1000000),
        TOOL_INT("threads", 0, &threads, 0, 4096),
        TOOL_STR("image", 0, &image),
        TOOL_STR("prompt", 0, &prompt),
        TOOL_INT("repeat", 0, &repeat, 1, 1000),
        TOOL_INT("tensor-parallel", 0, &tp, 0, 8),
        TOOL_FLAG("tp-whole-tower", 0, &tp_whole_tower),
    };
    static const tool_info tool = {"llava-bench serve", usage_text, false};
    int rc = tool_parse(&tool, opts, LV_ARRAY_LEN(opts), argc, argv);
    if (rc) return rc == TOOL_HELP ? 0 : 2;
    if (!model) {
        fprintf(stderr, "llava-bench serve: --model is required\n");
        usage_text(stderr);
        return 2;
    }
    if (!tool_device("llava-bench serve", device)) return 1;
    lv_log_set_level(LV_LOG_WARN);
    lv_err err;
    llava *m = NULL;
    img_tensor px;
    memset(&px, 0, sizeof px);
    bench_req r = {.tokens = tokens};
    int n_img_tok = 0;
    rc = 1;
    size_t n_ids = 0;
    if (llava_open(model, &m, &err)) goto fail;
    tool_report_load(m);
    llava_set_tensor_parallel(m, tp, tp_whole_tower);
    if (llava_load(m, device, threads, &err)) goto fail;
    tool_report_model(m, 0, NULL);
    if (image && request_load_image(m, image, &px, &n_img_tok, NULL, NULL, &err)) goto fail;
    if (request_prompt_ids(m, prompt, false, &px, image ? 1 : 0, &r.ids, &n_ids, &err)) goto fail;
    r.m = m;
    r.n_ids = (int)n_ids;
    r.px = image ? &px : NULL;
    printf("model %s, %s, %d threads, prompt %d tokens%s, %d tokens a stream\n", model, device,
           llava_n_threads(m), r.n_ids, image ? " (with the image)" : "", tokens);
    run_figs one = {0}, many = {0}, gen = {0};
    double lo = 0, hi = 0; /* the N/1 aggregate ratio within one round, least and most */
    for (int k = 0; k < repeat; k++) {
        run_figs f1, fn, fg;
        if (run_gen(&r, &fg, &err) || run_streams(&r, 1, &f1, &err) ||
            run_streams(&r, streams, &fn, &err))
            goto fail;
        double q = fn.agg_tps / f1.agg_tps;
        if (k == 0 || q < lo) lo = q;
        if (k == 0 || q > hi) hi = q;
        if (f1.agg_tps > one.agg_tps) one = f1;
        if (fn.agg_tps > many.agg_tps) many = fn;
        if (fg.agg_tps > gen.agg_tps) gen = fg;
    }
    printf("gen_run   : %8.1f tok/s aggregate, %8.1f tok/s decode, TTFT %7.1f ms, %.2f s\n",
           gen.agg_tps, gen.decode_tps, gen.ttft_ms, gen.wall_s);
    printf("%2d stream : %8.1f tok/s aggregate, %8.1f tok/s decode, TTFT %7.1f ms, %.2f s\n", 1,
           one.agg_tps, one.decode_tps, one.ttft_ms, one.wall_s);
    printf("%2d streams: %8.1f tok/s aggregate, %8.1f tok/s decode, TTFT %7.1f ms, %.2f s\n",
           streams, many.agg_tps, many.decode_tps, many.ttft_ms, many.wall_s);
    printf("ratio %d/1 streams: %.2fx aggregate, %.2fx decode; %d streams / gen_run: %.2fx "
           "aggregate\n",
           streams, many.agg_tps / one.agg_tps, many.decode_tps / one.decode_tps, streams,
           many.agg_tps / gen.agg_tps);
    printf("ratio %d/1 streams within a round (1 stream, then %d, back to back): %.2fx to %.2fx "
           "over %d round%s\n",
           streams, streams, lo, hi, repeat, repeat == 1 ? "" : "s");
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "llava-bench serve: %s\n", err.msg);
done:
    free(r.ids);
    img_tensor_free(&px);
    llava_free(m);
    return rc;
}
