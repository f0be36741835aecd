/* test_server_faults.c - llava-server under faulty clients and signals,
 * against the real binary on the demo model:
 *   - slow clients: a stalled upload, a body trickled a byte a second, an
 *     idle keep-alive and a stream whose reader stopped reading are each
 *     closed by --idle-timeout (the stream's sequences cancelled), while a
 *     normal request is answered meanwhile;
 *   - a storm past --queue-size: every request gets 200 (the right answer)
 *     or 429 with Retry-After, and the queue empties afterwards;
 *   - SIGTERM and SIGINT with streams and plain requests running and queued:
 *     exit 0, and every client gets a complete answer or a clean error;
 *   - SIGHUP is logged and ignored: the server serves on;
 *   - stderr (the log) on /dev/full or a closed pipe: the server serves on
 *     and exits 0, without spinning.
 * No client may get another's tokens: each asks its own question, and each
 * answer must be the one that question gets alone (greedy, so the same). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "server_harness.h"

#include "base/buf.h"
#include "base/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <strings.h>

/* Questions, their answers alone (filled once by references()), and the
 * answer length: under ASan fewer and shorter, the server being ~10x slower. */
#define N_QUESTIONS (SANITIZED ? 4 : 8)
#define MAX_TOKENS  (SANITIZED ? 16 : 48)
static char *g_ref[8];
static srv S;

static void question(int q, char *out, size_t size) {
    static const char *const what[] = {"Which color is shown?", "Name a shape.",
                                       "Count the objects.",    "Say hello.",
                                       "Describe the picture.", "What is on the left?",
                                       "Is it large?",          "Tell a short story."};
    snprintf(out, size, "Client %d: %s", q, what[q % 8]);
}

/* A chat body for question q (greedy; streamed or not). */
static char *chat_body(int q, bool stream) {
    char text[128], *body = malloc(512);
    question(q, text, sizeof text);
    snprintf(body, 512,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],\"max_tokens\":%d,"
             "\"temperature\":0,\"stream\":%s}",
             text, MAX_TOKENS, stream ? "true" : "false");
    return body;
}

/* A plain answer's text (heap), NULL if body is not a chat completion. */
static char *plain_text(const char *body) {
    json_t *o = body ? json_loads(body, 0, NULL) : NULL;
    json_t *c = json_object_get(
        json_object_get(json_array_get(json_object_get(o, "choices"), 0), "message"), "content");
    char *text = json_is_string(c) ? strdup(json_string_value(c)) : NULL;
    json_decref(o);
    return text;
}

/* A stream's text (heap): its deltas joined; NULL unless every event parses
 * and it ends in a finish_reason and [DONE]. *error: it had an error event. */
static char *stream_text(const char *body, bool *error) {
    *error = false;
    if (!body) return NULL;
    size_t n = strlen(body);
    const char *done = "data: [DONE]\n\n";
    if (n < strlen(done) || strcmp(body + n - strlen(done), done)) return NULL;
    lv_buf text = {0};
    bool finished = false, ok = true;
    for (const char *p = body; ok && (p = strstr(p, "data: ")); p += 6) {
        const char *e = strstr(p, "\n\n");
        if (!e) ok = false;
        if (!ok || !strncmp(p, done, strlen(done))) break;
        json_t *o = json_loadb(p + 6, (size_t)(e - p - 6), 0, NULL);
        if (!o) ok = false;
        if (json_object_get(o, "error")) *error = true;
        json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
        json_t *c = json_object_get(json_object_get(ch, "delta"), "content");
        if (json_is_string(c)) lv_buf_puts(&text, json_string_value(c));
        if (json_is_string(json_object_get(ch, "finish_reason"))) finished = true;
        json_decref(o);
    }
    if (!ok || (!finished && !*error)) {
        lv_buf_free(&text);
        return NULL;
    }
    lv_buf_puts(&text, "");
    return text.data;
}

/* Each question's answer alone, asked one at a time (once per program). */
static void references(void) {
    for (int q = 0; q < N_QUESTIONS; q++) {
        if (g_ref[q]) continue;
        char *body = chat_body(q, false), *out = NULL;
        assert_int_equal(
            srv_http(&S, "POST", "/v1/chat/completions", body, strlen(body), NULL, NULL, &out),
            200);
        g_ref[q] = plain_text(out);
        assert_non_null(g_ref[q]);
        free(body);
        free(out);
    }
}

