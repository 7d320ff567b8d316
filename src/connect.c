/* connect.c - the Connect protocol's envelopes and errors, with no I/O of its own.
 *
 * Everything the network hands us is treated as hostile: envelope lengths are checked
 * against a bound before anything is allocated, error bodies that are not Connect
 * errors (a proxy's HTML page, a truncated JSON) still yield a usable error, and the
 * binary google.rpc.ErrorInfo inside an error's details is decoded by hand with every
 * length checked, skipping the fields we do not use whatever their wire type. One
 * table holds what each Connect code means to us (errno, retry class), so the mapping
 * DESIGN.md promises lives in exactly one place. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "connect.h"

static const struct code_row {
    const char *name;
    int errnum;
    int retry; /* CONNECT_RETRY_* */
} code_table[] = {
    {"canceled", EIO, 0},
    {"unknown", EIO, 0},
    {"invalid_argument", EINVAL, 0},
    {"deadline_exceeded", ETIMEDOUT, CONNECT_RETRY_IDEMPOTENT},
    {"not_found", ENOENT, 0},
    {"already_exists", EEXIST, 0},
    {"permission_denied", EACCES, 0},
    {"resource_exhausted", EAGAIN, CONNECT_RETRY_IDEMPOTENT},
    {"failed_precondition", EBUSY, 0},
    {"aborted", EIO, CONNECT_RETRY_IDEMPOTENT},
    {"out_of_range", EIO, 0},
    {"unimplemented", ENOSYS, 0},
    {"internal", EIO, 0},
    {"unavailable", EHOSTUNREACH, CONNECT_RETRY_ALWAYS},
    {"data_loss", EIO, 0},
    {"unauthenticated", EACCES, 0},
};

/* ErrorInfo reasons that name the failure better than the code they come with. */
static const struct reason_row {
    const char *reason;
    int errnum;
} reason_table[] = {
    {"CWSANDBOX_FILE_NOT_FOUND", ENOENT},
    {"CWSANDBOX_FILE_IS_DIRECTORY", EISDIR},
    {"CWSANDBOX_FILE_PERMISSION_DENIED", EACCES},
    {"CWSANDBOX_FILE_TOO_LARGE", EFBIG},
    {"CWSANDBOX_FILE_IO_FAILED", EIO},
    {"CWSANDBOX_FILE_TRUNCATED", EIO},
    {"CWSANDBOX_SANDBOX_NOT_FOUND", ENOENT},
    {"CWSANDBOX_COMMAND_TIMEOUT", ETIMEDOUT},
    {"CWSANDBOX_NOT_IMPLEMENTED", ENOSYS},
    {"CWSANDBOX_RUNNER_CAPACITY_EXHAUSTED", EAGAIN},
};

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Nested groups deeper than this are not ErrorInfo; refuse instead of recursing on. */
#define PB_MAX_GROUP_DEPTH 32

static const struct code_row *code_lookup(const char *code)
{
    size_t i;

    if (!code)
        return NULL;
    for (i = 0; i < ARRAY_LEN(code_table); i++)
        if (strcmp(code_table[i].name, code) == 0)
            return &code_table[i];
    return NULL;
}

/* The code string is the one field callers may always dereference, and the setters
 * return void: failing to copy a dozen bytes leaves nothing sane to do. */
static char *strdup_or_die(const char *s)
{
    char *p = strdup(s);

    if (!p) {
        fputs("cwsfs: out of memory\n", stderr);
        abort();
    }
    return p;
}

void connect_envelope_header(unsigned char hdr[CONNECT_ENVELOPE_HEADER], uint8_t flags,
                             uint32_t len)
{
    hdr[0] = flags;
    hdr[1] = (unsigned char)(len >> 24);
    hdr[2] = (unsigned char)(len >> 16);
    hdr[3] = (unsigned char)(len >> 8);
    hdr[4] = (unsigned char)len;
}

void connect_error_clear(struct connect_error *err)
{
    free(err->code);
    free(err->message);
    free(err->reason);
    free(err->domain);
    memset(err, 0, sizeof(*err));
}

void connect_error_set(struct connect_error *err, const char *code, const char *message)
{
    /* Copy before clearing: code or message may point into err itself. */
    char *c = strdup_or_die(code ? code : "unknown");
    char *m = message ? strdup(message) : NULL;

    connect_error_clear(err);
    err->code = c;
    err->message = m;
}

