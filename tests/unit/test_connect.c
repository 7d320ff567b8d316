/* test_connect.c - connect.c: envelope framing fed in every possible split, the bounds
 * on envelopes, Connect error bodies good and bad, hand-made and protoc-made binary
 * google.rpc.ErrorInfo (including every wire type to skip and every way wire data can
 * be broken), and each row of the code, reason, retry and HTTP status tables. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "connect.h"

/* protoc --encode=google.rpc.ErrorInfo of reason CWSANDBOX_FILE_NOT_FOUND, domain
 * cwsandbox.com, metadata {path: "/x"}. */
#define EI_NOT_FOUND_B64 "ChhDV1NBTkRCT1hfRklMRV9OT1RfRk9VTkQSDWN3c2FuZGJveC5jb20aCgoEcGF0aBICL3g="
/* metadata {k: v} first, then reason CWSANDBOX_FILE_IS_DIRECTORY, no domain. */
#define EI_IS_DIR_B64 "ChtDV1NBTkRCT1hfRklMRV9JU19ESVJFQ1RPUlkaBgoBaxIBdg=="

/* ---- envelope decoder ---- */

#define MAX_SEEN 8

struct seen {
    int count;
    uint8_t flags[MAX_SEEN];
    size_t len[MAX_SEEN];
    char data[MAX_SEEN][64];
    int stop_at; /* return 7 from this envelope (1-based), 0 = never */
};

static int on_envelope(uint8_t flags, const char *data, size_t len, void *ud)
{
    struct seen *s = ud;

    assert_true(s->count < MAX_SEEN);
    assert_true(len < sizeof(s->data[0]));
    assert_int_equal(data[len], '\0'); /* promised NUL terminator */
    s->flags[s->count] = flags;
    s->len[s->count] = len;
    memcpy(s->data[s->count], data, len + 1);
    s->count++;
    return s->count == s->stop_at ? 7 : 0;
}

/* Append one envelope to buf, returning the new length. */
static size_t put_envelope(unsigned char *buf, size_t at, uint8_t flags, const char *data)
{
    size_t len = strlen(data);

    connect_envelope_header(buf + at, flags, (uint32_t)len);
    memcpy(buf + at + CONNECT_ENVELOPE_HEADER, data, len);
    return at + CONNECT_ENVELOPE_HEADER + len;
}

/* Three envelopes: a message, an empty message, and the end of stream. */
static size_t make_stream(unsigned char *buf)
{
    size_t n = put_envelope(buf, 0, 0, "{\"output\":{\"data\":\"aGk=\"}}");

    n = put_envelope(buf, n, 0, "");
    return put_envelope(buf, n, CONNECT_FLAG_END_STREAM, "{}");
}

static void check_stream(const struct seen *s)
{
    assert_int_equal(s->count, 3);
    assert_int_equal(s->flags[0], 0);
    assert_string_equal(s->data[0], "{\"output\":{\"data\":\"aGk=\"}}");
    assert_int_equal(s->len[1], 0);
    assert_string_equal(s->data[1], "");
    assert_int_equal(s->flags[2], CONNECT_FLAG_END_STREAM);
    assert_string_equal(s->data[2], "{}");
}

static void test_envelope_header(void **state)
{
    unsigned char h[CONNECT_ENVELOPE_HEADER];
    connect_envelope_header(h, CONNECT_FLAG_END_STREAM, 0x01020304u);
    assert_int_equal(h[0], 0x02);
    assert_int_equal(h[1], 0x01);
    assert_int_equal(h[2], 0x02);
    assert_int_equal(h[3], 0x03);
    assert_int_equal(h[4], 0x04);
    connect_envelope_header(h, 0, 0xffffffffu);
    assert_int_equal(h[0], 0);
    assert_int_equal(h[1], 0xff);
    assert_int_equal(h[4], 0xff);
}

static void test_decoder_whole(void **state)
{
    unsigned char buf[256];
    struct connect_decoder dec;
    struct seen s = {0};
    size_t n = make_stream(buf);
    connect_decoder_init(&dec, 1024);
    assert_true(connect_decoder_idle(&dec));
    assert_int_equal(connect_decoder_feed(&dec, buf, n, on_envelope, &s), 0);
    check_stream(&s);
    assert_true(connect_decoder_idle(&dec));
    connect_decoder_free(&dec);
}

static void test_decoder_byte_by_byte(void **state)
{
    unsigned char buf[256];
    struct connect_decoder dec;
    struct seen s = {0};
    size_t n = make_stream(buf), i;
    connect_decoder_init(&dec, 1024);
    for (i = 0; i < n; i++) {
        assert_int_equal(connect_decoder_feed(&dec, buf + i, 1, on_envelope, &s), 0);
        /* Idle exactly at envelope boundaries. */
        assert_int_equal(connect_decoder_idle(&dec), i + 1 == 31 || i + 1 == 36 || i + 1 == n);
    }
    check_stream(&s);
    connect_decoder_free(&dec);
}

