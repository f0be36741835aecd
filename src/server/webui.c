/*
 * webui.c - the embedded web page's files by URL path (webui.h).
 *
 * The table itself is generated from web/ at build time; this file only
 * looks a path up in it, names the content type from the file's extension
 * and holds the headers. Cache-Control "no-cache" with the ETag: a browser
 * keeps the files but asks each time, and gets 304 until the server is
 * rebuilt with a changed page, so an upgrade never runs an old app.js
 * against a new index.html.
 */
#include "server/webui.h"

#include <string.h>

/* Scripts, styles and fetches from this origin only, no inline script;
 * images also from data: and blob: (the attached pictures). */
#define CSP                                                                                        \
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "        \
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "                 \
    "frame-ancestors 'none'"

const char *const webui_headers[][2] = {
    {"Content-Security-Policy", CSP},   {"X-Content-Type-Options", "nosniff"},
    {"Referrer-Policy", "no-referrer"}, {"X-Frame-Options", "DENY"},
    {"Cache-Control", "no-cache"},      {NULL, NULL},
};

/* The Content-Type of a web/ file, by its extension. */
static const char *type_of(const char *name) {
    static const char *const types[][2] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(dot, types[i][0])) return types[i][1];
    return "application/octet-stream";
}

bool webui_find(const char *path, webui_asset *out) {
    for (size_t i = 0; i < webui_n_files; i++) {
        const webui_embedded *f = &webui_files[i];
        if (strcmp(f->path, path)) continue;
        *out = (webui_asset){f->data, f->len, type_of(f->name), f->etag};
        return true;
    }
    return false;
}
