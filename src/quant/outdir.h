/*
 * outdir.h - an output directory that appears whole or not at all.
 *
 * A converter writes into "<out_dir>.tmp-XXXXXX" (next to out_dir, so the
 * final rename stays on one filesystem) and publishes it with one rename
 * at the end. A failure removes the temporary directory; a killed process
 * leaves only it, under a name that says what it is, never a half-written
 * out_dir. With overwrite, an existing out_dir is moved aside first and
 * removed only after the new one is in place, so a failed run keeps it.
 */
#ifndef LV_QUANT_OUTDIR_H
#define LV_QUANT_OUTDIR_H

#include "base/common.h"

#include <stdbool.h>

#define OUTDIR_PATH_MAX 4200

/* Creates the temporary directory for out_dir into tmp (OUTDIR_PATH_MAX
 * bytes). LV_ERR_ARG if out_dir exists and !overwrite; LV_ERR_IO. */
lv_status outdir_begin(const char *out_dir, bool overwrite, char *tmp, lv_err *err);

/* Renames tmp to out_dir (replacing an existing one when overwrite). On
 * failure tmp is left for the caller's outdir_abort. */
lv_status outdir_publish(const char *tmp, const char *out_dir, bool overwrite, lv_err *err);

/* Removes tmp and everything in it (best effort; symlinks are removed, not
 * followed). */
void outdir_abort(const char *tmp);

#endif
