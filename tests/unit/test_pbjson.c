/* test_pbjson.c - pbjson.c: every spelling the protobuf JSON mapping allows for int64,
 * enums and bytes (and the near misses it does not), the canonical forms written back,
 * and RFC 3339 timestamps at the calendar's corners, the Timestamp range limits, with
 * offsets and fractions, plus a format/parse round trip. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "pbjson.h"

/* {"v": <value>} from the JSON text of the value. */
static json_t *wrap(const char *value)
{
    char text[512];
    json_t *j;

    snprintf(text, sizeof(text), "{\"v\":%s}", value);
    j = json_loads(text, JSON_ALLOW_NUL, NULL);
    assert_non_null(j);
    return j;
}

static void expect_int64(const char *value, int64_t want)
{
    json_t *j = wrap(value);
    int64_t got = 12345;

    assert_int_equal(pbjson_get_int64(j, "v", -7, &got), 0);
    assert_true(got == want);
    json_decref(j);
}

static void expect_int64_bad(const char *value)
{
    json_t *j = wrap(value);
    int64_t got = 12345;

    assert_int_equal(pbjson_get_int64(j, "v", -7, &got), -EINVAL);
    assert_true(got == 12345);
    json_decref(j);
}

static void test_int64_strings(void **state)
{
    expect_int64("\"0\"", 0);
    expect_int64("\"-0\"", 0);
    expect_int64("\"123\"", 123);
    expect_int64("\"-5\"", -5);
    expect_int64("\"1795315688000\"", 1795315688000LL);
    expect_int64("\"9223372036854775807\"", INT64_MAX);
    expect_int64("\"-9223372036854775808\"", INT64_MIN);
    /* Exponents and fractions are allowed when the value is an exact integer. */
    expect_int64("\"1e2\"", 100);
    expect_int64("\"1E+2\"", 100);
    expect_int64("\"1.0\"", 1);
    expect_int64("\"1.50e1\"", 15);
    expect_int64("\"100e-2\"", 1);
    expect_int64("\"-2.5e1\"", -25);
    expect_int64("\"0.0e5\"", 0);
    expect_int64("\"0e999999999999\"", 0);
    expect_int64("\"0.000e-999999\"", 0);
    expect_int64("\"9.223372036854775807e18\"", INT64_MAX);
    expect_int64("\"-9223372036854775808000e-3\"", INT64_MIN);
}

static void test_int64_bad_strings(void **state)
{
    expect_int64_bad("\"\"");
    expect_int64_bad("\"-\"");
    expect_int64_bad("\" 1\"");
    expect_int64_bad("\"1 \"");
    expect_int64_bad("\"+1\"");
    expect_int64_bad("\"01\"");
    expect_int64_bad("\"-01\"");
    expect_int64_bad("\"1.\"");
    expect_int64_bad("\".5\"");
    expect_int64_bad("\"1.5\"");
    expect_int64_bad("\"1e\"");
    expect_int64_bad("\"1e+\"");
    expect_int64_bad("\"1e-1\"");
    expect_int64_bad("\"15e-1\"");
    expect_int64_bad("\"0x10\"");
    expect_int64_bad("\"abc\"");
    expect_int64_bad("\"12a\"");
    expect_int64_bad("\"--1\"");
    expect_int64_bad("\"NaN\"");
    expect_int64_bad("\"Infinity\"");
    expect_int64_bad("\"1\\u00002\"");
    expect_int64_bad("\"9223372036854775808\"");
    expect_int64_bad("\"-9223372036854775809\"");
    expect_int64_bad("\"99999999999999999999999\"");
    expect_int64_bad("\"1e19\"");
    expect_int64_bad("\"1e999999999999\"");
    expect_int64_bad("\"9.3e18\"");
}

