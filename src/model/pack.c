/* pack.c - see pack.h. */
#include "model/pack.h"

#include "image/anyres.h"

/* The kept window of the stitched grid: rows [*top, *top + *rows), columns
 * [*left, *left + *cols). unpad_image cuts (cur - new) // 2 from both ends. */
static void unpadded_window(const pack_geom *g, int *top, int *rows, int *left, int *cols) {
    int cur_h = g->grid_h * g->side, cur_w = g->grid_w * g->side;
    img_anyres_unpad(g->image_h, g->image_w, cur_h, cur_w, rows, cols);
    *top = (cur_h - *rows) / 2;
    *left = (cur_w - *cols) / 2;
}

int pack_next_count(const pack_geom *g) {
    if (g->n_tiles < 1 || g->side < 1 || g->dim < 1 || g->first < 0 ||
        g->stride - g->first != g->side * g->side || g->image_h < 1 || g->image_w < 1)
        return -1;
    int base = g->side * g->side;
    if (g->n_tiles == 1) return base + 1;
    if (g->grid_h < 1 || g->grid_w < 1 || g->n_tiles != 1 + g->grid_h * g->grid_w) return -1;
    int top, rows, left, cols;
    unpadded_window(g, &top, &rows, &left, &cols);
    return base + rows * (cols + 1);
}

/* The feature row of patch `row` (CLS not counted) of tile t. */
static int at(const pack_geom *g, int t, int row) {
    return t * g->stride + g->first + row;
}

void pack_next_map(const pack_geom *g, int *src) {
    /* base_image_feature = image_feature[0], first */
    for (int i = 0; i < g->side * g->side; i++) *src++ = at(g, 0, i);
    if (g->n_tiles == 1) {
        *src = -1; /* cat(image_feature, image_newline[None]) */
        return;
    }
    int top, rows, left, cols;
    unpadded_window(g, &top, &rows, &left, &cols);
    for (int r = top; r < top + rows; r++) {
        int ty = r / g->side, py = r % g->side;
        for (int c = left; c < left + cols; c++) {
            int tx = c / g->side, px = c % g->side;
            *src++ = at(g, 1 + ty * g->grid_w + tx, py * g->side + px);
        }
        *src++ = -1; /* image_newline closes every kept row */
    }
}

int pack_flat_count(const pack_geom *g) {
    return g->n_tiles * (g->stride - g->first);
}

void pack_flat_map(const pack_geom *g, int *src) {
    int per = g->stride - g->first;
    for (int t = 0; t < g->n_tiles; t++)
        for (int i = 0; i < per; i++) *src++ = at(g, t, i);
}