static void test_decoder_every_split(void **state)
{
    unsigned char buf[256];
    size_t n = make_stream(buf), a, b;
    for (a = 0; a <= n; a++) {
        for (b = a; b <= n; b++) {
            struct connect_decoder dec;
            struct seen s = {0};

            connect_decoder_init(&dec, 1024);
            assert_int_equal(connect_decoder_feed(&dec, buf, a, on_envelope, &s), 0);
            assert_int_equal(connect_decoder_feed(&dec, buf + a, b - a, on_envelope, &s), 0);
            assert_int_equal(connect_decoder_feed(&dec, buf + b, n - b, on_envelope, &s), 0);
            check_stream(&s);
            assert_true(connect_decoder_idle(&dec));
            connect_decoder_free(&dec);
        }
    }
}

static void test_decoder_empty_feed(void **state)
{
    struct connect_decoder dec;
    struct seen s = {0};
    connect_decoder_init(&dec, 16);
    assert_int_equal(connect_decoder_feed(&dec, NULL, 0, on_envelope, &s), 0);
    assert_int_equal(s.count, 0);
    assert_true(connect_decoder_idle(&dec));
    connect_decoder_free(&dec);
}

static void test_decoder_truncated(void **state)
{
    unsigned char buf[256];
    struct connect_decoder dec;
    struct seen s = {0};
    size_t n = make_stream(buf);
    connect_decoder_init(&dec, 1024);
    assert_int_equal(connect_decoder_feed(&dec, buf, 3, on_envelope, &s), 0);
    assert_false(connect_decoder_idle(&dec));
    connect_decoder_free(&dec);

    connect_decoder_init(&dec, 1024);
    assert_int_equal(connect_decoder_feed(&dec, buf, 10, on_envelope, &s), 0);
    assert_false(connect_decoder_idle(&dec));
    assert_int_equal(s.count, 0);
    connect_decoder_free(&dec); /* frees the partial body: valgrind checks */

    /* Cut right after a header promising a body. */
    connect_decoder_init(&dec, 1024);
    assert_int_equal(connect_decoder_feed(&dec, buf, n - 2, on_envelope, &s), 0);
    assert_int_equal(s.count, 2);
    assert_false(connect_decoder_idle(&dec));
    connect_decoder_free(&dec);
}

static void test_decoder_bounds(void **state)
{
    unsigned char h[CONNECT_ENVELOPE_HEADER + 8];
    struct connect_decoder dec;
    struct seen s = {0};
    connect_decoder_init(&dec, 8);
    connect_envelope_header(h, 0, 8);
    memcpy(h + CONNECT_ENVELOPE_HEADER, "12345678", 8);
    assert_int_equal(connect_decoder_feed(&dec, h, sizeof(h), on_envelope, &s), 0);
    assert_int_equal(s.count, 1);
    assert_string_equal(s.data[0], "12345678");
    connect_decoder_free(&dec);

    connect_decoder_init(&dec, 8);
    connect_envelope_header(h, 0, 9);
    assert_int_equal(connect_decoder_feed(&dec, h, CONNECT_ENVELOPE_HEADER, on_envelope, &s),
                     -EMSGSIZE);
    connect_decoder_free(&dec);

    /* A 4 GiB claim is refused from the header alone, before any allocation. */
    connect_decoder_init(&dec, 1 << 20);
    connect_envelope_header(h, 0, 0xffffffffu);
    assert_int_equal(connect_decoder_feed(&dec, h, CONNECT_ENVELOPE_HEADER, on_envelope, &s),
                     -EMSGSIZE);
    connect_decoder_free(&dec);

    /* Also when the header arrives a byte at a time. */
    connect_decoder_init(&dec, 1 << 20);
    assert_int_equal(connect_decoder_feed(&dec, h, 4, on_envelope, &s), 0);
    assert_int_equal(connect_decoder_feed(&dec, h + 4, 1, on_envelope, &s), -EMSGSIZE);
    connect_decoder_free(&dec);
    assert_int_equal(s.count, 1);
}

static void test_decoder_flags(void **state)
{
    static const uint8_t bad[] = {CONNECT_FLAG_COMPRESSED,
                                  CONNECT_FLAG_COMPRESSED | CONNECT_FLAG_END_STREAM, 0x04, 0x80};
    unsigned char h[CONNECT_ENVELOPE_HEADER + 2];
    struct connect_decoder dec;
    struct seen s = {0};
    size_t i;
    for (i = 0; i < sizeof(bad); i++) {
        connect_decoder_init(&dec, 1024);
        connect_envelope_header(h, bad[i], 2);
        memcpy(h + CONNECT_ENVELOPE_HEADER, "{}", 2);
        assert_int_equal(connect_decoder_feed(&dec, h, sizeof(h), on_envelope, &s), -EPROTO);
        connect_decoder_free(&dec);
    }
    assert_int_equal(s.count, 0);
}