/* Asks question q alone and checks the answer. */
static void check_answer(int q) {
    char *body = chat_body(q, false), *out = NULL;
    long st = srv_http(&S, "POST", "/v1/chat/completions", body, strlen(body), NULL, NULL, &out);
    char *text = plain_text(out);
    if (st != 200 || !text || strcmp(text, g_ref[q]))
        fail_msg("question %d: %ld '%s' (alone: '%s')", q, st, out ? out : "", g_ref[q]);
    free(text);
    free(body);
    free(out);
}

static void start(const char *name, const char *const *argv) {
    char log[1024];
    snprintf(log, sizeof log, "%s/%s.log", tu_tmpdir("server_faults"), name);
    assert_true(srv_start(&S, log, argv, NULL));
    assert_true(srv_wait_healthy(&S, 60));
    references();
}

/* /health's figure at path ("queue", "running"); -1 if it does not answer. */
static long long health_field(const char *group, const char *name) {
    char *out = NULL;
    long long v = -1;
    if (srv_http(&S, "GET", "/health", NULL, 0, NULL, NULL, &out) == 200) {
        json_t *o = json_loads(out, 0, NULL);
        json_t *f = json_object_get(json_object_get(o, group), name);
        if (json_is_integer(f)) v = json_integer_value(f);
        json_decref(o);
    }
    free(out);
    return v;
}

/* Waits (up to seconds) for nothing running or waiting; true if so. */
static bool wait_idle(int seconds) {
    for (int i = 0; i < seconds * 10; i++) {
        if (health_field("queue", "running") == 0 && health_field("queue", "waiting") == 0)
            return true;
        srv_sleep_ms(100);
    }
    return false;
}

