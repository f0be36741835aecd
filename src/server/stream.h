/*
 * stream.h - a request's answer as a server-sent event stream (private to
 * server/: http.c uses it).
 *
 * The response body is produced by MHD's content reader on the
 * connection's thread: each read takes the text the scheduler has produced
 * for the group's jobs since the last one and turns it into
 * chat.completion.chunk or text_completion events (with logprobs when
 * asked), interleaving the choices; a job's end is its finish event, or an
 * error event that ends the stream; then the usage chunk (include_usage)
 * and [DONE]. A client that goes away cancels every job of the group.
 * Ollama's requests get the same stream as NDJSON lines in its shapes
 * (server/ollama.h).
 */
#ifndef LV_SERVER_STREAM_H
#define LV_SERVER_STREAM_H

#include "server/jobs.h"
#include "server/ollama.h"

struct MHD_Response;

typedef struct stream stream;

/* A stream of g's jobs (g is taken: zeroed here, released with the
 * stream), the chat role events already queued; with om (copied), Ollama's
 * NDJSON lines instead of SSE events. ctx must outlive it. NULL when out of
 * memory (g released). */
stream *stream_new(const jobs_ctx *ctx, job_group *g, const ollama_meta *om);

/* The MHD response that sends st (taken: MHD frees it when the response is
 * done or the client is gone), with its Content-Type (SSE or NDJSON) and Cache-Control
 * headers; the caller adds the rest and queues it with status 200. NULL
 * when MHD cannot make one (st freed). */
struct MHD_Response *stream_response(stream *st);

#endif