static void test_int64_numbers(void **state)
{
    expect_int64("0", 0);
    expect_int64("123", 123);
    expect_int64("-1", -1);
    expect_int64("9223372036854775807", INT64_MAX);
    expect_int64("-9223372036854775808", INT64_MIN);
    expect_int64("1e2", 100);
    expect_int64("1.0", 1);
    expect_int64("-0.0", 0);
    expect_int64("4.5e15", 4500000000000000LL);
    expect_int64("-9.223372036854775808e18", INT64_MIN);
    expect_int64_bad("1.5");
    expect_int64_bad("1e-3");
    expect_int64_bad("9.3e18");
    expect_int64_bad("9.223372036854775808e18"); /* 2^63 */
    expect_int64_bad("-9.3e18");
    expect_int64_bad("1e300");
}

static void test_int64_types(void **state)
{
    json_t *j = json_loads("{\"n\":null,\"t\":true,\"f\":false,\"o\":{},\"a\":[1]}", 0, NULL);
    int64_t v = 1;
    assert_non_null(j);
    assert_int_equal(pbjson_get_int64(j, "absent", 42, &v), 0);
    assert_true(v == 42);
    assert_int_equal(pbjson_get_int64(j, "n", -3, &v), 0); /* null is the default */
    assert_true(v == -3);
    v = 1;
    assert_int_equal(pbjson_get_int64(j, "t", 0, &v), -EINVAL);
    assert_int_equal(pbjson_get_int64(j, "f", 0, &v), -EINVAL);
    assert_int_equal(pbjson_get_int64(j, "o", 0, &v), -EINVAL);
    assert_int_equal(pbjson_get_int64(j, "a", 0, &v), -EINVAL);
    assert_true(v == 1);
    /* Not an object at all: every key is absent. */
    assert_int_equal(pbjson_get_int64(NULL, "x", 9, &v), 0);
    assert_true(v == 9);
    json_decref(j);
}

static void test_int64_write(void **state)
{
    static const struct {
        int64_t v;
        const char *text;
    } rows[] = {
        {0, "0"},
        {-1, "-1"},
        {1795315688, "1795315688"},
        {INT64_MAX, "9223372036854775807"},
        {INT64_MIN, "-9223372036854775808"},
    };
    size_t i;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        json_t *s = pbjson_int64(rows[i].v), *obj = json_object();
        int64_t back;

        assert_non_null(s);
        assert_true(json_is_string(s));
        assert_string_equal(json_string_value(s), rows[i].text);
        json_object_set_new(obj, "v", s);
        assert_int_equal(pbjson_get_int64(obj, "v", 0, &back), 0);
        assert_true(back == rows[i].v);
        json_decref(obj);
    }
}

static void test_string_and_bool(void **state)
{
    json_t *j = json_loads("{\"s\":\"hi\",\"e\":\"\",\"n\":3,\"z\":null,\"t\":true,\"f\":false,"
                           "\"ts\":\"true\",\"one\":1}",
                           0, NULL);
    assert_non_null(j);
    assert_string_equal(pbjson_get_string(j, "s", "d"), "hi");
    assert_string_equal(pbjson_get_string(j, "e", "d"), "");
    assert_string_equal(pbjson_get_string(j, "n", "d"), "d");
    assert_string_equal(pbjson_get_string(j, "z", "d"), "d");
    assert_string_equal(pbjson_get_string(j, "absent", "d"), "d");
    assert_null(pbjson_get_string(j, "absent", NULL));
    assert_null(pbjson_get_string(NULL, "s", NULL));

    assert_int_equal(pbjson_get_bool(j, "t"), 1);
    assert_int_equal(pbjson_get_bool(j, "f"), 0);
    assert_int_equal(pbjson_get_bool(j, "z"), 0);
    assert_int_equal(pbjson_get_bool(j, "absent"), 0);
    assert_int_equal(pbjson_get_bool(j, "ts"), 0);
    assert_int_equal(pbjson_get_bool(j, "one"), 0);
    json_decref(j);
}

static const char *const states[] = {"STATE_UNSPECIFIED", NULL, "STATE_RUNNING"};

