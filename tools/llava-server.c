/*
 * llava-server - the OpenAI-compatible HTTP server (server/http.h) over the
 * engine's scheduler (engine/scheduler.h).
 *
 *   llava-server --model PATH|ORG/NAME[:QUANT] [--mmproj F] [--config FILE] [--offline]
 *                [--host 127.0.0.1]
 *                [--port 8080] [--parallel N] [--queue-size N] [--ctx-size N]
 *                [--threads N] [--exact] [--device cpu|ref|cuda[:N]] [--api-key KEY]
 *                [--allowed-origins LIST] [--allowed-local-media-path DIR] [--timeout S]
 *                [--idle-timeout S] [--drain-grace S] [--drain-timeout S]
 *                [--alias NAME] [--memory-limit SIZE] [--prefix-cache-mb N]
 *                [--image-cache-mb N] [--no-prefix-cache] [--replica-id ID]
 *
 * --memory-limit is the memory governor's budget (engine/governor.h): the
 * resident set on a CPU, the device's memory with --device cuda. Default:
 * the cgroup's limit, else what is available at start plus what the server
 * holds; on a GPU its memory. 0: no limit (accounting only). Above 80% the
 * caches are evicted, above 95% new requests get 503 with Retry-After.
 *
 * --config reads the seed's JSON file (server/config.h): model_id, model_name,
 * device and max_tokens stand in for --model, --alias, --device and
 * --max-tokens; flags given on the command line win.
 *
 * --max-tokens N (-n, llama-server's --n-predict): the max_tokens of a
 * request that gives none. Without it (or the config's max_tokens) such a
 * request may generate until its context is full: context length - prompt
 * tokens, as vLLM does, so answers are never cut at an arbitrary count.
 *
 * --model ORG/NAME (or the config's model_id) not in the local Hugging Face
 * cache is downloaded into it first (tools/common/tool_model.h), with a
 * progress bar on stderr, while /health answers 503; --offline or
 * HF_HUB_OFFLINE=1 turns that off.
 *
 * --device picks the backend (default cpu; /health reports it). A name this
 * build lacks exits 1 at once, before the socket opens, with llava_load's
 * message.
 *
 * The socket listens at once and /health answers 503 while the model loads
 * on a background thread. The line "llava-server: listening on HOST:PORT"
 * goes to stderr once bound (port 0 picks a free port; tests read it).
 * SIGINT / SIGTERM: the drain (http_stop): /health answers 503 and answers
 * say Connection: close; for --drain-grace seconds the listener stays open
 * and requests are still served (a load balancer notices and stops sending),
 * then stop accepting, answer every request taken, queued ones included (up
 * to --drain-timeout seconds; then what is still queued is cancelled), let
 * the answers out, exit 0. A model that
 * fails to load exits 1. SIGHUP: there is nothing to reload (no config is
 * re-read, the log is stderr, which the supervisor owns), so it logs
 * "SIGHUP: nothing to reload" and serves on; before, its default action
 * killed the server, as a terminal closing or `systemctl reload` would.
 *
 * --idle-timeout S (default 120; 0 = none): a connection that sends or takes
 * nothing for S seconds is closed (a stalled upload, a keep-alive left open,
 * a stream whose reader stopped reading: its sequences are cancelled and
 * freed), and a request body still arriving S seconds after its headers is
 * cut off (a client trickling bytes is never idle). --timeout is the other
 * bound: the whole request, queue wait included, however busy the client.
 *
 * --replica-id ID names this server among several behind a load balancer
 * (deploy/): the X-Replica-Id header of every answer, "[ID]" on every log
 * line, a replica="ID" label on every llava_* metric and "replica" in
 * /health.
 *
 * The log is stderr; a log that cannot be written (a closed pipe, a full
 * disk) loses its lines and nothing else: SIGPIPE is ignored, and every
 * line is written once, never retried.
 */
