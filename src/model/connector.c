/* connector.c - see connector.h. */
#include "model/connector.h"

#include <string.h>

lv_status connector_init(connector *cn, be *b, const lv_model_config *cfg,
                         const connector_weights *w, lv_err *err) {
    memset(cn, 0, sizeof *cn);
    const lv_vision_config *v = &cfg->vision;
    int side = v->patch_size > 0 ? v->image_size / v->patch_size : 0, s = cfg->scale_factor;
    if (s < 1 || side < s || side % s)
        return lv_fail(err, LV_ERR_FORMAT,
                       "config.json: scale_factor %d does not divide the %d patches per side", s,
                       side);
    *cn = (connector){.b = b,
                      .w = w,
                      .side = side,
                      .scale = s,
                      .grid = side / s,
                      .in_dim = v->dim,
                      .out_dim = cfg->text.dim};
    return LV_OK;
}

/* Idefics3Connector.pixel_shuffle (modeling_idefics3.py): x.view(B, Q, Q, D)
 * → view(B, Q, Q/s, D·s) → permute(0, 2, 1, 3) → reshape(B, Q/s, Q/s, D·s²)
 * → permute(0, 2, 1, 3) → reshape(B, Q²/s², D·s²), which is the closed form
 * of connector.h (tests/test_smolvlm.c checks it against these steps). */
void connector_shuffle(const connector *cn, float *tmp, const float *x, int band0, int n_bands) {
    be *b = cn->b;
    int Q = cn->side, s = cn->scale, G = cn->grid;
    size_t D = (size_t)cn->in_dim, run = (size_t)s * D, row = run * s;
    for (int i2 = band0; i2 < band0 + n_bands; i2++)
        for (int j2 = 0; j2 < G; j2++) {
            float *out = tmp + ((size_t)(i2 - band0) * G + j2) * row;
            for (int dh = 0; dh < s; dh++) {
                size_t src = ((size_t)(i2 * s + dh) * Q + (size_t)j2 * s) * D;
                b->ops->copy(b, out + (size_t)dh * run, x + src, run * sizeof *x);
            }
        }
}

void connector_bands(const connector *cn, float *y, const float *x, float *tmp, int band0,
                     int n_bands) {
    if (n_bands < 1) return;
    connector_shuffle(cn, tmp, x, band0, n_bands);
    /* modality_projection.proj: no bias, no activation */
    cn->b->ops->matmul(cn->b, y, tmp, &cn->w->proj, NULL, n_bands * cn->grid);
}
