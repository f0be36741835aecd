/*
 * load_bench.c - `llava-bench load` (load_bench.h).
 *
 *   llava-bench load --url http://127.0.0.1:PORT [--clients N] [--requests N] [--duration S]
 *                    [--mix KIND=W,...] [--image FILE]... [--max-tokens M] [--check-answers]
 *                    [--cancel-ms MS] [--timeout S] [--pid P] [--seed S] [--json]
 *
 * N clients (default 8) each keep one request in flight on one libcurl multi
 * handle, on this thread: when an answer is complete the client checks it and
 * sends its next request, until --requests have been sent or --duration
 * seconds have passed (with neither, 10 s); the requests in flight then
 * finish. Each request's kind is drawn by weight (--mix, default
 * stream_image=4,stream_text=2,plain_image=2,plain_text=1,n=1,cancel=1,bad=1;
 * kinds left out of --mix are not sent):
 *   stream_image, stream_text   "stream": true with include_usage
 *   plain_image, plain_text     one JSON answer
 *   n                           n = 2 or 3, streamed or not, image or not
 *   cancel                      a streamed image request the client cuts at a
 *                               random point: after 0 to --cancel-ms ms (queued,
 *                               or in the prefill) or after 1 to M content
 *                               events, whichever comes first
 *   bad                         one of BAD_CASES, each with the status it must get
 * Images are the --image files (default the models/demo/samples PNGs under the
 * working directory) sent as data: URIs; questions are drawn from a short list.
 *
 * Each answer is checked. A good request must get 200 and a whole answer: a
 * chat.completion with n choices, or a stream whose every choice has its role
 * chunk, content and finish chunk, then the usage chunk and [DONE], and no
 * error event. 429 and 503 (queue full, memory pressure) count as refused,
 * not failed. A bad request must get its status and an OpenAI error body.
 * With --check-answers every good request is greedy (temperature 0) and each
 * choice's text must equal the first answer seen to the same question about
 * the same image: a client given another's tokens fails. Failed = an
 * unexpected status, a transport error or timeout, a cut or malformed stream,
 * an answer that is no chat.completion, a wrong answer, or /health not
 * answering 200 after the run.
 *
 * The server's VmRSS (/proc/PID/status) and its open descriptors (/proc/PID/fd)
 * are read every second. PID is --pid, else the process that holds the
 * listening socket of --url's port (/proc/net/tcp{,6}, then each readable
 * /proc/N/fd): the server must run as this user. The report gives first,
 * last (taken a second after the clients closed their connections), max, and the
 * least-squares slope over the second half of the samples taken while
 * requests were still being sent (after warm-up, before the drain, whose
 * closing connections would read as a fall), in MiB/min and fds/min.
 *
 * Report: requests/s and generated tokens/s (usage.completion_tokens of the
 * good answers) over the wall time from the first request to the last answer;
 * p50/p95/p99 of the time to first token (the first non-empty content delta)
 * and total latency of streamed answers, and of the time to first byte and
 * total latency of plain ones; counts by status and by outcome. --json prints
 * one JSON object instead of the table. The clients run on the same cores as
 * a local server and take part of its CPU.
 */
#include "bench/load_bench.h"

#include "base/base64.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/common.h"
#include "base/file.h"
#include "common/tool_args.h"

#include <curl/curl.h>
#include <dirent.h>
#include <glob.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_CHOICES 8  /* the server's own limit on n */
#define MAX_IMAGES  64 /* --image files at most */
#define MAX_STATUS  32 /* distinct HTTP statuses counted */

/* ---- request kinds and bad requests -------------------------------------------------------- */

typedef enum {
    K_STREAM_IMAGE,
    K_STREAM_TEXT,
    K_PLAIN_IMAGE,
    K_PLAIN_TEXT,
    K_N,
    K_CANCEL,
    K_BAD,
    K_COUNT
} req_kind;

static const char *const KIND_NAMES[K_COUNT] = {
    "stream_image", "stream_text", "plain_image", "plain_text", "n", "cancel", "bad"};
static const int DEFAULT_MIX[K_COUNT] = {4, 2, 2, 1, 1, 1, 1};

/* A 10000x10000 RGB PNG header with an empty IDAT: 100 megapixels in 57
 * bytes, over the decoder's 50 MP limit, so the server answers 413 before
 * allocating anything. */
#define HUGE_PNG                                                                                   \
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAJxAAACcQCAIAAAA1LPVwAAAAAElEQVQ1rwYeAAAAAElF"   \
    "TkSuQmCC"
#define CHAT_PATH         "/v1/chat/completions"
#define USER_PARTS(parts) "{\"messages\":[{\"role\":\"user\",\"content\":[" parts "]}]}"
#define IMAGE_PART(url)   "{\"type\":\"image_url\",\"image_url\":{\"url\":\"" url "\"}}"

/* Requests that are wrong on purpose, each with the status it must get: the
 * server must refuse them without harm to the requests beside them. */
static const struct {
    const char *name, *path, *body;
    long status;
} BAD_CASES[] = {
    {"malformed_json", CHAT_PATH, "{\"messages\": [{\"role\": \"user\", \"content\": ", 400},
    {"bad_base64", CHAT_PATH, USER_PARTS(IMAGE_PART("data:image/png;base64,@@@@")), 400},
    {"not_an_image", CHAT_PATH, USER_PARTS(IMAGE_PART("data:image/png;base64,aGVsbG8gd29ybGQ=")),
     400},
    {"huge_image", CHAT_PATH, USER_PARTS(IMAGE_PART(HUGE_PNG)), 413},
    {"unknown_part_type", CHAT_PATH, USER_PARTS("{\"type\":\"audio\"}"), 400},
    {"messages_a_string", CHAT_PATH, "{\"messages\":\"hi\"}", 400},
    {"temperature_a_string", CHAT_PATH,
     "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":\"hot\"}", 400},
    {"n_too_large", CHAT_PATH, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":100}",
     400},
    /* a non-empty list: an empty one asks for nothing, and is accepted */
    {"unsupported_field", CHAT_PATH,
     "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
     "\"functions\":[{\"name\":\"f\"}]}",
     400},
    {"unknown_route", "/v1/nowhere", "{}", 404},
};

