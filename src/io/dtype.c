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

static const struct {
    const char *name;
    int ggml, elems, bytes;
} blocks[LV_DTYPE_ALL_COUNT - LV_DTYPE_COUNT] = {
#define LV_DTYPE_BLOCK_ROW(name, str, ggml, elems, bytes)                                          \
    [name - LV_DTYPE_COUNT] = {str, ggml, elems, bytes},
    LV_DTYPE_BLOCK_MAP(LV_DTYPE_BLOCK_ROW)
#undef LV_DTYPE_BLOCK_ROW
};

const char *dtype_name(lv_dtype dt) {
    if ((unsigned)dt >= LV_DTYPE_ALL_COUNT) return "?";
    if ((unsigned)dt >= LV_DTYPE_COUNT) return blocks[dt - LV_DTYPE_COUNT].name;
    return dtypes[dt].name;
}

bool dtype_block(lv_dtype dt, int *elems, int *bytes) {
    if ((unsigned)dt >= LV_DTYPE_COUNT && (unsigned)dt < LV_DTYPE_ALL_COUNT) {
        *elems = blocks[dt - LV_DTYPE_COUNT].elems;
        *bytes = blocks[dt - LV_DTYPE_COUNT].bytes;
        return true;
    }
    *elems = 1;
    *bytes = (int)dtype_size(dt);
    return false;
}

int dtype_ggml_id(lv_dtype dt) {
    if ((unsigned)dt < LV_DTYPE_COUNT || (unsigned)dt >= LV_DTYPE_ALL_COUNT) return -1;
    return blocks[dt - LV_DTYPE_COUNT].ggml;
}

size_t dtype_row_bytes(lv_dtype dt, int64_t n) {
    int elems, bytes;
    dtype_block(dt, &elems, &bytes);
    if (bytes == 0 || n < 0 || n % elems) return 0;
    return (size_t)(n / elems) * (size_t)bytes;
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