static void expect_enum(const char *value, int rc, int want)
{
    json_t *j = wrap(value);
    int got = -99;

    assert_int_equal(pbjson_get_enum(j, "v", states, 3, &got), rc);
    assert_int_equal(got, rc ? -99 : want);
    json_decref(j);
}

static void test_enum(void **state)
{
    json_t *j = json_object();
    int v = 5;
    expect_enum("\"STATE_UNSPECIFIED\"", 0, 0);
    expect_enum("\"STATE_RUNNING\"", 0, 2);
    expect_enum("0", 0, 0);
    expect_enum("1", 0, 1); /* a hole in the names is still a value */
    expect_enum("2", 0, 2);
    expect_enum("7", 0, 7); /* proto3 enums are open */
    expect_enum("-1", 0, -1);
    expect_enum("2147483647", 0, 2147483647);
    expect_enum("-2147483648", 0, -2147483647 - 1);
    expect_enum("2.0", 0, 2);
    expect_enum("null", 0, 0);
    expect_enum("2147483648", -EINVAL, 0);
    expect_enum("-2147483649", -EINVAL, 0);
    expect_enum("1.5", -EINVAL, 0);
    expect_enum("\"STATE_PAUSED\"", -EINVAL, 0);
    expect_enum("\"state_running\"", -EINVAL, 0);
    expect_enum("\"\"", -EINVAL, 0);
    expect_enum("\"2\"", -EINVAL, 0);
    expect_enum("true", -EINVAL, 0);
    expect_enum("{}", -EINVAL, 0);
    expect_enum("[]", -EINVAL, 0);

    assert_int_equal(pbjson_get_enum(j, "absent", states, 3, &v), 0);
    assert_int_equal(v, 0);
    json_decref(j);
}

static void expect_bytes(const char *value, const void *want, size_t want_len)
{
    json_t *j = wrap(value);
    char *out = NULL;
    size_t len = 99;

    assert_int_equal(pbjson_get_bytes(j, "v", &out, &len), 0);
    assert_non_null(out);
    assert_int_equal(len, want_len);
    if (want_len)
        assert_memory_equal(out, want, want_len);
    assert_int_equal(out[len], '\0');
    free(out);
    json_decref(j);
}

static void expect_bytes_bad(const char *value)
{
    json_t *j = wrap(value);
    char *out = (char *)"untouched";
    size_t len = 99;

    assert_int_equal(pbjson_get_bytes(j, "v", &out, &len), -EINVAL);
    assert_string_equal(out, "untouched");
    assert_int_equal(len, 99);
    json_decref(j);
}

static void test_bytes_read(void **state)
{
    char *out = NULL;
    size_t len = 99;
    expect_bytes("\"aGVsbG8=\"", "hello", 5);
    expect_bytes("\"aGVsbG8\"", "hello", 5);
    expect_bytes("\"-_8=\"", "\xfb\xff", 2);
    expect_bytes("\"+/8\"", "\xfb\xff", 2);
    expect_bytes("\"AAEA\"", "\0\1\0", 3);
    expect_bytes("\"\"", "", 0);
    expect_bytes("null", "", 0);
    expect_bytes_bad("\"a\"");
    expect_bytes_bad("\"@@@@\"");
    expect_bytes_bad("\"aGVs bG8=\"");
    expect_bytes_bad("\"aGVsbG8==\"");
    expect_bytes_bad("\"aG\\u0000s\"");
    expect_bytes_bad("5");
    expect_bytes_bad("true");
    expect_bytes_bad("[]");
    expect_bytes_bad("{}");

    /* Absent: an empty, NUL-terminated, freeable buffer. */
    assert_int_equal(pbjson_get_bytes(NULL, "v", &out, &len), 0);
    assert_int_equal(len, 0);
    assert_string_equal(out, "");
    free(out);
}

