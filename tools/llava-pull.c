/*
 * llava-pull - download a model from a Hugging Face hub into the local
 * cache, as `ollama pull` or llama-server -hf do, and print where it is:
 *
 *   llava-pull ORG/NAME[:QUANT] [--revision R]
 *
 * stdout gets one line, the snapshot directory, which --model takes as a
 * path (--model ORG/NAME finds it in the cache too); stderr gets the
 * progress bar and the log. What is downloaded, where, and how a cut
 * download resumes: io/hf_download.h. A second run asks the hub for the
 * revision's commit and downloads only what changed.
 *
 * Exit status: 0 done, 1 the download failed (the message says why: no
 * such repo, HF_TOKEN needed, network, disk), 2 bad usage.
 */
#include "base/log.h"
#include "io/hf_download.h"
#include "common/tool_args.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: llava-pull ORG/NAME[:QUANT] [--revision R]\n"
               "Downloads a model from a Hugging Face hub into the local cache and prints its\n"
               "snapshot directory. Only the files the model needs come: the configs, tokenizer\n"
               "and *.safetensors, or for a GGUF repo one text model (:QUANT picks it by name,\n"
               "e.g. :Q8_0; default Q4_K_M) and its mmproj. An interrupted download resumes.\n"
               "  --revision R       branch, tag or commit (default main)\n"
               "  --log-level L      error|warn|info|debug (default $LOG_LEVEL or info)\n"
               "  --version          print the version and exit\n"
               "environment:\n"
               "  HF_ENDPOINT        the hub (default https://huggingface.co)\n"
               "  HF_TOKEN           access token, for gated and private repos\n"
               "  HF_HUB_CACHE, HF_HOME\n"
               "                     the cache (default ~/.cache/huggingface/hub)\n"
               "  HF_HUB_OFFLINE=1   refuse to download\n");
}

/* Takes the one argument that is not an option (the repo) out of argv,
 * since tool_parse takes options only. NULL if there is none; "" when
 * there are several (a usage error). */
static const char *take_repo(int *argc, char **argv) {
    const char *repo = NULL;
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *s = argv[i];
        bool takes_value =
            strcmp(s, "--revision") == 0 || strcmp(s, "-r") == 0 || strcmp(s, "--log-level") == 0;
        if (s[0] != '-') {
            repo = repo ? "" : s;
            continue;
        }
        argv[out++] = argv[i];
        if (takes_value && i + 1 < *argc) argv[out++] = argv[++i];
    }
    *argc = out;
    argv[out] = NULL;
    return repo;
}

int main(int argc, char **argv) {
    const char *repo = take_repo(&argc, argv);
    const char *revision = NULL, *level = NULL;
    const tool_opt opts[] = {
        TOOL_STR("revision", 'r', &revision),
        TOOL_STR("log-level", 0, &level),
    };
    static const tool_info tool = {"llava-pull", usage, true};
    int rc = tool_parse(&tool, opts, LV_ARRAY_LEN(opts), argc, argv);
    if (rc) return rc == TOOL_HELP ? 0 : 2;
    if (!tool_log_level("llava-pull", level)) return 2;
    if (!repo || !*repo) {
        fprintf(stderr, "llava-pull: %s (see --help)\n",
                repo ? "one model at a time" : "which model? llava-pull ORG/NAME[:QUANT]");
        return 2;
    }
    hf_model m;
    lv_err err = {{0}};
    if (hf_download(repo, &(hf_dl_opts){.revision = revision}, &m, &err)) {
        fprintf(stderr, "llava-pull: %s\n", err.msg);
        return 1;
    }
    if (m.mmproj) LV_INFO("text model %s, mmproj %s", m.model, m.mmproj);
    printf("%s\n", m.dir);
    hf_model_free(&m);
    return 0;
}
