/* pbjson.c - reading and writing the protobuf JSON mapping on top of jansson.
 *
 * A conforming server may write an int64 as "123", 123, 1e2 or even "1.0e2", an enum
 * as its name or its number, and bytes in either base64 alphabet; a strict parser on
 * the other side rejects anything but the canonical form. So the getters accept every
 * spelling the mapping allows and nothing else (a value that is not an exact integer
 * is an error, never rounded), and the writers produce only the canonical form.
 * Timestamps are converted with our own calendar arithmetic rather than timegm(), so
 * results do not depend on the process's TZ or on libc extensions. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "pbjson.h"

/* google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z. */
#define TS_MIN_SEC (-62135596800LL)
#define TS_MAX_SEC 253402300799LL
/* Days from 0001-01-01 to 1970-01-01 in the proleptic Gregorian calendar. */
#define DAYS_0001_TO_1970 719162LL

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Parse the whole of s[0..len) as a JSON number (-?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?)
 * whose value is an integer that fits int64. */
static int parse_int64_text(const char *s, size_t len, int64_t *out)
{
    const char *p = s, *end = s + len;
    const char *ip, *fp = NULL;
    size_t nint, nfrac = 0, ndig, keep, k;
    long long exp = 0, scale;
    uint64_t mag = 0, limit;
    int neg = 0, eneg = 0;

    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    ip = p;
    while (p < end && is_digit(*p))
        p++;
    nint = (size_t)(p - ip);
    if (nint == 0 || (ip[0] == '0' && nint > 1))
        return -EINVAL;
    if (p < end && *p == '.') {
        fp = ++p;
        while (p < end && is_digit(*p))
            p++;
        nfrac = (size_t)(p - fp);
        if (nfrac == 0)
            return -EINVAL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        const char *ep;

        p++;
        if (p < end && (*p == '+' || *p == '-'))
            eneg = *p++ == '-';
        ep = p;
        /* Saturate: any exponent this large already decides the outcome. */
        for (; p < end && is_digit(*p); p++)
            if (exp < 100000)
                exp = exp * 10 + (*p - '0');
        if (p == ep)
            return -EINVAL;
    }
    if (p != end)
        return -EINVAL;

    /* value = digits * 10^scale; drop the digits a negative scale divides away,
     * which must all be zero for the value to be an integer. */
    ndig = nint + nfrac;
    scale = (eneg ? -exp : exp) - (long long)nfrac;
    keep = ndig;
    if (scale < 0) {
        size_t drop = (unsigned long long)-scale < ndig ? (size_t)-scale : ndig;

        keep = ndig - drop;
        scale = 0;
    }
    limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (k = 0; k < ndig; k++) {
        unsigned d = (unsigned)((k < nint ? ip[k] : fp[k - nint]) - '0');

        if (k >= keep) {
            if (d != 0)
                return -EINVAL;
            continue;
        }
        if (mag > (limit - d) / 10)
            return -EINVAL;
        mag = mag * 10 + d;
    }
    for (; scale > 0 && mag != 0; scale--) {
        if (mag > limit / 10)
            return -EINVAL;
        mag *= 10;
    }
    /* -(mag - 1) - 1 reaches INT64_MIN without leaving int64 on the way. */
    *out = neg && mag ? -(int64_t)(mag - 1) - 1 : (int64_t)mag;
    return 0;
}

/* A JSON number (integer, or real with an exact integer value) as int64. */
static int number_to_int64(const json_t *v, int64_t *out)
{
    double d;

    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (!json_is_real(v))
        return -EINVAL;
    d = json_real_value(v);
    /* 2^63 is exact as a double; the comparisons also reject NaN. */
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || (double)(int64_t)d != d)
        return -EINVAL;
    *out = (int64_t)d;
    return 0;
}

int pbjson_get_int64(const json_t *obj, const char *key, int64_t dflt, int64_t *out)
{
    const json_t *v = json_object_get(obj, key);

    /* null is how the mapping spells "the default value" too. */
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (json_is_string(v))
        return parse_int64_text(json_string_value(v), json_string_length(v), out);
    return number_to_int64(v, out);
}

const char *pbjson_get_string(const json_t *obj, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(obj, key));

    return s ? s : dflt;
}

int pbjson_get_bool(const json_t *obj, const char *key)
{
    return json_is_true(json_object_get(obj, key));
}

int pbjson_get_enum(const json_t *obj, const char *key, const char *const *names, size_t n,
                    int *out)
{
    const json_t *v = json_object_get(obj, key);
    int64_t num;
    size_t i;

    if (!v || json_is_null(v)) {
        *out = 0;
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);

        for (i = 0; i < n; i++) {
            if (names[i] && strcmp(names[i], s) == 0) {
                *out = (int)i;
                return 0;
            }
        }
        return -EINVAL;
    }
    /* Enums are open in proto3: any int32 is a valid value, named or not. */
    if (number_to_int64(v, &num) || num < INT32_MIN || num > INT32_MAX)
        return -EINVAL;
    *out = (int)num;
    return 0;
}

int pbjson_get_bytes(const json_t *obj, const char *key, char **out, size_t *len)
{
    const json_t *v = json_object_get(obj, key);
    size_t slen = 0;
    char *buf;
    long n = 0;

    if (v && !json_is_null(v)) {
        if (!json_is_string(v))
            return -EINVAL;
        slen = json_string_length(v);
    }
    buf = malloc(base64_decoded_max(slen) + 1);
    if (!buf)
        return -ENOMEM;
    if (slen) {
        n = base64_decode(json_string_value(v), slen, buf);
        if (n < 0) {
            free(buf);
            return (int)n;
        }
    }
    buf[n] = '\0';
    *out = buf;
    *len = (size_t)n;
    return 0;
}

