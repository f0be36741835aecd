/*
 * image_memo.h - the tensors of images sent recently, kept by the server:
 * OpenAI clients resend a conversation's whole history, its image
 * included, with every turn, and decoding and resizing the same bytes again
 * costs milliseconds a turn (a 672x672 PNG, about ten). An entry is the
 * image's encoded bytes (a copy: a match is memcmp-equal, never a hash
 * collision), the preprocessing options it was made with, the tensor and
 * its pc_image_key (what the scheduler's caches match it by, hashed once);
 * a hit hands out a copy of the tensor and the key. Least recently used entries go
 * when the budget is passed; an image larger than the budget is never kept.
 * Thread-safe: every connection thread calls it.
 */
#ifndef LV_SERVER_IMAGE_MEMO_H
#define LV_SERVER_IMAGE_MEMO_H

#include "base/common.h"
#include "image/image.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct image_memo image_memo;

/* An empty memo of at most budget bytes (0: it keeps nothing). NULL when
 * out of memory. */
image_memo *image_memo_new(size_t budget);
void image_memo_free(image_memo *m); /* NULL: no-op */

/* The tensor made from these bytes with these options, copied into *out
 * (caller frees with img_tensor_free) with its feature count and key: true;
 * false when it is not kept (or no memory for the copy). */
bool image_memo_get(image_memo *m, const uint8_t *bytes, size_t len, const img_options *opt,
                    img_tensor *out, int *n_tokens, uint64_t *key);

/* Keeps a copy of t (made from bytes with opt; key its pc_image_key), evicting the least recently
 * used entries to stay within the budget; best effort (nothing kept when it
 * cannot fit or memory runs out). */
void image_memo_put(image_memo *m, const uint8_t *bytes, size_t len, const img_options *opt,
                    const img_tensor *t, int n_tokens, uint64_t key);

/* Bytes held now, and entries. */
size_t image_memo_bytes(image_memo *m);
int image_memo_count(image_memo *m);

/* Frees every entry (memory is short). */
void image_memo_clear(image_memo *m);

#endif
