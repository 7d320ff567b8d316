/* listing.h - directory listings of a sandbox's filesystem, from one command.
 *
 * There is no list or stat rpc, so cwsfs runs one command per directory and parses
 * its output into attributes for every entry. The command is an exact argv (the path
 * is an argument, never pasted into a shell string) and its output separates fields
 * with NUL bytes, so any byte but NUL and '/' may appear in a name. Pure. */
#ifndef CWSFS_LISTING_H
#define CWSFS_LISTING_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

/* Fields per entry, each NUL-terminated: type letter (%y), octal permission bits
 * (%m), size (%s), mtime seconds with fraction (%T@), uid (%U), gid (%G), link count
 * (%n), name relative to the listed directory (%P), symlink target (%l, empty when
 * not a link). */
#define LISTING_FIELDS 9

/* Fill argv (room for LISTING_ARGC + 1 pointers) with the command listing dir, an
 * absolute path. The strings point into static storage and into dir. */
#define LISTING_ARGC 9
void listing_argv(const char *dir, const char *argv[LISTING_ARGC + 1]);

struct listing_entry {
    const char *name; /* borrowed from the parsed buffer */
    const char *link; /* symlink target, "" when not a link */
    mode_t mode;      /* type bits | permission bits */
    off_t size;
    struct timespec mtime;
    uid_t uid;
    gid_t gid;
    nlink_t nlink;
};

/* Parse the command's output; fn is called once per entry in order, and a non-zero
 * return stops parsing and is returned. -EPROTO for output not in this format (a
 * truncated last record, an unknown type letter, non-numeric or out-of-range fields,
 * a name that is empty, ".", "..", holds '/' or exceeds NAME_MAX, a target beyond
 * PATH_MAX or on a non-link); entries before the bad record have been delivered.
 * Type letters f d l p s c b map to their S_IF* bits; find's D (door) and U (unknown)
 * are reported as regular files rather than failing the whole directory. %T@ is read
 * as find prints it, tv_sec "." tv_nsec ("-2.5000000000" is 1.5 s before the epoch).
 * Empty output is an empty directory. */
int listing_parse(const char *buf, size_t len, int (*fn)(const struct listing_entry *e, void *ud),
                  void *ud);

#endif