static void test_bytes_write(void **state)
{
    unsigned char all[256];
    json_t *s, *obj;
    char *back;
    size_t i, len;
    s = pbjson_bytes("hello", 5);
    assert_string_equal(json_string_value(s), "aGVsbG8=");
    json_decref(s);
    s = pbjson_bytes("\xfb\xff", 2); /* standard alphabet, padded */
    assert_string_equal(json_string_value(s), "+/8=");
    json_decref(s);
    s = pbjson_bytes(NULL, 0);
    assert_string_equal(json_string_value(s), "");
    json_decref(s);

    for (i = 0; i < sizeof(all); i++)
        all[i] = (unsigned char)i;
    obj = json_object();
    json_object_set_new(obj, "v", pbjson_bytes(all, sizeof(all)));
    assert_int_equal(pbjson_get_bytes(obj, "v", &back, &len), 0);
    assert_int_equal(len, sizeof(all));
    assert_memory_equal(back, all, sizeof(all));
    free(back);
    json_decref(obj);
}

/* ---- timestamps ---- */

static void expect_ts(const char *text, long long sec, long nsec)
{
    struct timespec ts = {1, 1};

    assert_int_equal(pbjson_parse_timestamp(text, &ts), 0);
    assert_true((long long)ts.tv_sec == sec);
    assert_int_equal(ts.tv_nsec, nsec);
}

static void expect_ts_bad(const char *text)
{
    struct timespec ts = {1, 1};

    assert_int_equal(pbjson_parse_timestamp(text, &ts), -EINVAL);
    assert_int_equal(ts.tv_sec, 1);
    assert_int_equal(ts.tv_nsec, 1);
}

static void test_timestamp_parse(void **state)
{
    expect_ts("1970-01-01T00:00:00Z", 0, 0);
    expect_ts("2026-11-22T02:48:08.878Z", 1795315688, 878000000);
    expect_ts("2026-11-22T02:48:08Z", 1795315688, 0);
    expect_ts("2026-11-22t02:48:08z", 1795315688, 0);
    expect_ts("2026-11-22T02:48:08.5Z", 1795315688, 500000000);
    expect_ts("2026-11-22T02:48:08.000001Z", 1795315688, 1000);
    expect_ts("2026-11-22T02:48:08.123456789Z", 1795315688, 123456789);
    expect_ts("2026-11-22T02:48:08.000000000Z", 1795315688, 0);
    expect_ts("2026-11-22T02:48:08+00:00", 1795315688, 0);
    expect_ts("2026-11-22T02:48:08-00:00", 1795315688, 0);
    expect_ts("2026-11-22T02:48:08+05:30", 1795295888, 0);
    expect_ts("2026-11-22T02:48:08.25-08:00", 1795344488, 250000000);
    expect_ts("2024-02-29T12:00:00Z", 1709208000, 0);
    expect_ts("2000-02-29T00:00:00Z", 951868800 - 86400, 0);
    expect_ts("1900-03-01T00:00:00Z", -2203891200LL, 0);
    expect_ts("1969-12-31T23:59:59.5Z", -1, 500000000);
    expect_ts("0001-01-01T00:00:00Z", -62135596800LL, 0);
    expect_ts("9999-12-31T23:59:59.999999999Z", 253402300799LL, 999999999);
    expect_ts("0001-01-01T05:00:00+05:00", -62135596800LL, 0);
    expect_ts("9999-12-31T18:59:59-05:00", 253402300799LL, 0);
}

