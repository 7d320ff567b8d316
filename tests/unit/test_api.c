/* test_api.c - the API client's worker against a tiny HTTP/1.1 server in this process.
 *
 * The server is a thread listening on 127.0.0.1 port 0 that answers one request per
 * connection, picking its answer by the rpc name in the path (Echo, NotFound, Garbage,
 * Flaky, Unavailable, Hang, Big). The client runs for real: worker thread, curl multi,
 * retries with backoff, cancels, timers. HTTP/2 and streams are exercised end to end by
 * the integration suite against the local backend; here streams only have to refuse
 * HTTP/1.1. Only loopback is used. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>

#include "api.h"
#include "connect.h"

#define MAX_CONNS 128
#define WAIT_MS 30000

/* google.rpc.ErrorInfo{reason: "CWSANDBOX_SANDBOX_NOT_FOUND", domain: "cwsandbox.com"} */
#define ERRORINFO_B64 "ChtDV1NBTkRCT1hfU0FOREJPWF9OT1RfRk9VTkQSDWN3c2FuZGJveC5jb20="

static struct {
    int lfd;
    int port;
    int stop[2]; /* readable once the server stops: wakes hanging handlers too */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* Protected by lock. */
    pthread_t conns[MAX_CONNS];
    size_t nconns;
    int hits[8];
    int hanging;
    char last_head[8192];
    char last_body[4096];
} srv = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

enum { R_ECHO, R_NOTFOUND, R_GARBAGE, R_FLAKY, R_UNAVAILABLE, R_HANG, R_BIG, R_OTHER };
static const char *const routes[] = {"Echo",        "NotFound", "Garbage", "Flaky",
                                     "Unavailable", "Hang",     "Big"};

static void deadline_in(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static long elapsed_ms(const struct timespec *start)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000L + (now.tv_nsec - start->tv_nsec) / 1000000L;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0)
            return;
        data += n;
        len -= (size_t)n;
    }
}

static void respond(int fd, int status, const char *body)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, strlen(body));

    send_all(fd, head, (size_t)n);
    send_all(fd, body, strlen(body));
}

/* Read one request: head up to the blank line, then Content-Length bytes of body. */
static int read_request(int fd, char *buf, size_t cap, char **body, size_t *body_len)
{
    size_t have = 0, want = 0;
    char *end = NULL, *cl;

    while (!end) {
        ssize_t n;
        if (have + 1 >= cap)
            return -1;
        n = recv(fd, buf + have, cap - 1 - have, 0);
        if (n <= 0)
            return -1;
        have += (size_t)n;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    cl = strcasestr(buf, "\r\nContent-Length:");
    if (cl && cl < end)
        want = strtoul(cl + 17, NULL, 10);
    *body = end + 4;
    while ((size_t)(buf + have - *body) < want) {
        ssize_t n;
        if (have + 1 >= cap)
            return -1;
        n = recv(fd, buf + have, cap - 1 - have, 0);
        if (n <= 0)
            return -1;
        have += (size_t)n;
    }
    buf[have] = '\0';
    *body_len = want;
    return 0;
}

static void *conn_main(void *arg)
{
    static char zeros[65536];
    char *buf = malloc(1 << 16);
    int fd = (int)(intptr_t)arg;
    char *body = NULL, *line_end, *path, *path_end, *rpc;
    size_t body_len = 0, sent, route;
    int flaky_hits;

    if (!buf || read_request(fd, buf, 1 << 16, &body, &body_len) < 0)
        goto out;
    /* "POST /coreweave.sandbox.v1.SandboxService/Echo HTTP/1.1\r\n" */
    line_end = strstr(buf, "\r\n");
    path = strchr(buf, ' ');
    path_end = path ? strchr(path + 1, ' ') : NULL;
    if (!path_end || path_end > line_end)
        goto out;
    *path_end = '\0';
    rpc = strrchr(path, '/') + 1;
    for (route = 0; route < R_OTHER; route++)
        if (strcmp(rpc, routes[route]) == 0)
            break;
    pthread_mutex_lock(&srv.lock);
    snprintf(srv.last_head, sizeof(srv.last_head), "%.*s", (int)(body - (line_end + 2)),
             line_end + 2);
    snprintf(srv.last_body, sizeof(srv.last_body), "%.*s", (int)body_len, body);
    flaky_hits = ++srv.hits[route];
    if (route == R_HANG)
        srv.hanging++;
    pthread_cond_broadcast(&srv.cond);
    pthread_mutex_unlock(&srv.lock);

    switch (route) {
    case R_ECHO: {
        char *out = malloc(body_len + 32);
        if (!out)
            break;
        snprintf(out, body_len + 32, "{\"echo\":%.*s}", (int)body_len, body);
        respond(fd, 200, out);
        free(out);
        break;
    }
    case R_NOTFOUND:
        respond(fd, 404,
                "{\"code\":\"not_found\",\"message\":\"sandbox sb-9 not found\",\"details\":"
                "[{\"type\":\"google.rpc.ErrorInfo\",\"value\":\"" ERRORINFO_B64 "\"}]}");
        break;
    case R_GARBAGE:
        respond(fd, 200, "<html>surely not JSON</html>");
        break;
    case R_FLAKY:
        if (flaky_hits == 1)
            respond(fd, 503, "{\"code\":\"unavailable\",\"message\":\"try again\"}");
        else
            respond(fd, 200, "{\"ok\":true}");
        break;
    case R_UNAVAILABLE:
        respond(fd, 503, "{\"code\":\"unavailable\",\"message\":\"down\"}");
        break;
    case R_HANG: {
        /* Answer nothing until the client gives up or the server stops. */
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = srv.stop[0], .events = POLLIN}};
        char sink[256];
        while (poll(p, 2, -1) > 0 && !p[1].revents && recv(fd, sink, sizeof(sink), 0) > 0)
            ;
        break;
    }
    case R_BIG: {
        /* More than the 64 MiB bound, with no length announced, so the client finds out
         * only by counting as the body grows. */
        const char *head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                           "Connection: close\r\n\r\n";
        send_all(fd, head, strlen(head));
        for (sent = 0; sent <= ((size_t)64 << 20); sent += sizeof(zeros))
            if (send(fd, zeros, sizeof(zeros), MSG_NOSIGNAL) <= 0)
                break;
        break;
    }
    default:
        respond(fd, 501, "{\"code\":\"unimplemented\"}");
        break;
    }
