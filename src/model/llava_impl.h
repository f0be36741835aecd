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
#include "model/connector.h"
#include "model/llava.h"
#include "model/llm.h"
#include "model/projector.h"
#include "model/weights.h"

/* One matrix type's share of a part's parameters (llava_info.weights). */
typedef struct {
    int dtype, bits, group; /* be_dtype; MLX bits and group (0 otherwise) */
    int64_t params;
} llava_type_share;

#define LLAVA_TYPES 8 /* distinct matrix types counted per part */

/* What llava_load counts for llava_set_progress and llava_get_info. */
typedef struct {
    llava_progress_fn fn;
    void *ud;
    double t0_ms;                           /* when llava_load began */
    llava_load_progress p;                  /* the figures reported */
    int part;                               /* the part loading: 0 vision, 1 projector, 2 text */
    int64_t params[3];                      /* values per part */
    llava_type_share types[3][LLAVA_TYPES]; /* matrix types per part */
} llava_load_stats;

struct llava {
    lv_model_dir md;       /* configs; md.weights once loaded */
    tok *tok;              /* tokenizer, BOS/EOS as tokenizer_config.json says */
    img_proc_params image; /* the image processor's parameters (preprocessor_config) */
    bool next;             /* llava_next packing (anyres + image_newline); else llava-1.5 */
    bool full_features;    /* vision_feature_select_strategy "full": CLS kept */
    bool idefics3;         /* Idefics3 / SmolVLM: SigLIP frames → connector, no packing */
    bool loaded;           /* llava_load succeeded */
    bool exact;            /* llava_set_exact */
    int tp;                /* llava_set_tensor_parallel: ranks (0: none) */
    bool tp_whole_tower;   /* llava_set_tensor_parallel: the tower replicated */
    be backend;            /* the backend instance the weights live on */
    char device[32];       /* the name given to llava_load ("cuda:1"); "" before */
    clip_weights vision_w;
    projector_weights proj_w; /* LLaVA */
    connector_weights conn_w; /* Idefics3 / SmolVLM */
    llm_weights text_w;
    clip vision;
    projector proj;
    connector conn;
    llm text;
    float *image_newline; /* backend vector (text dim); llava_next only */
    llava_load_stats ls;  /* progress and the summary's counts (llava_info.c) */
};

/* llava_info.c, for llava_load: a load begins (counts reset), its files are
 * mapped, a part begins (0 vision, 1 projector, 2 text), it ends. The
 * weights_progress llava_load hands the part loaders (ud: the model). */
void llava_load_begin(llava *m);
void llava_load_mapped(llava *m, const st_set *st);
void llava_load_part(llava *m, int part);
void llava_load_end(llava *m);
weights_progress llava_load_hook(llava *m);

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
