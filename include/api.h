/* api.h - the Sandbox API client: one worker thread owning a curl multi handle.
 *
 * Any thread may start a call; the worker runs it and reports through callbacks that
 * run ON THE WORKER THREAD, one call at a time, never concurrently with each other.
 * A callback may start or cancel other calls (no deadlock: the queue lock is never
 * held while callbacks run).
 *
 * Ownership: the request JSON passed in is stolen (decref'ed by the API). The call
 * object belongs to the API; callers hold its numeric id, never a pointer, so a
 * cancel that races with completion is harmless. Every started call gets exactly one
 * done callback (also when cancelled, with err = -ECANCELED, and when api_shutdown
 * runs first, with -ESHUTDOWN).
 *
 * Transport: HTTP/2 with multiplexing by default (h2c prior knowledge for http://,
 * ALPN for https://), HTTP/1.1 when configured (streaming calls then fail with
 * ENOSYS because Connect bidi streams need HTTP/2). Unary calls marked idempotent,
 * and CreateSandbox (its requestId makes it so), retry transient failures with
 * exponential backoff. */
#ifndef CWSFS_API_H
#define CWSFS_API_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>

#include "connect.h"

enum api_auth {
    API_AUTH_NONE,
    API_AUTH_BEARER, /* Authorization: Bearer <api_key> (CoreWeave) */
    API_AUTH_WANDB,  /* x-wandb-api-key, x-entity-id, x-project-name (W&B) */
};

struct api_config {
    const char *base_url;    /* "https://api.cwsandbox.com", "http://127.0.0.1:8080" */
    const char *unix_socket; /* connect through this socket instead of TCP, may be NULL */
    enum api_auth auth;
    const char *api_key; /* never logged */
    const char *wandb_entity;
    const char *wandb_project;
    int http1;             /* force HTTP/1.1 (unary calls only) */
    long unary_timeout_ms; /* per unary call; 0 = 30000 */
    int max_retries;       /* transient failures retried this many times; 0 = 5, <0 = none */
};

/* Outcome of a call. err is 0 or -errno; on failure error holds the Connect code,
 * message and ErrorInfo reason (transport failures become "unavailable" with curl's
 * words). response is the unary response message (borrowed: valid during the
 * callback; take a reference to keep it), NULL for streams and failures. */
struct api_result {
    int err;
    struct connect_error error;
    json_t *response;
    long http_status;
    int sent; /* the request (or part of its body) left for the service: a failure
               * after that leaves its outcome unknown */
};

typedef void (*api_done_fn)(uint64_t call_id, const struct api_result *res, void *ud);

/* A streaming response message (one envelope's JSON, borrowed). Return 0 to go on,
 * non-zero to cancel the call (its done callback then gets -ECANCELED). */
typedef int (*api_message_fn)(uint64_t call_id, json_t *msg, void *ud);

/* Produces the request body of a client-streaming call, in envelope-framed bytes
 * (see connect_envelope_json). Called on the worker as curl needs data: write at most
 * cap bytes into buf and return the count, 0 at the end of the body, or -errno to
 * fail the call. Returning API_BODY_PAUSE pauses the upload until api_resume_body. */
typedef long (*api_body_fn)(uint64_t call_id, char *buf, size_t cap, void *ud);
#define API_BODY_PAUSE (-1000000L)

int api_init(const struct api_config *cfg);
/* Cancels what is running (each gets its done callback, -ESHUTDOWN), drops pending
 * api_schedule work unrun, joins the worker. Not from a callback. */
void api_shutdown(void);

/* The call starters below return the call's id, never 0 for a started call. 0 means
 * nothing started (the API is not running, or out of memory): no callback will come and
 * the request has been released. rpc must match [A-Za-z0-9_]+ (else done gets -EINVAL). */

/* Flags of a call: API_IDEMPOTENT and API_SLOW for unary calls, API_ENDS_WITH_BODY
 * for bidi ones. */
#define API_IDEMPOTENT 1 /* may be retried after a transient failure */
#define API_SLOW                                                                                   \
    2 /* may take minutes (file transfers, commands, stops): its deadline                          \
       * is API_SLOW_TIMEOUT_MS (or the mount's timeout if longer) */
#define API_SLOW_TIMEOUT_MS 300000L
#define API_ENDS_WITH_BODY                                                                         \
    4 /* bidi: the server ends the call soon after the request body ends (an upload's `cat`),      \
       * so a call left open that long after its body, silent, has stalled */

/* Unary Connect call: POST {base}/coreweave.sandbox.v1.SandboxService/{rpc}. flags is
 * a set of API_*; CreateSandbox is always retried (its requestId makes that safe). */
uint64_t api_unary(const char *rpc, json_t *request, int flags, api_done_fn done, void *ud);
/* Server-streaming call (StreamLogs). */
uint64_t api_server_stream(const char *rpc, json_t *request, api_message_fn on_message,
                           api_done_fn done, void *ud);
/* Bidirectional call (StreamExec). The body function is called until it returns 0;
 * with Debian 12's libcurl, responses only flow once it has (api_full_duplex() = 0).
 * flags: 0 or API_ENDS_WITH_BODY. */
uint64_t api_bidi(const char *rpc, int flags, api_body_fn body, api_message_fn on_message,
                  api_done_fn done, void *ud);
/* Wake an upload paused by API_BODY_PAUSE. Any thread. */
void api_resume_body(uint64_t call_id);
/* Whether this libcurl delivers HTTP/2 response data while the request body is open. */
int api_full_duplex(void);

/* Cancel a call if it still runs; a no-op for finished or unknown ids. Any thread. */
void api_cancel(uint64_t call_id);

/* Run fn(ud) on the worker thread after delay_ms (0 = soon). Any thread. Used for
 * polling and for work that must happen on the worker (kernel cache invalidation). */
void api_schedule(long delay_ms, void (*fn)(void *ud), void *ud);

/* Calls started per rpc since api_init, for .metrics: fills up to n (name, count)
 * pairs and returns how many rpcs have been called. names point to static strings. */
size_t api_call_counts(const char **names, uint64_t *counts, size_t n);

/* Per-rpc statistics for .metrics. A call's duration runs from its start to its done
 * callback (retries and, for streams, the whole stream included). */
#define API_DURATION_BUCKETS 7 /* bounds in api_duration_bounds_ms, then +Inf */
#define API_ERROR_CODES 16     /* Connect has sixteen codes */
extern const long api_duration_bounds_ms[API_DURATION_BUCKETS];
struct api_rpc_stats {
    const char *rpc; /* static storage: valid after api_shutdown too */
    uint64_t calls;  /* started */
    uint64_t in_flight;
    uint64_t finished;
    uint64_t le[API_DURATION_BUCKETS]; /* finished within api_duration_bounds_ms[i] (cumulative) */
    uint64_t duration_ms_sum;
    uint64_t sent, received;                     /* bytes, finished and running calls */
    uint64_t in_flight_sent, in_flight_received; /* of these, by calls still running */
    size_t nerrors;
    struct {
        const char *code; /* static storage, as rpc */
        uint64_t count;
    } errors[API_ERROR_CODES]; /* failed calls by Connect code; cancelled ones are not */
};
/* Copies up to n rpcs' statistics into out; returns how many rpcs there are. Any
 * thread. Bytes of running calls are brought up to date at most every 100 ms. */
size_t api_rpc_stats(struct api_rpc_stats *out, size_t n);

#endif
