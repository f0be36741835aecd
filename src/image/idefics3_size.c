/*
 * idefics3_size.c - see idefics3_size.h. Every division is Python's true
 * division in double and int() truncation, as the processor evaluates it
 * (smolvlm.md §3.2: integer arithmetic gives other sizes for some images).
 */
#include "image/idefics3_size.h"

#include <math.h>

/* _resize_output_size_rescale_to_max_len(h, w, min_len=1, max_len) */
static void rescale_to_max_len(int h, int w, int max_len, int *ho, int *wo) {
    double ar = (double)w / h;
    if (w >= h) {
        w = max_len;
        h = (int)(w / ar);
        if (h % 2) h += 1;
    } else {
        h = max_len;
        w = (int)(h * ar);
        if (w % 2) w += 1;
    }
    *ho = h > 1 ? h : 1;
    *wo = w > 1 ? w : 1;
}

/* _resize_output_size_scale_below_upper_bound(h, w, max_len = 4096) */
static void scale_below_upper_bound(int h, int w, int max_len, int *ho, int *wo) {
    double ar = (double)w / h;
    if (w >= h && w > max_len) {
        w = max_len;
        h = (int)(w / ar);
    } else if (h > w && h > max_len) {
        h = max_len;
        w = (int)(h * ar);
    }
    *ho = h > 1 ? h : 1;
    *wo = w > 1 ? w : 1;
}

void img_idefics3_resize_size(int h, int w, int longest_edge, int *h1, int *w1) {
    rescale_to_max_len(h, w, longest_edge, h1, w1);
    scale_below_upper_bound(*h1, *w1, 4096, h1, w1);
}

void img_idefics3_encoder_size(int h1, int w1, int max_image_size, int *h2, int *w2) {
    double ar = (double)w1 / h1, m = max_image_size;
    if (w1 >= h1) {
        int w = (int)(ceil(w1 / m) * m);
        int h = (int)(w / ar);
        *w2 = w;
        *h2 = (int)(ceil(h / m) * m);
    } else {
        int h = (int)(ceil(h1 / m) * m);
        int w = (int)(h * ar);
        *h2 = h;
        *w2 = (int)(ceil(w / m) * m);
    }
}

void img_idefics3_grid(int h, int w, int longest_edge, int max_image_size, bool do_image_splitting,
                       int *rows, int *cols) {
    *rows = *cols = 0;
    if (!do_image_splitting || h < 1 || w < 1 || longest_edge < 1 || max_image_size < 1) return;
    int h1, w1, h2, w2;
    img_idefics3_resize_size(h, w, longest_edge, &h1, &w1);
    img_idefics3_encoder_size(h1, w1, max_image_size, &h2, &w2);
    /* split_image: tiles of max_image_size when either side exceeds it */
    if (h2 > max_image_size || w2 > max_image_size) {
        *rows = (h2 + max_image_size - 1) / max_image_size;
        *cols = (w2 + max_image_size - 1) / max_image_size;
    }
}
