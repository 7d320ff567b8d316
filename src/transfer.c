/* transfer.c - one HTTP transfer of an API call, on the worker thread: the request
 * headers (built once, holding the credentials), the curl easy handle of an attempt,
 * the callbacks that collect a unary body or decode a stream's envelopes as they
 * arrive (bounded: a server cannot make cwsfs buffer without limit), and the reading
 * of a finished transfer into a result (HTTP status, Connect error bodies, the
 * end-of-stream envelope, transport errors). Queueing, retries and callbacks to the
 * caller are api.c's. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "transfer.h"

/* Record a failure found inside a curl callback; the transfer is then aborted and the
 * result picked up when curl reports it done. The first failure wins. */
static void fail_local(struct call *c, int err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail_local(struct call *c, int err, const char *code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    if (c->local_err)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    connect_error_clear(&c->error);
    connect_error_set(&c->error, code, msg);
    c->local_err = err;
}

/* ---- curl callbacks (inside curl_multi_perform) ---- */

static int buffer_append(struct call *c, const char *data, size_t n)
{
    size_t limit =
        (c->kind == CALL_UNARY && c->status == 200) ? API_MAX_UNARY_BODY : API_MAX_ERROR_BODY;
    curl_off_t clen = -1;

    if (n > limit - c->resp_len) {
        fail_local(c, -EMSGSIZE, "resource_exhausted",
                   "the server's response is larger than the %zu MiB cwsfs accepts", limit >> 20);
        return -1;
    }
    if (!c->resp_cap) {
        /* A known length sizes the buffer once instead of doubling up to ~43 MiB. */
        curl_easy_getinfo(c->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen);
        if (clen > 0 && (uint64_t)clen > limit) {
            fail_local(c, -EMSGSIZE, "resource_exhausted",
                       "the server announced a %lld byte response; cwsfs accepts %zu MiB",
                       (long long)clen, limit >> 20);
            return -1;
        }
        c->resp_cap = clen > 0 ? (size_t)clen : 4096;
        c->resp = malloc(c->resp_cap);
        if (!c->resp) {
            c->resp_cap = 0;
            fail_local(c, -ENOMEM, "resource_exhausted", "out of memory for the response");
            return -1;
        }
    }
    if (n > c->resp_cap - c->resp_len) {
        size_t cap = c->resp_cap;
        char *p;
        while (n > cap - c->resp_len)
            cap = cap > limit / 2 ? limit : cap * 2;
        p = realloc(c->resp, cap);
        if (!p) {
            fail_local(c, -ENOMEM, "resource_exhausted", "out of memory for the response");
            return -1;
        }
        c->resp = p;
        c->resp_cap = cap;
    }
    memcpy(c->resp + c->resp_len, data, n);
    c->resp_len += n;
    return 0;
}

/* One response envelope of a stream. Returns non-zero to stop decoding, after
 * recording why in the call. */
static int on_envelope(uint8_t flags, const char *data, size_t len, void *ud)
{
    struct call *c = ud;
    json_error_t jerr;
    json_t *msg;
    int has_error = 0;
    int stop = 0;

    if (c->ended)
        return 0; /* the result is known; whatever follows cannot change it */
    if (flags & CONNECT_FLAG_END_STREAM) {
        c->ended = 1;
        if (connect_end_stream_parse(data, len, &has_error, &c->error) < 0) {
            fail_local(c, -EIO, "internal", "the server's end-of-stream message is not JSON");
            return 1;
        }
        if (has_error) {
            c->local_err = -connect_error_errno(&c->error);
            c->server_err = 1;
        }
        return 0;
    }
    msg = json_loadb(data, len, 0, &jerr);
    if (!msg || !json_is_object(msg)) {
        json_decref(msg);
        fail_local(c, -EIO, "internal",
                   "the server sent a stream message that is not a JSON object%s%s",
                   msg ? "" : ": ", msg ? "" : jerr.text);
        return 1;
    }
    if (c->on_message)
        stop = c->on_message(c->id, msg, c->ud);
    json_decref(msg);
    if (stop) {
        fail_local(c, -ECANCELED, "canceled", "the call was stopped by its message handler");
        return 1;
    }
    return 0;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct call *c = ud;
    size_t n = size * nmemb;
    int rc;

    c->answer_moved_ms = transfer_now_ms();
    c->received += n;
    if (c->local_err && !c->server_err)
        return 0;
    if (!c->status)
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &c->status);
    if (c->kind == CALL_UNARY || c->status != 200)
        return buffer_append(c, ptr, n) == 0 ? n : 0;
    rc = connect_decoder_feed(&c->dec, ptr, n, on_envelope, c);
    if (rc == 0)
        return n;
    if (rc == -EMSGSIZE)
        fail_local(c, -EMSGSIZE, "resource_exhausted",
                   "the server sent a stream message larger than the %zu MiB cwsfs accepts",
                   API_MAX_ENVELOPE >> 20);
    else if (rc == -ENOMEM)
        fail_local(c, -ENOMEM, "resource_exhausted", "out of memory for a stream message");
    else if (rc < 0)
        fail_local(c, -EIO, "internal",
                   "the server sent a malformed (or compressed) stream envelope");
    return 0;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *ud)
{
    struct call *c = ud;
    size_t cap = size * nitems;
    long n = c->body_fn ? c->body_fn(c->id, buf, cap, c->ud) : 0;

    if (n == API_BODY_PAUSE) {
        c->paused = 1;
        return CURL_READFUNC_PAUSE;
    }
    if (n < 0) {
        if (n < -4095)
            n = -EIO;
        fail_local(c, (int)n, "canceled", "the request body could not be produced: %s",
                   strerror((int)-n));
        return CURL_READFUNC_ABORT;
    }
    if ((size_t)n > cap) {
        fail_local(c, -EIO, "internal", "the request body callback overran its buffer");
        return CURL_READFUNC_ABORT;
    }
    c->body_moved_ms = transfer_now_ms();
    c->sent += (uint64_t)n;
    if (n == 0 && !c->body_done_ms)
        c->body_done_ms = c->body_moved_ms;
    return (size_t)n;
}

