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
 * Pure functions giving, for every output row, the feature row it copies:
 * the model applies the map with the backend's buffer copies, so packed
 * features never leave the device. The projector is token-wise, so packing
 * after it (as transformers does) or before it gives the same rows.
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

/* The LLaVA-NeXT packing as a row map: src[i] (pack_next_count(g) entries)
 * is the feature row (in the (n_tiles · stride) features, CLS rows counted)
 * that output row i copies, or -1 for image_newline. */
void pack_next_map(const pack_geom *g, int *src);

/* Rows pack_flat_map gives: n_tiles · (stride - first). */
int pack_flat_count(const pack_geom *g);

/* LLaVA-1.5: the features of each tile from row `first` on, tile after tile. */
void pack_flat_map(const pack_geom *g, int *src);

#endif
