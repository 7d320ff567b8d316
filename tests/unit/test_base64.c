/* test_base64.c - base64.c against RFC 4648's vectors, both alphabets, padded and
 * unpadded input, every kind of malformed input, and exhaustive round trips. The
 * decoder must never write past base64_decoded_max(), so every decode here lands in
 * a buffer with a guard zone that is checked afterwards. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base64.h"

#define GUARD 16
#define GUARD_BYTE 0xa5

/* Decode src into a fresh buffer, check the guard zone, return the result code. */
static long decode_checked(const char *src, size_t len, unsigned char **out)
{
    size_t max = base64_decoded_max(len);
    unsigned char *buf = malloc(max + GUARD);
    long n;
    size_t i;

    assert_non_null(buf);
    memset(buf, GUARD_BYTE, max + GUARD);
    n = base64_decode(src, len, buf);
    for (i = max; i < max + GUARD; i++)
        assert_int_equal(buf[i], GUARD_BYTE);
    if (n >= 0)
        assert_true((size_t)n <= max);
    *out = buf;
    return n;
}

static void expect_decode(const char *src, const void *want, size_t want_len)
{
    unsigned char *buf;
    long n = decode_checked(src, strlen(src), &buf);

    assert_int_equal(n, (long)want_len);
    if (want_len)
        assert_memory_equal(buf, want, want_len);
    free(buf);
}

static void expect_invalid_n(const char *src, size_t len)
{
    unsigned char *buf;

    assert_int_equal(decode_checked(src, len, &buf), -EINVAL);
    free(buf);
}

static void expect_invalid(const char *src)
{
    expect_invalid_n(src, strlen(src));
}

static void test_rfc4648_encode(void **state)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                        "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    char buf[32];
    size_t i;
    for (i = 0; i < 7; i++) {
        size_t n;

        memset(buf, 'X', sizeof(buf));
        n = base64_encode(plain[i], strlen(plain[i]), buf);
        assert_int_equal(n, strlen(coded[i]));
        assert_int_equal(n, base64_encoded_len(strlen(plain[i])));
        assert_string_equal(buf, coded[i]);
    }
}

static void test_rfc4648_decode(void **state)
{
    expect_decode("", "", 0);
    expect_decode("Zg==", "f", 1);
    expect_decode("Zm8=", "fo", 2);
    expect_decode("Zm9v", "foo", 3);
    expect_decode("Zm9vYg==", "foob", 4);
    expect_decode("Zm9vYmE=", "fooba", 5);
    expect_decode("Zm9vYmFy", "foobar", 6);
}

static void test_unpadded(void **state)
{
    expect_decode("Zg", "f", 1);
    expect_decode("Zm8", "fo", 2);
    expect_decode("Zm9vYg", "foob", 4);
    expect_decode("Zm9vYmE", "fooba", 5);
}

static void test_alphabets(void **state)
{
    static const unsigned char hi[] = {0xfb, 0xff, 0xbf};
    static const unsigned char two[] = {0xfb, 0xff};
    char buf[16];
    base64_encode(hi, sizeof(hi), buf);
    assert_string_equal(buf, "+/+/");
    base64_encode(two, sizeof(two), buf);
    assert_string_equal(buf, "+/8=");

    expect_decode("+/+/", hi, sizeof(hi));
    expect_decode("-_-_", hi, sizeof(hi)); /* URL-safe */
    expect_decode("+_-/", hi, sizeof(hi)); /* mixed */
    expect_decode("-_8=", two, sizeof(two));
    expect_decode("-_8", two, sizeof(two)); /* URL-safe, unpadded */
    expect_decode("+/8", two, sizeof(two));
}

static void test_noncanonical_trailing_bits(void **state)
{
    expect_decode("Zh==", "f", 1);
    expect_decode("Zh", "f", 1);
    expect_decode("Zm9=", "fo", 2);
}

static void test_bad_length(void **state)
{
    expect_invalid("Z");
    expect_invalid("Zm9vY");
    expect_invalid("Zm9vYmFyZ");
}

static void test_bad_padding(void **state)
{
    expect_invalid("=");
    expect_invalid("==");
    expect_invalid("===");
    expect_invalid("====");
    expect_invalid("Z===");
    expect_invalid("Zg=");        /* partial padding */
    expect_invalid("Zm9vYg=");    /* partial padding */
    expect_invalid("Zg===");      /* too much */
    expect_invalid("Zg==Zg==");   /* padding in the middle */
    expect_invalid("Z=g=");       /* padding inside a quantum */
    expect_invalid("Zm=v");       /* padding inside a quantum */
    expect_invalid("Zm9v=");      /* padding after a whole quantum */
    expect_invalid("Zm9v====");   /* padding-only quantum */
    expect_invalid("Zm9vYmFy=="); /* padding after a whole quantum */
}

