/* image_params.c - see image_params.h. */
#include "image_params.h"

#include "image/anyres.h"

#include <string.h>

static img_proc_kind kind_of(lv_imgproc_kind k) {
    switch (k) {
        case LV_IMGPROC_CLIP:
            return IMG_PROC_CLIP;
        case LV_IMGPROC_LLAVA:
            return IMG_PROC_LLAVA_PAD;
        case LV_IMGPROC_IDEFICS3:
            return IMG_PROC_IDEFICS3;
        case LV_IMGPROC_LLAVA_NEXT:
        default:
            return IMG_PROC_LLAVA_NEXT;
    }
}

lv_status model_image_params(const lv_model_config *mc, const lv_preproc_config *pp,
                             img_proc_params *p, lv_err *err) {
    memset(p, 0, sizeof *p);
    p->kind = kind_of(pp->kind);
    /* LlavaImageProcessor without do_pad behaves as CLIP's resize + crop. */
    if (p->kind == IMG_PROC_LLAVA_PAD && !pp->do_pad) p->kind = IMG_PROC_CLIP;
    p->do_resize = pp->do_resize;
    p->do_center_crop = pp->do_center_crop;
    p->do_rescale = pp->do_rescale;
    p->do_normalize = pp->do_normalize;
    p->do_pad = pp->do_pad;
    p->shortest_edge = pp->shortest_edge;
    p->size_height = pp->size_height;
    p->size_width = pp->size_width;
    p->crop_height = pp->crop_height;
    p->crop_width = pp->crop_width;
    p->resample = pp->resample;
    p->rescale_factor = pp->rescale_factor;
    for (int c = 0; c < 3; c++) {
        p->mean[c] = pp->image_mean[c];
        p->std[c] = pp->image_std[c];
    }
    p->patch_size = mc->vision.patch_size;

    if (p->kind == IMG_PROC_IDEFICS3) {
        /* SmolVLM / Idefics3: LANCZOS (1) is the class's filter; bicubic
         * (3) works too. The frames are T x T: crop_size carries T for
         * callers that size things generically. */
        p->longest_edge = pp->longest_edge;
        p->max_image_size = pp->max_image_size;
        p->do_image_splitting = pp->do_image_splitting;
        p->crop_height = p->crop_width = pp->max_image_size;
        p->do_center_crop = false;
        if (p->resample != 1 && p->resample != 3)
            return lv_fail(err, LV_ERR_UNSUPPORTED,
                           "preprocessor_config.json: resample %d is not supported (1 LANCZOS or "
                           "3 bicubic)",
                           p->resample);
        if (pp->longest_edge <= 0 || pp->max_image_size <= 0)
            return lv_fail(err, LV_ERR_FORMAT,
                           "preprocessor_config.json: size.longest_edge %d / "
                           "max_image_size.longest_edge %d",
                           pp->longest_edge, pp->max_image_size);
        return img_proc_params_check(p, err);
    }
    if (p->resample != 3)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "preprocessor_config.json: resample %d is not supported (only 3, bicubic)",
                       p->resample);
    if (p->crop_height <= 0 || p->crop_width <= 0)
        return lv_fail(err, LV_ERR_FORMAT, "preprocessor_config.json: crop_size %dx%d",
                       p->crop_height, p->crop_width);
    if (p->kind != IMG_PROC_LLAVA_NEXT) return LV_OK;

    /* anyres candidates: the processor's own list, else the model's */
    int n = pp->n_pinpoints ? pp->n_pinpoints : mc->n_pinpoints;
    const int(*pts)[2] = pp->n_pinpoints ? pp->pinpoints : mc->pinpoints;
    if (n <= 0 || n > IMG_MAX_PINPOINTS)
        return lv_fail(err, n <= 0 ? LV_ERR_FORMAT : LV_ERR_UNSUPPORTED,
                       "image_grid_pinpoints: %d candidates (need 1..%d)", n, IMG_MAX_PINPOINTS);
    for (int i = 0; i < n; i++) {
        if (pts[i][0] <= 0 || pts[i][1] <= 0 || pts[i][0] % p->crop_height ||
            pts[i][1] % p->crop_width)
            return lv_fail(err, LV_ERR_FORMAT,
                           "image_grid_pinpoints[%d] = [%d, %d] is not a multiple of the %dx%d "
                           "tile",
                           i, pts[i][0], pts[i][1], p->crop_height, p->crop_width);
        p->pinpoints[i][0] = pts[i][0];
        p->pinpoints[i][1] = pts[i][1];
    }
    p->n_pinpoints = n;
    return LV_OK;
}