static void test_decoder_callback_stops(void **state)
{
    unsigned char buf[256];
    struct connect_decoder dec;
    struct seen s = {0};
    size_t n = make_stream(buf);
    s.stop_at = 2;
    connect_decoder_init(&dec, 1024);
    assert_int_equal(connect_decoder_feed(&dec, buf, n, on_envelope, &s), 7);
    assert_int_equal(s.count, 2); /* the third was never delivered */
    assert_true(connect_decoder_idle(&dec));
    connect_decoder_free(&dec);
}

struct big {
    size_t len;
    int count;
};

static int on_big(uint8_t flags, const char *data, size_t len, void *ud)
{
    struct big *b = ud;
    size_t i;

    assert_int_equal(flags, 0);
    for (i = 0; i < len; i++)
        assert_int_equal(data[i], 'a' + i % 26);
    b->len = len;
    b->count++;
    return 0;
}

static void test_decoder_large_message(void **state)
{
    size_t len = 100000, total = CONNECT_ENVELOPE_HEADER + 100000, i;
    unsigned char *buf = malloc(total);
    struct connect_decoder dec;
    struct big b = {0};
    assert_non_null(buf);
    connect_envelope_header(buf, 0, (uint32_t)len);
    for (i = 0; i < len; i++)
        buf[CONNECT_ENVELOPE_HEADER + i] = (unsigned char)('a' + i % 26);
    connect_decoder_init(&dec, len);
    /* Uneven chunks, as a socket delivers them. */
    for (i = 0; i < total;) {
        size_t chunk = 1 + (i * 7919) % 4093;

        if (chunk > total - i)
            chunk = total - i;
        assert_int_equal(connect_decoder_feed(&dec, buf + i, chunk, on_big, &b), 0);
        i += chunk;
        assert_int_equal(b.count, i == total);
        assert_int_equal(connect_decoder_idle(&dec), i == total);
    }
    assert_int_equal(b.len, len);
    free(buf);
    connect_decoder_free(&dec);
}

/* ---- errors ---- */

static void test_error_set_clear(void **state)
{
    struct connect_error err = {0};
    connect_error_set(&err, "unavailable", "connection refused");
    assert_string_equal(err.code, "unavailable");
    assert_string_equal(err.message, "connection refused");
    assert_null(err.reason);
    assert_null(err.domain);

    /* Refilling replaces, and may take its strings from the error itself. */
    connect_error_set(&err, err.code, err.message);
    assert_string_equal(err.code, "unavailable");
    assert_string_equal(err.message, "connection refused");

    connect_error_set(&err, NULL, NULL);
    assert_string_equal(err.code, "unknown");
    assert_null(err.message);

    connect_error_clear(&err);
    assert_null(err.code);
    assert_null(err.message);
    connect_error_clear(&err); /* twice is harmless */
}

static json_t *load(const char *text)
{
    json_t *j = json_loads(text, JSON_DECODE_ANY, NULL);

    assert_non_null(j);
    return j;
}

static void check_json(const char *text, const char *code, const char *message, const char *reason,
                       const char *domain)
{
    struct connect_error err = {0};
    json_t *j = load(text);

    assert_int_equal(connect_error_from_json(j, &err), 0);
    assert_string_equal(err.code, code);
    if (message)
        assert_string_equal(err.message, message);
    else
        assert_null(err.message);
    if (reason)
        assert_string_equal(err.reason, reason);
    else
        assert_null(err.reason);
    if (domain)
        assert_string_equal(err.domain, domain);
    else
        assert_null(err.domain);
    connect_error_clear(&err);
    json_decref(j);
}

static void test_error_json_full(void **state)
{
    check_json("{\"code\":\"not_found\",\"message\":\"no such file\",\"details\":[{\"type\":"
               "\"google.rpc.ErrorInfo\",\"value\":\"" EI_NOT_FOUND_B64 "\"}]}",
               "not_found", "no such file", "CWSANDBOX_FILE_NOT_FOUND", "cwsandbox.com");
    /* With the Any type URL prefix, a debug member, and the metadata before the reason. */
    check_json("{\"code\":\"failed_precondition\",\"details\":[{\"type\":\"type.googleapis.com/"
               "google.rpc.ErrorInfo\",\"value\":\"" EI_IS_DIR_B64
               "\",\"debug\":{\"reason\":\"x\"}}]}",
               "failed_precondition", NULL, "CWSANDBOX_FILE_IS_DIRECTORY", NULL);
}