out:
    free(buf);
    close(fd);
    return NULL;
}

static void *server_main(void *arg)
{
    struct pollfd p[2] = {{.fd = srv.lfd, .events = POLLIN}, {.fd = srv.stop[0], .events = POLLIN}};
    while (poll(p, 2, -1) > 0 && !p[1].revents) {
        int fd = accept(srv.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&srv.lock);
        if (srv.nconns == MAX_CONNS ||
            pthread_create(&srv.conns[srv.nconns], NULL, conn_main, (void *)(intptr_t)fd) != 0)
            close(fd);
        else
            srv.nconns++;
        pthread_mutex_unlock(&srv.lock);
    }
    return NULL;
}

static int listen_loopback(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/* A port where nothing listens: bound, then closed. */
static int refused_port(void)
{
    int port = 0;
    int fd = listen_loopback(&port);

    assert_true(fd >= 0);
    close(fd);
    return port;
}

static int server_start(void **state)
{
    srv.lfd = listen_loopback(&srv.port);
    if (srv.lfd < 0 || pipe(srv.stop) < 0)
        return -1;
    return pthread_create(&srv.thread, NULL, server_main, NULL) == 0 ? 0 : -1;
}

static int server_stop(void **state)
{
    size_t i;
    if (write(srv.stop[1], "x", 1) != 1)
        return -1;
    pthread_join(srv.thread, NULL);
    /* No lock needed: the server thread, the only one adding, is gone. */
    for (i = 0; i < srv.nconns; i++)
        pthread_join(srv.conns[i], NULL);
    close(srv.lfd);
    close(srv.stop[0]);
    close(srv.stop[1]);
    return 0;
}

static int hits(int route)
{
    int n;

    pthread_mutex_lock(&srv.lock);
    n = srv.hits[route];
    pthread_mutex_unlock(&srv.lock);
    return n;
}

static int hanging(void)
{
    int n;

    pthread_mutex_lock(&srv.lock);
    n = srv.hanging;
    pthread_mutex_unlock(&srv.lock);
    return n;
}

static void start_api_timeout(int port, int max_retries, long timeout_ms)
{
    char url[64];
    struct api_config cfg = {
        .base_url = url,
        .auth = API_AUTH_BEARER,
        .api_key = "sekrit-key",
        .http1 = 1,
        .unary_timeout_ms = timeout_ms,
        .max_retries = max_retries,
    };

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    assert_int_equal(api_init(&cfg), 0);
}

static void start_api(int port, int max_retries)
{
    start_api_timeout(port, max_retries, 5000);
}

/* Runs after every test, also after a failed assertion skipped the test's own
 * api_shutdown, so that one failure does not cascade into the next api_init. */
static int stop_api(void **state)
{
    api_shutdown();
    return 0;
}

/* ---- waiting for a done callback ----
 * Tests keep their waiters static: should an assertion fail while a call runs, the
 * callback that stop_api's shutdown then delivers still lands in live memory. */

struct waiter {
    pthread_mutex_t m;
    pthread_cond_t c;
    int done;
    uint64_t id;
    int err;
    long status;
    char code[64];
    char message[512];
    char reason[64];
    json_t *resp;
    pthread_t thread;
};

static void waiter_init(struct waiter *w)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->m, NULL);
    pthread_cond_init(&w->c, NULL);
}

