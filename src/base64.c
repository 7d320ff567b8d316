/* base64.c - RFC 4648 base64 for the protobuf JSON mapping of `bytes`.
 *
 * The encoder writes the standard alphabet with padding, the canonical form a strict
 * server expects. The decoder is as lenient as the mapping requires of parsers: it takes
 * the standard and the URL-safe alphabet (even mixed), with or without padding, and
 * ignores non-zero bits left over in the last character as most decoders do. It is
 * strict about everything else (stray characters, whitespace, padding in the middle, a
 * length that leaves one lone character), because a lenient guess there would hand
 * corrupted file content to the user instead of an error. */
#include <errno.h>
#include <stdint.h>

#include "base64.h"

static const char enc_table[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The 6-bit value of c in either alphabet, or -1. */
static int dec_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

size_t base64_encoded_len(size_t n)
{
    return (n / 3 + (n % 3 != 0)) * 4;
}

size_t base64_encode(const void *src, size_t len, char *dst)
{
    const unsigned char *in = src;
    char *out = dst;
    size_t i = 0;

    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = enc_table[v >> 18];
        *out++ = enc_table[(v >> 12) & 63];
        *out++ = enc_table[(v >> 6) & 63];
        *out++ = enc_table[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *out++ = enc_table[v >> 18];
        *out++ = enc_table[(v >> 12) & 63];
        *out++ = '=';
        *out++ = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *out++ = enc_table[v >> 18];
        *out++ = enc_table[(v >> 12) & 63];
        *out++ = enc_table[(v >> 6) & 63];
        *out++ = '=';
    }
    *out = '\0';
    return (size_t)(out - dst);
}

size_t base64_decoded_max(size_t len)
{
    /* Unpadded input may end in 2 or 3 characters worth 1 or 2 bytes. */
    return len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
}

long base64_decode(const char *src, size_t len, void *dst)
{
    const unsigned char *in = (const unsigned char *)src;
    unsigned char *out = dst;
    uint32_t acc = 0;
    size_t nchars, i;
    int bits = 0;

    /* Padding is only legal as the last one or two characters of a whole quantum. */
    nchars = len;
    if (len > 0 && in[len - 1] == '=') {
        if (len % 4 != 0)
            return -EINVAL;
        nchars = len - 1;
        if (in[nchars - 1] == '=')
            nchars--;
    }
    if (nchars % 4 == 1)
        return -EINVAL;

    for (i = 0; i < nchars; i++) {
        int v = dec_value(in[i]);

        if (v < 0)
            return -EINVAL;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *out++ = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return (long)(out - (unsigned char *)dst);
}