static void test_error_json_base64_forms(void **state)
{
    check_json(
        "{\"code\":\"not_found\",\"details\":[{\"type\":\"google.rpc.ErrorInfo\","
        "\"value\":\"ChhDV1NBTkRCT1hfRklMRV9OT1RfRk9VTkQSDWN3c2FuZGJveC5jb20aCgoEcGF0aBICL3g\"}"
        "]}",
        "not_found", NULL, "CWSANDBOX_FILE_NOT_FOUND", "cwsandbox.com");
    /* The URL-safe alphabet, unpadded: reason "~~", domain "?>~". */
    check_json("{\"code\":\"internal\",\"details\":[{\"type\":\"google.rpc.ErrorInfo\","
               "\"value\":\"CgJ-fhIDPz5-\"}]}",
               "internal", NULL, "~~", "?>~");
}

static void test_error_json_details_skipped(void **state)
{
    check_json("{\"code\":\"unavailable\",\"details\":[{\"type\":\"google.rpc.RetryInfo\","
               "\"value\":\"" EI_IS_DIR_B64
               "\"},{\"type\":\"google.rpc.ErrorInfo\",\"value\":\"" EI_NOT_FOUND_B64 "\"}]}",
               "unavailable", NULL, "CWSANDBOX_FILE_NOT_FOUND", "cwsandbox.com");
    check_json("{\"code\":\"unavailable\",\"details\":[{\"type\":\"example.com/google.rpc."
               "ErrorInfo\",\"value\":\"" EI_IS_DIR_B64 "\"},{\"type\":\"google.rpc.ErrorInfoX\","
               "\"value\":\"" EI_IS_DIR_B64 "\"}]}",
               "unavailable", NULL, NULL, NULL);
    /* Broken ErrorInfos (bad base64, bad protobuf, wrong types) cost nothing but
     * themselves; the first one that decodes wins. */
    check_json("{\"code\":\"not_found\",\"message\":\"m\",\"details\":["
               "{\"type\":\"google.rpc.ErrorInfo\",\"value\":\"!!!!\"},"
               "{\"type\":\"google.rpc.ErrorInfo\",\"value\":\"CgVh\"},"
               "{\"type\":\"google.rpc.ErrorInfo\",\"value\":42},"
               "{\"type\":\"google.rpc.ErrorInfo\"},"
               "{\"type\":7,\"value\":\"" EI_IS_DIR_B64 "\"},"
               "\"not an object\", null, 3,"
               "{\"type\":\"google.rpc.ErrorInfo\",\"value\":\"" EI_NOT_FOUND_B64 "\"},"
               "{\"type\":\"google.rpc.ErrorInfo\",\"value\":\"" EI_IS_DIR_B64 "\"}]}",
               "not_found", "m", "CWSANDBOX_FILE_NOT_FOUND", "cwsandbox.com");
    /* details of the wrong type. */
    check_json("{\"code\":\"not_found\",\"details\":{\"type\":\"google.rpc.ErrorInfo\"}}",
               "not_found", NULL, NULL, NULL);
    check_json("{\"code\":\"not_found\",\"details\":\"x\"}", "not_found", NULL, NULL, NULL);
    /* An empty ErrorInfo is the first one: nothing to take from it. */
    check_json("{\"code\":\"aborted\",\"details\":[{\"type\":\"google.rpc.ErrorInfo\","
               "\"value\":\"\"}]}",
               "aborted", NULL, NULL, NULL);
}

static void test_error_json_bad_code(void **state)
{
    struct connect_error err = {0};
    json_t *j;
    check_json("{}", "unknown", NULL, NULL, NULL);
    check_json("{\"message\":\"hi\"}", "unknown", "hi", NULL, NULL);
    check_json("{\"code\":5,\"message\":7}", "unknown", NULL, NULL, NULL);
    check_json("{\"code\":null}", "unknown", NULL, NULL, NULL);
    check_json("{\"code\":\"NOT_FOUND\"}", "unknown", NULL, NULL, NULL);
    check_json("{\"code\":\"bogus\"}", "unknown", NULL, NULL, NULL);
    check_json("{\"code\":\"ok\"}", "unknown", NULL, NULL, NULL);
    check_json("{\"code\":\"cancelled\"}", "unknown", NULL, NULL,
               NULL); /* Connect spells it canceled */
    check_json("{\"code\":\"canceled\"}", "canceled", NULL, NULL, NULL);

    /* Not an object: -EINVAL and err untouched. */
    connect_error_set(&err, "internal", "keep");
    j = load("[1,2]");
    assert_int_equal(connect_error_from_json(j, &err), -EINVAL);
    assert_string_equal(err.code, "internal");
    json_decref(j);
    assert_int_equal(connect_error_from_json(NULL, &err), -EINVAL);
    j = load("\"not_found\"");
    assert_int_equal(connect_error_from_json(j, &err), -EINVAL);
    json_decref(j);

    /* Refilling a filled error frees the old strings (valgrind/ASan check). */
    j = load("{\"code\":\"not_found\",\"message\":\"x\",\"details\":[{\"type\":\"google.rpc."
             "ErrorInfo\",\"value\":\"" EI_NOT_FOUND_B64 "\"}]}");
    assert_int_equal(connect_error_from_json(j, &err), 0);
    assert_int_equal(connect_error_from_json(j, &err), 0);
    assert_string_equal(err.reason, "CWSANDBOX_FILE_NOT_FOUND");
    json_decref(j);
    j = load("{\"code\":\"internal\"}");
    assert_int_equal(connect_error_from_json(j, &err), 0);
    assert_null(err.reason);
    assert_null(err.domain);
    assert_null(err.message);
    json_decref(j);
    connect_error_clear(&err);
}

