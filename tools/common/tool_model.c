/* tool_model.c - see tool_model.h. */
#include "tool_model.h"

#include "io/hf_download.h"

#include <stdlib.h>
#include <string.h>

lv_status tool_open_model(const char *model, const char *mmproj, bool offline, llava **m,
                          char **where, lv_err *err) {
    if (where) *where = NULL;
    if (mmproj) { /* a GGUF pair is two files named as given */
        lv_status st = llava_open2(model, mmproj, m, err);
        if (!st && where && !(*where = strdup(model)))
            st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        return st;
    }
    hf_model hm;
    lv_status st = hf_get_model(model, &(hf_dl_opts){.offline = offline}, &hm, err);
    if (!st) st = llava_open2(hm.model, hm.mmproj, m, err);
    if (!st && where) {
        *where = hm.model;
        hm.model = NULL;
    }
    hf_model_free(&hm);
    return st;
}
