/* testutil.h - helpers shared by the test programs (linked into each). */
#ifndef LV_TESTUTIL_H
#define LV_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* $name, or fails the test with a message saying setup.sh / ctest sets it. */
const char *tu_env(const char *name);

/* A fresh empty directory under $LLAVA_TMP named after tag; returns a static
 * buffer valid until the next call. */
const char *tu_tmpdir(const char *tag);

/* Writes len bytes to dir/name (fails the test on error). */
void tu_write_file(const char *dir, const char *name, const void *data, size_t len);

/* Writes the llava-hf tokenizer.json into dir: the real Mistral-7B
 * tokenizer.json ($LLAVA_MISTRAL_TOKENIZER) with <image>=32000 and
 * <pad>=32001 appended as special added tokens, as llava-hf's converter does. */
void tu_write_llava_tokenizer(const char *dir);

/* Runs a shell command, captures stdout into a heap string (caller frees)
 * and returns the exit status (or -1 if it did not exit normally). */
int tu_run(const char *cmd, char **out);

/* splitmix64: the next value of the sequence whose state is *state (the tests'
 * random inputs; the same seed gives the same numbers everywhere). */
static inline uint64_t tu_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

#endif
