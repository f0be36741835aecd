/*
 * media.h - the bytes behind an OpenAI image_url, under a policy.
 *
 * Schemes:
 *   data:image/<any>;base64,<text>  decoded here (base/base64.h); the decoded
 *                                   size is checked against max_bytes before
 *                                   anything is allocated
 *   file:///abs/path                only when allowed_local_dir is set and the
 *                                   file's realpath (symlinks and ".." resolved)
 *                                   lies below that directory's realpath
 *   http://, https://               through libcurl when allow_remote: timeout,
 *                                   size cap while streaming, http/https only (also
 *                                   on redirects), at most 3 redirects, proxies
 *                                   ignored, and every address actually connected
 *                                   to is checked (media_addr_blocked) unless
 *                                   allow_private_addresses, so DNS rebinding and
 *                                   redirects to internal hosts are refused
 * Anything else is refused. The image format is not checked here: the
 * decoder detects it from the bytes.
 *
 * Thread safety: media_fetch may be called from any number of threads at once.
 */
#ifndef LV_MEDIA_H
#define LV_MEDIA_H

#include "base/common.h"

#include <stdbool.h>

#define MEDIA_DEFAULT_MAX_BYTES (20u * 1000u * 1000u) /* = IMG_DEFAULT_MAX_ENCODED_BYTES */
#define MEDIA_DEFAULT_TIMEOUT_S 10
#define MEDIA_MAX_REDIRECTS     3

typedef struct {
    size_t max_bytes;              /* cap on the fetched/decoded bytes */
    const char *allowed_local_dir; /* file:// allowed below this directory; NULL = refused */
    bool allow_remote;             /* http(s):// allowed at all */
    bool allow_private_addresses;  /* http(s) may reach loopback/private/link-local/... */
    long timeout_s;                /* whole-transfer timeout for http(s), seconds (> 0) */
    bool video;                    /* the URL is a video: a data: URI may also be video (any video
                                      media type, or application/octet-stream) */
} media_policy;

/* The defaults: 20 MB, no file://, remote allowed, private addresses refused, 10 s. */
void media_policy_default(media_policy *pol);

/* Fetches url's bytes into a new heap buffer (caller frees *data; never NULL
 * on success). pol NULL means media_policy_default. Errors:
 *   LV_ERR_ARG     unsupported or missing scheme, non-image or non-base64
 *                  data: URI, file:// disabled or outside the allowed
 *                  directory, remote disabled, private address refused,
 *                  over max_bytes (a client mistake: HTTP 400)
 *   LV_ERR_FORMAT  malformed data: URI or base64 (offset and reason)
 *   LV_ERR_IO      file not found / unreadable; network failure, timeout,
 *                  non-2xx HTTP status
 *   LV_ERR_NOMEM
 * Messages name the URL (shortened: data: URIs are never echoed whole). */
lv_status media_fetch(const char *url, const media_policy *pol, uint8_t **data, size_t *len,
                      lv_err *err);

/* True if an address must not be reached without allow_private_addresses.
 * family is AF_INET (addr: struct in_addr *) or AF_INET6 (struct in6_addr *);
 * any other family is blocked. IPv4: 0/8, 10/8, 100.64/10, 127/8, 169.254/16,
 * 172.16/12, 192.0.0/24, 192.0.2/24, 192.168/16, 198.18/15, 198.51.100/24,
 * 203.0.113/24, 224/4 (multicast), 240/4 and 255.255.255.255. IPv6: ::, ::1,
 * fc00::/7, fe80::/10, fec0::/10, ff00::/8, 2001:db8::/32, 100::/64, 2001::/32
 * (Teredo), and the
 * IPv4 inside ::ffff:0:0/96 (mapped), ::/96 (compatible), 64:ff9b::/96
 * (NAT64) and 2002::/16 (6to4), judged by the IPv4 rules. Pure function. */
bool media_addr_blocked(int family, const void *addr);

#endif