static void check_body(const char *body, size_t len, long status, const char *code,
                       const char *message, const char *reason)
{
    struct connect_error err = {0};

    connect_error_from_body(body, len, status, &err);
    assert_string_equal(err.code, code);
    if (message)
        assert_string_equal(err.message, message);
    else
        assert_null(err.message);
    if (reason)
        assert_string_equal(err.reason, reason);
    else
        assert_null(err.reason);
    connect_error_clear(&err);
}

#define BODY(s) s, sizeof(s) - 1

static void test_error_body(void **state)
{
    check_body(BODY("{\"code\":\"not_found\",\"message\":\"sandbox x\",\"details\":[{\"type\":"
                    "\"google.rpc.ErrorInfo\",\"value\":\"" EI_NOT_FOUND_B64 "\"}]}"),
               404, "not_found", "sandbox x", "CWSANDBOX_FILE_NOT_FOUND");
    check_body(BODY("{\"code\":\"resource_exhausted\"}"), 500, "resource_exhausted", NULL, NULL);
    /* A body need not be NUL-terminated: only len bytes count. */
    check_body("{\"code\":\"aborted\"}garbage", 18, 409, "aborted", NULL, NULL);

    /* Not Connect errors: the status decides, and message says what happened. */
    check_body(BODY("<html><body>502 Bad Gateway</body></html>"), 502, "unavailable",
               "HTTP status 502 without a Connect error", NULL);
    check_body(BODY(""), 401, "unauthenticated", "HTTP status 401 without a Connect error", NULL);
    check_body(NULL, 0, 503, "unavailable", "HTTP status 503 without a Connect error", NULL);
    check_body(BODY("{\"code\":\"not_fou"), 404, "unimplemented",
               "HTTP status 404 without a Connect error", NULL);
    check_body(BODY("[\"code\",\"not_found\"]"), 403, "permission_denied",
               "HTTP status 403 without a Connect error", NULL);
    check_body(BODY("null"), 429, "unavailable", "HTTP status 429 without a Connect error", NULL);
    check_body(BODY("\"text\""), 500, "unknown", "HTTP status 500 without a Connect error", NULL);
    check_body(BODY("{\"code\":\"bogus\"}"), 400, "internal",
               "HTTP status 400 without a Connect error", NULL);
    check_body(BODY("{\"code\":\"not_found\"\0}"), 404, "unimplemented",
               "HTTP status 404 without a Connect error", NULL);
    check_body(BODY("\xff\xfe{"), 504, "unavailable", "HTTP status 504 without a Connect error",
               NULL);
    /* A gateway's own JSON keeps its words. */
    check_body(BODY("{\"message\":\"Unauthorized\"}"), 401, "unauthenticated", "Unauthorized",
               NULL);
    /* A real Connect error without a message stays without one. */
    check_body(BODY("{\"code\":\"internal\"}"), 500, "internal", NULL, NULL);
}

static void test_code_from_http(void **state)
{
    static const struct {
        long status;
        const char *code;
    } rows[] = {
        {400, "internal"},      {401, "unauthenticated"}, {403, "permission_denied"},
        {404, "unimplemented"}, {429, "unavailable"},     {502, "unavailable"},
        {503, "unavailable"},   {504, "unavailable"},     {200, "unknown"},
        {0, "unknown"},         {-1, "unknown"},          {302, "unknown"},
        {405, "unknown"},       {408, "unknown"},         {409, "unknown"},
        {412, "unknown"},       {499, "unknown"},         {500, "unknown"},
        {501, "unknown"},       {505, "unknown"},         {999, "unknown"},
    };
    size_t i;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        assert_string_equal(connect_code_from_http(rows[i].status), rows[i].code);
}

/* ---- ErrorInfo wire format ---- */

static int decode(const void *pb, size_t len, char **reason, char **domain)
{
    *reason = *domain = (char *)"untouched";
    return connect_errorinfo_decode(pb, len, reason, domain);
}

static void expect_ei(const void *pb, size_t len, const char *reason, const char *domain)
{
    char *r, *d;

    assert_int_equal(decode(pb, len, &r, &d), 0);
    if (reason)
        assert_string_equal(r, reason);
    else
        assert_null(r);
    if (domain)
        assert_string_equal(d, domain);
    else
        assert_null(d);
    free(r);
    free(d);
}

