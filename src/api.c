/* api.c - the Sandbox API client: Connect unary and streaming calls driven by one worker
 * thread that owns every libcurl handle. Other threads never touch curl: they append a
 * call, a cancel, a resume or a timer to queues under api.lock and wake the worker with
 * curl_multi_wakeup. The worker starts queued calls (each attempt is a transfer, see
 * transfer.c), runs due timers, drives the multi handle, retries what may be retried
 * after a backoff timer, and runs every callback with no lock held so that callbacks
 * may call back into the API. Each call has exactly one freer (call_free, reached only
 * through call_deliver on the worker), and exactly one done callback. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>

#include "api.h"
#include "connect.h"
#include "log.h"
#include "transfer.h"

#define API_DEFAULT_BASE "https://api.cwsandbox.com"
#define API_RPC_SLOTS 32
#define API_DEFAULT_TIMEOUT_MS 30000L
#define API_DEFAULT_RETRIES 5
#define API_BACKOFF_FIRST_MS 200L
#define API_BACKOFF_MAX_MS 5000L
/* A retry with less than this left of its call's deadline is not worth starting. */
#define API_RETRY_MIN_LEFT_MS 500L
#define API_IDLE_POLL_MS 60000L
#define API_LIVE_POLL_MS 50L
#define API_BODY_STALL_MS 20000L
#define API_MAX_HOST_CONNECTIONS 128L

/* A function to run on the worker, or (retry_id != 0) a call to restart. */
struct timer {
    struct timer *next;
    uint64_t due_ms;
    uint64_t seq; /* FIFO among timers due at the same millisecond */
    void (*fn)(void *ud);
    void *ud;
    uint64_t retry_id;
};

enum op_kind { OP_CANCEL, OP_RESUME };
struct op {
    enum op_kind kind;
    uint64_t id;
};

/* Connect codes are at most 19 characters (failed_precondition). */
#define API_CODE_MAX 24
/* Bytes of running calls reach the statistics at most this often (a walk of the live
 * calls), and at their end. */
#define API_PUBLISH_MS 100L

/* One rpc's statistics. Names are static storage, so those handed out stay valid. */
struct rpc_slot {
    char name[API_RPC_MAX];
    char codes[API_ERROR_CODES][API_CODE_MAX];
    struct api_rpc_stats st; /* st.rpc and st.errors[].code point into the above */
};

static struct {
    pthread_mutex_t lock;
    /* Protected by lock. */
    int running; /* calls may be submitted */
    int stopping;
    struct call *in_head, *in_tail;
    struct op *ops;
    size_t nops, ops_cap;
    struct timer *timers; /* sorted by (due_ms, seq) */
    uint64_t next_id, next_seq;
    /* Set by api_init, read-only until api_shutdown. */
    CURLM *multi;
    pthread_t thread;
    struct transfer_setup ts;
    int max_retries;
    /* Worker only. */
    struct call *live;
} api = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* The statistics have their own lock so that .metrics never waits on a busy queue; the
 * worker takes it a few times per call (start, end, a periodic byte update), never
 * around a callback. Static storage so that the names stay valid after api_shutdown. */
static pthread_mutex_t counts_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rpc_slot counts[API_RPC_SLOTS]; /* counts_lock */
static size_t nrpcs;                          /* counts_lock */
static uint64_t published_ms;                 /* worker only */

/* Upper bounds of the duration histogram: quick calls, slow ones, streams. */
const long api_duration_bounds_ms[API_DURATION_BUCKETS] = {10, 50, 250, 1000, 5000, 30000, 300000};

