/* test_server_drain.c - llava-server's drain on SIGTERM (server/http.h
 * http_stop), against the real binary on the demo model:
 *   - a stream whose reader is slow when SIGTERM comes still gets every
 *     chunk, the usage chunk and [DONE] (MHD_stop_daemon shuts sockets down:
 *     before the drain waited for answers to be sent, a stream's tail could
 *     be cut), and the server exits 0;
 *   - with --drain-grace, /health answers 503 "shutting_down" while the
 *     listener is still open, requests are still served with Connection:
 *     close, and requests queued before the drain are answered; with
 *     --replica-id, answers, log lines, /health and /metrics name it. */
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

/* A raw HTTP/1.1 request on a new connection, read to EOF (the server
 * closes it: Connection: close, or the answer's end with no keep-alive
 * asked); heap, NULL on failure. */
static int send_raw(const char *method, const char *path, const char *body) {
    char req[1024];
    snprintf(req, sizeof req,
             "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             method, path, body ? strlen(body) : 0, body ? body : "");
    int fd = srv_connect(&S, 0);
    if (fd >= 0 && !srv_send_all(fd, req, strlen(req))) {
        close(fd);
        return -1;
    }
    return fd;
}

static char *read_all(int fd) {
    char *got = NULL;
    size_t len = 0;
    srv_recv_until(fd, &got, &len, NULL);
    close(fd);
    return got;
}

/* --replica-id names the answers, the log, /health and /metrics; on SIGTERM
 * with --drain-grace, /health turns 503 "shutting_down" while the listener
 * is open and requests are still served, each answer with Connection: close
 * (a balancer's pool reconnects elsewhere); what was queued before is
 * answered too (a rolling restart fails nothing), and the server exits 0. */
static void test_drain_grace_serves_and_closes(void **state) {
    const char *argv[] = {"--model",
                          srv_demo_model(),
                          "--port",
                          "0",
                          "--parallel",
                          "1",
                          "--drain-grace",
                          "2",
                          "--replica-id",
                          "r7",
                          "--drain-timeout",
                          "300",
                          NULL};
    char log[1024];
    snprintf(log, sizeof log, "%s/drain_grace.log", tu_tmpdir("server_drain_grace"));
    assert_true(srv_start(&S, log, argv, NULL));
    assert_true(srv_wait_healthy(&S, 60));

    char *out = NULL;
    assert_int_equal(srv_http(&S, "GET", "/health", NULL, 0, NULL, NULL, &out), 200);
    assert_non_null(strstr(out, "\"replica\":\"r7\""));
    free(out);
    out = NULL;
    assert_int_equal(srv_http(&S, "GET", "/metrics", NULL, 0, NULL, NULL, &out), 200);
    assert_non_null(strstr(out, "llava_requests_total{model_name=\""));
    assert_non_null(strstr(out, "\",replica=\"r7\",endpoint=\"/health\",status=\"200\"} "));
    free(out);
    out = NULL;

    /* One running, five queued behind it (--parallel 1). */
    const char *story = "{\"messages\":[{\"role\":\"user\",\"content\":\"Tell a long story.\"}],"
                        "\"max_tokens\":1000,\"stop\":[\"@@@@never\"]}";
    enum { N = 6 };
    int fd[N];
    for (int i = 0; i < N; i++)
        assert_true((fd[i] = send_raw("POST", "/v1/chat/completions", story)) >= 0);
    srv_sleep_ms(100);
    kill(S.pid, SIGTERM);
    /* /health turns 503 once the drain begins; the listener is open meanwhile. */
    long status = 200;
    for (int i = 0; i < 200 && status == 200; i++) {
        free(out);
        out = NULL;
        status = srv_http(&S, "GET", "/health", NULL, 0, NULL, NULL, &out);
        if (status == 200) srv_sleep_ms(10);
    }
    assert_int_equal(status, 503);
    assert_non_null(strstr(out, "shutting_down"));
    free(out);
    /* Sent during the grace (a balancer that has not noticed yet): served. */
    const char *chat = "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":2}";
    char *got = read_all(send_raw("POST", "/v1/chat/completions", chat));
    assert_non_null(got);
    if (strncmp(got, "HTTP/1.1 200", 12) || !strstr(got, "\r\nConnection: close\r\n") ||
        !strstr(got, "\r\nX-Replica-Id: r7\r\n"))
        fail_msg("during the grace: %.400s", got);
    free(got);
    for (int i = 0; i < N; i++) {
        got = read_all(fd[i]);
        assert_non_null(got);
        if (strncmp(got, "HTTP/1.1 200", 12) || !strstr(got, "\"finish_reason\""))
            fail_msg("request %d taken before the drain: %.400s", i, got);
        free(got);
    }
    assert_int_equal(srv_stop(&S), 0);
    assert_true(srv_log_has(&S, "[r7] draining: /health answers 503"));
    assert_true(srv_log_has(&S, "[r7] [req-1] GET /health 200"));
}

/* No grace: the listener closes at once, and the requests it had taken,
 * queued ones included, are answered (before, the queued ones were told 503:
 * a rolling restart failed them). */
static void test_drain_answers_the_queue(void **state) {
    const char *argv[] = {"--model", srv_demo_model(),  "--port", "0", "--parallel",
                          "1",       "--drain-timeout", "300",    NULL};
    char log[1024];
    snprintf(log, sizeof log, "%s/drain_queue.log", tu_tmpdir("server_drain_queue"));
    assert_true(srv_start(&S, log, argv, NULL));
    assert_true(srv_wait_healthy(&S, 60));
    const char *story = "{\"messages\":[{\"role\":\"user\",\"content\":\"Tell a long story.\"}],"
                        "\"max_tokens\":1000,\"stop\":[\"@@@@never\"]}";
    enum { N = 8 };
    int fd[N];
    for (int i = 0; i < N; i++)
        assert_true((fd[i] = send_raw("POST", "/v1/chat/completions", story)) >= 0);
    srv_sleep_ms(100); /* every request read (the first running), most still queued */
    kill(S.pid, SIGTERM);
    for (int i = 0; i < N; i++) {
        char *got = read_all(fd[i]);
        assert_non_null(got);
        if (strncmp(got, "HTTP/1.1 200", 12) || !strstr(got, "\"finish_reason\""))
            fail_msg("request %d taken before SIGTERM: %.400s", i, got);
        free(got);
    }
    assert_int_equal(srv_stop(&S), 0);
    assert_true(srv_log_has(&S, "draining: answering the")); /* some were left at the close */
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigterm_keeps_a_slow_streams_tail),
        cmocka_unit_test(test_drain_grace_serves_and_closes),
        cmocka_unit_test(test_drain_answers_the_queue),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (S.pid > 0) srv_stop(&S);
    curl_global_cleanup();
    return rc;
}