static void expect_bad_ei(const void *pb, size_t len)
{
    char *r, *d;

    assert_int_equal(decode(pb, len, &r, &d), -EPROTO);
    /* Outputs stay as they were on failure. */
    assert_string_equal(r, "untouched");
    assert_string_equal(d, "untouched");
}

#define PB(s) s, sizeof(s) - 1

static void test_errorinfo_protoc(void **state)
{
    /* Bytes from protoc --encode (see EI_NOT_FOUND_B64). */
    static const char pb[] = "\x0a\x18"
                             "CWSANDBOX_FILE_NOT_FOUND"
                             "\x12\x0d"
                             "cwsandbox.com"
                             "\x1a\x0a\x0a\x04path\x12\x02/x";
    expect_ei(PB(pb), "CWSANDBOX_FILE_NOT_FOUND", "cwsandbox.com");
    expect_ei(NULL, 0, NULL, NULL);
    expect_ei(PB("\x12\x01"
                 "d"),
              NULL, "d");
    expect_ei(PB("\x0a\x00"), "", NULL);
}

static void test_errorinfo_skips_unknown(void **state)
{
    /* protoc --decode agrees: reason "R", domain "d", the rest unknown fields.
     * varint 4, fixed64 5, fixed32 6, group 7 holding a varint and an empty group 9,
     * bytes 8, field 1000, and field 1 as a varint (wrong wire type: unknown). */
    static const char pb[] = "\x20\xac\x02"
                             "\x29\x01\x02\x03\x04\x05\x06\x07\x08"
                             "\x35\x01\x02\x03\x04"
                             "\x3b\x08\x01\x4b\x4c\x3c"
                             "\x42\x03"
                             "abc"
                             "\x0a\x01"
                             "R"
                             "\xc0\x3e\x00"
                             "\x12\x01"
                             "d"
                             "\x08\x05";
    expect_ei(PB(pb), "R", "d");
    /* Metadata of the wrong wire type, a 10-byte varint, an over-long encoding. */
    expect_ei(PB("\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x0a\x01R"), "R", NULL);
    expect_ei(PB("\x0a\x81\x00R"), "R", NULL);
    /* Field 2 as fixed32, field 1 as fixed64: unknown, skipped. */
    expect_ei(PB("\x15\x00\x00\x00\x00\x09\x00\x00\x00\x00\x00\x00\x00\x00"), NULL, NULL);
    /* Highest field number. */
    expect_ei(PB("\xf8\xff\xff\xff\x0f\x01\x0a\x01R"), "R", NULL);
    /* Singular fields: the last one wins. */
    expect_ei(PB("\x0a\x01"
                 "A\x12\x01x\x0a\x01"
                 "B\x12\x01y"),
              "B", "y");
}

static void test_errorinfo_nested_groups(void **state)
{
    char pb[2 * 40 + 3];
    size_t i, n = 0;
    for (i = 0; i < 32; i++)
        pb[n++] = 0x3b;
    for (i = 0; i < 32; i++)
        pb[n++] = 0x3c;
    pb[n++] = 0x0a;
    pb[n++] = 0x01;
    pb[n++] = 'R';
    expect_ei(pb, n, "R", NULL);

    /* ...33 are refused rather than followed down. */
    n = 0;
    for (i = 0; i < 33; i++)
        pb[n++] = 0x3b;
    for (i = 0; i < 33; i++)
        pb[n++] = 0x3c;
    expect_bad_ei(pb, n);
}

static void test_errorinfo_malformed(void **state)
{
    expect_bad_ei(PB("\x0a")); /* tag, no length */
    expect_bad_ei(PB("\x0a\x05"
                     "abc")); /* length past the end */
    expect_bad_ei(PB("\x0a\x01"
                     "R\x12"));    /* second field cut */
    expect_bad_ei(PB("\x0a\x80")); /* length varint cut */
    expect_bad_ei(PB("\x42\x80")); /* unknown field's length varint cut */
    expect_bad_ei(PB("\x42\x02"
                     "a"));    /* unknown field's bytes cut */
    expect_bad_ei(PB("\x80")); /* tag varint cut */
    expect_bad_ei(PB("\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")); /* 2^64-1 length */
    expect_bad_ei(PB("\x0a\xff\xff\xff\xff\x0f"
                     "a"));                                                /* 4 GiB length */
    expect_bad_ei(PB("\x20\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02"));     /* 10th byte > 1 */
    expect_bad_ei(PB("\x20\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")); /* 11 bytes */
    expect_bad_ei(PB("\x20\xff\xff\xff"));                                 /* varint value cut */
    expect_bad_ei(PB("\x02\x00"));                                         /* field number 0 */
    expect_bad_ei(PB("\x00\x00"));                 /* field number 0, varint */
    expect_bad_ei(PB("\x80\x80\x80\x80\x10\x00")); /* field number 2^29 */
    expect_bad_ei(PB("\x0e\x00"));                 /* wire type 6 */
    expect_bad_ei(PB("\x0f\x00"));                 /* wire type 7 */
    expect_bad_ei(PB("\x0c"));                     /* stray end group */
    expect_bad_ei(PB("\x3b\x08\x01"));             /* group never ended */
    expect_bad_ei(PB("\x3b\x44"));                 /* group ended by another field */
    expect_bad_ei(PB("\x3b\x0a\x05"
                     "ab\x3c"));           /* bad field inside a group */
    expect_bad_ei(PB("\x29\x01\x02\x03")); /* fixed64 cut */
    expect_bad_ei(PB("\x35\x01\x02\x03")); /* fixed32 cut */
    expect_bad_ei(PB("\x0a\x03"
                     "a\0b"));              /* NUL inside the reason */
    expect_bad_ei(PB("\x12\x01\0"));        /* NUL as the domain */
    expect_bad_ei(PB("\x0a\x01R\x0a\x01")); /* a good field, then a cut one */
}