const char *transfer_body_stall(const struct call *c, uint64_t now, uint64_t limit)
{
    if (c->kind != CALL_BIDI || !c->easy || c->paused)
        return NULL;
    if (!c->body_done_ms)
        return now - c->body_moved_ms > limit ? "stopped moving" : NULL;
    if (!c->answer_moved_ms)
        return now - c->body_done_ms > limit ? "was sent but not answered" : NULL;
    if (c->ends_with_body && !c->ended) {
        uint64_t last = c->answer_moved_ms > c->body_done_ms ? c->answer_moved_ms : c->body_done_ms;
        return now - last > limit ? "was sent but the call did not end" : NULL;
    }
    return NULL;
}

int transfer_ended_unclosed(const struct call *c, uint64_t now, uint64_t limit)
{
    if (c->kind != CALL_BIDI || !c->easy || !c->ended || !c->body_done_ms)
        return 0;
    uint64_t last = c->answer_moved_ms > c->body_done_ms ? c->answer_moved_ms : c->body_done_ms;
    return now - last > limit;
}

/* ---- starting a transfer and reading its result ---- */

uint64_t transfer_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A new attempt starts from nothing: no answer, no error, no progress yet. */
static void attempt_reset(struct call *c)
{
    connect_decoder_free(&c->dec);
    connect_decoder_init(&c->dec, API_MAX_ENVELOPE);
    connect_error_clear(&c->error);
    free(c->resp);
    c->resp = NULL;
    c->resp_len = c->resp_cap = 0;
    c->status = 0;
    c->ended = c->local_err = c->server_err = c->paused = 0;
    c->body_done_ms = c->answer_moved_ms = 0;
    c->body_moved_ms = transfer_now_ms();
    c->errbuf[0] = '\0';
}