static void test_timestamp_parse_bad(void **state)
{
    assert_int_equal(pbjson_parse_timestamp(NULL, &(struct timespec){0, 0}), -EINVAL);
    expect_ts_bad("");
    expect_ts_bad("2026-11-22");
    expect_ts_bad("2026-11-22T02:48:08");             /* no zone */
    expect_ts_bad("2026-11-22 02:48:08Z");            /* space separator */
    expect_ts_bad("2026-11-22T02:48Z");               /* no seconds */
    expect_ts_bad("2026-11-22T02:48:08.Z");           /* empty fraction */
    expect_ts_bad("2026-11-22T02:48:08.1234567891Z"); /* beyond nanoseconds */
    expect_ts_bad("2026-11-22T02:48:08ZZ");
    expect_ts_bad("2026-11-22T02:48:08Z ");
    expect_ts_bad(" 2026-11-22T02:48:08Z");
    expect_ts_bad("2026-11-22T02:48:08+0530");
    expect_ts_bad("2026-11-22T02:48:08+05");
    expect_ts_bad("2026-11-22T02:48:08+24:00");
    expect_ts_bad("2026-11-22T02:48:08+05:60");
    expect_ts_bad("2026-11-22T02:48:08UTC");
    expect_ts_bad("26-11-22T02:48:08Z");
    expect_ts_bad("+2026-11-22T02:48:08Z");
    expect_ts_bad("2026-1-22T02:48:08Z");
    expect_ts_bad("2026/11/22T02:48:08Z");
    expect_ts_bad("2026-00-22T02:48:08Z");
    expect_ts_bad("2026-13-22T02:48:08Z");
    expect_ts_bad("2026-11-00T02:48:08Z");
    expect_ts_bad("2026-11-31T02:48:08Z");
    expect_ts_bad("2026-01-32T02:48:08Z");
    expect_ts_bad("2023-02-29T00:00:00Z"); /* not a leap year */
    expect_ts_bad("1900-02-29T00:00:00Z"); /* century, not a leap year */
    expect_ts_bad("2026-11-22T24:00:00Z");
    expect_ts_bad("2026-11-22T23:60:00Z");
    expect_ts_bad("2016-12-31T23:59:60Z"); /* Timestamp has no leap seconds */
    expect_ts_bad("0000-12-31T00:00:00Z");
    expect_ts_bad("0001-01-01T00:00:00+00:01"); /* before 0001-01-01Z */
    expect_ts_bad("9999-12-31T23:59:59-00:01"); /* after 9999-12-31Z */
    expect_ts_bad("2026-11-22T02:48:08.87a8Z");
    expect_ts_bad("2026-11-22T0x:48:08Z");
}

static void expect_fmt(long long sec, long nsec, const char *want)
{
    struct timespec ts = {(time_t)sec, nsec};
    char buf[40];

    memset(buf, 'X', sizeof(buf));
    pbjson_format_timestamp(&ts, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

static void test_timestamp_format(void **state)
{
    struct timespec ts = {1795315688, 878000000};
    char small[11];
    expect_fmt(0, 0, "1970-01-01T00:00:00Z");
    expect_fmt(1795315688, 878000000, "2026-11-22T02:48:08.878Z");
    expect_fmt(1795315688, 878001000, "2026-11-22T02:48:08.878001Z");
    expect_fmt(1795315688, 878001001, "2026-11-22T02:48:08.878001001Z");
    expect_fmt(1795315688, 1, "2026-11-22T02:48:08.000000001Z");
    expect_fmt(1795315688, 1000, "2026-11-22T02:48:08.000001Z");
    expect_fmt(1795315688, 100000000, "2026-11-22T02:48:08.100Z");
    expect_fmt(1709208000, 0, "2024-02-29T12:00:00Z");
    expect_fmt(-1, 500000000, "1969-12-31T23:59:59.500Z");
    expect_fmt(-62135596800LL, 0, "0001-01-01T00:00:00Z");
    expect_fmt(253402300799LL, 999999999, "9999-12-31T23:59:59.999999999Z");
    /* Not normalized: carried into the seconds. */
    expect_fmt(0, 1500000000, "1970-01-01T00:00:01.500Z");
    expect_fmt(1, -500000000, "1970-01-01T00:00:00.500Z");
    expect_fmt(0, -1, "1969-12-31T23:59:59.999999999Z");
    expect_fmt(INT64_MAX, 0, ""); /* beyond struct tm: nothing rather than garbage */

    /* A short buffer gets a NUL-terminated prefix. */
    pbjson_format_timestamp(&ts, small, sizeof(small));
    assert_string_equal(small, "2026-11-22");
    pbjson_format_timestamp(&ts, small, 0); /* nothing written, nothing broken */
}

static void test_utf8_valid(void **state)
{
    static const struct {
        const char *s;
        int ok;
    } rows[] = {
        {"", 1},
        {"plain ascii; $(x) `y`", 1},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 1}, /* 2, 3 and 4 byte forms */
        {"\xef\xbf\xbf", 1},                              /* U+FFFF */
        {"\xf4\x8f\xbf\xbf", 1},                          /* U+10FFFF */
        {"\xff", 0},
        {"name\x80", 0},         /* a lone continuation byte */
        {"\xc3", 0},             /* cut short */
        {"\xe2\x82", 0},         /* cut short */
        {"\xc0\xaf", 0},         /* overlong '/' */
        {"\xe0\x80\xaf", 0},     /* overlong '/' */
        {"\xf0\x80\x80\xaf", 0}, /* overlong '/' */
        {"\xed\xa0\x80", 0},     /* a surrogate */
        {"\xf4\x90\x80\x80", 0}, /* above U+10FFFF */
        {"\xc3\x28", 0},         /* bad continuation */
        {"latin1 caf\xe9", 0},
    };
    size_t i;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        json_t *j = json_string(rows[i].s);
        assert_int_equal(pbjson_utf8_valid(rows[i].s, strlen(rows[i].s)), rows[i].ok);
        /* the same verdict as jansson's, which refuses to encode what is not UTF-8 */
        assert_int_equal(j != NULL, rows[i].ok);
        json_decref(j);
    }
}