static const char *const IMAGE_QUESTIONS[] = {
    "Describe the image.",
    "What shape is in the picture?",
    "Which color is the background?",
    "How many shapes are there?",
};
static const char *const TEXT_QUESTIONS[] = {
    "What is a triangle?",
    "Name three colors.",
    "How many sides does a square have?",
    "Say hello.",
};
#define N_QUESTIONS 4

/* ---- options -------------------------------------------------------------------------------- */

typedef struct {
    const char *url_arg; /* --url as given */
    char url[900];       /* the same without a trailing slash */
    int clients;         /* requests in flight at once */
    long requests;       /* stop sending after this many (0: no bound) */
    double duration_s;   /* stop sending after this long (0: no bound) */
    int mix[K_COUNT];    /* weight of each kind */
    bool mix_given;      /* --mix replaced the default */
    const char *images[MAX_IMAGES];
    int n_images;
    int max_tokens;
    bool check_answers; /* greedy, and the same question must get the same answer */
    int cancel_ms;      /* the latest a cancel request is cut by time */
    int timeout_s;      /* per request */
    long pid;           /* the server's, 0: found from the port */
    unsigned long long seed;
    bool json;
} load_opts;

static bool parse_mix(void *ctx, const char *value) {
    load_opts *o = ctx;
    memset(o->mix, 0, sizeof o->mix);
    o->mix_given = true;
    char *s = strdup(value), *save = NULL;
    bool ok = s != NULL;
    for (char *tok = s ? strtok_r(s, ",", &save) : NULL; tok && ok;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        long w = 1;
        if (eq) *eq = '\0';
        int k = 0;
        while (k < K_COUNT && strcmp(tok, KIND_NAMES[k]) != 0) k++;
        if (k == K_COUNT || (eq && !tool_int("llava-bench load", "--mix", eq + 1, 0, 1000, &w))) {
            if (k == K_COUNT)
                fprintf(stderr,
                        "llava-bench load: --mix: unknown kind '%s' (stream_image, stream_text, "
                        "plain_image, plain_text, n, cancel, bad)\n",
                        tok);
            ok = false;
            break;
        }
        o->mix[k] = (int)w;
    }
    free(s);
    return ok;
}

static bool add_image(void *ctx, const char *value) {
    load_opts *o = ctx;
    if (o->n_images == MAX_IMAGES) {
        fprintf(stderr, "llava-bench load: at most %d --image files\n", MAX_IMAGES);
        return false;
    }
    o->images[o->n_images++] = value;
    return true;
}

/* ---- what each run shares ------------------------------------------------------------------- */

/* A growable list of samples (ms, MiB, counts). */
typedef struct {
    double *v;
    size_t n, cap;
} series;

static void series_add(series *s, double x) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        double *v = realloc(s->v, cap * sizeof *v);
        if (!v) return; /* a sample lost to OOM only thins the statistics */
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

typedef enum {
    O_OK,          /* a good request answered in full (and the same as before) */
    O_BAD_OK,      /* a bad request refused with its status */
    O_CANCELLED,   /* cut by the client on purpose */
    O_REFUSED,     /* 429 or 503 to a good request */
    O_F_STATUS,    /* failed: any other status */
    O_F_TRANSPORT, /* failed: connection, timeout, reset */
    O_F_STREAM,    /* failed: a cut or malformed stream */
    O_F_BODY,      /* failed: the answer is no chat.completion or error object */
    O_F_ANSWER,    /* failed: not the answer seen before to the same question */
    O_COUNT
} outcome;

static const char *const OUTCOME_NAMES[O_COUNT] = {
    "ok",        "bad_rejected", "cancelled", "refused",     "unexpected_status",
    "transport", "cut_stream",   "bad_body",  "wrong_answer"};

typedef struct {
    load_opts o;
    char **image_uris;                          /* (n_images) data: URIs */
    char *answers[MAX_IMAGES + 1][N_QUESTIONS]; /* first answer seen; row n_images: text */
    uint64_t rng;
    long sent, by_outcome[O_COUNT], sent_by_kind[K_COUNT], failed_by_kind[K_COUNT];
    long statuses[MAX_STATUS][2]; /* (status, count) */
    int n_statuses;
    long tokens;              /* usage.completion_tokens of the good answers */
    series ttft[2], total[2]; /* [0] plain (first byte), [1] streamed */
    char first_failure[512];  /* the first failure's words, for the report */
    double t_start, t_last;   /* ms: first request sent, last answer */
    /* the server's process */
    long pid;
    series s_t, s_rss, s_fds; /* seconds since start, MiB, descriptors */
    size_t n_loaded;          /* the first samples, taken while requests were still sent */
    bool health_ok;
} load_run;

static uint64_t rnd(load_run *r) {
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    return r->rng;
}

/* ---- the server's process: RSS and descriptors ---------------------------------------------- */

/* The inode of the socket listening on port, from /proc/net/tcp and tcp6; 0 if none. */
static unsigned long listening_inode(int port) {
    static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    for (size_t i = 0; i < LV_ARRAY_LEN(files); i++) {
        FILE *f = fopen(files[i], "r");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
            char local[80];
            unsigned st;
            unsigned long inode;
            /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
            if (sscanf(line, " %*s %79s %*s %x %*s %*s %*s %*s %*s %lu", local, &st, &inode) != 3)
                continue;
            const char *colon = strrchr(local, ':');
            if (st == 0x0A && colon && strtol(colon + 1, NULL, 16) == port) {
                fclose(f);
                return inode;
            }
        }
        if (f) fclose(f);
    }
    return 0;
}

