/* listing.c - one directory of a sandbox's filesystem, listed by one command. The
 * command is GNU find printing nine NUL-terminated fields per entry, passed as an exact
 * argv, so no name ever meets a shell; the parser is strict (every field checked, every
 * number range-checked, names must be single path components) and bounded (no field
 * longer than the kernel allows), and any deviation fails the whole listing with
 * -EPROTO rather than inventing attributes. */
#include "listing.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

/* find's -printf escapes: "\0" in the format is a NUL byte in the output, so the C
 * string holds a backslash and a zero. -H lists the directory a symlinked DIR points
 * to while every entry is still described by lstat. */
static const char listing_format[] = "%y\\0%m\\0%s\\0%T@\\0%U\\0%G\\0%n\\0%P\\0%l\\0";

void listing_argv(const char *dir, const char *argv[LISTING_ARGC + 1])
{
    argv[0] = "find";
    argv[1] = "-H";
    argv[2] = dir;
    argv[3] = "-mindepth";
    argv[4] = "1";
    argv[5] = "-maxdepth";
    argv[6] = "1";
    argv[7] = "-printf";
    argv[8] = listing_format;
    argv[9] = NULL;
}

/* Longest numeric field accepted: more digits than any 64-bit value needs. */
#define NUM_MAX 24

/* Parse digits in base 8 or 10, no sign, into 0..max. */
static int parse_uint(const char *s, size_t len, unsigned base, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (len == 0 || len > NUM_MAX)
        return -EPROTO;
    for (i = 0; i < len; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (s[i] < '0' || d >= base)
            return -EPROTO;
        if (v > (max - d) / base)
            return -EPROTO;
        v = v * base + d;
    }
    *out = v;
    return 0;
}

/* %T@ prints tv_sec, a dot, then tv_nsec padded to ten digits: it is not a signed
 * decimal, so 1.5 s before the epoch is "-2.5000000000" (tv_sec -2, tv_nsec 5e8).
 * Parsed back the same way. The fraction is optional; digits past the ninth must be
 * digits and are ignored. */
static int parse_time(const char *s, size_t len, struct timespec *ts)
{
    const char *dot = memchr(s, '.', len);
    size_t ilen = dot ? (size_t)(dot - s) : len, i;
    int neg = ilen > 0 && s[0] == '-';
    uint64_t sec;
    long nsec = 0;

    if (parse_uint(s + neg, ilen - (size_t)neg, 10, (uint64_t)INT64_MAX, &sec) < 0)
        return -EPROTO;
    if (dot) {
        size_t flen = len - ilen - 1;
        if (flen == 0 || flen > NUM_MAX)
            return -EPROTO;
        for (i = 0; i < flen; i++) {
            if (dot[1 + i] < '0' || dot[1 + i] > '9')
                return -EPROTO;
            if (i < 9)
                nsec = nsec * 10 + (dot[1 + i] - '0');
        }
        for (; i < 9; i++)
            nsec *= 10;
    }
    if (sizeof(time_t) < 8 && sec > (uint64_t)INT32_MAX)
        return -EPROTO;
    ts->tv_sec = neg ? -(time_t)sec : (time_t)sec;
    ts->tv_nsec = nsec;
    return 0;
}

/* %y letters. 'D' (a Solaris door) and 'U' (find could not tell) cannot describe a
 * Linux file we can do anything with, but one odd entry must not make its whole
 * directory unlistable: they are shown as regular files, and opening one fails in the
 * sandbox with a real error. Any other letter means the output is not ours. */
static int type_bits(const char *s, size_t len, mode_t *mode)
{
    if (len != 1)
        return -EPROTO;
    switch (s[0]) {
    case 'f':
    case 'D':
    case 'U':
        *mode = S_IFREG;
        return 0;
    case 'd':
        *mode = S_IFDIR;
        return 0;
    case 'l':
        *mode = S_IFLNK;
        return 0;
    case 'p':
        *mode = S_IFIFO;
        return 0;
    case 's':
        *mode = S_IFSOCK;
        return 0;
    case 'c':
        *mode = S_IFCHR;
        return 0;
    case 'b':
        *mode = S_IFBLK;
        return 0;
    default:
        return -EPROTO;
    }
}

enum { F_TYPE, F_MODE, F_SIZE, F_TIME, F_UID, F_GID, F_NLINK, F_NAME, F_LINK };

/* Longest a field may be: names are one component, link targets at most a path. */
static size_t field_max(int f)
{
    switch (f) {
    case F_NAME:
        return NAME_MAX;
    case F_LINK:
        return PATH_MAX - 1;
    case F_TIME:
        return 2 * NUM_MAX + 2;
    default:
        return NUM_MAX;
    }
}

static int parse_entry(const char *const fld[LISTING_FIELDS], const size_t flen[LISTING_FIELDS],
                       struct listing_entry *e)
{
    uint64_t v;
    mode_t type;

    if (type_bits(fld[F_TYPE], flen[F_TYPE], &type) < 0)
        return -EPROTO;
    if (parse_uint(fld[F_MODE], flen[F_MODE], 8, 07777, &v) < 0)
        return -EPROTO;
    e->mode = type | (mode_t)v;
    if (parse_uint(fld[F_SIZE], flen[F_SIZE], 10, (uint64_t)INT64_MAX, &v) < 0)
        return -EPROTO;
    e->size = (off_t)v;
    if (parse_time(fld[F_TIME], flen[F_TIME], &e->mtime) < 0)
        return -EPROTO;
    if (parse_uint(fld[F_UID], flen[F_UID], 10, UINT32_MAX, &v) < 0)
        return -EPROTO;
    e->uid = (uid_t)v;
    if (parse_uint(fld[F_GID], flen[F_GID], 10, UINT32_MAX, &v) < 0)
        return -EPROTO;
    e->gid = (gid_t)v;
    if (parse_uint(fld[F_NLINK], flen[F_NLINK], 10, (nlink_t)-1, &v) < 0)
        return -EPROTO;
    e->nlink = (nlink_t)v;
    /* With -mindepth 1 -maxdepth 1, %P is a single component, never "." or "..". */
    if (flen[F_NAME] == 0 || memchr(fld[F_NAME], '/', flen[F_NAME]) ||
        strcmp(fld[F_NAME], ".") == 0 || strcmp(fld[F_NAME], "..") == 0)
        return -EPROTO;
    e->name = fld[F_NAME];
    /* Only a symlink has a target. A symlink's may read empty if it was replaced
     * between find's lstat and readlink; that is a race, not a format error. */
    if (type != S_IFLNK && flen[F_LINK] > 0)
        return -EPROTO;
    e->link = fld[F_LINK];
    return 0;
}

int listing_parse(const char *buf, size_t len, int (*fn)(const struct listing_entry *e, void *ud),
                  void *ud)
{
    const char *p = buf, *end = buf + len, *nul;
    const char *fld[LISTING_FIELDS];
    size_t flen[LISTING_FIELDS];
    struct listing_entry e;
    int f, rc;

    while (p < end) {
        for (f = 0; f < LISTING_FIELDS; f++) {
            nul = memchr(p, 0, (size_t)(end - p));
            if (!nul)
                return -EPROTO; /* truncated record */
            fld[f] = p;
            flen[f] = (size_t)(nul - p);
            if (flen[f] > field_max(f))
                return -EPROTO;
            p = nul + 1;
        }
        memset(&e, 0, sizeof(e));
        if (parse_entry(fld, flen, &e) < 0)
            return -EPROTO;
        rc = fn(&e, ud);
        if (rc)
            return rc;
    }
    return 0;
}