static void test_bad_characters(void **state)
{
    expect_invalid("Zm9*");
    expect_invalid("Zm 9v");
    expect_invalid("Zm9v\n");
    expect_invalid("Zm9v\r\nZm9v");
    expect_invalid(" Zm9v");
    expect_invalid("Zm9.");
    expect_invalid("Zm9\x7f");
    expect_invalid("Zm9\xc3\xa9"); /* UTF-8 is not base64 */
    expect_invalid_n("Zm\0v", 4);  /* an embedded NUL counts, len rules */
    expect_invalid_n("Zg=\0", 4);
}

static void test_lengths(void **state)
{
    size_t n;
    assert_int_equal(base64_encoded_len(0), 0);
    assert_int_equal(base64_encoded_len(1), 4);
    assert_int_equal(base64_encoded_len(2), 4);
    assert_int_equal(base64_encoded_len(3), 4);
    assert_int_equal(base64_encoded_len(4), 8);
    assert_int_equal(base64_decoded_max(0), 0);
    assert_int_equal(base64_decoded_max(2), 1);
    assert_int_equal(base64_decoded_max(3), 2);
    assert_int_equal(base64_decoded_max(4), 3);
    assert_int_equal(base64_decoded_max(8), 6);
    /* Never less than what any valid input of that length decodes to. */
    for (n = 0; n < 64; n++) {
        size_t enc = base64_encoded_len(n);

        assert_true(base64_decoded_max(enc) >= n);
        assert_true(base64_decoded_max(enc - (n % 3 ? 3 - n % 3 : 0)) >= n);
    }
}

static void test_round_trip(void **state)
{
    unsigned char data[300], *back;
    char enc[512];
    size_t len, i;
    for (i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 131 + 7);
    for (len = 0; len <= sizeof(data); len++) {
        size_t n = base64_encode(data, len, enc);
        long m;

        assert_int_equal(n, base64_encoded_len(len));
        assert_int_equal(strlen(enc), n);
        m = decode_checked(enc, n, &back);
        assert_int_equal(m, (long)len);
        if (len)
            assert_memory_equal(back, data, len);
        free(back);

        /* Stripped of its padding, it must still decode the same. */
        while (n > 0 && enc[n - 1] == '=')
            n--;
        m = decode_checked(enc, n, &back);
        assert_int_equal(m, (long)len);
        if (len)
            assert_memory_equal(back, data, len);
        free(back);
    }
}

static void test_every_byte_value(void **state)
{
    unsigned char data[256], *back;
    char enc[400];
    size_t i, n;
    for (i = 0; i < 256; i++)
        data[i] = (unsigned char)i;
    n = base64_encode(data, sizeof(data), enc);
    /* Convert to the URL-safe alphabet: it must decode to the same bytes. */
    for (i = 0; i < n; i++) {
        if (enc[i] == '+')
            enc[i] = '-';
        else if (enc[i] == '/')
            enc[i] = '_';
    }
    assert_int_equal(decode_checked(enc, n, &back), 256);
    assert_memory_equal(back, data, 256);
    free(back);
}

/* Every one of the 256 possible characters in each position of a quantum: exactly the
 * 64 + 2 alphabet characters decode. */
static void test_every_character(void **state)
{
    int c, ok = 0;
    for (c = 0; c < 256; c++) {
        char src[4] = {'Q', 'Q', 'Q', (char)c};
        unsigned char *buf;
        long n = decode_checked(src, 4, &buf);

        if (n == 3)
            ok++;
        else if (c != '=')
            assert_int_equal(n, -EINVAL);
        free(buf);
    }
    assert_int_equal(ok, 66);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_encode),
        cmocka_unit_test(test_rfc4648_decode),
        cmocka_unit_test(test_unpadded),
        cmocka_unit_test(test_alphabets),
        cmocka_unit_test(test_noncanonical_trailing_bits),
        cmocka_unit_test(test_bad_length),
        cmocka_unit_test(test_bad_padding),
        cmocka_unit_test(test_bad_characters),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_every_byte_value),
        cmocka_unit_test(test_every_character),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
