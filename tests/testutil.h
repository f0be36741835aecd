/* testutil.h - helpers shared by the test programs (linked into each). */
#ifndef LV_TESTUTIL_H
#define LV_TESTUTIL_H

#include <stddef.h>

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

#endif
