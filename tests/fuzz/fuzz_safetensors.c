/* fuzz_safetensors.c - libFuzzer target: any bytes as a .safetensors file
 * must open or fail cleanly through the public reader (st_open maps a file,
 * so each input is written to a per-process scratch file first). */
#include "io/safetensors.h"

#include <stdio.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/fuzz_safetensors.%ld.safetensors", (long)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    st_set *s = NULL;
    if (st_open(path, &s, NULL) == LV_OK) {
        for (size_t i = 0; i < st_count(s); i++) (void)st_find(s, st_at(s, i)->name);
        st_close(s);
    }
    unlink(path);
    return 0;
}