/* ---- google.rpc.ErrorInfo, protobuf wire format ---- */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

struct pb_reader {
    const unsigned char *p;
    const unsigned char *end;
};

static int pb_varint(struct pb_reader *r, uint64_t *out)
{
    uint64_t v = 0;
    int shift;

    /* Ends by shift 63 at the latest: that byte either ends the varint or is refused. */
    for (shift = 0;; shift += 7) {
        unsigned char b;

        if (r->p == r->end)
            return -EPROTO;
        b = *r->p++;
        /* The tenth byte may only carry the top bit of a 64-bit value. */
        if (shift == 63 && b > 1)
            return -EPROTO;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
}

static int pb_skip(struct pb_reader *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n)
        return -EPROTO;
    r->p += n;
    return 0;
}

static int pb_tag(struct pb_reader *r, uint32_t *field, int *wire)
{
    uint64_t tag;
    int rc = pb_varint(r, &tag);

    if (rc)
        return rc;
    if (tag >> 3 == 0 || tag >> 3 > 0x1fffffff)
        return -EPROTO;
    *field = (uint32_t)(tag >> 3);
    *wire = (int)(tag & 7);
    return 0;
}

/* Skip one field's value, its tag already read. A group runs to the end-group tag of
 * the same field number, with other fields and groups in between. */
static int pb_skip_value(struct pb_reader *r, uint32_t field, int wire, int depth)
{
    uint64_t v;
    int rc;

    switch (wire) {
    case WT_VARINT:
        return pb_varint(r, &v);
    case WT_I64:
        return pb_skip(r, 8);
    case WT_I32:
        return pb_skip(r, 4);
    case WT_LEN:
        rc = pb_varint(r, &v);
        if (rc)
            return rc;
        if (v > (uint64_t)(r->end - r->p))
            return -EPROTO;
        return pb_skip(r, (size_t)v);
    case WT_SGROUP:
        if (depth >= PB_MAX_GROUP_DEPTH)
            return -EPROTO;
        for (;;) {
            uint32_t f;
            int w;

            rc = pb_tag(r, &f, &w);
            if (rc)
                return rc;
            if (w == WT_EGROUP)
                return f == field ? 0 : -EPROTO;
            rc = pb_skip_value(r, f, w, depth + 1);
            if (rc)
                return rc;
        }
    default: /* a stray end-group, or wire types 6 and 7 that do not exist */
        return -EPROTO;
    }
}

/* A length-delimited string into a fresh C string (replacing *out: the last occurrence
 * of a singular field wins). A NUL inside would silently cut it, so it is refused. */
static int pb_string(struct pb_reader *r, char **out)
{
    uint64_t n;
    char *s;
    int rc = pb_varint(r, &n);

    if (rc)
        return rc;
    if (n > (uint64_t)(r->end - r->p) || memchr(r->p, '\0', (size_t)n))
        return -EPROTO;
    s = malloc((size_t)n + 1);
    if (!s)
        return -ENOMEM;
    memcpy(s, r->p, (size_t)n);
    s[n] = '\0';
    r->p += n;
    free(*out);
    *out = s;
    return 0;
}

int connect_errorinfo_decode(const void *pb, size_t len, char **reason, char **domain)
{
    struct pb_reader r = {pb, pb};
    char *rs = NULL, *dm = NULL;
    int rc = 0;

    if (len)
        r.end = r.p + len; /* pb may be NULL when empty */

    while (r.p < r.end) {
        uint32_t field;
        int wire;

        rc = pb_tag(&r, &field, &wire);
        if (rc)
            goto out;
        /* A known field with another wire type is kept as unknown, as protobuf does. */
        if (field == 1 && wire == WT_LEN)
            rc = pb_string(&r, &rs);
        else if (field == 2 && wire == WT_LEN)
            rc = pb_string(&r, &dm);
        else
            rc = pb_skip_value(&r, field, wire, 0);
        if (rc)
            goto out;
    }
    *reason = rs;
    *domain = dm;
    rs = dm = NULL;
out:
    free(rs);
    free(dm);
    return rc;
}

/* ---- error bodies ---- */

