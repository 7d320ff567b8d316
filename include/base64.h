/* base64.h - standard base64 (RFC 4648 section 4), as protobuf JSON carries `bytes`.
 *
 * Encoding always writes the standard alphabet with padding. Decoding accepts the
 * standard and URL-safe alphabets, padded or not, because the protobuf JSON mapping
 * says parsers must. Pure functions, no state, safe from any thread. */
#ifndef CWSFS_BASE64_H
#define CWSFS_BASE64_H

#include <stddef.h>

/* Characters base64_encode writes for n input bytes, without the NUL. */
size_t base64_encoded_len(size_t n);

/* Encode len bytes into dst, which must hold base64_encoded_len(len) + 1 bytes.
 * Returns the number of characters written (dst is NUL-terminated). */
size_t base64_encode(const void *src, size_t len, char *dst);

/* Upper bound of the bytes decoding len characters can produce. */
size_t base64_decoded_max(size_t len);

/* Decode len characters into dst (room for base64_decoded_max(len) bytes).
 * Returns the number of bytes written, or -EINVAL for a character outside both
 * alphabets, misplaced padding, or a length no encoding produces. */
long base64_decode(const char *src, size_t len, void *dst);

#endif
