/* transfer.h - one HTTP transfer of an API call (worker thread only): the call record
 * shared by the queue (api.c) and the transfer code (transfer.c), the connection
 * settings, building the request headers, starting a transfer and reading its result.
 * Internal to the API client: nothing outside api.c, transfer.c and their unit tests
 * includes this. */
#ifndef CWSFS_TRANSFER_H
#define CWSFS_TRANSFER_H

#include <stddef.h>
#include <stdint.h>
#include <curl/curl.h>
#include <jansson.h>

#include "api.h"
#include "connect.h"

#define API_SERVICE_PATH "/coreweave.sandbox.v1.SandboxService/"
#define API_RPC_MAX 64
#define API_MAX_UNARY_BODY ((size_t)64 << 20)
#define API_MAX_ERROR_BODY ((size_t)1 << 20)
#define API_MAX_ENVELOPE ((size_t)16 << 20)
#define API_CONNECT_TIMEOUT_MS 15000L

enum call_kind { CALL_UNARY, CALL_SERVER_STREAM, CALL_BIDI };

/* One API call. Created by the submitting thread, then owned by the worker from the
 * moment it is queued; freed only by call_free (via call_deliver). */
struct call {
    struct call *prev, *next; /* incoming queue (under api.lock), then the live list */
    uint64_t id;
    enum call_kind kind;
    char rpc[API_RPC_MAX];
    int retry_ok; /* idempotent unary, or CreateSandbox */
    int slow;     /* unary with the long deadline (API_SLOW) */
    api_done_fn done;
    api_message_fn on_message;
    api_body_fn body_fn;
    void *ud;
    int start_err; /* the call could not be built: fail it at start */
    char *req;     /* request bytes: JSON (unary) or one envelope (stream) */
    size_t req_len;
    CURL *easy;               /* NULL while queued or backing off */
    int attempts;             /* transfers started */
    uint64_t deadline_ms;     /* unary: when the whole call ends, retries included */
    int backoff;              /* waiting for a retry timer */
    int paused;               /* upload paused by API_BODY_PAUSE */
    uint64_t body_done_ms;    /* when the body callback returned 0 (monotonic ms), else 0 */
    uint64_t body_moved_ms;   /* when curl last took body bytes (or the attempt started) */
    uint64_t answer_moved_ms; /* when response bytes last arrived, else 0 */
    int ends_with_body;       /* API_ENDS_WITH_BODY */
    long status;              /* HTTP status, 0 until the first byte of the body */
    char *resp;               /* unary body, or a stream's error body */
    size_t resp_len, resp_cap;
    struct connect_decoder dec;
    int ended;      /* end-of-stream envelope seen */
    int local_err;  /* failure decided in a curl callback; error holds it */
    int server_err; /* local_err came from the server (end-of-stream error) */
    struct connect_error error;
    char errbuf[CURL_ERROR_SIZE];
    /* For the log and .metrics (api.c), worker only like the rest: */
    int slot;                /* its rpc's statistics slot, -1 for none */
    uint64_t submitted_ms;   /* when it was queued (monotonic ms) */
    uint64_t sent, received; /* bytes, every attempt: request bodies handed to curl, response
                              * bytes curl delivered */
    uint64_t sent_shown, received_shown; /* the part of them already in the statistics */
};

/* Where and how calls go. Set by api_init, read-only until api_shutdown. */
struct transfer_setup {
    char *base_url; /* no trailing slash */
    char *unix_socket;
    long http_version;
    int http1;
    int no_reuse;
    long timeout_ms, slow_timeout_ms; /* unary deadlines: normal, API_SLOW */
    /* Hold credentials. */
    struct curl_slist *unary_headers, *slow_headers, *stream_headers;
};

/* Build both header lists from cfg (credentials included); -EINVAL when a value would
 * break a header line. On failure nothing is left allocated. */
int transfer_headers_build(struct transfer_setup *ts, const struct api_config *cfg);
/* Wipe (they carry credentials) and free both header lists. */
void transfer_headers_free(struct transfer_setup *ts);

/* Whether c's request body has stalled for more than limit ms at now: NULL if not, else
 * how, in words. A body stalls when curl takes no bytes of it (and its owner did not
 * pause it); or when it was all sent but nothing came back (the server answers a
 * StreamExec at once with `ready`); or, for API_ENDS_WITH_BODY calls, when the call
 * stays open and silent after its body ended. */
const char *transfer_body_stall(const struct call *c, uint64_t now, uint64_t limit);
/* 1 when a bidi call's end-of-stream message came, its body was all sent, and for
 * limit ms since the stream neither moved nor closed: seen a few times in 2,000 short
 * uploads under load with this libcurl (the server had ended each call). Its outcome
 * is known: the caller takes it rather than wait for a close that does not come. */
int transfer_ended_unclosed(const struct call *c, uint64_t now, uint64_t limit);

/* Monotonic milliseconds. */
uint64_t transfer_now_ms(void);

/* Reset c's per-attempt state and add a new easy handle for it to multi. 0 or -errno. */
int transfer_start(struct call *c, const struct transfer_setup *ts, CURLM *multi);

/* The outcome of c's finished transfer (its easy handle already removed): 0 with
 * *resp set for a unary call (the caller owns it), or -errno with c->error filled;
 * *transient says the network or the server reported it, so a retry may help. */
int transfer_result(struct call *c, CURLcode rc, json_t **resp, int *transient);

#endif