static int is_errorinfo_type(const char *type)
{
    return strcmp(type, "google.rpc.ErrorInfo") == 0 ||
           strcmp(type, "type.googleapis.com/google.rpc.ErrorInfo") == 0;
}

/* Take reason and domain from the first ErrorInfo detail that decodes; a broken
 * detail must not cost us the code and message around it. */
static void details_parse(const json_t *details, struct connect_error *err)
{
    size_t i;
    json_t *d;

    if (!json_is_array(details))
        return;
    json_array_foreach(details, i, d) {
        const char *type = json_string_value(json_object_get(d, "type"));
        json_t *value = json_object_get(d, "value");
        size_t vlen;
        char *buf;
        long n;

        if (!type || !is_errorinfo_type(type) || !json_is_string(value))
            continue;
        vlen = json_string_length(value);
        buf = malloc(base64_decoded_max(vlen) + 1);
        if (!buf)
            return;
        n = base64_decode(json_string_value(value), vlen, buf);
        if (n >= 0)
            n = connect_errorinfo_decode(buf, (size_t)n, &err->reason, &err->domain);
        free(buf);
        if (n == 0)
            return;
    }
}

/* Fill err from an error object; a missing or unknown code becomes fallback. */
static void error_parse(const json_t *obj, const char *fallback, struct connect_error *err)
{
    const char *code = json_string_value(json_object_get(obj, "code"));
    const char *message = json_string_value(json_object_get(obj, "message"));

    /* Connect has exactly sixteen codes; anything else is not from a Connect server. */
    connect_error_set(err, code_lookup(code) ? code : fallback, message);
    details_parse(json_object_get(obj, "details"), err);
}

int connect_error_from_json(const json_t *obj, struct connect_error *err)
{
    if (!json_is_object(obj))
        return -EINVAL;
    error_parse(obj, "unknown", err);
    return 0;
}

const char *connect_code_from_http(long http_status)
{
    /* The Connect spec's table for responses without a Connect error (the same as
     * gRPC's): not the inverse of the code->status table, since a bare 404 from a
     * proxy means a missing route, not a missing file. */
    switch (http_status) {
    case 400:
        return "internal";
    case 401:
        return "unauthenticated";
    case 403:
        return "permission_denied";
    case 404:
        return "unimplemented";
    case 429:
    case 502:
    case 503:
    case 504:
        return "unavailable";
    default:
        return "unknown";
    }
}

void connect_error_from_body(const char *body, size_t len, long http_status,
                             struct connect_error *err)
{
    const char *fallback = connect_code_from_http(http_status);
    json_t *obj = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    int from_connect = 0;

    if (json_is_object(obj)) {
        from_connect = code_lookup(json_string_value(json_object_get(obj, "code"))) != NULL;
        error_parse(obj, fallback, err);
    } else {
        connect_error_set(err, fallback, NULL);
    }
    /* Something other than a Connect server answered: the error file should say so. */
    if (!from_connect && !err->message) {
        char msg[64];

        snprintf(msg, sizeof(msg), "HTTP status %ld without a Connect error", http_status);
        err->message = strdup(msg);
    }
    json_decref(obj);
}

int connect_code_errno(const char *code)
{
    const struct code_row *row = code_lookup(code);

    return row ? row->errnum : EIO;
}

int connect_error_errno(const struct connect_error *err)
{
    size_t i;

    if (err->reason)
        for (i = 0; i < ARRAY_LEN(reason_table); i++)
            if (strcmp(reason_table[i].reason, err->reason) == 0)
                return reason_table[i].errnum;
    return connect_code_errno(err->code);
}

int connect_code_retryable(const char *code)
{
    const struct code_row *row = code_lookup(code);

    return row ? row->retry : 0;
}

int connect_error_retryable(const struct connect_error *err)
{
    int errnum = connect_error_errno(err);

    /* A reason that names a lasting condition (a file too large, a missing sandbox)
     * overrules a retryable code: the same request would get the same answer. */
    if (errnum != connect_code_errno(err->code) && errnum != EAGAIN && errnum != ETIMEDOUT)
        return 0;
    return connect_code_retryable(err->code);
}

/* ---- streaming envelopes ---- */