/* The process holding socket inode among those this user may read; 0 if none. */
static long pid_of_socket(unsigned long inode) {
    char want[64];
    snprintf(want, sizeof want, "socket:[%lu]", inode);
    DIR *proc = opendir("/proc");
    long found = 0;
    for (struct dirent *e; proc && !found && (e = readdir(proc));) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        char dir[64];
        snprintf(dir, sizeof dir, "/proc/%ld/fd", pid);
        DIR *fds = opendir(dir);
        for (struct dirent *d; fds && !found && (d = readdir(fds));) {
            char path[384], link[64];
            snprintf(path, sizeof path, "%s/%s", dir, d->d_name);
            ssize_t n = readlink(path, link, sizeof link - 1);
            if (n > 0 && (link[n] = '\0', strcmp(link, want) == 0)) found = pid;
        }
        if (fds) closedir(fds);
    }
    if (proc) closedir(proc);
    return found;
}

/* VmRSS in MiB and the number of open descriptors of pid; false once it is gone. */
static bool sample_process(long pid, double *rss_mib, double *n_fds) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
    if (f) fclose(f);
    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    DIR *d = opendir(path);
    long n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
    if (d) closedir(d);
    if (kib < 0 || !d) return false;
    *rss_mib = kib / 1024.0;
    *n_fds = (double)n;
    return true;
}

/* Least-squares slope of y over x (units of y per unit of x) for samples [from, to). */
static double slope(const series *x, const series *y, size_t from, size_t to) {
    double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (size_t i = from; i < to && i < x->n && i < y->n; i++, n++) {
        sx += x->v[i];
        sy += y->v[i];
        sxx += x->v[i] * x->v[i];
        sxy += x->v[i] * y->v[i];
    }
    double den = n * sxx - sx * sx;
    return n >= 2 && den > 0 ? (n * sxy - sx * sy) / den : 0;
}

/* ---- one request: its body, its answer, its check ------------------------------------------- */

/* A stream's events so far: what each choice has sent. */
typedef struct {
    int n; /* choices asked for */
    bool role[MAX_CHOICES], finish[MAX_CHOICES];
    lv_buf text[MAX_CHOICES]; /* content deltas joined */
    int n_content;            /* non-empty content events, all choices */
    bool done;                /* [DONE] seen */
    bool error;               /* an error event, or an event out of order or unreadable */
    long usage_tokens;        /* -1 until the usage chunk */
    char why[160];            /* the first problem seen */
} sse_state;

typedef struct {
    load_run *run;
    CURL *h;
    struct curl_slist *hdrs;
    char *req; /* the body sent (heap, or a BAD_CASES string) */
    bool req_owned;
    lv_buf in;      /* the bytes answered so far */
    size_t scanned; /* bytes of `in` already split into events */
    req_kind kind;
    int bad, image, question, n; /* image: index, or n_images for text-only */
    bool stream;
    double t0, t_first; /* ms: sent; first content (streams), 0 before */
    double cancel_at;   /* ms after t0 the client cuts it (< 0: never) */
    int cancel_after;   /* ...or after this many content events (0: never) */
    bool cut;           /* cut by the client on purpose */
    sse_state sse;
} slot;

static void sse_fail(sse_state *s, const char *fmt, const char *what) {
    if (!s->error) snprintf(s->why, sizeof s->why, fmt, what);
    s->error = true;
}

/* One choice of a chat.completion.chunk: role first, content, then finish. */
static void sse_choice(sse_state *s, json_t *c) {
    json_int_t i = json_integer_value(json_object_get(c, "index"));
    json_t *delta = json_object_get(c, "delta"), *fin = json_object_get(c, "finish_reason");
    if (i < 0 || i >= s->n || !json_is_object(delta)) {
        sse_fail(s, "%s", "a choice with a bad index or no delta");
        return;
    }
    const char *role = json_string_value(json_object_get(delta, "role"));
    const char *text = json_string_value(json_object_get(delta, "content"));
    const char *wrong = NULL;
    if (s->finish[i])
        wrong = "an event after the choice's finish chunk";
    else if (role && (s->role[i] || strcmp(role, "assistant") != 0))
        wrong = "a second or wrong role chunk";
    else if (!role && !s->role[i])
        wrong = "content before the role chunk";
    if (wrong) {
        sse_fail(s, "%s", wrong);
        return;
    }
    s->role[i] = true;
    if (text && *text) {
        s->n_content++;
        lv_buf_puts(&s->text[i], text);
    }
    if (json_is_string(fin)) s->finish[i] = true;
}

/* One SSE event's data (NUL-terminated). */
static void sse_event(sse_state *s, const char *data) {
    if (s->done) {
        sse_fail(s, "%s", "an event after [DONE]");
        return;
    }
    if (strcmp(data, "[DONE]") == 0) {
        s->done = true;
        return;
    }
    json_t *j = json_loads(data, 0, NULL), *choices = json_object_get(j, "choices");
    if (!j || json_object_get(j, "error") || !json_is_array(choices))
        sse_fail(s, "event: %.120s", data);
    else if (json_array_size(choices) == 0 && json_is_object(json_object_get(j, "usage")))
        s->usage_tokens = (long)json_integer_value(
            json_object_get(json_object_get(j, "usage"), "completion_tokens"));
    else
        for (size_t k = 0; k < json_array_size(choices); k++)
            sse_choice(s, json_array_get(choices, k));
    json_decref(j);
}

/* Splits the bytes that came since the last call into events ("data: ...\n\n"). */
static void sse_scan(slot *sl) {
    char *p = sl->in.data + sl->scanned, *end;
    while (sl->in.data && (end = strstr(p, "\n\n"))) {
        *end = '\0';
        for (char *line = p; line && line < end;) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = '\0';
            if (strncmp(line, "data: ", 6) == 0) sse_event(&sl->sse, line + 6);
            if (nl) *nl = '\n';
            line = nl ? nl + 1 : NULL;
        }
        *end = '\n';
        p = end + 2;
        if (!sl->t_first && sl->sse.n_content > 0) sl->t_first = lv_now_ms();
    }
    sl->scanned = (size_t)(p - sl->in.data);
}

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
    slot *sl = ud;
    if (lv_buf_append(&sl->in, p, size * n) != LV_OK) return 0;
    if (sl->stream) {
        sse_scan(sl);
        if (sl->cancel_after && sl->sse.n_content >= sl->cancel_after && !sl->sse.done) {
            sl->cut = true;
            return 0; /* libcurl closes the connection: the server must cancel */
        }
    }
    return size * n;
}

