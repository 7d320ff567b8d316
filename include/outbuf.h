/* outbuf.h - output kept for readers: an exec's stdout/stderr, logs, events.
 *
 * Bytes live in a file in the mount's private spool directory, not in memory, so a command
 * that prints gigabytes costs disk, not RAM. Offsets are logical (0 = the first byte
 * ever produced). Beyond cap the oldest bytes are dropped (hole-punched) and
 * `dropped` says how many: readers asking for them get the oldest kept bytes instead.
 * Not thread-safe: the owner's lock protects it. */
#ifndef CWSFS_OUTBUF_H
#define CWSFS_OUTBUF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define OUTBUF_DEFAULT_CAP (256ull << 20)

struct outbuf {
    int fd;                /* spool file; -1 before init and while idle */
    char *path;            /* its name, removed by outbuf_free; NULL before init */
    uint64_t produced;     /* bytes appended so far: the file's st_size */
    uint64_t dropped;      /* oldest bytes no longer kept */
    uint64_t cap;          /* most bytes kept */
    struct timespec mtime; /* time of the last append (CLOCK_REALTIME); init's time before */
};

/* Create the spool file in dir (mkstemp, close-on-exec). cap 0 = default. On failure
 * ob->fd is -1, ob->path NULL and -errno is returned. */
/* Whether a spool write failed for want of room (ENOSPC, EDQUOT, EFBIG): what
 * `error` calls "spool full", for output and file spools alike. */
int outbuf_full(int err);
int outbuf_init(struct outbuf *ob, const char *dir, uint64_t cap);
/* Close the descriptor of a stream that will not grow for now; reads (and a later
 * append) reopen the file by name. */
void outbuf_idle(struct outbuf *ob);
/* Append; drops the oldest bytes beyond cap (disk space is released by punching holes
 * where the filesystem can; `dropped` counts them either way). Returns 0 or -errno
 * (disk full: the bytes not written are lost, the stream stays contiguous, and the
 * caller says so in the sandbox's error file). -EBADF before init. */
int outbuf_append(struct outbuf *ob, const void *data, size_t len);
/* Read up to len bytes at logical offset off into buf. Returns the count (0 when
 * off >= produced) or -errno. An offset inside the dropped range reads from the
 * oldest byte kept. */
ssize_t outbuf_read(const struct outbuf *ob, uint64_t off, void *buf, size_t len);
/* Close and remove the spool file (its space is freed); a second call is a no-op. */
void outbuf_free(struct outbuf *ob);

#endif
