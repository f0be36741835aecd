/* projector.c - see projector.h. */
#include "model/projector.h"

#include <string.h>

lv_status projector_init(projector *p, be *b, const lv_model_config *cfg,
                         const projector_weights *w, lv_err *err) {
    memset(p, 0, sizeof *p);
    if (strcmp(cfg->projector_hidden_act, "gelu") != 0)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "projector_hidden_act \"%s\" is not supported (only \"gelu\")",
                       cfg->projector_hidden_act);
    *p = (projector){.b = b, .w = w, .in_dim = cfg->vision.dim, .out_dim = cfg->text.dim};
    return LV_OK;
}

void projector_forward(const projector *p, float *y, const float *x, float *tmp, int n) {
    be *b = p->b;
    /* linear_1 */
    b->ops->matmul(b, tmp, x, &p->w->w1, p->w->b1, n);
    /* act: exact GELU, 0.5·x·(1 + erf(x/√2)) */
    b->ops->gelu(b, tmp, (size_t)n * p->out_dim);
    /* linear_2 */
    b->ops->matmul(b, y, tmp, &p->w->w2, p->w->b2, n);
}