/* A good request's body (heap): the question, about image (< n_images) or none. */
static char *good_body(const load_run *r, const slot *sl) {
    json_t *content;
    if (sl->image < r->o.n_images)
        content = json_pack("[{s:s,s:{s:s}},{s:s,s:s}]", "type", "image_url", "image_url", "url",
                            r->image_uris[sl->image], "type", "text", "text",
                            IMAGE_QUESTIONS[sl->question]);
    else
        content = json_string(TEXT_QUESTIONS[sl->question]);
    json_t *body = json_pack("{s:s,s:[{s:s,s:o}],s:i,s:i,s:b}", "model", "llava", "messages",
                             "role", "user", "content", content, "max_tokens", r->o.max_tokens, "n",
                             sl->n, "stream", sl->stream);
    if (!body) return NULL;
    if (sl->stream)
        json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1));
    if (r->o.check_answers) {
        json_object_set_new(body, "temperature", json_real(0));
    } else {
        json_object_set_new(body, "temperature", json_real(0.7));
        json_object_set_new(body, "seed", json_integer((json_int_t)(sl->t0) & 0xffff));
    }
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return s;
}

/* Draws the next request's kind and shape into sl (weights of --mix). */
static void draw_request(load_run *r, slot *sl) {
    int total = 0, k = 0;
    for (int i = 0; i < K_COUNT; i++) total += r->o.mix[i];
    int x = (int)(rnd(r) % (uint64_t)total);
    while (x >= r->o.mix[k]) x -= r->o.mix[k++];
    bool has_images = r->o.n_images > 0, coin = rnd(r) & 1;
    sl->kind = (req_kind)k;
    sl->n = 1;
    sl->question = (int)(rnd(r) % N_QUESTIONS);
    sl->stream = k == K_STREAM_IMAGE || k == K_STREAM_TEXT || k == K_CANCEL || (k == K_N && coin);
    bool image =
        k == K_STREAM_IMAGE || k == K_PLAIN_IMAGE || k == K_CANCEL || (k == K_N && rnd(r) & 1);
    sl->image = image && has_images ? (int)(rnd(r) % (uint64_t)r->o.n_images) : r->o.n_images;
    if (k == K_N) sl->n = 2 + (int)(rnd(r) % 2);
    sl->cancel_at = -1;
    sl->cancel_after = 0;
    if (k == K_CANCEL) {
        sl->cancel_at = (double)(rnd(r) % (uint64_t)(r->o.cancel_ms + 1));
        sl->cancel_after = 1 + (int)(rnd(r) % (uint64_t)r->o.max_tokens);
    }
    sl->bad = k == K_BAD ? (int)(rnd(r) % LV_ARRAY_LEN(BAD_CASES)) : -1;
}

static void slot_clear(slot *sl) {
    if (sl->h) curl_easy_cleanup(sl->h);
    curl_slist_free_all(sl->hdrs);
    if (sl->req_owned) free(sl->req);
    lv_buf_free(&sl->in);
    for (int i = 0; i < MAX_CHOICES; i++) lv_buf_free(&sl->sse.text[i]);
    load_run *run = sl->run;
    memset(sl, 0, sizeof *sl);
    sl->run = run;
}

