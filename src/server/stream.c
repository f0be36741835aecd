/*
 * stream.c - a request's answer as a server-sent event stream (stream.h).
 *
 * MHD calls stream_read whenever the socket can take more; it hands out
 * what is left in st->out, and when that is empty runs one pass over the
 * jobs (stream_pass), which may wait a little for new text. The waiting
 * happens on the connection's thread (sched_job_take with a timeout): the
 * scheduler only appends text to its jobs and never waits for a client.
 * Events come in the order the OpenAI API sends them: the chat role chunk
 * per choice, content deltas, one finish chunk per choice, the usage
 * chunk, [DONE].
 *
 * Tool calls (server/tools.h): while a choice's text could still be one
 * (it is, after whitespace, a prefix of "[TOOL_CALLS]" or starts with it),
 * it is held back; once it cannot, it flows as content. A choice held to
 * its end that parses as calls sends them in one tool_calls delta (every
 * call whole: no argument fragments) and finishes with "tool_calls"; held
 * text that does not parse is sent as content then.
 *
 * Ollama's framing (server/ollama.h): the same passes write NDJSON lines
 * instead of events: no role chunk, a line per piece of text, the tool
 * calls in one line, and a last line with done, done_reason and the counts
 * (no [DONE]); an error is a last {"error"} line. Ollama requests have one
 * choice.
 */
#include "server/stream.h"

#include "base/buf.h"
#include "base/log.h"
#include "server/ollama.h"
#include "server/tools.h"

#include <microhttpd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

/* A stream being written: SSE events built from the jobs' text as it comes. */
struct stream {
    const jobs_ctx *ctx;
    job_group g; /* its request says logprobs / include_usage */
    bool chat;
    char id[64];
    oai_meta meta;
    lv_buf out; /* events not yet handed to MHD, from off */
    size_t off;
    int *cursor;    /* (n_jobs) tokens already sent with logprobs */
    bool *finished; /* (n_jobs) finish event sent */
    int n_finished;
    int next;     /* round-robin position */
    bool tools;   /* answers are read for tool calls */
    int n_jobs;   /* of held and open (g is zeroed when jobs_release runs) */
    lv_buf *held; /* (n_jobs) text held back: it may be a tool call */
    bool *open;   /* (n_jobs) the text is content: it flows */
    bool failed;  /* an error event was sent */
    bool ended;   /* [DONE] is in out */
    /* An event could not be built or kept (out of memory), or the job's
     * text lost a piece: the stream is cut (MHD ends the connection with an
     * error, the chunked body unterminated), never sent with a gap. */
    bool broken;
    bool ollama; /* NDJSON lines in Ollama's shapes (om) instead of SSE events */
    ollama_meta om;
};

static void put_event(stream *st, char *ev) {
    if (!ev || lv_buf_puts(&st->out, ev) != LV_OK) st->broken = true;
    free(ev);
}

/* A content event for job k with text (and the tokens recorded since the last one). */
static void put_delta(stream *st, int k, const char *text, size_t len) {
    sched_job *j = st->g.jobs[k];
    oai_token_logprob *lp = NULL;
    char *texts = NULL;
    int n_lp = 0;
    if (st->g.r->logprobs) {
        int n = 0;
        sample_result *toks = jobs_new_tokens(j, &st->cursor[k], &n);
        lp = jobs_logprobs(st->ctx, toks, 0, n, SIZE_MAX, &texts, &n_lp);
        free(toks);
    }
    if (st->ollama)
        put_event(st, ollama_chunk(&st->om, text, len));
    else if (st->chat)
        put_event(st, oai_chat_chunk_delta(&st->meta, k, text, len, lp, lp ? n_lp : 0));
    else
        put_event(st, oai_completion_chunk_lp(&st->meta, k, text, len, lp, lp ? n_lp : 0, NULL));
    free(lp);
    free(texts);
}

/* New text of job k: a content event, unless it may be a tool call (held). */
static void put_text(stream *st, int k, const char *text, size_t len) {
    if (!len) return;
    if (!st->tools || st->open[k]) {
        put_delta(st, k, text, len);
        return;
    }
    lv_buf *h = &st->held[k];
    if (lv_buf_append(h, text, len) != LV_OK) {
        st->broken = true;
        return;
    }
    if (tools_may_be_call(h->data, h->len)) return;
    st->open[k] = true;
    if (h->len) put_delta(st, k, h->data, h->len);
    lv_buf_free(h);
}

/* Job k is done: its finish event, or an error event that ends the stream. */
static void put_finish(stream *st, int k) {
    sched_job *j = st->g.jobs[k];
    st->finished[k] = true;
    st->n_finished++;
    jobs_note(st->ctx, j);
    if (j->st) {
        oai_error e;
        jobs_error(st->ctx, j, &e);
        put_event(st, st->ollama ? ollama_error_line(&e) : oai_sse_error(&e));
        st->failed = true;
        return;
    }
    if (st->tools && !st->open[k]) { /* held to the end: calls, or content after all */
        oai_tool_call *calls = NULL;
        int n = 0;
        bool is_call = tools_parse_output(st->g.r, j->result.text, j->result.text_len, &calls, &n);
        if (is_call) {
            put_event(st, st->ollama ? ollama_tool_calls_line(&st->om, calls, n)
                                     : oai_chat_chunk_tool_calls(&st->meta, k, calls, n));
            tools_free_calls(calls, n);
            lv_buf_free(&st->held[k]);
            if (!st->ollama) put_event(st, oai_chat_chunk_finish(&st->meta, k, "tool_calls"));
            return;
        }
        if (st->held[k].len) put_delta(st, k, st->held[k].data, st->held[k].len);
        lv_buf_free(&st->held[k]);
    }
    if (st->ollama) return; /* its last line says why it finished (put_end) */
    put_event(st, st->chat ? oai_chat_chunk_finish(&st->meta, k, j->result.finish_reason)
                           : oai_completion_chunk(&st->meta, k, "", 0, j->result.finish_reason));
}

