/* replay_selftest.c - a stand-in fuzz target for tests/fuzz/test_replay.c:
 * it fails on purpose on chosen inputs, so the test can show that
 * fuzz_replay fails on a crashing input and names it. Never fuzzed (no
 * fuzz_ prefix, so make fuzz does not build it).
 *
 *   "crash..."  abort(), as a sanitizer report with abort_on_error does
 *   "exit..."   exit(1), as a sanitizer report without it does
 *   "leak..."   leaks 64 bytes (LeakSanitizer's report fails it under ASan)
 *   anything else returns 0 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size >= 5 && !memcmp(data, "crash", 5)) abort();
    if (size >= 4 && !memcmp(data, "exit", 4)) exit(1);
    if (size >= 4 && !memcmp(data, "leak", 4)) {
        void *volatile lost = malloc(64);
        (void)lost;
    }
    return 0;
}