/* Prepares the next request of sl and adds it to the multi handle; false when out of memory. */
static bool slot_start(load_run *r, slot *sl, CURLM *m) {
    draw_request(r, sl);
    sl->t0 = lv_now_ms();
    const char *path = CHAT_PATH;
    if (sl->bad >= 0) {
        sl->req = (char *)BAD_CASES[sl->bad].body;
        path = BAD_CASES[sl->bad].path;
    } else {
        sl->req = good_body(r, sl);
        sl->req_owned = true;
    }
    sl->sse.n = sl->n;
    sl->sse.usage_tokens = -1;
    char url[1024];
    snprintf(url, sizeof url, "%s%s", r->o.url, path);
    sl->h = curl_easy_init();
    sl->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (!sl->req || !sl->h || !sl->hdrs) return false;
    curl_easy_setopt(sl->h, CURLOPT_URL, url);
    curl_easy_setopt(sl->h, CURLOPT_POSTFIELDS, sl->req);
    curl_easy_setopt(sl->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(sl->req));
    curl_easy_setopt(sl->h, CURLOPT_HTTPHEADER, sl->hdrs);
    curl_easy_setopt(sl->h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(sl->h, CURLOPT_WRITEDATA, sl);
    curl_easy_setopt(sl->h, CURLOPT_PRIVATE, sl);
    curl_easy_setopt(sl->h, CURLOPT_TIMEOUT, (long)r->o.timeout_s);
    curl_easy_setopt(sl->h, CURLOPT_NOSIGNAL, 1L);
    r->sent++;
    r->sent_by_kind[sl->kind]++;
    if (!r->t_start) r->t_start = sl->t0;
    return curl_multi_add_handle(m, sl->h) == CURLM_OK;
}

/* The text of choice i compared with the first answer to the same question. */
static bool same_answer(load_run *r, const slot *sl, const char *text) {
    char **first = &r->answers[sl->image][sl->question];
    if (!*first) {
        *first = strdup(text);
        return true;
    }
    return strcmp(*first, text) == 0;
}

/* A plain answer: a chat.completion with n choices, each with its text. */
static outcome check_plain(load_run *r, slot *sl, char *why, size_t size) {
    json_t *j = json_loadb(sl->in.data ? sl->in.data : "", sl->in.len, 0, NULL);
    json_t *choices = json_object_get(j, "choices");
    const char *object = json_string_value(json_object_get(j, "object"));
    outcome o = O_OK;
    if (!object || strcmp(object, "chat.completion") != 0 || !json_is_array(choices) ||
        json_array_size(choices) != (size_t)sl->n) {
        snprintf(why, size, "not a chat.completion of %d choices", sl->n);
        o = O_F_BODY;
    }
    for (size_t i = 0; o == O_OK && i < json_array_size(choices); i++) {
        json_t *c = json_array_get(choices, i);
        const char *text =
            json_string_value(json_object_get(json_object_get(c, "message"), "content"));
        if (!text || !json_is_string(json_object_get(c, "finish_reason"))) {
            snprintf(why, size, "choice %zu has no content or finish_reason", i);
            o = O_F_BODY;
        } else if (r->o.check_answers && !same_answer(r, sl, text)) {
            snprintf(why, size, "choice %zu: \"%.60s\" is not the first answer \"%.60s\"", i, text,
                     r->answers[sl->image][sl->question]);
            o = O_F_ANSWER;
        }
    }
    if (o == O_OK)
        r->tokens += (long)json_integer_value(
            json_object_get(json_object_get(j, "usage"), "completion_tokens"));
    json_decref(j);
    return o;
}

/* A stream: every choice's role, content and finish, the usage, [DONE]. */
static outcome check_stream(load_run *r, slot *sl, char *why, size_t size) {
    sse_state *s = &sl->sse;
    if (s->error) {
        snprintf(why, size, "%s", s->why);
        return O_F_STREAM;
    }
    for (int i = 0; i < s->n; i++)
        if (!s->role[i] || !s->finish[i]) {
            snprintf(why, size, "choice %d has no %s chunk", i, s->role[i] ? "finish" : "role");
            return O_F_STREAM;
        }
    if (s->usage_tokens < 0 || !s->done) {
        snprintf(why, size, "no %s", s->done ? "usage chunk" : "[DONE]");
        return O_F_STREAM;
    }
    for (int i = 0; r->o.check_answers && i < s->n; i++) {
        const char *text = s->text[i].data ? s->text[i].data : "";
        if (!same_answer(r, sl, text)) {
            snprintf(why, size, "choice %d: \"%.60s\" is not the first answer \"%.60s\"", i, text,
                     r->answers[sl->image][sl->question]);
            return O_F_ANSWER;
        }
    }
    r->tokens += s->usage_tokens;
    return O_OK;
}

/* A bad request: its status and an OpenAI error object. */
static outcome check_bad(const slot *sl, long status, char *why, size_t size) {
    json_t *j = json_loadb(sl->in.data ? sl->in.data : "", sl->in.len, 0, NULL);
    bool error_body = json_is_string(json_object_get(json_object_get(j, "error"), "message"));
    json_decref(j);
    if (status != BAD_CASES[sl->bad].status) {
        snprintf(why, size, "%s: status %ld, expected %ld", BAD_CASES[sl->bad].name, status,
                 BAD_CASES[sl->bad].status);
        return O_F_STATUS;
    }
    if (!error_body) {
        snprintf(why, size, "%s: no OpenAI error body", BAD_CASES[sl->bad].name);
        return O_F_BODY;
    }
    return O_BAD_OK;
}

static void count_status(load_run *r, long status) {
    for (int i = 0; i < r->n_statuses; i++)
        if (r->statuses[i][0] == status) {
            r->statuses[i][1]++;
            return;
        }
    if (r->n_statuses < MAX_STATUS) {
        r->statuses[r->n_statuses][0] = status;
        r->statuses[r->n_statuses++][1] = 1;
    }
}

/* sl's transfer ended (cc: libcurl's result): checks and counts it, then clears sl. */
static void slot_finish(load_run *r, slot *sl, CURLcode cc) {
    long status = 0;
    double first_byte = 0;
    curl_easy_getinfo(sl->h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(sl->h, CURLINFO_STARTTRANSFER_TIME, &first_byte);
    double now = lv_now_ms();
    char why[512] = "";
    outcome o;
    if (sl->cut) {
        o = O_CANCELLED;
    } else if (cc != CURLE_OK) {
        snprintf(why, sizeof why, "%s", curl_easy_strerror(cc));
        o = O_F_TRANSPORT;
    } else if (sl->bad >= 0) {
        o = check_bad(sl, status, why, sizeof why);
    } else if (status == 429 || status == 503) {
        o = O_REFUSED;
    } else if (status != 200) {
        snprintf(why, sizeof why, "status %ld: %.200s", status, sl->in.data ? sl->in.data : "");
        o = O_F_STATUS;
    } else {
        o = sl->stream ? check_stream(r, sl, why, sizeof why) : check_plain(r, sl, why, sizeof why);
    }
    if (status && !sl->cut) count_status(r, status);
    r->by_outcome[o]++;
    if (o >= O_F_STATUS) {
        r->failed_by_kind[sl->kind]++;
        if (!r->first_failure[0])
            snprintf(r->first_failure, sizeof r->first_failure, "%s request: %.400s",
                     KIND_NAMES[sl->kind], why);
    }
    if (o == O_OK) {
        series_add(&r->total[sl->stream], now - sl->t0);
        series_add(&r->ttft[sl->stream], sl->stream ? sl->t_first - sl->t0 : first_byte * 1e3);
    }
    r->t_last = now;
    slot_clear(sl);
}

/* ---- the run ------------------------------------------------------------------------------- */

/* Each --image file as a data: URI (MIME type from its extension). */
static bool load_images(load_run *r) {
    r->image_uris = calloc((size_t)r->o.n_images + 1, sizeof *r->image_uris);
    for (int i = 0; r->image_uris && i < r->o.n_images; i++) {
        lv_err err;
        char *bytes = NULL, *b64 = NULL;
        size_t len = 0;
        if (lv_read_file(r->o.images[i], 20u << 20, &bytes, &len, &err) != LV_OK ||
            lv_base64_encode((const uint8_t *)bytes, len, &b64, &err) != LV_OK) {
            fprintf(stderr, "llava-bench load: %s\n", err.msg);
            free(bytes);
            return false;
        }
        const char *ext = strrchr(r->o.images[i], '.'), *mime = "image/png";
        if (ext && (!strcasecmp(ext, ".jpg") || !strcasecmp(ext, ".jpeg"))) mime = "image/jpeg";
        if (ext && !strcasecmp(ext, ".webp")) mime = "image/webp";
        if (ext && !strcasecmp(ext, ".gif")) mime = "image/gif";
        if (ext && !strcasecmp(ext, ".bmp")) mime = "image/bmp";
        size_t n = strlen(b64) + 64;
        if ((r->image_uris[i] = malloc(n)))
            snprintf(r->image_uris[i], n, "data:%s;base64,%s", mime, b64);
        free(bytes);
        free(b64);
        if (!r->image_uris[i]) return false;
    }
    return r->image_uris != NULL;
}

/* The server's pid: --pid, else the holder of the URL's listening port; 0 if unknown. */
static long find_server(const char *url) {
    const char *host = strstr(url, "://");
    const char *colon = host ? strchr(host + 3, ':') : NULL;
    int port = colon ? atoi(colon + 1) : 80;
    unsigned long inode = listening_inode(port);
    return inode ? pid_of_socket(inode) : 0;
}

static void sample_server(load_run *r) {
    double rss, fds;
    if (r->pid > 0 && sample_process(r->pid, &rss, &fds)) {
        series_add(&r->s_t, (lv_now_ms() - r->t_start) / 1e3);
        series_add(&r->s_rss, rss);
        series_add(&r->s_fds, fds);
    }
}

static size_t discard(char *p, size_t size, size_t n, void *ud) {
    (void)p, (void)ud;
    return size * n;
}

/* GET /health once, after the load: the server must still be there. */
static bool health_ok(const char *url, int timeout_s) {
    char u[1024];
    snprintf(u, sizeof u, "%s/health", url);
    CURL *h = curl_easy_init();
    long status = 0;
    if (!h) return false;
    curl_easy_setopt(h, CURLOPT_URL, u);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)timeout_s);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    return status == 200;
}

