/*
 * oai_response.c - response bodies and SSE events, shaped as OpenAI's API
 * reference shows them.
 *
 * chat.completion:
 *   {"id":"chatcmpl-…","object":"chat.completion","created":…,"model":…,
 *    "choices":[{"index":0,"message":{"role":"assistant","content":…},
 *                "logprobs":null | {"content":[{"token","logprob","bytes",
 *                                  "top_logprobs":[{"token","logprob","bytes"}]}],
 *                                  "refusal":null},
 *                "finish_reason":"stop"|"length"}],
 *    "usage":{"prompt_tokens","completion_tokens","total_tokens",
 *             "prompt_tokens_details":{"cached_tokens"}},
 *    "timings":{…}}                        (llama.cpp's addition)
 * text_completion: the same with choices [{"index","text","logprobs",
 *   "finish_reason"}], logprobs in the legacy shape {"tokens",
 *   "token_logprobs","top_logprobs":[{token: logprob}],"text_offset"}.
 * Streams: "data: <chunk>\n\n" events, "data: [DONE]\n\n" last.
 *
 * Token texts may be partial UTF-8 (a byte-fallback token); JSON strings
 * cannot hold that, so such bytes are written as the text "\xHH" (as
 * OpenAI does) and "bytes" carries the raw values.
 */
#include "server/oai.h"
#include "io/json_type.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- ids ----------------------------------------------------------------- */

static uint64_t id_key;
static pthread_once_t id_once = PTHREAD_ONCE_INIT;
static _Atomic uint64_t id_counter;

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void id_init(void) {
    uint64_t k = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(&k, sizeof k, 1, f) != 1) k = 0;
        fclose(f);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    id_key = k ^ splitmix64((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^
             splitmix64((uint64_t)getpid());
}

char *oai_make_id(char *buf, size_t n, const char *prefix) {
    pthread_once(&id_once, id_init);
    uint64_t c = atomic_fetch_add(&id_counter, 1);
    /* 64 bits that never repeat (a bijection of the counter) + 32 of key. */
    uint64_t a = splitmix64(c ^ id_key), b = splitmix64(id_key + 1);
    snprintf(buf, n, "%s%016llx%08x", prefix, (unsigned long long)a, (unsigned)(b >> 32));
    return buf;
}

/* ---- JSON pieces -------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    size_t k = s[0] < 0x80         ? 1
               : (s[0] >> 5) == 6  ? 2
               : (s[0] >> 4) == 14 ? 3
               : (s[0] >> 3) == 30 ? 4
                                   : 0;
    if (!k || k > n || (k == 2 && s[0] < 0xc2)) return 0;
    for (size_t i = 1; i < k; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (k == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0))) return 0;
    if (k == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || s[0] > 0xf4 || (s[0] == 0xf4 && s[1] >= 0x90)))
        return 0;
    return k;
}

/* A JSON string of s; each invalid UTF-8 byte (or NUL) becomes the text
 * "\xHH" (token texts, as OpenAI shows them) or U+FFFD (generated text cut
 * inside a character, e.g. at max_tokens). */
static json_t *utf8_json(const char *s, size_t len, bool hex) {
    if (!memchr(s, 0, len)) { /* fast path: already valid text */
        json_t *j = json_stringn(s, len);
        if (j) return j;
    }
    char *buf = malloc(len * 4 + 1);
    if (!buf) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t k = s[i] ? utf8_seq((const unsigned char *)s + i, len - i) : 0;
        if (k) {
            memcpy(buf + o, s + i, k);
            o += k, i += k;
        } else {
            o += hex ? (size_t)sprintf(buf + o, "\\x%02x", (unsigned char)s[i])
                     : (size_t)sprintf(buf + o, "\xef\xbf\xbd");
            i++;
        }
    }
    json_t *j = json_stringn(buf, o);
    free(buf);
    return j;
}

static json_t *text_json(const char *s, size_t len) {
    return utf8_json(s, len, true);
}

static json_t *content_json(const char *s, size_t len) {
    return utf8_json(s, len, false);
}

json_t *oai_content_json(const char *s, size_t len) {
    return content_json(s, len);
}

/* Log-probabilities are finite in JSON: -inf (a masked token) → -9999. */
static json_t *lp_json(float lp) {
    return json_real(isfinite(lp) ? lp : -9999.0);
}

