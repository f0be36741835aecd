/* test_server_drain.c - llava-server's drain on SIGTERM (server/http.h
 * http_stop), against the real binary on the demo model:
 *   - a stream whose reader is slow when SIGTERM comes still gets every
 *     chunk, the usage chunk and [DONE] (MHD_stop_daemon shuts sockets down:
 *     before the drain waited for answers to be sent, a stream's tail could
 *     be cut), and the server exits 0;
 *   - with --drain-grace, /health answers 503 "shutting_down" while the
 *     listener is still open, and so do the model routes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "server_harness.h"

static srv S;

static void test_sigterm_keeps_a_slow_streams_tail(void **state) {
    const char *argv[] = {"--model", srv_demo_model(), "--port", "0", "--parallel", "8", NULL};
    char log[1024];
    snprintf(log, sizeof log, "%s/drain_tail.log", tu_tmpdir("server_drain"));
    assert_true(srv_start(&S, log, argv, NULL));
    assert_true(srv_wait_healthy(&S, 60));

    /* A stream bigger than the socket buffers; every choice has begun. */
    char *got = NULL;
    size_t len = 0;
    int fd = srv_open_blocking_stream(&S, &got, &len);
    assert_true(fd >= 0);
    assert_non_null(got);

    /* Stop reading; SIGTERM while the server's writes are blocked on us. */
    kill(S.pid, SIGTERM);
    srv_sleep_ms(500);
    srv_recv_until(fd, &got, &len, NULL); /* everything, to the end */
    close(fd);

    /* The demo model may end its story before its 2000 tokens: whatever it said,
     * the finish_reason, the usage chunk and [DONE] must all be there. */
    int finished = 0;
    for (const char *p = got; (p = strstr(p, "\"finish_reason\":\"")); p++) finished++;
    if (finished != 8 || !strstr(got, "\"completion_tokens\":") || strstr(got, "\"error\"") ||
        !strstr(got, "data: [DONE]"))
        fail_msg("the stream's tail is missing (%zu bytes, %d finish chunks; ends '%s')", len,
                 finished, len > 300 ? got + len - 300 : got);
    free(got);
    assert_int_equal(srv_stop(&S), 0); /* it was exiting already: its status */
}

static void test_drain_grace_health_503(void **state) {
    const char *argv[] = {"--model", srv_demo_model(), "--port", "0", "--drain-grace", "5", NULL};
    char log[1024];
    snprintf(log, sizeof log, "%s/drain_grace.log", tu_tmpdir("server_drain_grace"));
    assert_true(srv_start(&S, log, argv, NULL));
    assert_true(srv_wait_healthy(&S, 60));
    kill(S.pid, SIGTERM);
    /* /health turns 503 once the drain begins; the listener is open meanwhile. */
    long status = 200;
    char *out = NULL;
    for (int i = 0; i < 200 && status == 200; i++) {
        free(out);
        out = NULL;
        status = srv_http(&S, "GET", "/health", NULL, 0, NULL, NULL, &out);
        if (status == 200) srv_sleep_ms(10);
    }
    assert_int_equal(status, 503);
    assert_non_null(strstr(out, "shutting_down"));
    free(out);
    const char *chat = "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":2}";
    assert_int_equal(
        srv_http(&S, "POST", "/v1/chat/completions", chat, strlen(chat), NULL, NULL, NULL), 503);
    assert_int_equal(srv_stop(&S), 0);
    assert_true(srv_log_has(&S, "draining: /health answers 503"));
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigterm_keeps_a_slow_streams_tail),
        cmocka_unit_test(test_drain_grace_health_503),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (S.pid > 0) srv_stop(&S);
    curl_global_cleanup();
    return rc;
}