static void waiter_fini(struct waiter *w)
{
    json_decref(w->resp);
    pthread_mutex_destroy(&w->m);
    pthread_cond_destroy(&w->c);
}

static void on_done(uint64_t id, const struct api_result *res, void *ud)
{
    struct waiter *w = ud;

    pthread_mutex_lock(&w->m);
    w->done++;
    w->id = id;
    w->err = res->err;
    w->status = res->http_status;
    snprintf(w->code, sizeof(w->code), "%s", res->error.code ? res->error.code : "");
    snprintf(w->message, sizeof(w->message), "%s", res->error.message ? res->error.message : "");
    snprintf(w->reason, sizeof(w->reason), "%s", res->error.reason ? res->error.reason : "");
    /* A copy, not a reference: the worker drops its own reference concurrently. */
    w->resp = res->response ? json_deep_copy(res->response) : NULL;
    w->thread = pthread_self();
    pthread_cond_broadcast(&w->c);
    pthread_mutex_unlock(&w->m);
}

static void waiter_wait(struct waiter *w)
{
    struct timespec ts;

    deadline_in(&ts, WAIT_MS);
    pthread_mutex_lock(&w->m);
    while (!w->done && pthread_cond_timedwait(&w->c, &w->m, &ts) == 0)
        ;
    pthread_mutex_unlock(&w->m);
    assert_int_equal(w->done, 1);
}

static void wait_hanging(int n)
{
    struct timespec ts;

    deadline_in(&ts, WAIT_MS);
    pthread_mutex_lock(&srv.lock);
    while (srv.hanging < n && pthread_cond_timedwait(&srv.cond, &srv.lock, &ts) == 0)
        ;
    pthread_mutex_unlock(&srv.lock);
    assert_true(hanging() >= n);
}

static uint64_t call(const char *rpc, const char *json, int idempotent, struct waiter *w)
{
    json_t *req = json_loads(json, 0, NULL);
    uint64_t id;

    assert_non_null(req);
    waiter_init(w);
    id = api_unary(rpc, req, idempotent, on_done, w);
    assert_true(id != 0);
    return id;
}

/* ---- tests ---- */

static void test_unary_success(void **state)
{
    static struct waiter w;
    char head[sizeof(srv.last_head)], body[sizeof(srv.last_body)];
    uint64_t id;
    start_api(srv.port, 1);
    id = call("Echo", "{ \"sandboxId\" : \"sb-1\" }", 0, &w);
    waiter_wait(&w);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.status, 200);
    assert_true(w.id == id);
    assert_false(pthread_equal(w.thread, pthread_self()));
    assert_non_null(w.resp);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(w.resp, "echo"), "sandboxId")), "sb-1");
    pthread_mutex_lock(&srv.lock);
    memcpy(head, srv.last_head, sizeof(head));
    memcpy(body, srv.last_body, sizeof(body));
    pthread_mutex_unlock(&srv.lock);
    assert_string_equal(body, "{\"sandboxId\":\"sb-1\"}");
    assert_non_null(strcasestr(head, "Content-Type: application/json\r\n"));
    assert_non_null(strcasestr(head, "Connect-Protocol-Version: 1\r\n"));
    assert_non_null(strcasestr(head, "Connect-Timeout-Ms: 5000\r\n"));
    assert_non_null(strcasestr(head, "User-Agent: cwsfs/" CWSFS_VERSION "\r\n"));
    assert_non_null(strcasestr(head, "Authorization: Bearer sekrit-key\r\n"));
    assert_null(strcasestr(head, "Expect:"));
    waiter_fini(&w);
    /* A slow call (file transfers, commands, stops) gets the long deadline. */
    id = call("Echo", "{}", API_SLOW, &w);
    waiter_wait(&w);
    assert_int_equal(w.err, 0);
    pthread_mutex_lock(&srv.lock);
    memcpy(head, srv.last_head, sizeof(head));
    pthread_mutex_unlock(&srv.lock);
    assert_non_null(strcasestr(head, "Connect-Timeout-Ms: 300000\r\n"));
    waiter_fini(&w);
    api_shutdown();
}

