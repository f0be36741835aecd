/*
 * pack.h - image features in the order they replace the <image> ids.
 *
 * LLaVA-NeXT ("spatial_unpad" with image_newline; transformers
 * models/llava_next/modeling_llava_next.py pack_image_features, spec
 * llava-next.md §5), for one image of P tiles [base, grid tiles row-major]:
 *   1. the base tile's side² features, raster order;
 *   2. the grid tiles stitched into one (grid_h·side) x (grid_w·side) map,
 *      tile (ty, tx) patch (py, px) at [ty·side + py][tx·side + px];
 *   3. that map unpadded: the rows (or columns) that only cover the
 *      processor's padding are cut symmetrically (img_anyres_unpad, the same
 *      rule the processor used to count the tokens);
 *   4. each kept row followed by image_newline.
 * A single tile (P = 1) gives base + one image_newline.
 * LLaVA-1.5 (LlavaForConditionalGeneration): the features of every tile,
 * flattened.
 *
 * Pure host functions over float arrays; no backend. The projector is
 * token-wise, so packing after it (as transformers does) or before it gives
 * the same rows.
 */
#ifndef LV_MODEL_PACK_H
#define LV_MODEL_PACK_H

typedef struct {
    int n_tiles;          /* tiles of this image: base first, then the grid row-major */
    int stride;           /* rows per tile in the features (the tower's n_pos, CLS included) */
    int first;            /* first row of a tile that is a feature: 1 drops CLS, 0 keeps it */
    int side;             /* patches per tile side */
    int dim;              /* feature width */
    int image_h, image_w; /* the image size the processor saw (image_sizes) */
    int grid_h, grid_w;   /* anyres grid in tiles; unused by pack_flat */
} pack_geom;

/* Rows pack_next writes, or -1 if g is inconsistent (n_tiles != 1 + grid_h·grid_w
 * with n_tiles > 1, stride - first != side², sizes < 1). */
int pack_next_count(const pack_geom *g);

/* LLaVA-NeXT packing of features (n_tiles · stride, dim) into out
 * (pack_next_count(g), dim); newline is image_newline (dim). */
void pack_next(const pack_geom *g, const float *features, const float *newline, float *out);

/* Rows pack_flat writes: n_tiles · (stride - first). */
int pack_flat_count(const pack_geom *g);

/* LLaVA-1.5: the features of each tile from row `first` on, tile after tile. */
void pack_flat(const pack_geom *g, const float *features, float *out);

#endif