/* The clients' loop: keeps every slot busy until the bounds, then drains. */
static bool drive(load_run *r) {
    CURLM *m = curl_multi_init();
    slot *slots = calloc((size_t)r->o.clients, sizeof *slots);
    if (!m || !slots) {
        curl_multi_cleanup(m);
        free(slots);
        return false;
    }
    double t_begin = lv_now_ms(), next_sample = t_begin, stop = t_begin + r->o.duration_s * 1e3;
    bool ok = true;
    int active = 0;
    for (;;) {
        double now = lv_now_ms();
        bool more =
            (!r->o.requests || r->sent < r->o.requests) && (r->o.duration_s <= 0 || now < stop);
        for (int i = 0; i < r->o.clients && more && ok; i++) {
            if (slots[i].h) continue;
            slots[i].run = r;
            if (!(ok = slot_start(r, &slots[i], m))) break;
            active++;
            more = !r->o.requests || r->sent < r->o.requests;
        }
        if (!ok || active == 0) break;
        int running;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            char *priv = NULL;
            CURL *h = msg->easy_handle;
            CURLcode cc = msg->data.result;
            curl_easy_getinfo(h, CURLINFO_PRIVATE, &priv);
            slot *sl = (slot *)priv;
            curl_multi_remove_handle(m, h);
            slot_finish(r, sl, cc);
            active--;
        }
        now = lv_now_ms();
        for (int i = 0; i < r->o.clients; i++) { /* cut by time: queued, or in the prefill */
            slot *sl = &slots[i];
            if (sl->h && sl->cancel_at >= 0 && now - sl->t0 >= sl->cancel_at) {
                curl_multi_remove_handle(m, sl->h); /* closes the connection */
                sl->cut = true;
                slot_finish(r, sl, CURLE_OK);
                active--;
            }
        }
        if (now >= next_sample) {
            sample_server(r);
            if (more) r->n_loaded = r->s_rss.n;
            next_sample += 1000;
        }
        curl_multi_poll(m, NULL, 0, 20, NULL);
    }
    for (int i = 0; i < r->o.clients; i++)
        if (slots[i].h) {
            curl_multi_remove_handle(m, slots[i].h);
            slot_clear(&slots[i]);
        }
    free(slots);
    curl_multi_cleanup(m);
    return ok;
}

/* ---- the report ----------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The p-th percentile (linear between the closest ranks) of s, sorted in place; NAN if empty. */
static double percentile(series *s, double p) {
    if (!s->n) return NAN;
    qsort(s->v, s->n, sizeof *s->v, cmp_double);
    double k = (double)(s->n - 1) * p / 100.0;
    size_t lo = (size_t)k, hi = lo + 1 < s->n ? lo + 1 : lo;
    return s->v[lo] + (s->v[hi] - s->v[lo]) * (k - (double)lo);
}

/* Requests that failed (the health check after the run is apart). */
static long n_failed(const load_run *r) {
    long n = 0;
    for (int o = O_F_STATUS; o < O_COUNT; o++) n += r->by_outcome[o];
    return n;
}

static json_t *pct_json(series *s) {
    json_t *o = json_pack("{s:I}", "n", (json_int_t)s->n);
    static const double P[] = {50, 95, 99};
    static const char *const NAMES[] = {"p50", "p95", "p99"};
    for (int i = 0; i < 3; i++)
        json_object_set_new(o, NAMES[i], s->n ? json_real(percentile(s, P[i])) : json_null());
    return o;
}