static void test_error_body(void **state)
{
    static struct waiter w;
    start_api(srv.port, 1);
    call("NotFound", "{}", 1, &w);
    waiter_wait(&w);
    assert_int_equal(w.err, -ENOENT);
    assert_int_equal(w.status, 404);
    assert_string_equal(w.code, "not_found");
    assert_string_equal(w.message, "sandbox sb-9 not found");
    assert_string_equal(w.reason, "CWSANDBOX_SANDBOX_NOT_FOUND");
    assert_null(w.resp);
    waiter_fini(&w);
    api_shutdown();
}

static void test_garbage_body(void **state)
{
    static struct waiter w;
    start_api(srv.port, 1);
    call("Garbage", "{}", 1, &w);
    waiter_wait(&w);
    assert_int_equal(w.err, -EIO);
    assert_string_equal(w.code, "internal");
    assert_non_null(strstr(w.message, "not a JSON object"));
    assert_null(w.resp);
    waiter_fini(&w);
    api_shutdown();
}

static void test_too_big(void **state)
{
    static struct waiter w;
    start_api_timeout(srv.port, 1, 120000);
    call("Big", "{}", 1, &w);
    waiter_wait(&w);
    assert_int_equal(w.err, -EMSGSIZE);
    assert_non_null(strstr(w.message, "MiB"));
    assert_int_equal(hits(R_BIG), 1); /* never retried */
    waiter_fini(&w);
    api_shutdown();
}

static void test_refused(void **state)
{
    static struct waiter w;
    struct timespec start;
    start_api(refused_port(), 1);
    clock_gettime(CLOCK_MONOTONIC, &start);
    call("GetSandbox", "{}", 1, &w);
    waiter_wait(&w);
    assert_int_equal(w.err, -EHOSTUNREACH);
    assert_string_equal(w.code, "unavailable");
    assert_true(w.message[0] != '\0');
    assert_true(elapsed_ms(&start) >= 190); /* one 200 ms backoff, so it was retried */
    waiter_fini(&w);
    api_shutdown();
}

static void test_retry(void **state)
{
    static struct waiter w;
    const char *names[8];
    uint64_t counts[8];
    start_api(srv.port, 1);
    call("Flaky", "{}", 1, &w);
    waiter_wait(&w);
    assert_int_equal(w.err, 0);
    assert_int_equal(hits(R_FLAKY), 2);
    waiter_fini(&w);
    /* Not idempotent: one try only. */
    call("Unavailable", "{}", 0, &w);
    waiter_wait(&w);
    assert_int_equal(w.err, -EHOSTUNREACH);
    assert_string_equal(w.message, "down");
    assert_int_equal(hits(R_UNAVAILABLE), 1);
    waiter_fini(&w);
    /* A retried call counts once. */
    assert_int_equal(api_call_counts(names, counts, 8), 2);
    assert_string_equal(names[0], "Flaky");
    assert_true(counts[0] == 1);
    assert_string_equal(names[1], "Unavailable");
    assert_true(counts[1] == 1);
    /* Statistics: one finished call each, the failure under its code, nothing left in
     * flight, bytes both ways. */
    struct api_rpc_stats st[4];
    assert_int_equal(api_rpc_stats(st, 4), 2);
    assert_string_equal(st[0].rpc, "Flaky");
    assert_true(st[0].calls == 1 && st[0].finished == 1 && st[0].in_flight == 0);
    assert_true(st[0].le[API_DURATION_BUCKETS - 1] == 1);
    assert_int_equal(st[0].nerrors, 0);
    assert_true(st[0].sent >= 4 && st[0].received > 0); /* "{}" twice: it was retried */
    assert_true(st[0].in_flight_sent == 0 && st[0].in_flight_received == 0);
    assert_string_equal(st[1].rpc, "Unavailable");
    assert_int_equal(st[1].nerrors, 1);
    assert_string_equal(st[1].errors[0].code, "unavailable");
    assert_true(st[1].errors[0].count == 1);
    assert_true(st[1].finished == 1 && st[1].in_flight == 0);
    api_shutdown();
}