/* What every call's connection is: the protocol, reuse, keepalive, TLS checks. */
static CURLcode connection_options(CURL *e, const struct transfer_setup *ts)
{
    CURLcode rc = CURLE_OK;
    rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    rc |= curl_easy_setopt(e, CURLOPT_HTTP_VERSION, ts->http_version);
    if (ts->no_reuse) {
        rc |= curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        rc |= curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    } else {
        /* Wait for an HTTP/2 connection being set up rather than opening a second one,
         * so that a burst of calls shares one connection. */
        rc |= curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    }
    rc |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
    rc |= curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 15L);
    rc |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, API_CONNECT_TIMEOUT_MS);
    rc |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    rc |= curl_easy_setopt(e, CURLOPT_USERAGENT, "cwsfs/" CWSFS_VERSION);
    if (ts->unix_socket)
        rc |= curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, ts->unix_socket);
    /* Bigger reads: fewer trips through the h2 layer for bulk output and files. */
    rc |= curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 512L * 1024);
    return rc;
}

int transfer_start(struct call *c, const struct transfer_setup *ts, CURLM *multi)
{
    CURLcode rc = CURLE_OK;
    char *url = NULL;
    size_t len;
    CURL *e;
    int err = -ENOMEM;

    attempt_reset(c);
    len = strlen(ts->base_url) + strlen(API_SERVICE_PATH) + strlen(c->rpc) + 1;
    url = malloc(len);
    e = curl_easy_init();
    if (!url || !e)
        goto out;
    snprintf(url, len, "%s%s%s", ts->base_url, API_SERVICE_PATH, c->rpc);

    rc |= curl_easy_setopt(e, CURLOPT_URL, url);
    rc |= connection_options(e, ts);
    rc |= curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    rc |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    rc |= curl_easy_setopt(e, CURLOPT_POST, 1L);
    if (c->kind == CALL_UNARY) {
        rc |=
            curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->slow ? ts->slow_headers : ts->unary_headers);
        /* The deadline is the whole call's, retries included (a retry gets what is
         * left). A little past it, so that the server's own deadline_exceeded (with its
         * words) usually arrives before curl gives up. */
        uint64_t now = transfer_now_ms();
        if (!c->deadline_ms)
            c->deadline_ms = now + (uint64_t)(c->slow ? ts->slow_timeout_ms : ts->timeout_ms);
        long left = c->deadline_ms > now ? (long)(c->deadline_ms - now) : 0;
        rc |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, left + 1000L);
    } else {
        rc |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, ts->stream_headers);
    }
    if (c->kind == CALL_BIDI) {
        /* No size: over HTTP/2 the body is DATA frames until the callback returns 0. */
        rc |= curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        rc |= curl_easy_setopt(e, CURLOPT_READDATA, c);
    } else {
        rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->req);
        rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->req_len);
    }
    if (rc != CURLE_OK) {
        err = -EINVAL;
        goto out;
    }
    if (curl_multi_add_handle(multi, e) != CURLM_OK)
        goto out;
    c->easy = e;
    e = NULL;
    c->attempts++;
    /* A fixed body goes to curl whole: count it once the attempt starts. */
    if (c->kind != CALL_BIDI)
        c->sent += c->req_len;
    err = 0;
out:
    if (e)
        curl_easy_cleanup(e);
    free(url);
    return err;
}

int transfer_result(struct call *c, CURLcode rc, json_t **resp_out, int *transient_out)
{
    json_error_t jerr;
    json_t *resp = NULL;
    int err = 0;
    int transient = 0; /* reported by the network or the server, not found here */

    if (c->local_err) {
        err = c->local_err;
        transient = c->server_err;
    } else if (c->ended) {
        err = 0; /* the end-of-stream envelope settled it, whatever came after */
    } else if (rc != CURLE_OK) {
        connect_error_clear(&c->error);
        connect_error_set(&c->error,
                          rc == CURLE_OPERATION_TIMEDOUT ? "deadline_exceeded" : "unavailable",
                          c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc));
        err = -connect_error_errno(&c->error);
        transient = 1;
    } else if (c->status != 200) {
        connect_error_from_body(c->resp, c->resp_len, c->status, &c->error);
        err = -connect_error_errno(&c->error);
        transient = 1;
    } else if (c->kind == CALL_UNARY) {
        resp = json_loadb(c->resp ? c->resp : "", c->resp_len, 0, &jerr);
        if (!resp || !json_is_object(resp)) {
            char msg[256];
            snprintf(msg, sizeof(msg), "the server's 200 response is not a JSON object%s%s",
                     resp ? "" : ": ", resp ? "" : jerr.text);
            json_decref(resp);
            resp = NULL;
            connect_error_set(&c->error, "internal", msg);
            err = -EIO;
        }
    } else {
        connect_error_set(&c->error, "internal",
                          "the stream ended without its end-of-stream message");
        err = -EIO;
    }
    *resp_out = resp;
    *transient_out = transient;
    return err;
}

