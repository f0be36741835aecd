/* dtype.c - see dtype.h. */
#include "dtype.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[LV_DTYPE_COUNT] = {
#define LV_DTYPE_ROW(name, str, size) [name] = {str, size},
    LV_DTYPE_MAP(LV_DTYPE_ROW)
#undef LV_DTYPE_ROW
};

const char *dtype_name(lv_dtype dt) {
    if ((unsigned)dt >= LV_DTYPE_COUNT) return "?";
    return dtypes[dt].name;
}

bool dtype_from_name(const char *name, lv_dtype *out) {
    for (int i = 0; i < LV_DTYPE_COUNT; i++) {
        if (strcmp(name, dtypes[i].name) == 0) {
            *out = (lv_dtype)i;
            return true;
        }
    }
    return false;
}

size_t dtype_size(lv_dtype dt) {
    if ((unsigned)dt >= LV_DTYPE_COUNT) return 0;
    return dtypes[dt].size;
}
