/* pbjson.h - the protobuf JSON mapping rules the service's messages follow
 * (api/README.md): int64 as strings or numbers, enums by name or number, bytes as
 * base64, Timestamps as RFC 3339. Readers are lenient the way the mapping requires;
 * writers produce the canonical form. Pure, thread-safe. */
#ifndef CWSFS_PBJSON_H
#define CWSFS_PBJSON_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <jansson.h>

/* obj[key] as an int64 ("123", 123, "1e2", 1.0; absent or null = dflt). -EINVAL for other
 * types, junk, a value that is not an exact integer, or one out of range. */
int pbjson_get_int64(const json_t *obj, const char *key, int64_t dflt, int64_t *out);

/* obj[key] as a string, or dflt when absent or not a string. Borrowed from obj. */
const char *pbjson_get_string(const json_t *obj, const char *key, const char *dflt);

/* obj[key] as a bool, absent = 0. */
int pbjson_get_bool(const json_t *obj, const char *key);

/* Enum value: a name found in names[] (index = number) or a number (any int32: proto3
 * enums are open). Absent or null = 0. -EINVAL for an unknown name or another type.
 * names may contain NULL holes. */
int pbjson_get_enum(const json_t *obj, const char *key, const char *const *names, size_t n,
                    int *out);

/* obj[key] as base64 bytes: *out malloc'ed (NUL-terminated for convenience), *len set.
 * Absent = empty (out = malloc'ed "", len 0). -EINVAL on bad base64 or wrong type. */
int pbjson_get_bytes(const json_t *obj, const char *key, char **out, size_t *len);

/* Whether len bytes are UTF-8 as protobuf strings require (and jansson checks): no
 * overlong forms, no surrogates, nothing above U+10FFFF. A name that is not cannot be
 * sent to the service at all (paths, argv, spec values are strings). */
int pbjson_utf8_valid(const char *s, size_t len);
/* A JSON array of the NULL-terminated strs (a command's argv). NULL, with *bad the
 * index of the culprit, when one is not UTF-8 (or memory ran out): an argument is
 * never dropped, since what ran would be another command. */
json_t *pbjson_string_array(const char *const *strs, size_t *bad);

/* A JSON string holding base64 of data (new reference, NULL on ENOMEM). */
json_t *pbjson_bytes(const void *data, size_t len);

/* int64 in canonical form: a JSON string of the decimal number. */
json_t *pbjson_int64(int64_t v);

/* Parse an RFC 3339 timestamp ("2026-11-22T02:48:08.878Z", offsets allowed, at most 9
 * fractional digits, within 0001-01-01..9999-12-31 UTC). -EINVAL otherwise. */
int pbjson_parse_timestamp(const char *text, struct timespec *out);
/* Format ts as RFC 3339 UTC with 'Z' into buf (at least 40 bytes), with 0, 3, 6 or 9
 * fractional digits as the canonical form has them. */
void pbjson_format_timestamp(const struct timespec *ts, char *buf, size_t size);

#endif