static void test_cancel(void **state)
{
    static struct waiter w;
    int before = hanging();
    uint64_t id;
    start_api(srv.port, 1);
    id = call("Hang", "{}", 1, &w);
    wait_hanging(before + 1);
    api_cancel(id);
    waiter_wait(&w);
    assert_int_equal(w.err, -ECANCELED);
    assert_string_equal(w.code, "canceled");
    api_cancel(id);        /* finished: a no-op */
    api_cancel(id + 1000); /* unknown: a no-op */
    waiter_fini(&w);
    api_shutdown();
    assert_int_equal(w.done, 1);
}

static void test_cancel_backoff(void **state)
{
    static struct waiter w;
    struct timespec start;
    uint64_t id;
    start_api(refused_port(), 5);
    clock_gettime(CLOCK_MONOTONIC, &start);
    id = call("GetSandbox", "{}", 1, &w);
    usleep(100 * 1000); /* refused at once, then 200 ms of backoff */
    api_cancel(id);
    waiter_wait(&w);
    assert_int_equal(w.err, -ECANCELED);
    assert_true(elapsed_ms(&start) < 1500);
    waiter_fini(&w);
    api_shutdown();
}

struct sched {
    pthread_mutex_t m;
    pthread_cond_t c;
    char order[16];
    size_t n;
};

struct sched_item {
    struct sched *s;
    char tag;
};

static void on_timer(void *ud)
{
    struct sched_item *it = ud;

    pthread_mutex_lock(&it->s->m);
    if (it->s->n + 1 < sizeof(it->s->order))
        it->s->order[it->s->n++] = it->tag;
    pthread_cond_broadcast(&it->s->c);
    pthread_mutex_unlock(&it->s->m);
}

static void on_timer_nested(void *ud)
{
    struct sched_item *it = ud;

    on_timer(ud);
    api_schedule(0, on_timer, it + 1); /* from the worker: still runs, later */
}

static void test_schedule_order(void **state)
{
    static struct sched s = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    static struct sched_item it[] = {{&s, 'A'}, {&s, 'B'}, {&s, 'C'},
                                     {&s, 'D'}, {&s, 'E'}, {&s, 'F'}};
    struct timespec ts;
    start_api(srv.port, 1);
    api_schedule(600, on_timer, &it[0]); /* far enough behind D and E even under load */
    api_schedule(0, on_timer, &it[1]);
    api_schedule(0, on_timer, &it[2]);
    api_schedule(40, on_timer_nested, &it[3]); /* D, then E scheduled by D */
    api_schedule(-5, on_timer, &it[5]);        /* negative is "now" */
    deadline_in(&ts, WAIT_MS);
    pthread_mutex_lock(&s.m);
    while (s.n < 6 && pthread_cond_timedwait(&s.c, &s.m, &ts) == 0)
        ;
    pthread_mutex_unlock(&s.m);
    assert_string_equal(s.order, "BCFDEA");
    api_shutdown();
}

struct chain {
    struct waiter first, second;
    uint64_t second_id;
};

static void on_done_chain(uint64_t id, const struct api_result *res, void *ud)
{
    struct chain *ch = ud;

    /* Starting a call from a done callback must neither deadlock nor recurse. */
    ch->second_id =
        api_unary("Echo", json_pack("{s:s}", "sandboxId", "sb-2"), 0, on_done, &ch->second);
    on_done(id, res, &ch->first);
}

static void test_callback_starts_call(void **state)
{
    static struct chain ch;
    start_api(srv.port, 1);
    waiter_init(&ch.first);
    waiter_init(&ch.second);
    assert_true(api_unary("Echo", json_object(), 0, on_done_chain, &ch) != 0);
    waiter_wait(&ch.first);
    waiter_wait(&ch.second);
    assert_true(ch.second_id != 0);
    assert_int_equal(ch.second.err, 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(ch.second.resp, "echo"), "sandboxId")),
        "sb-2");
    waiter_fini(&ch.first);
    waiter_fini(&ch.second);
    api_shutdown();
}