/* ---- tables ---- */

static void test_code_errno(void **state)
{
    static const struct {
        const char *code;
        int errnum;
        int retry;
    } rows[] = {
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
        {"bogus", EIO, 0},
        {"", EIO, 0},
        {"NOT_FOUND", EIO, 0},
        {NULL, EIO, 0},
    };
    size_t i;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        assert_int_equal(connect_code_errno(rows[i].code), rows[i].errnum);
        assert_int_equal(connect_code_retryable(rows[i].code), rows[i].retry);
    }
}

/* An error as the codec leaves it: a code and an ErrorInfo reason (or none). */
static struct connect_error error_of(const char *code, const char *reason)
{
    struct connect_error err = {0};

    connect_error_set(&err, code, NULL);
    err.reason = reason ? strdup(reason) : NULL;
    return err;
}

static void test_error_errno(void **state)
{
    static const struct {
        const char *code;
        const char *reason;
        int errnum;
    } rows[] = {
        /* The reason says more than the code. */
        {"failed_precondition", "CWSANDBOX_FILE_NOT_FOUND", ENOENT},
        {"invalid_argument", "CWSANDBOX_FILE_IS_DIRECTORY", EISDIR},
        {"internal", "CWSANDBOX_FILE_PERMISSION_DENIED", EACCES},
        {"invalid_argument", "CWSANDBOX_FILE_TOO_LARGE", EFBIG},
        {"not_found", "CWSANDBOX_FILE_IO_FAILED", EIO},
        {"not_found", "CWSANDBOX_FILE_TRUNCATED", EIO},
        {"failed_precondition", "CWSANDBOX_SANDBOX_NOT_FOUND", ENOENT},
        {"internal", "CWSANDBOX_COMMAND_TIMEOUT", ETIMEDOUT},
        {"unknown", "CWSANDBOX_NOT_IMPLEMENTED", ENOSYS},
        {"unavailable", "CWSANDBOX_RUNNER_CAPACITY_EXHAUSTED", EAGAIN},
        /* Reasons the code already covers, unknown reasons, no reason: the code. */
        {"invalid_argument", "CWSANDBOX_INVALID_REQUEST", EINVAL},
        {"unavailable", "CWSANDBOX_BACKEND_UNAVAILABLE", EHOSTUNREACH},
        {"unavailable", "CWSANDBOX_RUNNER_UNAVAILABLE", EHOSTUNREACH},
        {"already_exists", "SOMETHING_ELSE", EEXIST},
        {"not_found", "cwsandbox_file_is_directory", ENOENT},
        {"deadline_exceeded", "", ETIMEDOUT},
        {"permission_denied", NULL, EACCES},
        {"bogus", NULL, EIO},
    };
    size_t i;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct connect_error err = error_of(rows[i].code, rows[i].reason);

        assert_int_equal(connect_error_errno(&err), rows[i].errnum);
        connect_error_clear(&err);
    }
}

static void test_error_retryable(void **state)
{
    static const struct {
        const char *code;
        const char *reason;
        int retry;
    } rows[] = {
        {"unavailable", NULL, CONNECT_RETRY_ALWAYS},
        {"resource_exhausted", NULL, CONNECT_RETRY_IDEMPOTENT},
        {"deadline_exceeded", "", CONNECT_RETRY_IDEMPOTENT},
        /* a reason that says "try later" keeps the code's answer */
        {"unavailable", "CWSANDBOX_RUNNER_CAPACITY_EXHAUSTED", CONNECT_RETRY_ALWAYS},
        {"resource_exhausted", "CWSANDBOX_RUNNER_CAPACITY_EXHAUSTED", CONNECT_RETRY_IDEMPOTENT},
        {"unavailable", "CWSANDBOX_BACKEND_UNAVAILABLE", CONNECT_RETRY_ALWAYS},
        /* a lasting condition: the same request gets the same answer */
        {"resource_exhausted", "CWSANDBOX_FILE_TOO_LARGE", 0},
        {"unavailable", "CWSANDBOX_SANDBOX_NOT_FOUND", 0},
        {"invalid_argument", NULL, 0},
        {"internal", "CWSANDBOX_COMMAND_TIMEOUT", 0},
    };
    size_t i;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct connect_error err = error_of(rows[i].code, rows[i].reason);

        assert_int_equal(connect_error_retryable(&err), rows[i].retry);
        connect_error_clear(&err);
    }
}