static int rpc_valid(const char *rpc)
{
    size_t i;

    if (!rpc || !rpc[0] || strlen(rpc) >= API_RPC_MAX)
        return 0;
    for (i = 0; rpc[i]; i++) {
        char ch = rpc[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_'))
            return 0;
    }
    return 1;
}

/* A call starts: count it under its rpc. Returns the rpc's slot, -1 when all are
 * taken (the call then goes uncounted). */
static int count_rpc(const char *rpc)
{
    size_t i;

    pthread_mutex_lock(&counts_lock);
    for (i = 0; i < nrpcs; i++)
        if (strcmp(counts[i].name, rpc) == 0)
            break;
    if (i == nrpcs && i < API_RPC_SLOTS) {
        memset(&counts[i], 0, sizeof(counts[i]));
        snprintf(counts[i].name, sizeof(counts[i].name), "%s", rpc);
        counts[i].st.rpc = counts[i].name;
        nrpcs++;
    }
    if (i < nrpcs) {
        counts[i].st.calls++;
        counts[i].st.in_flight++;
    }
    pthread_mutex_unlock(&counts_lock);
    return i < nrpcs ? (int)i : -1;
}

/* Move the bytes c moved since the last time into its rpc's totals. counts_lock held. */
static void publish_bytes_locked(struct call *c)
{
    struct api_rpc_stats *st;
    uint64_t sent = c->sent - c->sent_shown, received = c->received - c->received_shown;

    if (c->slot < 0)
        return;
    st = &counts[c->slot].st;
    st->sent += sent;
    st->received += received;
    st->in_flight_sent += sent;
    st->in_flight_received += received;
    c->sent_shown = c->sent;
    c->received_shown = c->received;
}

/* Keep the byte counts of running calls current, so a scrape sees a stream moving (or
 * not). Worker only. */
static void publish_live_bytes(void)
{
    uint64_t now = transfer_now_ms();
    struct call *c;

    if (now - published_ms < (uint64_t)API_PUBLISH_MS)
        return;
    published_ms = now;
    pthread_mutex_lock(&counts_lock);
    for (c = api.live; c; c = c->next)
        publish_bytes_locked(c);
    pthread_mutex_unlock(&counts_lock);
}

/* The code as a label value: Connect's codes are [a-z_]; anything else is "unknown". */
static const char *code_label(const char *code)
{
    size_t i;

    if (!code || !code[0] || strlen(code) >= API_CODE_MAX)
        return "unknown";
    for (i = 0; code[i]; i++)
        if (!((code[i] >= 'a' && code[i] <= 'z') || code[i] == '_'))
            return "unknown";
    return code;
}

/* A call ends: its duration, its bytes, and its code when it failed (cancelled calls
 * were stopped by cwsfs, not failed by the service). */
static void count_end(struct call *c, int err, uint64_t ms)
{
    struct api_rpc_stats *st;
    const char *code;
    size_t i;

    if (c->slot < 0)
        return;
    code = code_label(c->error.code);
    pthread_mutex_lock(&counts_lock);
    publish_bytes_locked(c);
    st = &counts[c->slot].st;
    st->in_flight_sent -= c->sent_shown;
    st->in_flight_received -= c->received_shown;
    st->in_flight--;
    st->finished++;
    st->duration_ms_sum += ms;
    for (i = 0; i < API_DURATION_BUCKETS; i++)
        if (ms <= (uint64_t)api_duration_bounds_ms[i])
            st->le[i]++;
    if (err && err != -ECANCELED && err != -ESHUTDOWN) {
        for (i = 0; i < st->nerrors; i++)
            if (strcmp(st->errors[i].code, code) == 0)
                break;
        if (i == st->nerrors && i < API_ERROR_CODES) {
            snprintf(counts[c->slot].codes[i], API_CODE_MAX, "%s", code);
            st->errors[i].code = counts[c->slot].codes[i];
            st->errors[i].count = 0;
            st->nerrors++;
        }
        if (i < st->nerrors)
            st->errors[i].count++;
    }
    pthread_mutex_unlock(&counts_lock);
}

static void call_free(struct call *c)
{
    if (!c)
        return;
    if (c->easy) {
        curl_multi_remove_handle(api.multi, c->easy);
        curl_easy_cleanup(c->easy);
    }
    connect_decoder_free(&c->dec);
    connect_error_clear(&c->error);
    free(c->resp);
    free(c->req);
    free(c);
}

static void live_unlink(struct call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (api.live == c)
        api.live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static struct call *live_find(uint64_t id)
{
    struct call *c;

    for (c = api.live; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

/* Report the outcome and free the call. The done callback runs with no lock held and
 * after the easy handle is gone, so it may start, cancel or schedule anything. */
static void call_deliver(struct call *c, int err, json_t *response)
{
    struct api_result res;
    uint64_t ms;

    live_unlink(c);
    if (c->easy) {
        curl_multi_remove_handle(api.multi, c->easy);
        curl_easy_cleanup(c->easy);
        c->easy = NULL;
    }
    if (err && !c->error.code)
        connect_error_set(&c->error, "unknown", NULL);
    ms = transfer_now_ms() - c->submitted_ms;
    count_end(c, err, ms);
    /* Every call ends here, so this is its one debug line. log_msg drops it before any
     * formatting above debug. Only the rpc, the outcome and sizes: never a header. */
    log_debug("api: %s call %llu: %s (http %ld) in %llu ms, %d attempt%s, sent %llu B, "
              "received %llu B%s%s",
              c->rpc, (unsigned long long)c->id, err ? c->error.code : "ok", c->status,
              (unsigned long long)ms, c->attempts, c->attempts == 1 ? "" : "s",
              (unsigned long long)c->sent, (unsigned long long)c->received,
              err && c->error.message ? ": " : "", err && c->error.message ? c->error.message : "");
    memset(&res, 0, sizeof(res));
    res.err = err;
    res.http_status = c->status;
    res.sent = c->body_done_ms != 0;
    if (err)
        res.error = c->error;
    else
        res.response = response;
    if (c->done)
        c->done(c->id, &res, c->ud);
    json_decref(response);
    call_free(c);
}

static void call_fail(struct call *c, int err, const char *code, const char *message)
{
    connect_error_clear(&c->error);
    connect_error_set(&c->error, code, message);
    call_deliver(c, err, NULL);
}

static void timer_insert_locked(struct timer *t)
{
    struct timer **pp = &api.timers;

    t->seq = api.next_seq++;
    while (*pp &&
           ((*pp)->due_ms < t->due_ms || ((*pp)->due_ms == t->due_ms && (*pp)->seq < t->seq)))
        pp = &(*pp)->next;
    t->next = *pp;
    *pp = t;
}

static void call_start(struct call *c)
{
    int err;

    c->prev = NULL;
    c->next = api.live;
    if (api.live)
        api.live->prev = c;
    api.live = c;
    if (c->start_err == -ENOMEM) {
        call_fail(c, c->start_err, "resource_exhausted", "out of memory building the request");
        return;
    }
    if (c->start_err) {
        call_fail(c, c->start_err, "invalid_argument",
                  "the call could not be built (bad rpc name or request)");
        return;
    }
    if (c->kind != CALL_UNARY && api.ts.http1) {
        call_fail(c, -ENOSYS, "unimplemented",
                  "streaming calls need HTTP/2, but cwsfs is set to use HTTP/1.1");
        return;
    }
    err = transfer_start(c, &api.ts, api.multi);
    if (err)
        call_fail(c, err, "internal", "could not set up the HTTP transfer");
}

/* The wait before the next attempt: doubling from the first, up to the most. */
static long backoff_ms(const struct call *c)
{
    long delay = API_BACKOFF_FIRST_MS;
    for (int i = 1; i < c->attempts && delay < API_BACKOFF_MAX_MS; i++)
        delay *= 2;
    return delay > API_BACKOFF_MAX_MS ? API_BACKOFF_MAX_MS : delay;
}

static void call_retry_later(struct call *c)
{
    struct timer *t = calloc(1, sizeof(*t));
    long delay = backoff_ms(c);

    if (!t) {
        call_deliver(c, -connect_error_errno(&c->error), NULL);
        return;
    }
    log_warn("api: %s failed (%s: %s); retry %d of %d in %ld ms", c->rpc, c->error.code,
             c->error.message ? c->error.message : "", c->attempts, api.max_retries, delay);
    c->backoff = 1;
    t->due_ms = transfer_now_ms() + (uint64_t)delay;
    t->retry_id = c->id;
    pthread_mutex_lock(&api.lock);
    timer_insert_locked(t);
    pthread_mutex_unlock(&api.lock);
}

/* A retry of a unary call must start, after its back-off, before the call's deadline:
 * `timeout=` is the whole call's. */
static int retry_in_time(const struct call *c)
{
    if (c->kind != CALL_UNARY || !c->deadline_ms)
        return 1;
    return transfer_now_ms() + (uint64_t)backoff_ms(c) + API_RETRY_MIN_LEFT_MS < c->deadline_ms;
}

static void call_transfer_done(struct call *c, CURLcode rc)
{
    json_t *resp = NULL;
    int transient = 0;
    int err;

    if (!c->status)
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &c->status);
    curl_multi_remove_handle(api.multi, c->easy);
    curl_easy_cleanup(c->easy);
    c->easy = NULL;
    err = transfer_result(c, rc, &resp, &transient);
    if (err && transient && c->retry_ok && c->attempts <= api.max_retries &&
        connect_error_retryable(&c->error) && retry_in_time(c)) {
        call_retry_later(c);
        return;
    }
    call_deliver(c, err, resp);
}

/* ---- the worker ---- */

static void apply_op(const struct op *op)
{
    struct call *c = live_find(op->id);

    if (!c)
        return; /* finished already: the race the numeric id makes harmless */
    if (op->kind == OP_CANCEL) {
        call_fail(c, -ECANCELED, "canceled", "the call was cancelled");
    } else if (c->paused && c->easy) {
        c->paused = 0;
        curl_easy_pause(c->easy, CURLPAUSE_CONT);
    }
}

/* libcurl 7.88's HTTP/2 uploads can stall for good (curl issues 10433, 10618, 11330):
 * it may stop asking for body bytes although the server reads on, or keep the last
 * DATA frame buffered once the socket would block and stop watching the socket for
 * writing. Measured here: a 32 MiB StreamExec upload that never ended, a few times in
 * a hundred under load. So a call whose body stalls for API_BODY_STALL_MS fails as
 * unavailable, and its owner decides whether to send it again (uploads do: they
 * rewrite the whole file); transfer_body_stall says what a stall is. */
static void fail_stalled_bodies(void)
{
    uint64_t now = transfer_now_ms();
    struct call *c, *next;

    for (c = api.live; c; c = next) {
        const char *stall = transfer_body_stall(c, now, API_BODY_STALL_MS);
        next = c->next;
        if (!stall && transfer_ended_unclosed(c, now, API_BODY_STALL_MS)) {
            log_warn("api: %s call %llu: ended, but its stream stayed open for %ld s; "
                     "taking its end",
                     c->rpc, (unsigned long long)c->id, API_BODY_STALL_MS / 1000);
            call_transfer_done(c, CURLE_OK);
            continue;
        }
        if (!stall)
            continue;
        log_warn("api: %s call %llu: the request body %s for %ld s; giving up on this try", c->rpc,
                 (unsigned long long)c->id, stall, API_BODY_STALL_MS / 1000);
        call_fail(c, -EHOSTUNREACH, "unavailable",
                  "the request body stalled (an HTTP/2 upload stall of this libcurl)");
    }
}

static void run_timers(void)
{
    uint64_t now = transfer_now_ms();
    uint64_t last_seq;

    pthread_mutex_lock(&api.lock);
    /* Timers a timer schedules wait for the next round, so none can starve the loop. */
    last_seq = api.next_seq;
    while (api.timers && api.timers->due_ms <= now && api.timers->seq < last_seq && !api.stopping) {
        struct timer *t = api.timers;
        api.timers = t->next;
        pthread_mutex_unlock(&api.lock);
        if (t->retry_id) {
            struct call *c = live_find(t->retry_id);
            if (c && c->backoff) {
                int err;
                c->backoff = 0;
                err = transfer_start(c, &api.ts, api.multi);
                if (err)
                    call_fail(c, err, "internal", "could not set up the HTTP transfer");
            }
        } else {
            t->fn(t->ud);
        }
        free(t);
        pthread_mutex_lock(&api.lock);
    }
    pthread_mutex_unlock(&api.lock);
}

/* How long the worker may sleep. libcurl 7.88 can leave the tail of an HTTP/2
 * response (the last DATA frames, the end-of-stream envelope) buffered inside the
 * transfer with nothing left on the socket to wake the poll (measured: a 10 MiB
 * StreamExec sat 12 KiB short of its end for a minute). Unary answers are HTTP/2
 * responses too, so while any call is live the worker wakes at least every
 * API_LIVE_POLL_MS so curl_multi_perform hands those bytes over. */
static int poll_timeout(void)
{
    uint64_t now = transfer_now_ms();
    long timeout = api.live ? API_LIVE_POLL_MS : API_IDLE_POLL_MS;

    pthread_mutex_lock(&api.lock);
    if (api.timers && api.timers->due_ms <= now)
        timeout = 0;
    else if (api.timers && (long)(api.timers->due_ms - now) < timeout)
        timeout = (long)(api.timers->due_ms - now);
    pthread_mutex_unlock(&api.lock);
    return (int)timeout;
}

static void drain_done(void)
{
    CURLMsg *m;
    int left;

    while ((m = curl_multi_info_read(api.multi, &left))) {
        char *priv = NULL;
        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        if (priv)
            call_transfer_done((struct call *)priv, m->data.result);
    }
}

static void *api_worker(void *arg)
{
    struct call *in, *next;
    struct op *ops = NULL;
    size_t nops = 0, i;
    struct timer *timers;
    int stopping, still;
    for (;;) {
        pthread_mutex_lock(&api.lock);
        stopping = api.stopping;
        in = api.in_head;
        api.in_head = api.in_tail = NULL;
        free(ops);
        ops = api.ops;
        nops = api.nops;
        api.ops = NULL;
        api.nops = api.ops_cap = 0;
        pthread_mutex_unlock(&api.lock);
        if (stopping)
            break;
        /* Calls first, then ops: a cancel is always queued after its call. */
        for (; in; in = next) {
            next = in->next;
            call_start(in);
        }
        for (i = 0; i < nops; i++)
            apply_op(&ops[i]);
        run_timers();
        fail_stalled_bodies();
        curl_multi_perform(api.multi, &still);
        drain_done();
        publish_live_bytes();
        curl_multi_poll(api.multi, NULL, 0, poll_timeout(), NULL);
    }

    /* Shutting down: api.running is 0, so nothing new arrives. Timers are dropped
     * unrun; every call, queued or live, hears -ESHUTDOWN. */
    pthread_mutex_lock(&api.lock);
    timers = api.timers;
    api.timers = NULL;
    pthread_mutex_unlock(&api.lock);
    free(ops);
    while (timers) {
        struct timer *t = timers;
        timers = t->next;
        free(t);
    }
    for (; in; in = next) {
        next = in->next;
        in->prev = in->next = NULL;
        call_fail(in, -ESHUTDOWN, "canceled", "cwsfs is shutting down");
    }
    while (api.live)
        call_fail(api.live, -ESHUTDOWN, "canceled", "cwsfs is shutting down");
    return NULL;
}

/* ---- public entry points ---- */

static void api_free_config(void)
{
    transfer_headers_free(&api.ts);
    free(api.ts.base_url);
    free(api.ts.unix_socket);
    api.ts.base_url = api.ts.unix_socket = NULL;
}

/* How every call of this client travels: the base URL (or unix socket), deadlines,
 * retries, the HTTP version and whether connections are reused, and the headers.
 * Fills api.ts and api.max_retries; 0 or -errno (api_free_config undoes it). */
static int configure(const struct api_config *cfg)
{
    const char *base;
    size_t len;
    int err;

    err = -EINVAL;
    if (cfg->auth != API_AUTH_NONE && (!cfg->api_key || !cfg->api_key[0]))
        return err;

    base = cfg->unix_socket
               ? "http://localhost"
               : (cfg->base_url && cfg->base_url[0] ? cfg->base_url : API_DEFAULT_BASE);
    if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) {
        log_error("api: base URL %s is neither http:// nor https://", base);
        return err;
    }
    err = -ENOMEM;
    api.ts.base_url = strdup(base);
    api.ts.unix_socket = cfg->unix_socket ? strdup(cfg->unix_socket) : NULL;
    if (!api.ts.base_url || (cfg->unix_socket && !api.ts.unix_socket))
        return err;
    len = strlen(api.ts.base_url);
    while (len > 0 && api.ts.base_url[len - 1] == '/')
        api.ts.base_url[--len] = '\0';

    api.ts.timeout_ms = cfg->unary_timeout_ms > 0 ? cfg->unary_timeout_ms : API_DEFAULT_TIMEOUT_MS;
    api.ts.slow_timeout_ms =
        api.ts.timeout_ms > API_SLOW_TIMEOUT_MS ? api.ts.timeout_ms : API_SLOW_TIMEOUT_MS;
    api.max_retries = cfg->max_retries > 0   ? cfg->max_retries
                      : cfg->max_retries < 0 ? 0
                                             : API_DEFAULT_RETRIES;
    api.ts.http1 = cfg->http1;
    if (!api.ts.http1 && !(curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_HTTP2)) {
        log_warn("api: this libcurl lacks HTTP/2; using HTTP/1.1, streaming calls will fail");
        api.ts.http1 = 1;
    }
    if (api.ts.http1)
        api.ts.http_version = CURL_HTTP_VERSION_1_1;
    else if (strncmp(api.ts.base_url, "https://", 8) == 0)
        api.ts.http_version = CURL_HTTP_VERSION_2TLS;
    else
        api.ts.http_version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
    /* libcurl before 8.0.0 fails every reuse of an h2c prior-knowledge connection with
     * "Error in the HTTP2 framing layer" (measured on 7.88.1; curl PR #10643): it stacks
     * a second HTTP/2 layer on the reused connection. There, each call gets its own
     * connection, which costs little on the loopback or unix socket h2c is used for.
     * HTTP/2 over TLS (ALPN) reuses and multiplexes fine. */
    api.ts.no_reuse = api.ts.http_version == CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE &&
                      curl_version_info(CURLVERSION_NOW)->version_num < 0x080000;

    return transfer_headers_build(&api.ts, cfg);
}

int api_init(const struct api_config *cfg)
{
    sigset_t all, old;
    int err = -EINVAL;
    int global = 0;

    if (!cfg)
        return -EINVAL;
    pthread_mutex_lock(&api.lock);
    err = api.running || api.multi ? -EALREADY : 0;
    pthread_mutex_unlock(&api.lock);
    if (err)
        return err;
    err = configure(cfg);
    if (err)
        goto out;

    err = -ENOMEM;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        goto out;
    global = 1;
    api.multi = curl_multi_init();
    if (!api.multi)
        goto out;
    curl_multi_setopt(api.multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    /* Without reuse every call is its own connection, and a running exec's stream
     * holds one for as long as the command runs: a cap would stall new calls
     * behind long commands, so there is none. */
    curl_multi_setopt(api.multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                      api.ts.no_reuse ? 0L : API_MAX_HOST_CONNECTIONS);

    pthread_mutex_lock(&counts_lock);
    nrpcs = 0;
    pthread_mutex_unlock(&counts_lock);
    api.stopping = 0;
    api.live = NULL;

    /* The worker inherits a full mask, so signals stay with libfuse's main thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = -pthread_create(&api.thread, NULL, api_worker, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err)
        goto out;
    /* Only now may calls be queued: there is a worker to hear about them. */
    pthread_mutex_lock(&api.lock);
    api.running = 1;
    pthread_mutex_unlock(&api.lock);
    log_debug("api: %s over %s%s%s", api.ts.base_url,
              api.ts.http1 ? "HTTP/1.1"
                           : (api.ts.http_version == CURL_HTTP_VERSION_2TLS ? "HTTP/2" : "h2c"),
              api.ts.unix_socket ? " through a unix socket" : "",
              api.ts.no_reuse ? ", one connection per call (libcurl < 8 cannot reuse h2c)" : "");
    return 0;
out:
    if (api.multi)
        curl_multi_cleanup(api.multi);
    api.multi = NULL;
    if (global)
        curl_global_cleanup();
    api_free_config();
    return err;
}

void api_shutdown(void)
{
    int was_running;

    pthread_mutex_lock(&api.lock);
    was_running = api.running;
    if (was_running && pthread_equal(pthread_self(), api.thread)) {
        pthread_mutex_unlock(&api.lock);
        log_error("api: api_shutdown called from an API callback; ignored");
        return;
    }
    api.running = 0;
    api.stopping = 1;
    if (was_running)
        curl_multi_wakeup(api.multi);
    pthread_mutex_unlock(&api.lock);
    if (!was_running)
        return;
    pthread_join(api.thread, NULL);

    pthread_mutex_lock(&api.lock);
    free(api.ops);
    api.ops = NULL;
    api.nops = api.ops_cap = 0;
    api.stopping = 0;
    pthread_mutex_unlock(&api.lock);
    curl_multi_cleanup(api.multi);
    api.multi = NULL;
    curl_global_cleanup();
    api_free_config();
}

/* Queue a built call. Returns its id, or 0 (and frees it) when the API is not running. */
static uint64_t call_submit(struct call *c)
{
    uint64_t id = 0;

    pthread_mutex_lock(&api.lock);
    if (api.running) {
        id = c->id = ++api.next_id;
        c->prev = api.in_tail;
        c->next = NULL;
        if (api.in_tail)
            api.in_tail->next = c;
        else
            api.in_head = c;
        api.in_tail = c;
        /* Counted here: once the lock drops, the worker may already have freed c. */
        if (!c->start_err)
            c->slot = count_rpc(c->rpc);
        c->submitted_ms = transfer_now_ms();
        /* Under the lock: api_shutdown cannot free the multi handle meanwhile. */
        curl_multi_wakeup(api.multi);
    }
    pthread_mutex_unlock(&api.lock);
    if (!id)
        call_free(c);
    return id;
}

static struct call *call_new(enum call_kind kind, const char *rpc, api_done_fn done, void *ud)
{
    struct call *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->kind = kind;
    c->slot = -1;
    c->done = done;
    c->ud = ud;
    connect_decoder_init(&c->dec, API_MAX_ENVELOPE);
    if (rpc_valid(rpc)) {
        snprintf(c->rpc, sizeof(c->rpc), "%s", rpc);
    } else {
        snprintf(c->rpc, sizeof(c->rpc), "%s", "(bad rpc name)");
        c->start_err = -EINVAL;
    }
    return c;
}

uint64_t api_unary(const char *rpc, json_t *request, int flags, api_done_fn done, void *ud)
{
    struct call *c = call_new(CALL_UNARY, rpc, done, ud);

    if (!c) {
        json_decref(request);
        return 0;
    }
    c->retry_ok = (flags & API_IDEMPOTENT) || (rpc && strcmp(rpc, "CreateSandbox") == 0);
    c->slow = !!(flags & API_SLOW);
    if (!c->start_err) {
        c->req = request ? json_dumps(request, JSON_COMPACT) : NULL;
        if (c->req)
            c->req_len = strlen(c->req);
        else
            c->start_err = request && json_is_object(request) ? -ENOMEM : -EINVAL;
    }
    json_decref(request);
    return call_submit(c);
}

uint64_t api_server_stream(const char *rpc, json_t *request, api_message_fn on_message,
                           api_done_fn done, void *ud)
{
    struct call *c = call_new(CALL_SERVER_STREAM, rpc, done, ud);
    int err;

    if (!c) {
        json_decref(request);
        return 0;
    }
    c->on_message = on_message;
    if (!c->start_err) {
        err = request ? connect_envelope_json(request, 0, &c->req, &c->req_len) : -EINVAL;
        if (err)
            c->start_err = err;
    }
    json_decref(request);
    return call_submit(c);
}

uint64_t api_bidi(const char *rpc, int flags, api_body_fn body, api_message_fn on_message,
                  api_done_fn done, void *ud)
{
    struct call *c = call_new(CALL_BIDI, rpc, done, ud);

    if (!c)
        return 0;
    c->ends_with_body = !!(flags & API_ENDS_WITH_BODY);
    c->on_message = on_message;
    c->body_fn = body;
    return call_submit(c);
}

static void queue_op(enum op_kind kind, uint64_t id)
{
    pthread_mutex_lock(&api.lock);
    if (api.running && id) {
        if (api.nops == api.ops_cap) {
            size_t cap = api.ops_cap ? api.ops_cap * 2 : 16;
            struct op *p = realloc(api.ops, cap * sizeof(*p));
            if (!p) {
                pthread_mutex_unlock(&api.lock);
                log_error("api: out of memory queueing an operation on call %llu",
                          (unsigned long long)id);
                return;
            }
            api.ops = p;
            api.ops_cap = cap;
        }
        api.ops[api.nops].kind = kind;
        api.ops[api.nops].id = id;
        api.nops++;
        curl_multi_wakeup(api.multi);
    }
    pthread_mutex_unlock(&api.lock);
}

void api_cancel(uint64_t call_id)
{
    queue_op(OP_CANCEL, call_id);
}

void api_resume_body(uint64_t call_id)
{
    queue_op(OP_RESUME, call_id);
}

/* Debian 12's libcurl 7.88.1 delivers no HTTP/2 response data while the request body is
 * still open or paused (measured: the download waits for the upload to end). The cause
 * went away with the HTTP/2 rewrite into connection filters (8.1), whose handling of
 * paused uploads and of the end of an upload kept being fixed up to 8.10.1. That is not
 * measured here, so only 8.11.0 and later are trusted. Erring low only costs
 * interactivity (stdin goes whole before output is read); erring high would hang
 * interactive commands, hence the conservative threshold. */
int api_full_duplex(void)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);

    if (!v || !(v->features & CURL_VERSION_HTTP2))
        return 0;
    return v->version_num >= 0x080b00;
}

void api_schedule(long delay_ms, void (*fn)(void *ud), void *ud)
{
    struct timer *t;

    if (!fn)
        return;
    t = calloc(1, sizeof(*t));
    if (!t) {
        log_error("api: out of memory scheduling work");
        return;
    }
    t->due_ms = transfer_now_ms() + (uint64_t)(delay_ms > 0 ? delay_ms : 0);
    t->fn = fn;
    t->ud = ud;
    pthread_mutex_lock(&api.lock);
    if (api.running) {
        timer_insert_locked(t);
        curl_multi_wakeup(api.multi);
        t = NULL;
    }
    pthread_mutex_unlock(&api.lock);
    free(t);
}

size_t api_call_counts(const char **names, uint64_t *counts_out, size_t n)
{
    size_t i, total;

    pthread_mutex_lock(&counts_lock);
    total = nrpcs;
    for (i = 0; i < total && i < n; i++) {
        names[i] = counts[i].name;
        counts_out[i] = counts[i].st.calls;
    }
    pthread_mutex_unlock(&counts_lock);
    return total;
}

size_t api_rpc_stats(struct api_rpc_stats *out, size_t n)
{
    size_t i, total;

    pthread_mutex_lock(&counts_lock);
    total = nrpcs;
    for (i = 0; i < total && i < n; i++)
        out[i] = counts[i].st;
    pthread_mutex_unlock(&counts_lock);
    return total;
}