static void never(void *ud)
{
    fail_msg("a timer ran after api_shutdown");
}

static void test_shutdown(void **state)
{
    static struct waiter w, late;
    int before = hanging();
    start_api(srv.port, 1);
    call("Hang", "{}", 1, &w);
    wait_hanging(before + 1);
    api_schedule(60000, never, NULL);
    api_shutdown();
    assert_int_equal(w.done, 1);
    assert_int_equal(w.err, -ESHUTDOWN);
    waiter_fini(&w);
    /* After shutdown nothing starts, and no callback comes. */
    waiter_init(&late);
    assert_true(api_unary("Echo", json_object(), 0, on_done, &late) == 0);
    api_cancel(1);
    api_schedule(0, never, NULL);
    api_shutdown();
    assert_int_equal(late.done, 0);
    waiter_fini(&late);
}

static int on_message(uint64_t id, json_t *msg, void *ud)
{
    fail_msg("a message arrived on a stream that cannot run");
    return 1;
}

static long body_none(uint64_t id, char *buf, size_t cap, void *ud)
{
    return 0;
}

static void test_streams_need_http2(void **state)
{
    static struct waiter a, b;
    start_api(srv.port, 1);
    waiter_init(&a);
    waiter_init(&b);
    assert_true(api_server_stream("StreamLogs", json_object(), on_message, on_done, &a) != 0);
    assert_true(api_bidi("StreamExec", 0, body_none, on_message, on_done, &b) != 0);
    waiter_wait(&a);
    waiter_wait(&b);
    assert_int_equal(a.err, -ENOSYS);
    assert_int_equal(b.err, -ENOSYS);
    assert_non_null(strstr(a.message, "HTTP/2"));
    waiter_fini(&a);
    waiter_fini(&b);
    api_shutdown();
}

static void test_bad_rpc(void **state)
{
    static struct waiter w;
    const char *names[4];
    uint64_t counts[4];
    start_api(srv.port, 1);
    call("../Echo", "{}", 0, &w);
    waiter_wait(&w);
    assert_int_equal(w.err, -EINVAL);
    waiter_fini(&w);
    assert_int_equal(api_call_counts(names, counts, 4), 0);
    api_shutdown();
}

static void test_body_envelope(void **state)
{
    json_t *msg = json_pack("{s:s,s:i}", "a", "b", "n", 1);
    char *out = NULL;
    size_t len = 0;
    const char *want = "{\"a\":\"b\",\"n\":1}";
    assert_int_equal(connect_envelope_json(msg, CONNECT_FLAG_END_STREAM, &out, &len), 0);
    assert_int_equal(len, 5 + strlen(want));
    assert_int_equal((unsigned char)out[0], CONNECT_FLAG_END_STREAM);
    assert_int_equal((unsigned char)out[1], 0);
    assert_int_equal((unsigned char)out[4], strlen(want));
    assert_memory_equal(out + 5, want, strlen(want));
    free(out);
    json_decref(msg);
}

static void test_full_duplex(void **state)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    if (v->version_num < 0x080000)
        assert_int_equal(api_full_duplex(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_unary_success, stop_api),
        cmocka_unit_test_teardown(test_error_body, stop_api),
        cmocka_unit_test_teardown(test_garbage_body, stop_api),
        cmocka_unit_test_teardown(test_too_big, stop_api),
        cmocka_unit_test_teardown(test_refused, stop_api),
        cmocka_unit_test_teardown(test_retry, stop_api),
        cmocka_unit_test_teardown(test_cancel, stop_api),
        cmocka_unit_test_teardown(test_cancel_backoff, stop_api),
        cmocka_unit_test_teardown(test_schedule_order, stop_api),
        cmocka_unit_test_teardown(test_callback_starts_call, stop_api),
        cmocka_unit_test_teardown(test_shutdown, stop_api),
        cmocka_unit_test_teardown(test_streams_need_http2, stop_api),
        cmocka_unit_test_teardown(test_bad_rpc, stop_api),
        cmocka_unit_test_teardown(test_body_envelope, stop_api),
        cmocka_unit_test_teardown(test_full_duplex, stop_api),
    };

    return cmocka_run_group_tests(tests, server_start, server_stop);
}
