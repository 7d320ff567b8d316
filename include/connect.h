/* connect.h - the Connect protocol's framing and errors (connectrpc.com/docs/protocol).
 *
 * What is here is pure: no I/O, no threads. The API worker (api.c) feeds response
 * bytes in and gets messages and errors out; the unit tests drive it the same way.
 * All functions return 0 or -errno unless said otherwise. */
#ifndef CWSFS_CONNECT_H
#define CWSFS_CONNECT_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#define CONNECT_ENVELOPE_HEADER 5
#define CONNECT_FLAG_COMPRESSED 0x01u
#define CONNECT_FLAG_END_STREAM 0x02u

/* Write the 5-byte envelope header (flags, 32-bit big-endian length) into hdr. */
void connect_envelope_header(unsigned char hdr[CONNECT_ENVELOPE_HEADER], uint8_t flags,
                             uint32_t len);
/* Frame one JSON message as an envelope: header + compact JSON text in one malloc'ed
 * buffer (*out, *len). -EINVAL for no message, -ENOMEM, -EMSGSIZE above 4 GiB. */
int connect_envelope_json(const json_t *msg, uint8_t flags, char **out, size_t *len);

/* A Connect error, from a unary error body, an end-of-stream envelope, or made
 * up locally for transport failures. Strings are owned by the struct; free with
 * connect_error_clear. reason/domain come from the first google.rpc.ErrorInfo detail
 * that decodes. Every function that fills one replaces what it held before, so it
 * must start zeroed ({0}) and may then be refilled without clearing in between. */
struct connect_error {
    char *code;    /* "not_found", ...; never NULL once set */
    char *message; /* the server's words, may be NULL */
    char *reason;  /* ErrorInfo.reason, e.g. "CWSANDBOX_FILE_NOT_FOUND", may be NULL */
    char *domain;  /* ErrorInfo.domain, may be NULL */
};

void connect_error_clear(struct connect_error *err);
/* Fill err with a locally made error (copies both strings; message may be NULL). */
void connect_error_set(struct connect_error *err, const char *code, const char *message);

/* Parse an error object {"code":..,"message":..,"details":[{"type":..,"value":..}]}.
 * A missing, non-string or unknown code (not one of Connect's sixteen) becomes
 * "unknown". Returns -EINVAL if obj is not an object (err is then untouched). */
int connect_error_from_json(const json_t *obj, struct connect_error *err);

/* Parse a unary error response body. http_status picks the code when the body is not
 * a Connect error (a proxy's HTML page, say): connect_code_from_http(http_status),
 * and message then says so unless the body was a JSON object with a "message". */
void connect_error_from_body(const char *body, size_t len, long http_status,
                             struct connect_error *err);

/* The Connect code an HTTP status implies when the body carries none. This is the
 * Connect spec's table for that case (the same as gRPC's), not the inverse of the
 * code->status table in api/README.md: 400 internal, 401 unauthenticated,
 * 403 permission_denied, 404 unimplemented, 429/502/503/504 unavailable, others
 * unknown. A bare 404 from a proxy means a missing route, not a missing file. */
const char *connect_code_from_http(long http_status);

/* Decode a binary google.rpc.ErrorInfo (field 1 reason, 2 domain, 3 metadata which is
 * skipped). *reason and *domain are malloc'ed (NULL when absent). -EPROTO on bad wire data. */
int connect_errorinfo_decode(const void *pb, size_t len, char **reason, char **domain);

/* The errno for a Connect code (DESIGN.md "Errors"): not_found ENOENT, already_exists
 * EEXIST, invalid_argument EINVAL, permission_denied/unauthenticated EACCES,
 * failed_precondition EBUSY, resource_exhausted EAGAIN, unimplemented ENOSYS,
 * deadline_exceeded ETIMEDOUT, unavailable EHOSTUNREACH, anything else EIO.
 * Returns a positive errno. */
int connect_code_errno(const char *code);

/* The errno for a whole error: the ErrorInfo reason when it says more than the code
 * (CWSANDBOX_FILE_NOT_FOUND ENOENT, _FILE_IS_DIRECTORY EISDIR, _FILE_PERMISSION_DENIED
 * EACCES, _FILE_TOO_LARGE EFBIG, _FILE_IO_FAILED/_FILE_TRUNCATED EIO,
 * _SANDBOX_NOT_FOUND ENOENT, _COMMAND_TIMEOUT ETIMEDOUT, _NOT_IMPLEMENTED ENOSYS,
 * _RUNNER_CAPACITY_EXHAUSTED EAGAIN), else connect_code_errno(code). Positive errno. */
int connect_error_errno(const struct connect_error *err);

/* Whether a call that failed with this code may be retried: 0 never,
 * CONNECT_RETRY_ALWAYS for unavailable, CONNECT_RETRY_IDEMPOTENT for
 * resource_exhausted/aborted/deadline_exceeded (retry those only when the call is
 * idempotent). Both are non-zero, so a plain truth test means "retryable at all". */
#define CONNECT_RETRY_IDEMPOTENT 1
#define CONNECT_RETRY_ALWAYS 2
int connect_code_retryable(const char *code);
/* The same for a whole error: 0 when its ErrorInfo reason names a lasting condition
 * (CWSANDBOX_FILE_TOO_LARGE with resource_exhausted, say), else by its code. */
int connect_error_retryable(const struct connect_error *err);

/* Incremental envelope decoder for streaming responses. Feed bytes as they arrive;
 * each complete envelope is handed to the callback, its data NUL-terminated (data[len]
 * == 0) and valid only during the call. Bounded: an envelope longer than max_message
 * is -EMSGSIZE (checked before anything is allocated), a compressed one or one with
 * undefined flag bits -EPROTO. */
typedef int (*connect_envelope_fn)(uint8_t flags, const char *data, size_t len, void *ud);

struct connect_decoder {
    unsigned char header[CONNECT_ENVELOPE_HEADER];
    size_t header_have;
    char *body;
    size_t body_len;  /* length from the header */
    size_t body_have; /* bytes of body received so far */
    size_t max_message;
};

void connect_decoder_init(struct connect_decoder *dec, size_t max_message);
/* Returns 0, the callback's non-zero return (decoding stops, the rest of data is
 * dropped), -EMSGSIZE, -EPROTO or -ENOMEM. After an error the stream is broken: do not
 * feed it again, only free. A callback returning 0 must leave dec alive. */
int connect_decoder_feed(struct connect_decoder *dec, const void *data, size_t len,
                         connect_envelope_fn fn, void *ud);
/* True when no partial envelope is buffered (a stream that ends otherwise was cut). */
int connect_decoder_idle(const struct connect_decoder *dec);
void connect_decoder_free(struct connect_decoder *dec);

/* Parse an end-of-stream envelope's JSON. Returns 0 with *has_error = 0 on success,
 * 0 with *has_error = 1 and err filled when it carries an error, -EPROTO if not JSON. */
int connect_end_stream_parse(const char *data, size_t len, int *has_error,
                             struct connect_error *err);

#endif