void connect_decoder_init(struct connect_decoder *dec, size_t max_message)
{
    memset(dec, 0, sizeof(*dec));
    dec->max_message = max_message;
}

int connect_decoder_idle(const struct connect_decoder *dec)
{
    return dec->header_have == 0;
}

void connect_decoder_free(struct connect_decoder *dec)
{
    free(dec->body);
    dec->body = NULL;
    dec->header_have = dec->body_len = dec->body_have = 0;
}

/* The header is complete: check it and make room for the body. */
static int decoder_start_body(struct connect_decoder *dec)
{
    const unsigned char *h = dec->header;
    uint32_t len = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];

    /* We never ask for compression, and other bits are not defined. */
    if (h[0] & ~CONNECT_FLAG_END_STREAM)
        return -EPROTO;
    if (len > dec->max_message)
        return -EMSGSIZE;
    dec->body = malloc((size_t)len + 1);
    if (!dec->body)
        return -ENOMEM;
    dec->body_len = len;
    dec->body_have = 0;
    return 0;
}

/* The body is complete: hand it over with the decoder already idle again, so a
 * callback that stops the stream leaves nothing half-parsed behind. */
static int decoder_deliver(struct connect_decoder *dec, connect_envelope_fn fn, void *ud)
{
    char *body = dec->body;
    size_t len = dec->body_len;
    int rc;

    body[len] = '\0';
    dec->body = NULL;
    dec->header_have = dec->body_len = dec->body_have = 0;
    rc = fn(dec->header[0], body, len, ud);
    free(body);
    return rc;
}

int connect_decoder_feed(struct connect_decoder *dec, const void *data, size_t len,
                         connect_envelope_fn fn, void *ud)
{
    const char *p = data;
    size_t left = len;
    int rc;

    while (left > 0) {
        size_t n;

        if (dec->header_have < CONNECT_ENVELOPE_HEADER) {
            n = CONNECT_ENVELOPE_HEADER - dec->header_have;
            n = n < left ? n : left;
            memcpy(dec->header + dec->header_have, p, n);
            dec->header_have += n;
            p += n;
            left -= n;
            if (dec->header_have < CONNECT_ENVELOPE_HEADER)
                return 0;
            rc = decoder_start_body(dec);
            if (rc)
                return rc;
        }
        n = dec->body_len - dec->body_have;
        n = n < left ? n : left;
        if (n) {
            memcpy(dec->body + dec->body_have, p, n);
            dec->body_have += n;
            p += n;
            left -= n;
        }
        if (dec->body_have < dec->body_len)
            return 0;
        rc = decoder_deliver(dec, fn, ud);
        if (rc)
            return rc;
    }
    return 0;
}

int connect_end_stream_parse(const char *data, size_t len, int *has_error,
                             struct connect_error *err)
{
    json_t *obj = json_loadb(data, len, 0, NULL);
    json_t *e;
    int rc = 0;

    if (!json_is_object(obj)) {
        rc = -EPROTO;
        goto out;
    }
    e = json_object_get(obj, "error");
    if (!e || json_is_null(e)) {
        *has_error = 0;
        goto out;
    }
    if (!json_is_object(e)) {
        rc = -EPROTO;
        goto out;
    }
    error_parse(e, "unknown", err);
    *has_error = 1;
out:
    json_decref(obj);
    return rc;
}

int connect_envelope_json(const json_t *msg, uint8_t flags, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!msg)
        return -EINVAL;
    /* One serialisation (json_dumpb twice, once for the size, doubled the cost of every
     * upload's messages); the text then moves up for the header. */
    char *text = json_dumps(msg, JSON_COMPACT);
    if (!text)
        return json_is_object(msg) || json_is_array(msg) ? -ENOMEM : -EINVAL;
    size_t n = strlen(text);
    if (n > UINT32_MAX) {
        free(text);
        return -EMSGSIZE;
    }
    char *buf = realloc(text, CONNECT_ENVELOPE_HEADER + n);
    if (!buf) {
        free(text);
        return -ENOMEM;
    }
    memmove(buf + CONNECT_ENVELOPE_HEADER, buf, n);
    connect_envelope_header((unsigned char *)buf, flags, (uint32_t)n);
    *out = buf;
    *len = CONNECT_ENVELOPE_HEADER + n;
    return 0;
}