/* ---- end of stream ---- */

static int end_stream(const char *text, size_t len, int *has_error, struct connect_error *err)
{
    *has_error = -1;
    return connect_end_stream_parse(text, len, has_error, err);
}

static void test_end_stream_ok(void **state)
{
    static const char *const ok[] = {
        "{}",
        "{\"metadata\":{\"x-trace\":[\"abc\"]}}",
        "{\"error\":null,\"metadata\":{}}",
        " { } ",
    };
    struct connect_error err = {0};
    size_t i;
    int has;
    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(end_stream(ok[i], strlen(ok[i]), &has, &err), 0);
        assert_int_equal(has, 0);
        assert_null(err.code);
    }
}

static void test_end_stream_error(void **state)
{
    static const char text[] =
        "{\"error\":{\"code\":\"deadline_exceeded\",\"message\":\"too slow\","
        "\"details\":[{\"type\":\"google.rpc.ErrorInfo\",\"value\":"
        "\"" EI_IS_DIR_B64 "\"}]},\"metadata\":{}}";
    struct connect_error err = {0};
    int has;
    assert_int_equal(end_stream(text, sizeof(text) - 1, &has, &err), 0);
    assert_int_equal(has, 1);
    assert_string_equal(err.code, "deadline_exceeded");
    assert_string_equal(err.message, "too slow");
    assert_string_equal(err.reason, "CWSANDBOX_FILE_IS_DIRECTORY");
    assert_int_equal(connect_error_errno(&err), EISDIR);

    assert_int_equal(end_stream(BODY("{\"error\":{}}"), &has, &err), 0);
    assert_int_equal(has, 1);
    assert_string_equal(err.code, "unknown");
    assert_null(err.reason);

    assert_int_equal(
        end_stream(BODY("{\"error\":{\"code\":\"weird\",\"message\":\"m\"}}"), &has, &err), 0);
    assert_int_equal(has, 1);
    assert_string_equal(err.code, "unknown");
    assert_string_equal(err.message, "m");
    connect_error_clear(&err);
}

static void test_end_stream_garbage(void **state)
{
    static const char *const bad[] = {
        "",
        "not json",
        "{",
        "{\"error\":{\"code\":\"internal\"}",
        "[]",
        "null",
        "\"error\"",
        "{\"error\":\"internal\"}",
        "{\"error\":[]}",
        "{\"error\":5}",
        "{} {}",
    };
    struct connect_error err = {0};
    size_t i;
    int has;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(end_stream(bad[i], strlen(bad[i]), &has, &err), -EPROTO);
        assert_null(err.code);
    }
    /* An embedded NUL makes it not JSON. */
    assert_int_equal(end_stream("{}\0", 3, &has, &err), -EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_envelope_header),
        cmocka_unit_test(test_decoder_whole),
        cmocka_unit_test(test_decoder_byte_by_byte),
        cmocka_unit_test(test_decoder_every_split),
        cmocka_unit_test(test_decoder_empty_feed),
        cmocka_unit_test(test_decoder_truncated),
        cmocka_unit_test(test_decoder_bounds),
        cmocka_unit_test(test_decoder_flags),
        cmocka_unit_test(test_decoder_callback_stops),
        cmocka_unit_test(test_decoder_large_message),
        cmocka_unit_test(test_error_set_clear),
        cmocka_unit_test(test_error_json_full),
        cmocka_unit_test(test_error_json_base64_forms),
        cmocka_unit_test(test_error_json_details_skipped),
        cmocka_unit_test(test_error_json_bad_code),
        cmocka_unit_test(test_error_body),
        cmocka_unit_test(test_code_from_http),
        cmocka_unit_test(test_errorinfo_protoc),
        cmocka_unit_test(test_errorinfo_skips_unknown),
        cmocka_unit_test(test_errorinfo_nested_groups),
        cmocka_unit_test(test_errorinfo_malformed),
        cmocka_unit_test(test_code_errno),
        cmocka_unit_test(test_error_errno),
        cmocka_unit_test(test_error_retryable),
        cmocka_unit_test(test_end_stream_ok),
        cmocka_unit_test(test_end_stream_error),
        cmocka_unit_test(test_end_stream_garbage),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