/* first, last, max and the slope per minute over the second half of the loaded samples */
static json_t *trend_json(const load_run *r, const series *y) {
    if (!y->n) return json_null();
    double max = y->v[0];
    for (size_t i = 1; i < y->n; i++) max = y->v[i] > max ? y->v[i] : max;
    return json_pack("{s:f,s:f,s:f,s:f}", "first", y->v[0], "last", y->v[y->n - 1], "max", max,
                     "slope_per_min", slope(&r->s_t, y, r->n_loaded / 2, r->n_loaded) * 60);
}

static json_t *report_json(load_run *r, double wall_s) {
    json_t *o = json_object(), *out = json_object(), *kinds = json_object(), *st = json_object();
    json_object_set_new(o, "url", json_string(r->o.url));
    json_object_set_new(o, "clients", json_integer(r->o.clients));
    json_object_set_new(o, "wall_s", json_real(wall_s));
    json_object_set_new(o, "sent", json_integer(r->sent));
    for (int i = 0; i < O_COUNT; i++)
        json_object_set_new(out, OUTCOME_NAMES[i], json_integer(r->by_outcome[i]));
    json_object_set_new(o, "outcomes", out);
    json_object_set_new(o, "failed", json_integer(n_failed(r)));
    json_object_set_new(o, "health_after", json_boolean(r->health_ok));
    for (int k = 0; k < K_COUNT; k++)
        json_object_set_new(kinds, KIND_NAMES[k],
                            json_pack("{s:i,s:I,s:I}", "weight", r->o.mix[k], "sent",
                                      (json_int_t)r->sent_by_kind[k], "failed",
                                      (json_int_t)r->failed_by_kind[k]));
    json_object_set_new(o, "kinds", kinds);
    for (int i = 0; i < r->n_statuses; i++) {
        char key[16];
        snprintf(key, sizeof key, "%ld", r->statuses[i][0]);
        json_object_set_new(st, key, json_integer(r->statuses[i][1]));
    }
    json_object_set_new(o, "statuses", st);
    json_object_set_new(o, "generated_tokens", json_integer(r->tokens));
    json_object_set_new(o, "requests_per_s", json_real(wall_s > 0 ? r->sent / wall_s : 0));
    json_object_set_new(o, "tokens_per_s", json_real(wall_s > 0 ? r->tokens / wall_s : 0));
    json_object_set_new(o, "latency_ms",
                        json_pack("{s:{s:o,s:o},s:{s:o,s:o}}", "stream", "ttft",
                                  pct_json(&r->ttft[1]), "total", pct_json(&r->total[1]), "plain",
                                  "first_byte", pct_json(&r->ttft[0]), "total",
                                  pct_json(&r->total[0])));
    json_object_set_new(o, "server",
                        json_pack("{s:I,s:I,s:o,s:o}", "pid", (json_int_t)r->pid, "samples",
                                  (json_int_t)r->s_rss.n, "rss_mib", trend_json(r, &r->s_rss),
                                  "fds", trend_json(r, &r->s_fds)));
    if (r->first_failure[0]) json_object_set_new(o, "first_failure", json_string(r->first_failure));
    return o;
}

static void print_pct(const char *what, series *s) {
    if (!s->n) return;
    printf("  %-18s %6zu %9.1f %9.1f %9.1f\n", what, s->n, percentile(s, 50), percentile(s, 95),
           percentile(s, 99));
}

static void print_trend(const char *what, const char *unit, json_t *t) {
    if (!json_is_object(t)) return;
    printf("  %-4s first %.1f  last %.1f  max %.1f  slope %+.3f %s/min (second half of the load)\n",
           what, json_real_value(json_object_get(t, "first")),
           json_real_value(json_object_get(t, "last")), json_real_value(json_object_get(t, "max")),
           json_real_value(json_object_get(t, "slope_per_min")), unit);
}

static void print_report(load_run *r, double wall_s) {
    printf("llava-bench load: %s, %d clients, %.1f s, max_tokens %d%s\n", r->o.url, r->o.clients,
           wall_s, r->o.max_tokens, r->o.check_answers ? ", answers checked" : "");
    printf("requests: %ld sent: %ld ok, %ld bad rejected as expected, %ld cancelled, %ld refused "
           "(429/503), %ld failed\n",
           r->sent, r->by_outcome[O_OK], r->by_outcome[O_BAD_OK], r->by_outcome[O_CANCELLED],
           r->by_outcome[O_REFUSED], n_failed(r));
    printf("throughput: %.2f requests/s, %.1f generated tokens/s (%ld tokens)\n",
           wall_s > 0 ? r->sent / wall_s : 0, wall_s > 0 ? r->tokens / wall_s : 0, r->tokens);
    printf("  %-18s %6s %9s %9s %9s\n", "latency (ms)", "n", "p50", "p95", "p99");
    print_pct("stream TTFT", &r->ttft[1]);
    print_pct("stream total", &r->total[1]);
    print_pct("plain first byte", &r->ttft[0]);
    print_pct("plain total", &r->total[0]);
    printf("kinds (sent/failed):");
    for (int k = 0; k < K_COUNT; k++)
        if (r->o.mix[k])
            printf(" %s %ld/%ld", KIND_NAMES[k], r->sent_by_kind[k], r->failed_by_kind[k]);
    printf("\nstatuses:");
    for (int i = 0; i < r->n_statuses; i++)
        printf(" %ld: %ld", r->statuses[i][0], r->statuses[i][1]);
    printf("\nfailures:");
    for (int o = O_F_STATUS; o < O_COUNT; o++)
        if (r->by_outcome[o]) printf(" %s %ld", OUTCOME_NAMES[o], r->by_outcome[o]);
    if (!r->health_ok) printf(" /health after the run did not answer 200");
    if (n_failed(r))
        printf("\n  first: %s\n", r->first_failure);
    else
        printf(r->health_ok ? " none\n" : "\n");
    if (r->pid <= 0) {
        printf("server: process not found (--pid): no RSS or descriptor samples\n");
        return;
    }
    printf("server pid %ld, %zu samples:\n", r->pid, r->s_rss.n);
    json_t *rss = trend_json(r, &r->s_rss), *fds = trend_json(r, &r->s_fds);
    print_trend("RSS", "MiB", rss);
    print_trend("fds", "fds", fds);
    json_decref(rss);
    json_decref(fds);
}