static json_t *bytes_json(const char *s, size_t len) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < len; i++)
        if (json_array_append_new(a, json_integer((unsigned char)s[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *tok_json(const oai_tok *t) {
    return json_pack("{s:o, s:o, s:o}", "token", text_json(t->text, t->len), "logprob",
                     lp_json(t->logprob), "bytes", bytes_json(t->text, t->len));
}

/* Chat logprobs: {"content":[…],"refusal":null}; NULL lp → JSON null. */
static json_t *chat_logprobs_json(const oai_token_logprob *lp, int n) {
    if (!lp) return json_null();
    json_t *content = json_array();
    for (int i = 0; content && i < n; i++) {
        json_t *top = json_array();
        for (int k = 0; top && k < lp[i].n_top; k++)
            if (json_array_append_new(top, tok_json(&lp[i].top[k]))) json_decref(top), top = NULL;
        json_t *t = tok_json(&lp[i].tok);
        if (!t || !top || json_object_set_new(t, "top_logprobs", top) ||
            json_array_append_new(content, t)) {
            json_decref(t);
            json_decref(content);
            return NULL;
        }
    }
    return json_pack("{s:o, s:n}", "content", content, "refusal");
}

/* Legacy completions logprobs; text_offset counts bytes from the choice start. */
static json_t *completion_logprobs_json(const oai_token_logprob *lp, int n) {
    if (!lp) return json_null();
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    size_t off = 0;
    int bad = !tokens || !lps || !tops || !offs;
    for (int i = 0; !bad && i < n; i++) {
        json_t *top = json_object();
        for (int k = 0; top && k < lp[i].n_top; k++) {
            json_t *key = text_json(lp[i].top[k].text, lp[i].top[k].len);
            if (!key ||
                json_object_set_new(top, json_string_value(key), lp_json(lp[i].top[k].logprob)))
                bad = 1;
            json_decref(key);
        }
        bad |= !top || json_array_append_new(tops, top) ||
               json_array_append_new(tokens, text_json(lp[i].tok.text, lp[i].tok.len)) ||
               json_array_append_new(lps, lp_json(lp[i].tok.logprob)) ||
               json_array_append_new(offs, json_integer((json_int_t)off));
        off += lp[i].tok.len;
    }
    if (bad) {
        json_decref(tokens), json_decref(lps), json_decref(tops), json_decref(offs);
        return NULL;
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", tokens, "token_logprobs", lps,
                     "top_logprobs", tops, "text_offset", offs);
}

static json_t *usage_json(const oai_usage *u) {
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", u->prompt_tokens,
                     "completion_tokens", u->completion_tokens, "total_tokens",
                     u->prompt_tokens + u->completion_tokens, "prompt_tokens_details",
                     "cached_tokens", u->cached_tokens);
}

static json_t *timings_json(const oai_timings *t) {
    double pt = t->prompt_n ? t->prompt_ms / t->prompt_n : 0;
    double dt = t->predicted_n ? t->predicted_ms / t->predicted_n : 0;
    return json_pack("{s:i, s:f, s:f, s:f, s:i, s:f, s:f, s:f}", "prompt_n", t->prompt_n,
                     "prompt_ms", t->prompt_ms, "prompt_per_token_ms", pt, "prompt_per_second",
                     t->prompt_ms > 0 ? 1e3 * t->prompt_n / t->prompt_ms : 0.0, "predicted_n",
                     t->predicted_n, "predicted_ms", t->predicted_ms, "predicted_per_token_ms", dt,
                     "predicted_per_second",
                     t->predicted_ms > 0 ? 1e3 * t->predicted_n / t->predicted_ms : 0.0);
}

/* {"id","object","created","model"}: the head of every response object. */
static json_t *head(const oai_meta *m, const char *object) {
    return json_pack("{s:s, s:s, s:I, s:s}", "id", m->id, "object", object, "created",
                     (json_int_t)m->created, "model", m->model ? m->model : "");
}

/* Serialises and releases root (NULL in → NULL out). */
static char *dump(json_t *root) {
    if (!root) return NULL;
    char *s = json_dumps_whole(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

/* "data: <j>\n\n", releasing j (NULL in → NULL out). */
static char *frame(char *j) {
    if (!j) return NULL;
    size_t n = strlen(j);
    char *s = malloc(n + 9);
    if (s) memcpy(s, "data: ", 6), memcpy(s + 6, j, n), memcpy(s + 6 + n, "\n\n", 3);
    free(j);
    return s;
}

/* "data: <root>\n\n", releasing root. */
static char *sse(json_t *root) {
    return frame(dump(root));
}

/* Adds key: val to o (val stolen); on failure releases o and returns NULL. */
static json_t *with(json_t *o, const char *key, json_t *val) {
    if (!o || !val || json_object_set_new(o, key, val)) {
        json_decref(o);
        json_decref(val);
        return NULL;
    }
    return o;
}

/* [{"id","type":"function","function":{"name","arguments"}}], with "index" first in a
 * stream's delta. */
static json_t *tool_calls_json(const oai_tool_call *c, int n, bool indexed) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) {
        json_t *o = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", c[i].id, "type", "function",
                              "function", "name", c[i].name, "arguments", c[i].arguments);
        json_t *call = o;
        if (indexed) { /* index first, as OpenAI orders a delta's call */
            call = json_pack("{s:i}", "index", i);
            if (call && o) json_object_update(call, o);
            json_decref(o);
            if (!o) json_decref(call), call = NULL;
        }
        if (json_array_append_new(a, call)) json_decref(a), a = NULL;
    }
    return a;
}

/* ---- complete responses ------------------------------------------------ */

static char *response(const oai_meta *m, const oai_choice *c, int n, const oai_usage *u,
                      const oai_timings *t, bool chat) {
    json_t *choices = json_array();
    for (int i = 0; choices && i < n; i++) {
        json_t *text = chat && c[i].n_tool_calls ? json_null() : content_json(c[i].text, c[i].len);
        json_t *lp = chat ? chat_logprobs_json(c[i].logprobs, c[i].n_logprobs)
                          : completion_logprobs_json(c[i].logprobs, c[i].n_logprobs);
        json_t *ch = chat ? json_pack("{s:i, s:{s:s, s:o}, s:o, s:s}", "index", i, "message",
                                      "role", "assistant", "content", text, "logprobs", lp,
                                      "finish_reason", c[i].finish_reason)
                          : json_pack("{s:i, s:o, s:o, s:s}", "index", i, "text", text, "logprobs",
                                      lp, "finish_reason", c[i].finish_reason);
        if (chat && c[i].n_tool_calls) {
            json_t *msg = json_object_get(ch, "message");
            if (!msg ||
                json_object_set_new(msg, "tool_calls",
                                    tool_calls_json(c[i].tool_calls, c[i].n_tool_calls, false)))
                json_decref(ch), ch = NULL;
        }
        if (json_array_append_new(choices, ch)) json_decref(choices), choices = NULL;
    }
    json_t *root = with(head(m, chat ? "chat.completion" : "text_completion"), "choices", choices);
    root = with(root, "usage", usage_json(u));
    if (t) root = with(root, "timings", timings_json(t));
    return dump(root);
}

char *oai_chat_response(const oai_meta *m, const oai_choice *c, int n_choices, const oai_usage *u,
                        const oai_timings *t) {
    return response(m, c, n_choices, u, t, true);
}

char *oai_completion_response(const oai_meta *m, const oai_choice *c, int n_choices,
                              const oai_usage *u, const oai_timings *t) {
    return response(m, c, n_choices, u, t, false);
}

/* ---- stream events ------------------------------------------------------ */

/* A chunk of one choice; finish NULL → null. delta stolen. */
static char *chat_chunk(const oai_meta *m, int index, json_t *delta, json_t *logprobs,
                        const char *finish) {
    json_t *choice = json_pack("{s:i, s:o, s:o, s:s?}", "index", index, "delta", delta, "logprobs",
                               logprobs, "finish_reason", finish);
    json_t *root = with(head(m, "chat.completion.chunk"), "choices", json_pack("[o]", choice));
    if (m->include_usage) root = with(root, "usage", json_null());
    return sse(root);
}

char *oai_chat_chunk_role(const oai_meta *m, int index) {
    return chat_chunk(m, index, json_pack("{s:s, s:s}", "role", "assistant", "content", ""),
                      json_null(), NULL);
}

char *oai_chat_chunk_delta(const oai_meta *m, int index, const char *text, size_t len,
                           const oai_token_logprob *lp, int n_lp) {
    return chat_chunk(m, index, json_pack("{s:o}", "content", content_json(text, len)),
                      chat_logprobs_json(lp, n_lp), NULL);
}

char *oai_chat_chunk_tool_calls(const oai_meta *m, int index, const oai_tool_call *calls, int n) {
    return chat_chunk(m, index, json_pack("{s:o}", "tool_calls", tool_calls_json(calls, n, true)),
                      json_null(), NULL);
}

char *oai_chat_chunk_finish(const oai_meta *m, int index, const char *finish_reason) {
    return chat_chunk(m, index, json_object(), json_null(), finish_reason);
}

static char *usage_chunk(const oai_meta *m, const char *object, const oai_usage *u,
                         const oai_timings *t) {
    json_t *root = with(head(m, object), "choices", json_array());
    root = with(root, "usage", usage_json(u));
    if (t) root = with(root, "timings", timings_json(t));
    return sse(root);
}

char *oai_chat_chunk_usage(const oai_meta *m, const oai_usage *u, const oai_timings *t) {
    return usage_chunk(m, "chat.completion.chunk", u, t);
}

char *oai_completion_chunk(const oai_meta *m, int index, const char *text, size_t len,
                           const char *finish_reason) {
    return oai_completion_chunk_lp(m, index, text, len, NULL, 0, finish_reason);
}

char *oai_completion_chunk_lp(const oai_meta *m, int index, const char *text, size_t len,
                              const oai_token_logprob *lp, int n_lp, const char *finish_reason) {
    json_t *choice =
        json_pack("{s:i, s:o, s:o, s:s?}", "index", index, "text", content_json(text, len),
                  "logprobs", completion_logprobs_json(lp, n_lp), "finish_reason", finish_reason);
    json_t *root = with(head(m, "text_completion"), "choices", json_pack("[o]", choice));
    if (m->include_usage) root = with(root, "usage", json_null());
    return sse(root);
}

char *oai_completion_chunk_usage(const oai_meta *m, const oai_usage *u, const oai_timings *t) {
    return usage_chunk(m, "text_completion", u, t);
}

const char *oai_sse_done(void) {
    return "data: [DONE]\n\n";
}

char *oai_sse_error(const oai_error *e) {
    return frame(oai_error_json(e));
}

/* ---- other endpoints ---------------------------------------------------- */

char *oai_models_json(const char *const *ids, int n, int64_t created, const char *owned_by) {
    json_t *data = json_array();
    for (int i = 0; data && i < n; i++)
        if (json_array_append_new(data,
                                  json_pack("{s:s, s:s, s:I, s:s}", "id", ids[i], "object", "model",
                                            "created", (json_int_t)created, "owned_by", owned_by)))
            json_decref(data), data = NULL;
    return dump(json_pack("{s:s, s:o}", "object", "list", "data", data));
}

char *oai_health_json(const oai_health *h) {
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:f, s:{s:I, s:I, s:I}, s:{s:i, s:i, s:i, s:i}, s:{s:I, s:I}}",
                  "status", "healthy", "model", h->model ? h->model : "", "device",
                  h->device ? h->device : "", "uptime_s", h->uptime_s, "memory", "rss_bytes",
                  (json_int_t)h->rss_bytes, "kv_bytes", (json_int_t)h->kv_bytes, "kv_bytes_total",
                  (json_int_t)h->kv_bytes_total, "queue", "running", h->running, "waiting",
                  h->waiting, "capacity", h->queue_capacity, "parallel", h->parallel, "kv_cache",
                  "used", (json_int_t)h->kv_used, "capacity", (json_int_t)h->kv_capacity);
    json_t *mem = o ? json_object_get(o, "memory") : NULL;
    if (mem) {
        const mg_stats *g = &h->mem;
        json_t *more =
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:I}",
                      "budget_bytes", (json_int_t)g->limit, "used_bytes", (json_int_t)g->use,
                      "accounted_bytes", (json_int_t)g->accounted, "measured_bytes",
                      (json_int_t)g->measured, "fixed_bytes", (json_int_t)g->fixed,
                      "requests_bytes", (json_int_t)g->pools[MG_REQUESTS], "connections_bytes",
                      (json_int_t)g->pools[MG_CONNECTIONS], "kv_cached_bytes",
                      (json_int_t)g->pools[MG_KV_CACHED], "image_cache_bytes",
                      (json_int_t)g->pools[MG_IMAGE_CACHE], "pressure", mg_level_name(g->level),
                      "refused_total", (json_int_t)g->refused, "pressure_evictions_total",
                      (json_int_t)g->pressure_evictions, "peak_used_bytes", (json_int_t)g->peak_use,
                      "peak_requests_bytes", (json_int_t)g->peak_requests);
        json_object_update(mem, more);
        json_decref(more);
        const sched_stats *c = &h->caches;
        json_object_set_new(
            o, "caches",
            json_pack("{s:{s:i, s:I, s:I, s:I, s:I}, s:{s:i, s:I, s:I, s:I, s:I, s:I}}", "prefix",
                      "sequences", c->cache_sequences, "bytes", (json_int_t)c->kv_bytes_retained,
                      "hits", (json_int_t)c->cache_hits, "tokens", (json_int_t)c->cache_tokens,
                      "evictions", (json_int_t)c->cache_evictions, "images", "images",
                      c->image_cache_images, "bytes", (json_int_t)c->image_cache_bytes,
                      "budget_bytes", (json_int_t)c->image_cache_budget, "hits",
                      (json_int_t)c->image_cache_hits, "misses", (json_int_t)c->image_cache_misses,
                      "evictions", (json_int_t)c->image_cache_evictions));
    }
    if (o && h->has_gpu_memory)
        json_object_set_new(o, "gpu_memory",
                            json_pack("{s:I, s:I}", "used_bytes", (json_int_t)h->gpu_used,
                                      "total_bytes", (json_int_t)h->gpu_total));
    if (o && h->replica) json_object_set_new(o, "replica", json_string(h->replica));
    return dump(o);
}