/* Waits (up to seconds) for the server to exit by itself; its status, -1 if not. */
static int wait_exit(int seconds) {
    int status;
    for (int i = 0; i < seconds * 20; i++) {
        if (waitpid(S.pid, &status, WNOHANG) == S.pid) {
            S.pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        srv_sleep_ms(50);
    }
    return -1;
}

/* ---- slow clients -------------------------------------------------------------------------- */

/* Whether the server closed fd: EOF or a reset, waiting up to ms. */
static bool closed_by_server(int fd, int ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0) return false;
    char b[4096];
    ssize_t k = recv(fd, b, sizeof b, MSG_DONTWAIT);
    return k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* A POST whose body (Content-Length 200) is not sent yet, on a new socket. */
static int half_request(void) {
    int fd = srv_connect(&S, 0);
    assert_true(fd >= 0);
    const char *head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"mes";
    assert_true(srv_send_all(fd, head, strlen(head)));
    return fd;
}

/* A stream of 8 long choices with top_logprobs (MBs, more than the socket
 * buffers hold) whose reader stops once every choice has begun. */
static int stalled_reader(void) {
    char *got = NULL;
    size_t len = 0;
    int fd = srv_open_blocking_stream(&S, &got, &len);
    assert_true(fd >= 0);
    assert_non_null(got);
    free(got);
    return fd;
}

/* A client sending its body a byte every 500 ms (never idle) on its own
 * thread, so the main thread's requests cannot hold it up. */
typedef struct {
    int fd;
    double t0_ms, closed_ms; /* lv_now_ms; closed_ms: when the server closed it (0: not yet) */
    atomic_bool stop;
} trickler;

static void *trickle_main(void *arg) {
    trickler *t = arg;
    while (!atomic_load(&t->stop)) {
        if (closed_by_server(t->fd, 500) || !srv_send_all(t->fd, "s", 1)) {
            t->closed_ms = lv_now_ms() - t->t0_ms;
            break;
        }
    }
    return NULL;
}

static void test_slow_clients_time_out(void **state) {
    (void)state;
    const int idle = 2; /* --idle-timeout */
    /* --parallel 10: the reader's 8 choices leave room for the others */
    const char *argv[] = {"--model", srv_demo_model(), "--port", "0", "--parallel",
                          "10",      "--idle-timeout", "2",      NULL};
    start("slow", argv);
    double t0 = lv_now_ms();
    int stall = half_request();
    trickler tr = {.fd = half_request(), .t0_ms = t0};
    atomic_init(&tr.stop, false);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, trickle_main, &tr), 0);
    int keepalive = srv_connect(&S, 0);
    assert_true(keepalive >= 0);
    int reader = stalled_reader();
    check_answer(0); /* served meanwhile */
    /* A request worked on for longer than the idle timeout (n choices with
     * top_logprobs: seconds) is not idle: its answer comes whole. */
    char *out = NULL, body[256];
    const int n_long = SANITIZED ? 4 : 8;
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"Tell a long story.\"}],"
             "\"max_tokens\":%d,\"n\":%d,\"logprobs\":true,\"top_logprobs\":20}",
             SANITIZED ? 40 : 150, n_long);
    double t_long = lv_now_ms();
    assert_int_equal(
        srv_http(&S, "POST", "/v1/chat/completions", body, strlen(body), NULL, NULL, &out), 200);
    json_t *o = json_loads(out, 0, NULL);
    if ((int)json_array_size(json_object_get(o, "choices")) != n_long)
        fail_msg("the long answer: '%.300s'", out);
    json_decref(o);
    print_message("a %.1f s answer under --idle-timeout 2\n", (lv_now_ms() - t_long) / 1e3);
    free(out);

    /* The trickler is never idle, so only the body's bound ends it. */
    double closed[3] = {0};
    int fds[3] = {stall, tr.fd, keepalive};
    const int bound_s = SANITIZED ? 120 : 40;
    while ((!closed[0] || !tr.closed_ms || !closed[2]) && lv_now_ms() - t0 < bound_s * 1e3) {
        for (int i = 0; i < 3; i += 2)
            if (!closed[i] && closed_by_server(fds[i], 0)) closed[i] = lv_now_ms() - t0;
        check_answer(1); /* still served while they hang */
        srv_sleep_ms(200);
    }
    atomic_store(&tr.stop, true);
    pthread_join(th, NULL);
    closed[1] = tr.closed_ms;
    for (int i = 0; i < 3; i++) {
        if (!closed[i]) fail_msg("slow client %d still open after %d s", i, bound_s);
        /* no sooner than the timeout (less a margin for the clocks) */
        if (closed[i] < idle * 1e3 - 500)
            fail_msg("slow client %d closed after %.0f ms", i, closed[i]);
        close(fds[i]);
    }
    assert_true(srv_log_has(&S, "the body is still arriving after 2 s"));
    /* the reader's sequences are freed once the timeout closes it (cancelled,
     * or already finished on a fast machine: the demo ends its story near 500
     * tokens, so whether the timeout comes first is a race, not a property) */
    assert_true(wait_idle(bound_s));
    close(reader);
    assert_true(wait_idle(bound_s));
    /* every slow connection is closed: only this one (128 KiB) is counted */
    long long conn = -1;
    for (int i = 0; i < 50 && conn != 131072; i++, srv_sleep_ms(100))
        conn = health_field("memory", "connections_bytes");
    assert_int_equal(conn, 131072);
    check_answer(2);
    assert_int_equal(srv_stop(&S), 0);
}

/* ---- many clients at once -----------------------------------------------------------------------
 */

typedef struct {
    int q;            /* the question */
    bool stream;      /* asked for a stream */
    srv_body out;     /* the body received */
    long status;      /* HTTP status, 0 if none */
    CURLcode result;  /* the transfer's end */
    bool retry_after; /* a Retry-After header came */
    bool done;
} client;

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    if (!strncasecmp(p, "Retry-After:", 12)) ((client *)ud)->retry_after = true;
    return size * n;
}

/* The clients' requests, sent at once on a multi handle; each client's end
 * is recorded as it comes. before_signal: run until it returns true, then
 * sig is sent (0: none). */
static void run_clients(client *c, int n, int sig, bool (*before_signal)(const client *, int)) {
    CURLM *multi = curl_multi_init();
    CURL **h = calloc((size_t)n, sizeof *h);
    struct curl_slist **hdr = calloc((size_t)n, sizeof *hdr);
    char **bodies = calloc((size_t)n, sizeof *bodies);
    for (int i = 0; i < n; i++) {
        bodies[i] = chat_body(c[i].q, c[i].stream);
        h[i] = srv_handle(&S, "POST", "/v1/chat/completions", bodies[i], strlen(bodies[i]), NULL,
                          NULL, &c[i].out, &hdr[i]);
        curl_easy_setopt(h[i], CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h[i], CURLOPT_HEADERDATA, &c[i]);
        curl_easy_setopt(h[i], CURLOPT_PRIVATE, &c[i]);
        curl_multi_add_handle(multi, h[i]);
    }
    int running = 1;
    bool signalled = !sig;
    double t0 = lv_now_ms();
    while (running) {
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left)))
            if (m->msg == CURLMSG_DONE) {
                client *ci;
                curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&ci);
                ci->result = m->data.result;
                curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &ci->status);
                ci->done = true;
            }
        if (!signalled && (before_signal(c, n) || lv_now_ms() - t0 > 60e3)) {
            kill(S.pid, sig);
            signalled = true;
        }
        curl_multi_poll(multi, NULL, 0, 20, NULL);
    }
    for (int i = 0; i < n; i++) {
        curl_multi_remove_handle(multi, h[i]);
        curl_easy_cleanup(h[i]);
        curl_slist_free_all(hdr[i]);
        free(bodies[i]);
    }
    curl_multi_cleanup(multi);
    free(h), free(hdr), free(bodies);
}