static void usage_text(FILE *f) {
    fprintf(f, "usage: llava-bench load --url http://127.0.0.1:PORT [--clients N] [--requests N]\n"
               "                        [--duration S] [--mix KIND=W,...] [--image FILE]...\n"
               "                        [--max-tokens M] [--check-answers] [--cancel-ms MS]\n"
               "                        [--timeout S] [--pid P] [--seed S] [--json]\n"
               "  KIND: stream_image, stream_text, plain_image, plain_text, n, cancel, bad\n"
               "  (default stream_image=4,stream_text=2,plain_image=2,plain_text=1,n=1,cancel=1,"
               "bad=1)\n");
}

/* Defaults filled in after parsing; false after saying what is wrong. */
static bool finish_opts(load_opts *o, glob_t *g) {
    if (!o->url_arg) {
        fprintf(stderr, "llava-bench load: --url is required\n");
        return false;
    }
    if (!o->mix_given) memcpy(o->mix, DEFAULT_MIX, sizeof o->mix);
    int total = 0;
    for (int k = 0; k < K_COUNT; k++) total += o->mix[k];
    if (!total) {
        fprintf(stderr, "llava-bench load: --mix gives every kind weight 0\n");
        return false;
    }
    if (!o->requests && o->duration_s <= 0) o->duration_s = 10;
    if (!o->n_images && glob("models/demo/samples/*.png", 0, NULL, g) == 0)
        for (size_t i = 0; i < g->gl_pathc && o->n_images < MAX_IMAGES; i++)
            o->images[o->n_images++] = g->gl_pathv[i];
    bool wants_images = o->mix[K_STREAM_IMAGE] || o->mix[K_PLAIN_IMAGE] || o->mix[K_CANCEL];
    if (wants_images && !o->n_images) {
        fprintf(stderr, "llava-bench load: image requests need --image FILE (no "
                        "models/demo/samples/*.png here)\n");
        return false;
    }
    size_t len = strlen(o->url_arg);
    while (len && o->url_arg[len - 1] == '/') len--;
    if (len >= sizeof o->url) {
        fprintf(stderr, "llava-bench load: --url is longer than %zu bytes\n", sizeof o->url - 1);
        return false;
    }
    memcpy(o->url, o->url_arg, len);
    o->url[len] = '\0';
    return true;
}

int load_bench_main(int argc, char **argv) {
    load_run *r = calloc(1, sizeof *r);
    if (!r) return 1;
    load_opts *o = &r->o;
    o->clients = 8;
    o->max_tokens = 16;
    o->cancel_ms = 2000;
    o->timeout_s = 300;
    o->seed = 1;
    const char *seed = NULL;
    const tool_opt opts[] = {
        TOOL_STR("url", 0, &o->url_arg),
        TOOL_INT("clients", 'c', &o->clients, 1, 1024),
        TOOL_LONG("requests", 'n', &o->requests, 0, 1000000000000L),
        TOOL_NUM("duration", 'd', &o->duration_s, 0, 1e7),
        TOOL_FN("mix", 0, parse_mix, o),
        TOOL_FN("image", 0, add_image, o),
        TOOL_INT("max-tokens", 0, &o->max_tokens, 1, 4096),
        TOOL_FLAG("check-answers", 0, &o->check_answers),
        TOOL_INT("cancel-ms", 0, &o->cancel_ms, 0, 600000),
        TOOL_INT("timeout", 0, &o->timeout_s, 1, 86400),
        TOOL_LONG("pid", 0, &o->pid, 0, INT_MAX),
        TOOL_STR("seed", 0, &seed),
        TOOL_FLAG("json", 0, &o->json),
    };
    static const tool_info tool = {"llava-bench load", usage_text, false};
    glob_t g = {0};
    int rc = tool_parse(&tool, opts, LV_ARRAY_LEN(opts), argc, argv);
    if (rc) {
        free(r);
        return rc == TOOL_HELP ? 0 : 2;
    }
    if (!finish_opts(o, &g) ||
        (seed && !tool_seed("llava-bench load", "--seed", seed, UINT64_MAX, &o->seed))) {
        rc = 2;
        goto done;
    }
    r->rng = o->seed * 0x9E3779B97F4A7C15ull + 1;
    rc = 1;
    if (!load_images(r)) goto done;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    r->pid = o->pid ? o->pid : find_server(o->url);
    if (drive(r)) {
        r->health_ok = health_ok(o->url, o->timeout_s);
        /* the clients gone, their connections should be too: a second later,
         * as the server notices a closed socket at its next poll */
        if (r->pid > 0) sleep(1);
        sample_server(r);
        double wall_s = r->t_last > r->t_start ? (r->t_last - r->t_start) / 1e3 : 0;
        if (o->json) {
            json_t *j = report_json(r, wall_s);
            json_dumpf(j, stdout, JSON_COMPACT);
            putchar('\n');
            json_decref(j);
        } else {
            print_report(r, wall_s);
        }
        rc = n_failed(r) || !r->health_ok ? 1 : 0;
    } else {
        fprintf(stderr, "llava-bench load: out of memory\n");
    }
    curl_global_cleanup();
done:
    for (int i = 0; r->image_uris && i < o->n_images; i++) free(r->image_uris[i]);
    free(r->image_uris);
    for (int i = 0; i <= MAX_IMAGES; i++)
        for (int q = 0; q < N_QUESTIONS; q++) free(r->answers[i][q]);
    for (int i = 0; i < 2; i++) free(r->ttft[i].v), free(r->total[i].v);
    free(r->s_t.v), free(r->s_rss.v), free(r->s_fds.v);
    globfree(&g);
    free(r);
    return rc;
}