/* ---- request headers ---- */

static int header_value_ok(const char *v)
{
    return v && !strpbrk(v, "\r\n");
}

static int add_header(struct curl_slist **list, const char *name, const char *value)
{
    char buf[1024];
    struct curl_slist *l;
    int n = snprintf(buf, sizeof(buf), "%s: %s", name, value);

    if (n < 0 || (size_t)n >= sizeof(buf))
        return -EINVAL;
    l = curl_slist_append(*list, buf);
    explicit_bzero(buf, sizeof(buf));
    if (!l)
        return -ENOMEM;
    *list = l;
    return 0;
}

/* The header lists carry the credentials: wipe them before freeing. */
static void free_headers(struct curl_slist **list)
{
    struct curl_slist *l;

    for (l = *list; l; l = l->next)
        explicit_bzero(l->data, strlen(l->data));
    curl_slist_free_all(*list);
    *list = NULL;
}

static int build_headers(struct curl_slist **list, const struct api_config *cfg,
                         const char *content_type, long timeout_ms)
{
    char num[32];
    int err = 0;

    err = err ? err : add_header(list, "Content-Type", content_type);
    err = err ? err : add_header(list, "Connect-Protocol-Version", "1");
    if (timeout_ms > 0) {
        snprintf(num, sizeof(num), "%ld", timeout_ms);
        err = err ? err : add_header(list, "Connect-Timeout-Ms", num);
    }
    /* An empty Expect stops curl from waiting for 100-continue before big HTTP/1.1
     * bodies (a WriteFile of tens of MiB). */
    err = err ? err : add_header(list, "Expect", "");
    if (cfg->auth == API_AUTH_BEARER) {
        char bearer[1024];
        if (snprintf(bearer, sizeof(bearer), "Bearer %s", cfg->api_key) >= (int)sizeof(bearer))
            err = err ? err : -EINVAL;
        err = err ? err : add_header(list, "Authorization", bearer);
        explicit_bzero(bearer, sizeof(bearer));
    } else if (cfg->auth == API_AUTH_WANDB) {
        err = err ? err : add_header(list, "x-wandb-api-key", cfg->api_key);
        if (cfg->wandb_entity)
            err = err ? err : add_header(list, "x-entity-id", cfg->wandb_entity);
        if (cfg->wandb_project)
            err = err ? err : add_header(list, "x-project-name", cfg->wandb_project);
    }
    return err;
}

int transfer_headers_build(struct transfer_setup *ts, const struct api_config *cfg)
{
    int err;

    if ((cfg->api_key && !header_value_ok(cfg->api_key)) ||
        (cfg->wandb_entity && !header_value_ok(cfg->wandb_entity)) ||
        (cfg->wandb_project && !header_value_ok(cfg->wandb_project)))
        return -EINVAL;
    err = build_headers(&ts->unary_headers, cfg, "application/json", ts->timeout_ms);
    if (!err)
        err = build_headers(&ts->slow_headers, cfg, "application/json", ts->slow_timeout_ms);
    if (!err)
        err = build_headers(&ts->stream_headers, cfg, "application/connect+json", 0);
    if (err)
        transfer_headers_free(ts);
    return err;
}

void transfer_headers_free(struct transfer_setup *ts)
{
    free_headers(&ts->unary_headers);
    free_headers(&ts->slow_headers);
    free_headers(&ts->stream_headers);
}
