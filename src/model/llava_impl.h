/*
 * llava_impl.h - the struct behind the opaque llava handle, for model/'s
 * own files and white-box tests only (tests/test_layers.c keeps every
 * other layer out of it). Callers use model/llava.h.
 */
#ifndef LV_MODEL_LLAVA_IMPL_H
#define LV_MODEL_LLAVA_IMPL_H

#include "backend/backend.h"
#include "io/model_dir.h"
#include "model/clip.h"
#include "model/llava.h"
#include "model/llm.h"
#include "model/projector.h"
#include "model/weights.h"

struct llava {
    lv_model_dir md;       /* configs; md.weights once loaded */
    tok *tok;              /* tokenizer, BOS/EOS as tokenizer_config.json says */
    img_proc_params image; /* the image processor's parameters (preprocessor_config) */
    bool next;             /* llava_next packing (anyres + image_newline); else llava-1.5 */
    bool full_features;    /* vision_feature_select_strategy "full": CLS kept */
    bool loaded;           /* llava_load succeeded */
    bool exact;            /* llava_set_exact */
    be backend;            /* the backend instance the weights live on */
    char device[32];       /* the name given to llava_load ("cuda:1"); "" before */
    clip_weights vision_w;
    projector_weights proj_w;
    llm_weights text_w;
    clip vision;
    projector proj;
    llm text;
    float *image_newline; /* backend vector (text dim); llava_next only */
};

struct llava_seq {
    llm_seq kv;
};

struct llava_batch {
    llava *m;
    llm_batch bt;
    llm_seq **seqs; /* (max_seqs) the forward's sequences */
    int *n_tok;     /* (max_seqs) their rows */
};

struct llava_features {
    llava *m;
    int n_rows;
    float *rows; /* backend (n_rows, text dim) */
};

#endif