/* The events that close the stream: usage, [DONE]; Ollama's last line. */
static void put_end(stream *st) {
    st->ended = true;
    if (st->ollama) {
        if (!st->failed) put_event(st, ollama_done_line(&st->om, &st->g));
        return;
    }
    if (!st->failed && st->meta.include_usage) {
        oai_usage u;
        oai_timings t;
        jobs_usage(&st->g, &u, &t);
        put_event(st, st->chat ? oai_chat_chunk_usage(&st->meta, &u, &t)
                               : oai_completion_chunk_usage(&st->meta, &u, &t));
    }
    if (lv_buf_puts(&st->out, oai_sse_done()) != LV_OK) st->broken = true;
}

/* One pass over the jobs: text taken, finished ones closed. With one job it
 * waits up to 500 ms for text; with several, each is polled and the pass
 * waits on one of them only when none had anything. */
static void stream_pass(stream *st) {
    int n = st->g.n_jobs;
    bool any = false;
    for (int step = 0; step < n && !st->failed; step++) {
        int k = (st->next + step) % n;
        if (st->finished[k]) continue;
        lv_buf text = {0};
        bool done = sched_job_take(st->g.jobs[k], &text, n == 1 ? 500 : 0);
        if (sched_job_text_lost(st->g.jobs[k])) st->broken = true;
        put_text(st, k, text.data, text.len);
        any |= text.len > 0 || done;
        lv_buf_free(&text);
        if (done) put_finish(st, k);
    }
    st->next = (st->next + 1) % n;
    if (!any && n > 1 && !st->failed) { /* nothing anywhere: wait on the first unfinished job */
        for (int k = 0; k < n; k++)
            if (!st->finished[k]) {
                lv_buf text = {0};
                bool done = sched_job_take(st->g.jobs[k], &text, 50);
                if (sched_job_text_lost(st->g.jobs[k])) st->broken = true;
                put_text(st, k, text.data, text.len);
                lv_buf_free(&text);
                if (done) put_finish(st, k);
                break;
            }
    }
    if (st->failed || st->n_finished == n) put_end(st);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream *st = cls;
    (void)pos;
    while (st->off == st->out.len) {
        if (st->broken) {
            LV_WARN("[%s] out of memory while streaming: connection cut",
                    st->g.n_jobs ? st->g.jobs[0]->rid : st->id);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (st->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        st->out.len = st->off = 0;
        stream_pass(st);
    }
    if (st->broken) return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t n = st->out.len - st->off < max ? st->out.len - st->off : max;
    memcpy(buf, st->out.data + st->off, n);
    st->off += n;
    return (ssize_t)n;
}

/* MHD is done with the stream: finished, or the client went away. */
static void stream_free(void *cls) {
    stream *st = cls;
    if (!st->ended && st->g.n_jobs)
        LV_INFO("[%s] client disconnected; cancelling", st->g.jobs[0]->rid);
    jobs_release(&st->g); /* cancels: the scheduler frees the sequences at its next step */
    for (int k = 0; st->held && k < st->n_jobs; k++) lv_buf_free(&st->held[k]);
    free(st->held);
    free(st->open);
    free(st->cursor);
    free(st->finished);
    lv_buf_free(&st->out);
    free(st);
}

stream *stream_new(const jobs_ctx *ctx, job_group *g, const ollama_meta *om) {
    stream *st = calloc(1, sizeof *st);
    if (st) {
        st->cursor = calloc((size_t)g->n_jobs, sizeof *st->cursor);
        st->finished = calloc((size_t)g->n_jobs, sizeof *st->finished);
        st->held = calloc((size_t)g->n_jobs, sizeof *st->held);
        st->open = calloc((size_t)g->n_jobs, sizeof *st->open);
        st->n_jobs = g->n_jobs;
    }
    if (!st || !st->cursor || !st->finished || !st->held || !st->open) {
        if (st) free(st->cursor), free(st->finished), free(st->held), free(st->open);
        free(st);
        jobs_release(g);
        return NULL;
    }
    st->ctx = ctx;
    st->g = *g;
    memset(g, 0, sizeof *g);
    st->chat = st->g.r->kind == OAI_CHAT;
    st->tools = st->chat && tools_active(st->g.r);
    oai_make_id(st->id, sizeof st->id, st->chat ? "chatcmpl-" : "cmpl-");
    st->meta = (oai_meta){st->id, (int64_t)time(NULL), ctx->model_name, st->g.r->include_usage};
    if (om) {
        st->ollama = true;
        st->om = *om;
        return st;
    }
    if (st->chat)
        for (int k = 0; k < st->g.n_jobs; k++) put_event(st, oai_chat_chunk_role(&st->meta, k));
    return st;
}

struct MHD_Response *stream_response(stream *st) {
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, st, stream_free);
    if (!resp) {
        stream_free(st);
        return NULL;
    }
    MHD_add_response_header(resp, "Content-Type",
                            st->ollama ? "application/x-ndjson" : "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    return resp;
}
