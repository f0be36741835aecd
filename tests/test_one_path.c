/* test_one_path.c - llava-cli and llava-server take one request path: the
 * same question about the same image, asked through the llava-cli binary
 * (--json --logits-out) and through the server's request handling
 * (server/jobs.c: the OpenAI body made into a job, submitted to a running
 * scheduler), gives the same prompt ids, the same generated ids and
 * bit-identical logits at every step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/base64.h"
#include "base/file.h"
#include "base/log.h"
#include "engine/scheduler.h"
#include "model/llava.h"
#include "server/jobs.h"
#include "server/media.h"
#include "server/metrics.h"
#include "server/oai.h"
#include "testutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STEPS 12

typedef struct {
    float *logits; /* (STEPS, vocab) */
    int n, vocab;
} logit_log;

static void keep_logits(void *ud, const gen_token *t) {
    logit_log *l = ud;
    if (l->n < STEPS)
        memcpy(l->logits + (size_t)l->n++ * t->vocab, t->logits, (size_t)t->vocab * sizeof(float));
}

static const char *demo(void) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/../../models/demo", tu_env("LLAVA_TEST_DATA"));
    return path;
}

static void check_question(const char *image, const char *question) {
    char img[2048];
    snprintf(img, sizeof img, "%s/samples/%s", demo(), image);

    /* llava-cli */
    const char *dir = tu_tmpdir("one_path");
    char cmd[8192], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "'%s/llava-cli' --model '%s' --image '%s' --prompt '%s' --max-tokens %d "
             "--temperature 0 --threads 2 --json --logits-out '%s/logits.bin' 2>/dev/null",
             tu_env("LLAVA_BIN_DIR"), demo(), img, question, STEPS, dir);
    assert_int_equal(tu_run(cmd, &out), 0);
    json_error_t je;
    json_t *cli = json_loads(out, 0, &je);
    if (!cli) fail_msg("llava-cli printed no JSON (%s): %s", je.text, out);
    free(out);
    json_t *pids = json_object_get(cli, "prompt_ids"),
           *gids = json_object_get(cli, "generated_ids");
    int n_gen = (int)json_array_size(gids);
    assert_true(n_gen >= 2);

    /* the server's path, in process */
    llava *m;
    lv_err err;
    if (llava_open(demo(), &m, &err) || llava_load(m, "cpu", 2, &err)) fail_msg("%s", err.msg);
    int vocab = llava_vocab_size(m);
    sched *w;
    sched_config cfg = {.queue_size = 4, .parallel = 2};
    if (sched_new(m, &cfg, &w, &err) || sched_start(w, &err)) fail_msg("%s", err.msg);
    oai_limits lim;
    oai_limits_default(&lim);
    media_policy media;
    media_policy_default(&media);
    metrics *mt = metrics_new("demo", NULL);
    jobs_ctx ctx = {
        .m = m, .w = w, .lim = &lim, .media = &media, .model_name = "demo", .metrics = mt};
    char *bytes;
    size_t len;
    char *b64;
    if (lv_read_file(img, 1 << 24, &bytes, &len, &err) ||
        lv_base64_encode((const uint8_t *)bytes, len, &b64, &err))
        fail_msg("%s", err.msg);
    json_t *body = json_pack("{s:[{s:s, s:[{s:s, s:{s:s+}}, {s:s, s:s}]}], s:i, s:f}", "messages",
                             "role", "user", "content", "type", "image_url", "image_url", "url",
                             "data:image/png;base64,", b64, "type", "text", "text", question,
                             "max_tokens", STEPS, "temperature", 0.0);
    char *text = json_dumps(body, 0);
    job_group g;
    oai_error e;
    if (jobs_make(&ctx, OAI_CHAT, text, strlen(text), "one", &g, &e)) fail_msg("%s", e.message);
    assert_int_equal(g.n_jobs, 1);
    sched_job *j = g.jobs[0];
    logit_log lg = {.logits = malloc((size_t)STEPS * vocab * sizeof(float)), .vocab = vocab};
    gen_callbacks cb = {.on_token = keep_logits, .ud = &lg};
    j->callbacks = &cb;
    if (jobs_submit(&ctx, &g, &e)) fail_msg("%s", e.message);
    sched_job_wait(j);
    assert_int_equal(j->st, LV_OK);

    /* the same ids in, the same ids out, the same logits bit for bit */
    assert_int_equal(j->n_ids, (int)json_array_size(pids));
    for (int i = 0; i < j->n_ids; i++)
        assert_int_equal(j->ids[i], json_integer_value(json_array_get(pids, (size_t)i)));
    assert_int_equal(j->result.n_ids, n_gen);
    for (int i = 0; i < n_gen; i++)
        assert_int_equal(j->result.ids[i], json_integer_value(json_array_get(gids, (size_t)i)));
    char *want;
    size_t want_len;
    snprintf(cmd, sizeof cmd, "%s/logits.bin", dir);
    if (lv_read_file(cmd, 1 << 28, &want, &want_len, &err)) fail_msg("%s", err.msg);
    assert_int_equal(want_len, (size_t)n_gen * vocab * sizeof(float));
    assert_int_equal(lg.n, n_gen);
    assert_memory_equal(lg.logits, want, want_len);
    print_message("%s: %d prompt ids, %d generated, logits identical\n", image, j->n_ids, n_gen);

    jobs_release(&g);
    sched_free(w);
    metrics_free(mt);
    llava_free(m);
    free(lg.logits);
    free(want);
    free(text);
    json_decref(body);
    free(b64);
    free(bytes);
    json_decref(cli);
}

static void cli_and_server_agree(void **state) {
    (void)state;
    lv_log_set_level(LV_LOG_WARN);
    check_question("sample_01_320x240.png", "Describe the image.");
    check_question("sample_07_200x100.png", "How many crosses are in the image?");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cli_and_server_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