json_t *pbjson_bytes(const void *data, size_t len)
{
    json_t *s = NULL;
    size_t n;
    char *buf;

    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    buf = malloc(base64_encoded_len(len) + 1);
    if (!buf)
        return NULL;
    n = base64_encode(data, len, buf);
    s = json_stringn_nocheck(buf, n);
    free(buf);
    return s;
}

json_t *pbjson_int64(int64_t v)
{
    char buf[24];

    snprintf(buf, sizeof(buf), "%" PRId64, v);
    return json_string(buf);
}

/* ---- timestamps ---- */

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    return days[m - 1] + (m == 2 && is_leap(y));
}

/* Days from 1970-01-01 to y-m-d (y >= 1): whole years since 0001, then the months. */
static long long days_since_epoch(int y, int m, int d)
{
    static const int before[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    long long yy = y - 1;
    long long days = yy * 365 + yy / 4 - yy / 100 + yy / 400;

    days += before[m - 1] + (m > 2 && is_leap(y)) + d - 1;
    return days - DAYS_0001_TO_1970;
}

/* Exactly n digits at *p. */
static int take_digits(const char **p, int n, int *out)
{
    int v = 0;

    for (; n > 0; n--, (*p)++) {
        if (!is_digit(**p))
            return -EINVAL;
        v = v * 10 + (**p - '0');
    }
    *out = v;
    return 0;
}

static int take_char(const char **p, char c)
{
    if (**p != c)
        return -EINVAL;
    (*p)++;
    return 0;
}

int pbjson_parse_timestamp(const char *text, struct timespec *out)
{
    const char *p = text;
    int year, mon, day, hour, min, sec, oh = 0, om = 0, sign = 0;
    long nsec = 0;
    long long secs;

    if (!text)
        return -EINVAL;
    if (take_digits(&p, 4, &year) || take_char(&p, '-') || take_digits(&p, 2, &mon) ||
        take_char(&p, '-') || take_digits(&p, 2, &day))
        return -EINVAL;
    /* RFC 3339 allows a lower-case separator and zone letter. */
    if (*p != 'T' && *p != 't')
        return -EINVAL;
    p++;
    if (take_digits(&p, 2, &hour) || take_char(&p, ':') || take_digits(&p, 2, &min) ||
        take_char(&p, ':') || take_digits(&p, 2, &sec))
        return -EINVAL;
    if (*p == '.') {
        long scale = 100000000;

        p++;
        if (!is_digit(*p))
            return -EINVAL;
        for (; is_digit(*p); p++) {
            /* Timestamps have nanoseconds: a tenth digit cannot be represented. */
            if (scale == 0)
                return -EINVAL;
            nsec += (*p - '0') * scale;
            scale /= 10;
        }
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '-' ? -1 : 1;
        if (take_digits(&p, 2, &oh) || take_char(&p, ':') || take_digits(&p, 2, &om) || oh > 23 ||
            om > 59)
            return -EINVAL;
    } else {
        return -EINVAL;
    }
    if (*p != '\0')
        return -EINVAL;
    /* No leap seconds: Timestamp counts smeared time, as protobuf does. */
    if (year < 1 || mon < 1 || mon > 12 || day < 1 || day > month_days(year, mon) || hour > 23 ||
        min > 59 || sec > 59)
        return -EINVAL;

    secs = days_since_epoch(year, mon, day) * 86400 + hour * 3600 + min * 60 + sec;
    secs -= sign * (oh * 3600 + om * 60);
    if (secs < TS_MIN_SEC || secs > TS_MAX_SEC)
        return -EINVAL;
    out->tv_sec = (time_t)secs;
    out->tv_nsec = nsec;
    return 0;
}

void pbjson_format_timestamp(const struct timespec *ts, char *buf, size_t size)
{
    time_t sec = ts->tv_sec + ts->tv_nsec / 1000000000L;
    long nsec = ts->tv_nsec % 1000000000L;
    char frac[11] = "";
    struct tm tm;

    if (size == 0)
        return;
    if (nsec < 0) {
        nsec += 1000000000L;
        sec--;
    }
    if (!gmtime_r(&sec, &tm)) {
        buf[0] = '\0';
        return;
    }
    /* The canonical form uses 0, 3, 6 or 9 fractional digits, whichever is exact. */
    if (nsec % 1000000 == 0 && nsec)
        snprintf(frac, sizeof(frac), ".%03ld", nsec / 1000000);
    else if (nsec % 1000 == 0 && nsec)
        snprintf(frac, sizeof(frac), ".%06ld", nsec / 1000);
    else if (nsec)
        snprintf(frac, sizeof(frac), ".%09ld", nsec);
    snprintf(buf, size, "%04lld-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900LL, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

int pbjson_utf8_valid(const char *s, size_t len)
{
    /* jansson encodes every string we send, and it refuses what is not UTF-8: ask it. */
    json_t *j = json_stringn(s, len);
    json_decref(j);
    return j != NULL;
}

json_t *pbjson_string_array(const char *const *strs, size_t *bad)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && strs[i]; i++) {
        json_t *s = json_string(strs[i]);
        if (!s || json_array_append_new(arr, s) < 0) {
            json_decref(arr);
            *bad = i;
            return NULL;
        }
    }
    return arr;
}