#include "base/clock.h"
#include "base/file.h"
#include "base/log.h"
#include "base/sysmem.h"
#include "engine/governor.h"
#include "model/llava.h"
#include "server/config.h"
#include "server/http.h"
#include "common/model_report.h"
#include "common/tool_args.h"
#include "common/tool_model.h"
#include "engine/scheduler.h"

#include <ctype.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *model, *mmproj, *alias, *host, *api_key, *origins, *media_dir, *config;
    const char *replica_id; /* --replica-id: http_config.replica_id, and the log lines' tag */
    int port, queue_size, ctx_size, threads, timeout_s, parallel;
    int idle_timeout_s;                 /* --idle-timeout: http_config.idle_timeout_s */
    int drain_grace_s, drain_timeout_s; /* --drain-grace, --drain-timeout (http_stop) */
    int max_tokens;       /* --max-tokens: a request's default max_tokens (0: the config's, else the
                             rest of the context) */
    bool exact;           /* --exact: llava_set_exact */
    int tp;               /* --tensor-parallel N (0: none): llava_set_tensor_parallel */
    bool tp_whole_tower;  /* --tp-whole-tower */
    bool offline;         /* --offline: never download the model */
    bool no_prefix_cache; /* --no-prefix-cache: sched_config.cache_slots -1 */
    int image_cache_mb;   /* --image-cache-mb: sched_config.image_cache_bytes (0: off; -1: the
                             scheduler's default) */
    int prefix_cache_mb;  /* --prefix-cache-mb: sched_config.prefix_cache_bytes (-1: not given) */
    const char *memory_limit;   /* --memory-limit SIZE (NULL: the default) */
    int64_t memory_limit_bytes; /* parsed; -1: the default */
    const char *device;         /* --device, else the config's device, else "cpu" */
    srv_config file;            /* --config's settings (zero without one) */
} srv_args;

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: llava-server --model PATH|ORG/NAME[:QUANT] [options]\n"
        "  --model PATH|ORG/NAME[:QUANT]  model directory, or a Hugging Face repo id: from the\n"
        "                                 local cache (HF_HUB_CACHE, HF_HOME/hub, ~/.cache),\n"
        "                                 else downloaded into it from HF_ENDPOINT (HF_TOKEN\n"
        "                                 for gated repos; :QUANT picks a GGUF quantization)\n"
        "  --offline                      never download (also HF_HUB_OFFLINE=1)\n"
        "  --mmproj FILE                  with --model text.gguf: the llama.cpp GGUF pair's\n"
        "                                 mmproj file\n"
        "  --config FILE                  the seed's JSON config (model_id, model_name, device,\n"
        "                                 max_tokens, image_processing, ...); flags win\n"
        "  --parallel N                   sequences decoded together (default 4)\n"
        "  --host ADDR                    address to bind (default 127.0.0.1)\n"
        "  --port N                       port (default 8080; 0 = any free port)\n"
        "  --queue-size N                 requests waiting at most (default 64; 429 above)\n"
        "  --ctx-size N                   context tokens per request (default: the model's)\n"
        "  -n, --max-tokens N             max_tokens of a request that gives none (default:\n"
        "                                 the config's max_tokens, else the rest of the\n"
        "                                 context: context length - prompt tokens)\n"
        "  --no-prefix-cache              prefill every prompt whole (default: reuse the KV\n"
        "                                 of a finished request's prompt prefix)\n"
        "  --image-cache-mb N             MiB of image features kept for images sent again\n"
        "                                 (default 256; 0 = off: every image is encoded)\n"
        "  --prefix-cache-mb N            MiB of KV the prefix cache keeps at most (default:\n"
        "                                 whatever the KV bound leaves; 0 = off)\n"
        "  --memory-limit SIZE            memory budget: 8G, 512M, bytes; 0 = none (default:\n"
        "                                 the cgroup's limit, else the available memory; on a\n"
        "                                 GPU its memory). Caches are evicted above 80%%, new\n"
        "                                 requests refused (503) above 95%%\n"
        "  --threads N                    CPU threads (default: all cores)\n"
        "  --tensor-parallel N            split the model over N devices of --device (cuda:D:\n"
        "                                 D..D+N-1; NCCL); the scheduler and caches as ever\n"
        "  --tp-whole-tower               with --tensor-parallel: the vision tower whole on\n"
        "                                 every device instead of split\n"
        "  --device NAME                  cpu (default), ref (the scalar reference), cuda or\n"
        "                                 cuda:N (CUDA builds)\n"
        "  --exact                        exact arithmetic: float32 on the dequantized weights\n"
        "                                 and a float32 KV cache, as transformers computes\n"
        "                                 (default: int8 activations with quantized weights,\n"
        "                                 f16 KV cache)\n"
        "  --api-key KEY                  require 'Authorization: Bearer KEY' or X-Api-Key\n"
        "  --allowed-origins LIST         CORS origins, comma-separated, or *\n"
        "  --allowed-local-media-path DIR allow file:// image URLs below DIR\n"
        "  --timeout S                    per-request limit in seconds (default 600; 0 = none)\n"
        "  --idle-timeout S               close a connection idle S seconds (a stalled upload,\n"
        "                                 a reader that stopped reading; its request cancelled)\n"
        "                                 and a body not in S seconds after its headers\n"
        "                                 (default 120; 0 = none)\n"
        "  --drain-grace S                on SIGTERM/SIGINT, /health answers 503 for S seconds\n"
        "                                 before the listener closes, requests still served\n"
        "                                 (default 0)\n"
        "  --drain-timeout S              then the requests taken (queued ones too) get S\n"
        "                                 seconds to be answered (default 30)\n"
        "  --alias NAME                   model name shown to clients (default: --model)\n"
        "  --replica-id ID                this replica's name behind a load balancer: the\n"
        "                                 X-Replica-Id header, log lines, metrics, /health\n"
        "  --log-level L                  error|warn|info|debug (default $LOG_LEVEL or info)\n"
        "  -h, --help                     this text\n"
        "  --version                      the version, commit and CPU kernels\n");
}