/* What client i got, checked: its own complete answer, or a clean error
 * (an error status with an error body, or a stream ending in an error
 * event and [DONE]). Returns 200 for an answer, else the status. */
static long check_client(const client *c, int i) {
    const char *body = c->out.data ? c->out.data : "";
    if (c->result != CURLE_OK)
        fail_msg("client %d: transfer cut (%s; status %ld, %zu bytes: '%.300s')", i,
                 curl_easy_strerror(c->result), c->status, c->out.len, body);
    if (c->status != 200) {
        json_t *o = json_loads(body, 0, NULL);
        bool clean = json_is_object(json_object_get(o, "error"));
        json_decref(o);
        if (!clean) fail_msg("client %d: %ld without an error body: '%.300s'", i, c->status, body);
        return c->status;
    }
    bool error = false;
    char *text = c->stream ? stream_text(body, &error) : plain_text(body);
    if (!text) fail_msg("client %d: an incomplete answer: '%.300s'", i, body);
    if (!error && strcmp(text, g_ref[c->q]))
        fail_msg("client %d (question %d): '%s', alone: '%s'", i, c->q, text, g_ref[c->q]);
    free(text);
    return error ? 503 : 200;
}

static void free_clients(client *c, int n) {
    for (int i = 0; i < n; i++) free(c[i].out.data);
}

static void test_storm_past_the_queue(void **state) {
    (void)state;
    const char *argv[] = {"--model", srv_demo_model(), "--port", "0", "--parallel",
                          "1",       "--queue-size",   "4",      NULL};
    start("storm", argv);
    enum { N = SANITIZED ? 16 : 40 };
    client c[N] = {{0}};
    for (int i = 0; i < N; i++) c[i].q = i % N_QUESTIONS;
    run_clients(c, N, 0, NULL);
    int ok = 0, busy = 0;
    for (int i = 0; i < N; i++) {
        long st = check_client(&c[i], i);
        if (st == 429 && !c[i].retry_after) fail_msg("client %d: 429 without Retry-After", i);
        if (st != 200 && st != 429) fail_msg("client %d: %ld", i, st);
        ok += st == 200;
        busy += st == 429;
    }
    print_message("storm: %d answered, %d told 429\n", ok, busy);
    free_clients(c, N);
    assert_true(ok >= 1);
    assert_int_equal(ok + busy, N);
    assert_true(wait_idle(30));
    for (int q = 0; q < N_QUESTIONS; q++) check_answer(q); /* served as before */
    assert_int_equal(srv_stop(&S), 0);
}

/* ---- signals -----------------------------------------------------------------------------------
 */

/* Some stream has text beyond its role chunk: work is under way. */
static bool generating(const client *c, int n) {
    for (int i = 0; i < n; i++)
        if (c[i].stream && c[i].out.data && strstr(c[i].out.data, "\"delta\":{\"content\":\""))
            return true;
    return false;
}

/* Streams and plain requests, more than --parallel runs (the rest queued),
 * then sig: each client gets its whole answer or a clean error, and the
 * server exits 0 within a bound. */
static void drain_under_load(int sig, const char *name) {
    const char *argv[] = {"--model", srv_demo_model(), "--port", "0", "--parallel", "2", NULL};
    start(name, argv);
    enum { N = SANITIZED ? 6 : 12 };
    client c[N] = {{0}};
    for (int i = 0; i < N; i++) c[i].q = i % N_QUESTIONS, c[i].stream = i % 2 == 0;
    double t0 = lv_now_ms();
    run_clients(c, N, sig, generating);
    int answered = 0;
    for (int i = 0; i < N; i++) answered += check_client(&c[i], i) == 200;
    print_message("%s: %d of %d answered (queued ones too), the rest told 503 shutting_down\n",
                  name, answered, N);
    free_clients(c, N);
    assert_int_equal(wait_exit(SANITIZED ? 120 : 40), 0);
    if (lv_now_ms() - t0 > (SANITIZED ? 150e3 : 50e3)) fail_msg("the drain took too long");
    assert_true(answered >= 1); /* the running ones finished */
    assert_true(srv_log_has(&S, "draining and exiting"));
}

