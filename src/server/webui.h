/*
 * webui.h - the web chat page llava-server serves at "/": plain HTML, CSS
 * and JavaScript from web/, embedded into the binary at build time
 * (cmake/embed_web.cmake writes the table below), so the server needs no
 * files beside it and the page works offline. The page talks to the same
 * server's /v1/models and /v1/chat/completions like any other client,
 * sending the API key the user typed; loading it needs no key.
 *
 * http.c routes the paths (GET and HEAD) here and adds webui_headers to
 * every answer: the Content-Security-Policy allows scripts, styles and
 * fetches from this origin only (no inline script: a reply the page renders
 * can never run code) and images from here, data: and blob: (the attached
 * pictures).
 */
#ifndef LV_SERVER_WEBUI_H
#define LV_SERVER_WEBUI_H

#include <stdbool.h>
#include <stddef.h>

/* One embedded file, as the build wrote it. */
typedef struct {
    const char *path;          /* URL path: "/" for index.html, else "/webui/<name>" */
    const char *name;          /* its name in web/, which gives the content type */
    const unsigned char *data; /* (len) the file's bytes */
    size_t len;
    const char *etag; /* quoted start of its SHA-256 */
} webui_embedded;

extern const webui_embedded webui_files[]; /* generated: build/generated/webui_files.c */
extern const size_t webui_n_files;

/* What to answer for one path. data is static: never freed. */
typedef struct {
    const unsigned char *data;
    size_t len;
    const char *type; /* Content-Type */
    const char *etag;
} webui_asset;

/* The file served at path (exact match, no query string): true and *out;
 * false when the page has no such file. */
bool webui_find(const char *path, webui_asset *out);

/* Headers every answer of the page carries, {name, value} rows ending with
 * {NULL, NULL}: the CSP, nosniff, no referrer, no framing, revalidate. */
extern const char *const webui_headers[][2];

#endif