/* sched_config.image_cache_bytes for --image-cache-mb (-1: not given). */
static int64_t image_cache_bytes(int mb) {
    return mb < 0 ? 0 : mb == 0 ? -1 : (int64_t)mb << 20;
}

/* A replica id goes into a header, a log tag and a label: 1-63 of [A-Za-z0-9._-]. */
static bool replica_id_ok(const char *id) {
    size_t n = strlen(id);
    if (n < 1 || n > 63) return false;
    for (const char *p = id; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-') return false;
    return true;
}

/* 0 to go on, 1 after --help, 2 on a usage error. */
static int parse_args(int argc, char **argv, srv_args *a) {
    *a = (srv_args){.host = "127.0.0.1",
                    .port = 8080,
                    .queue_size = 64,
                    .timeout_s = 600,
                    .idle_timeout_s = 120,
                    .drain_timeout_s = 30,
                    .parallel = 4,
                    .image_cache_mb = -1,
                    .prefix_cache_mb = -1,
                    .memory_limit_bytes = -1,
                    .file = {.periodic_cleanup = -1,
                             .pressure_detection = -1,
                             .prefix_cache_bytes = -1,
                             .image_cache_bytes = -1}};
    const char *level = NULL; /* --log-level; NULL: $LOG_LEVEL */
    const tool_opt opts[] = {
        TOOL_STR("model", 'm', &a->model),
        TOOL_STR("config", 0, &a->config),
        TOOL_STR("mmproj", 0, &a->mmproj),
        TOOL_FLAG("offline", 0, &a->offline),
        TOOL_INT("parallel", 0, &a->parallel, 1, 256),
        TOOL_STR("host", 0, &a->host),
        TOOL_INT("port", 0, &a->port, 0, 65535),
        TOOL_INT("queue-size", 0, &a->queue_size, 1, 1 << 20),
        TOOL_INT("ctx-size", 0, &a->ctx_size, 0, 1 << 24),
        TOOL_INT("max-tokens", 'n', &a->max_tokens, 1, 1 << 24),
        TOOL_INT("threads", 0, &a->threads, 0, 4096),
        TOOL_FLAG("exact", 0, &a->exact),
        TOOL_INT("tensor-parallel", 0, &a->tp, 0, 8),
        TOOL_FLAG("tp-whole-tower", 0, &a->tp_whole_tower),
        TOOL_FLAG("no-prefix-cache", 0, &a->no_prefix_cache),
        TOOL_INT("image-cache-mb", 0, &a->image_cache_mb, 0, 1 << 20),
        TOOL_INT("prefix-cache-mb", 0, &a->prefix_cache_mb, 0, 1 << 24),
        TOOL_STR("memory-limit", 0, &a->memory_limit),
        TOOL_STR("device", 0, &a->device),
        TOOL_STR("api-key", 0, &a->api_key),
        TOOL_STR("allowed-origins", 0, &a->origins),
        TOOL_STR("allowed-local-media-path", 0, &a->media_dir),
        TOOL_INT("timeout", 0, &a->timeout_s, 0, 86400 * 7),
        TOOL_INT("idle-timeout", 0, &a->idle_timeout_s, 0, 86400),
        TOOL_INT("drain-grace", 0, &a->drain_grace_s, 0, 3600),
        TOOL_INT("drain-timeout", 0, &a->drain_timeout_s, 0, 86400),
        TOOL_STR("alias", 0, &a->alias),
        TOOL_STR("replica-id", 0, &a->replica_id),
        TOOL_STR("log-level", 0, &level),
    };
    static const tool_info tool = {"llava-server", usage, false};
    int rc = tool_parse(&tool, opts, LV_ARRAY_LEN(opts), argc, argv);
    if (rc) return rc;
    if (!tool_log_level("llava-server", level)) return 2;
    if (a->memory_limit) {
        lv_err err = {{0}};
        if (lv_parse_bytes(a->memory_limit, &a->memory_limit_bytes, &err)) {
            fprintf(stderr, "llava-server: --memory-limit: %s\n", err.msg);
            return 2;
        }
    }
    if (a->config) { /* the file fills what the command line left unset */
        lv_err err = {{0}};
        if (srv_config_load(a->config, &a->file, &err)) {
            fprintf(stderr, "llava-server: --config: %s\n", err.msg);
            return 2;
        }
        if (!a->model) a->model = a->file.model_id;
        if (!a->alias) a->alias = a->file.model_name;
        if (!a->device) a->device = a->file.device;
        if (a->image_cache_mb < 0 && a->file.image_cache_bytes >= 0)
            a->image_cache_mb = (int)((a->file.image_cache_bytes + (1 << 20) - 1) >> 20);
        if (a->prefix_cache_mb < 0 && a->file.prefix_cache_bytes >= 0)
            a->prefix_cache_mb = (int)((a->file.prefix_cache_bytes + (1 << 20) - 1) >> 20);
    }
    if (!a->device) a->device = "cpu";
    if (!a->model) {
        fprintf(stderr, "llava-server: --model (or model_id in --config) is required\n");
        usage(stderr);
        return 2;
    }
    if (!a->alias) a->alias = a->model;
    if (a->replica_id && !replica_id_ok(a->replica_id)) {
        fprintf(stderr,
                "llava-server: --replica-id '%s': use 1 to 63 letters, digits, '.', '_' or '-'\n",
                a->replica_id);
        return 2;
    }
    return 0;
}

/* ---- memory ------------------------------------------------------------------------------ */

/* The memory really in use: the device's on a GPU, else the resident set. */
static int64_t measure_memory(void *ud) {
    const llava *m = ud;
    size_t used, total;
    if (llava_memory_info(m, &used, &total)) return (int64_t)used;
    return lv_rss_bytes();
}

/* The default budget: the device's memory on a GPU; else the cgroup's
 * limit; else what is available now plus what the server holds already. */
static int64_t default_limit(const llava *m, const char **from) {
    size_t used, total;
    if (llava_memory_info(m, &used, &total)) {
        *from = "the GPU's memory";
        return (int64_t)total;
    }
    int64_t cg = lv_cgroup_limit_bytes(), avail = lv_mem_available_bytes(), rss = lv_rss_bytes();
    if (cg > 0) {
        *from = "the cgroup's limit";
        return cg;
    }
    *from = "the available memory";
    return avail > 0 && rss > 0 ? avail + rss : 0;
}

/* The governor (its budget from --memory-limit or default_limit; *from says
 * which), measuring the real use unless the seed config said not to. */
static lv_status new_governor(const srv_args *a, llava *m, mg_governor **out, const char **from,
                              lv_err *err) {
    *from = "--memory-limit";
    int64_t limit = a->memory_limit_bytes >= 0 ? a->memory_limit_bytes : default_limit(m, from);
    mg_config gc = {.limit = limit};
    if (a->file.pressure_detection != 0) { /* absent or true: measured beside the accounting */
        gc.measure = measure_memory;
        gc.measure_ud = m;
    }
    if (!limit) *from = "none: accounting only";
    return mg_new(&gc, out, err);
}

/* Once the model and the scheduler hold their memory: that is the fixed part. */
static void hold_fixed(mg_governor *gov, llava *m, const char *from) {
    int64_t now = measure_memory(m);
    if (now < 0) now = 0;
    mg_set_fixed(gov, now);
    mg_stats ms;
    mg_get_stats(gov, &ms);
    if (ms.limit > 0 && now > ms.limit * 0.80)
        LV_WARN("memory: %.0f MiB are held before any request, above 80%% of the %.0f MiB budget "
                "(%s): caches will be evicted at once",
                now / 1048576.0, ms.limit / 1048576.0, from);
    LV_INFO("memory: budget %.0f MiB (%s), %.0f MiB held once loaded; caches evicted above 80%%, "
            "requests refused above 95%%",
            ms.limit / 1048576.0, from, now / 1048576.0);
}

/* ---- background load ------------------------------------------------------------------- */

typedef struct {
    const srv_args *a;
    http_server *s;
    atomic_int state; /* 0 loading, 1 ready, -1 failed */
} loader;

static void *load_main(void *arg) {
    loader *ld = arg;
    const srv_args *a = ld->a;
    lv_err err = {{0}};
    char *dir = NULL;
    llava *m = NULL;
    sched *w = NULL;
    mg_governor *gov = NULL;
    double t0 = lv_now_ms();
    /* Test hook: hold the load back so /health can be seen answering 503. */
    const char *delay = getenv("LLAVA_SERVER_TEST_LOAD_DELAY_MS");
    if (delay) {
        long ms = atol(delay);
        nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
    }
    if (tool_open_model(a->model, a->mmproj, a->offline, &m, &dir, &err)) goto fail;
    llava_set_exact(m, a->exact);
    llava_set_tensor_parallel(m, a->tp, a->tp_whole_tower);
    tool_report_load(m);
    if (llava_load(m, a->device, a->threads, &err)) goto fail;
    int ctx = a->ctx_size, max_ctx = llava_max_ctx(m);
    if (ctx > max_ctx) {
        LV_WARN("--ctx-size %d is more than the model's context (%d): using %d", ctx, max_ctx,
                max_ctx);
        ctx = max_ctx;
    }
    sched_config wc = {
        .queue_size = a->queue_size,
        .parallel = a->parallel,
        .ctx_size = ctx,
        .cache_slots = a->no_prefix_cache ? -1 : 0,
        .image_cache_bytes = image_cache_bytes(a->image_cache_mb),
        .prefix_cache_bytes = a->prefix_cache_mb < 0    ? 0
                              : a->prefix_cache_mb == 0 ? -1
                                                        : (int64_t)a->prefix_cache_mb << 20,
        .trim_interval_s = a->file.periodic_cleanup == 0 ? -1 : a->file.cleanup_interval_s};
    if (wc.prefix_cache_bytes < 0) wc.cache_slots = -1;
    const char *from;
    if (new_governor(a, m, &gov, &from, &err)) goto fail;
    wc.governor = gov;
    if (sched_new(m, &wc, &w, &err) || sched_start(w, &err)) goto fail;
    hold_fixed(gov, m, from); /* weights and the scheduler's scratch */
    sched_stats ws;
    sched_get_stats(w, &ws);
    char kv_what[64];
    snprintf(kv_what, sizeof kv_what, "%d sequence%s of %d", ws.parallel,
             ws.parallel == 1 ? "" : "s", ws.ctx_size);
    tool_report_model(m, (int64_t)ws.kv_bytes_total, kv_what);
    LV_INFO("model %s loaded from %s on %s in %.0f ms (context %d, %d parallel sequences, "
            "queue %d)",
            a->alias, dir, a->device, lv_now_ms() - t0, ws.ctx_size, a->parallel, a->queue_size);
    free(dir);
    http_set_ready(ld->s, m, w, gov);
    atomic_store(&ld->state, 1);
    return NULL;
fail:
    LV_ERROR("cannot load the model '%s': %s", a->model, err.msg);
    free(dir);
    sched_free(w);
    mg_free(gov);
    llava_free(m);
    atomic_store(&ld->state, -1);
    return NULL;
}

int main(int argc, char **argv) {
    srv_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) {
        srv_config_free(&a.file);
        return rc == 1 ? 0 : 2;
    }
    lv_log_set_tag(a.replica_id);
    if (!tool_device("llava-server", a.device)) { /* what the loader would find, sooner */
        srv_config_free(&a.file);
        return 1;
    }

    /* Every thread inherits this mask: the signals are taken here with sigtimedwait. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP); /* taken and logged below: its default action would kill us */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client gone, or stderr a closed pipe: an error, not death */
    lv_map_guard_install("llava-server"); /* a model file cut short under us: named, exit 3 */
    lv_allocator_tune();                  /* freed KV and tensors leave the resident set */

    http_config cfg = {.host = a.host,
                       .port = a.port,
                       .api_key = a.api_key,
                       .allowed_origins = a.origins,
                       .allowed_local_media_path = a.media_dir,
                       .timeout_s = a.timeout_s,
                       .idle_timeout_s = a.idle_timeout_s,
                       .drain_grace_ms = a.drain_grace_s * 1000,
                       .drain_timeout_s = a.drain_timeout_s,
                       .replica_id = a.replica_id,
                       .model_name = a.alias,
                       .max_body = 32u << 20,
                       .default_max_tokens = a.max_tokens ? a.max_tokens : a.file.max_tokens,
                       .image = a.config ? &a.file.image : NULL};
    lv_err err = {{0}};
    http_server *s;
    if (http_start(&cfg, &s, &err)) {
        fprintf(stderr, "llava-server: %s\n", err.msg);
        srv_config_free(&a.file);
        return 1;
    }
    fprintf(stderr, "llava-server: listening on %s:%d\n", a.host, http_port(s));
    fflush(stderr);

    loader ld = {.a = &a, .s = s};
    atomic_init(&ld.state, 0);
    pthread_t th;
    if (pthread_create(&th, NULL, load_main, &ld)) {
        fprintf(stderr, "llava-server: cannot start the loader thread\n");
        http_stop(s);
        srv_config_free(&a.file);
        return 1;
    }
    const struct timespec tick = {0, 200 * 1000 * 1000};
    int sig = -1;
    while (sig < 0 && atomic_load(&ld.state) >= 0) {
        sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGHUP) {
            LV_INFO("SIGHUP: nothing to reload; serving on");
            sig = -1;
        }
    }
    if (sig >= 0) LV_INFO("signal %d: draining and exiting", sig);
    pthread_join(th, NULL); /* a load in progress completes before the model can be freed */
    rc = atomic_load(&ld.state) < 0 ? 1 : 0;
    http_stop(s);
    srv_config_free(&a.file);
    LV_INFO("stopped");
    return rc;
}
