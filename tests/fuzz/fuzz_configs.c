/* fuzz_configs.c - libFuzzer target: any bytes as one of the JSON files a
 * model directory or the server reads. The first byte picks the reader:
 * config.json, preprocessor_config.json, tokenizer_config.json,
 * generation_config.json, or llava-server's --config file (the seed's
 * keys); the rest is the file. Each parses or refuses with a message. */
#include "base/log.h"
#include "io/hf_config.h"
#include "server/config.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    lv_log_set_level(LV_LOG_ERROR); /* the seed config logs a line per key */
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    lv_err err = {{0}};
    lv_status st;
    switch (data[0] % 5) {
        case 0: {
            lv_model_config cfg;
            st = hf_config_parse(text, len, "config.json", &cfg, &err);
            break;
        }
        case 1: {
            lv_preproc_config pp;
            st = hf_preproc_parse(text, len, "preprocessor_config.json", LV_IMGPROC_LLAVA_NEXT, &pp,
                                  &err);
            break;
        }
        case 2: {
            lv_tokenizer_config tc;
            st = hf_tokcfg_parse(text, len, "tokenizer_config.json", &tc, &err);
            if (st == LV_OK) hf_tokcfg_deinit(&tc);
            break;
        }
        case 3: {
            lv_generation_config gc;
            st = hf_gencfg_parse(text, len, "generation_config.json", &gc, &err);
            break;
        }
        default: {
            srv_config c;
            st = srv_config_parse(text, len, "config", &c, &err);
            srv_config_free(&c);
            break;
        }
    }
    if (st != LV_OK && !err.msg[0]) abort();
    return 0;
}