static void test_sigterm_under_load(void **state) {
    (void)state;
    drain_under_load(SIGTERM, "sigterm");
}

static void test_sigint_under_load(void **state) {
    (void)state;
    drain_under_load(SIGINT, "sigint");
}

static void test_sighup_serves_on(void **state) {
    (void)state;
    const char *argv[] = {"--model", srv_demo_model(), "--port", "0", NULL};
    start("sighup", argv);
    for (int i = 0; i < 2; i++) {
        kill(S.pid, SIGHUP);
        for (int k = 0; k < 100 && !srv_log_has(&S, "SIGHUP: nothing to reload"); k++)
            srv_sleep_ms(50);
        check_answer(i);
    }
    assert_true(srv_log_has(&S, "SIGHUP: nothing to reload"));
    assert_int_equal(srv_stop(&S), 0);
}

/* ---- an unwritable log
 * --------------------------------------------------------------------------- */

/* A port free now: bound to 0, read back, released. */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* The server's CPU time so far, in clock ticks (utime + stime). */
static long long cpu_ticks(pid_t pid) {
    char path[64], line[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(line, sizeof line, f)) {
        if (f) fclose(f);
        return -1;
    }
    fclose(f);
    const char *p = strrchr(line, ')'); /* the name may hold spaces */
    long long utime = 0, stime = 0;
    /* after ")": state(3) ... utime is field 14, stime 15 */
    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld", &utime, &stime);
    return utime + stime;
}

/* Starts the server with stderr on fd (the log nobody can write), on a port
 * picked here since its "listening on" line cannot be read. */
static void start_unlogged(int fd) {
    memset(&S, 0, sizeof S);
    S.port = free_port();
    char port[16], bin[1024];
    snprintf(port, sizeof port, "%d", S.port);
    snprintf(bin, sizeof bin, "%s/llava-server", tu_env("LLAVA_BIN_DIR"));
    S.pid = fork();
    if (S.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (dup2(fd, 2) < 0 || !freopen("/dev/null", "w", stdout)) _exit(126);
        execl(bin, bin, "--model", srv_demo_model(), "--port", port, "--parallel", "2", NULL);
        _exit(127);
    }
    assert_true(S.pid > 0);
    assert_true(srv_wait_healthy(&S, 60));
}

static void serve_with_log_on(int fd) {
    start_unlogged(fd);
    references();
    for (int q = 0; q < N_QUESTIONS; q++) check_answer(q); /* each a log line that fails */
    /* idle, it does not spin on its failing writes */
    long long t0 = cpu_ticks(S.pid);
    srv_sleep_ms(1000);
    long long used = cpu_ticks(S.pid) - t0;
    if (t0 < 0 || used > sysconf(_SC_CLK_TCK) / 2)
        fail_msg("idle with an unwritable log, it used %lld ticks in 1 s", used);
    assert_int_equal(srv_stop(&S), 0);
}

static void test_log_on_dev_full(void **state) {
    (void)state;
    int fd = open("/dev/full", O_WRONLY);
    assert_true(fd >= 0);
    serve_with_log_on(fd);
    close(fd);
}

static void test_log_on_a_closed_pipe(void **state) {
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    close(p[0]); /* nobody reads: every write is EPIPE (and SIGPIPE unless ignored) */
    serve_with_log_on(p[1]);
    close(p[1]);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sighup_serves_on),      cmocka_unit_test(test_log_on_dev_full),
        cmocka_unit_test(test_log_on_a_closed_pipe),  cmocka_unit_test(test_storm_past_the_queue),
        cmocka_unit_test(test_sigterm_under_load),    cmocka_unit_test(test_sigint_under_load),
        cmocka_unit_test(test_slow_clients_time_out),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (S.pid > 0) srv_stop(&S);
    for (int q = 0; q < 8; q++) free(g_ref[q]);
    curl_global_cleanup();
    return rc;
}