static void test_string_array(void **state)
{
    const char *const good[] = {"sh", "-c", "cat > \"$1\"", "caf\xc3\xa9", NULL};
    const char *const bad[] = {"rm", "-f", "--", "caf\xe9", NULL};
    size_t at = 99;
    json_t *arr = pbjson_string_array(good, &at);
    assert_non_null(arr);
    assert_int_equal(json_array_size(arr), 4);
    assert_string_equal(json_string_value(json_array_get(arr, 3)), "caf\xc3\xa9");
    json_decref(arr);
    /* never an argv with the bad name left out: none at all, and which one it was */
    assert_null(pbjson_string_array(bad, &at));
    assert_int_equal(at, 3);
}

static void test_timestamp_round_trip(void **state)
{
    /* A spread over the whole range, with all four fraction widths. */
    long long sec = -62135596800LL;
    long nsecs[] = {0, 7000000, 7000, 7, 999999999};
    unsigned i = 0;
    while (sec <= 253402300799LL) {
        struct timespec ts = {(time_t)sec, nsecs[i % 5]}, back;
        char buf[40];

        pbjson_format_timestamp(&ts, buf, sizeof(buf));
        assert_int_equal(strlen(buf) >= 20, 1);
        assert_int_equal(pbjson_parse_timestamp(buf, &back), 0);
        assert_true(back.tv_sec == ts.tv_sec);
        assert_int_equal(back.tv_nsec, ts.tv_nsec);
        sec += 86400LL * 29 + 3 * 3600 + 17 * 60 + 13 + i % 86400;
        i++;
    }
    assert_true(i > 100000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int64_strings),
        cmocka_unit_test(test_int64_bad_strings),
        cmocka_unit_test(test_int64_numbers),
        cmocka_unit_test(test_int64_types),
        cmocka_unit_test(test_int64_write),
        cmocka_unit_test(test_string_and_bool),
        cmocka_unit_test(test_enum),
        cmocka_unit_test(test_bytes_read),
        cmocka_unit_test(test_bytes_write),
        cmocka_unit_test(test_timestamp_parse),
        cmocka_unit_test(test_timestamp_parse_bad),
        cmocka_unit_test(test_timestamp_format),
        cmocka_unit_test(test_timestamp_round_trip),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_string_array),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
