/* outbuf.c - output kept on disk for readers of exec/N/stdout, stderr, logs and events.
 * The logical offset of a byte is also its offset in a spool file, so append
 * is one pwrite at `produced` and read is one pread; the file's apparent size grows
 * with everything ever produced while its disk use stays near cap, because the bytes
 * that fall out of the window are hole-punched (FALLOC_FL_KEEP_SIZE) in aligned chunks.
 * Where punching is unsupported the old bytes simply stay on disk: the window, and the
 * `dropped` count readers see, do not depend on it. */
#include "outbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Holes are punched in whole chunks of this size, so a steady trickle of output costs
 * one fallocate per 64 KiB, never a partial-block zeroing. A multiple of every block
 * size Linux filesystems use. */
#define PUNCH_CHUNK (64u << 10)

/* The spool file has a name in the mount's private spool directory (removed at
 * unmount) rather than being O_TMPFILE: a stream that ended closes its descriptor and a
 * read opens the file by name, so a session with thousands of finished execs holds no
 * descriptor for them (a descriptor per exec ran the daemon into its fd limit). */
static int open_spool(struct outbuf *ob, const char *dir)
{
    int fd;

    if (asprintf(&ob->path, "%s/cwsfs-out-XXXXXX", dir) < 0) {
        ob->path = NULL;
        return -ENOMEM;
    }
    fd = mkostemp(ob->path, O_CLOEXEC);
    if (fd < 0) {
        fd = -errno;
        free(ob->path);
        ob->path = NULL;
    }
    return fd;
}

int outbuf_full(int err)
{
    return err == -ENOSPC || err == -EDQUOT || err == -EFBIG;
}

int outbuf_init(struct outbuf *ob, const char *dir, uint64_t cap)
{
    int fd;

    memset(ob, 0, sizeof(*ob));
    ob->fd = -1;
    ob->cap = cap ? cap : OUTBUF_DEFAULT_CAP;
    /* st_mtime of an output file that has no output yet is its creation time. */
    clock_gettime(CLOCK_REALTIME, &ob->mtime);
    fd = open_spool(ob, dir);
    if (fd < 0)
        return fd;
    ob->fd = fd;
    return 0;
}

void outbuf_idle(struct outbuf *ob)
{
    if (ob->fd >= 0 && ob->path) {
        close(ob->fd);
        ob->fd = -1;
    }
}

/* The descriptor to use: the open one, or the file reopened by name after idle. */
static int outbuf_fd(const struct outbuf *ob, int flags, int *opened)
{
    int fd;

    *opened = 0;
    if (ob->fd >= 0)
        return ob->fd;
    if (!ob->path)
        return -EBADF;
    fd = open(ob->path, flags | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    *opened = 1;
    return fd;
}

/* Forget the bytes below produced - cap. Disk space is released for whole chunks
 * below the new start; failures of fallocate (EOPNOTSUPP on filesystems without hole
 * punching, or anything else) leave the bytes on disk, which costs space, not
 * correctness. */
static void drop_excess(struct outbuf *ob)
{
    uint64_t from, to;

    if (ob->produced - ob->dropped <= ob->cap)
        return;
    from = ob->dropped - ob->dropped % PUNCH_CHUNK;
    ob->dropped = ob->produced - ob->cap;
    to = ob->dropped - ob->dropped % PUNCH_CHUNK;
    if (to > from && to <= (uint64_t)INT64_MAX)
        (void)fallocate(ob->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)from,
                        (off_t)(to - from));
}

int outbuf_append(struct outbuf *ob, const void *data, size_t len)
{
    const char *p = data;
    uint64_t skip = 0, done = 0, want;
    ssize_t n;
    int rc = 0;

    if (ob->fd < 0 && !ob->path)
        return -EBADF;
    if (len == 0)
        return 0;
    if (ob->fd < 0) {
        int opened;
        int fd = outbuf_fd(ob, O_RDWR, &opened);
        if (fd < 0)
            return fd;
        ob->fd = fd; /* written again: keep it until the next idle */
    }
    if ((uint64_t)INT64_MAX - ob->produced < len)
        return -EFBIG;
    /* Bytes that would be dropped at once are never written. */
    if (len > ob->cap)
        skip = len - ob->cap;
    want = len - skip;
    while (done < want) {
        n = pwrite(ob->fd, p + skip + done, want - done, (off_t)(ob->produced + skip + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0) {
            rc = -EIO;
            break;
        }
        done += (uint64_t)n;
    }
    /* On failure the bytes written so far stay in the stream and the rest are lost;
     * the stream stays contiguous and the caller reports the loss. */
    if (done > 0 || rc == 0) {
        ob->produced += skip + done;
        clock_gettime(CLOCK_REALTIME, &ob->mtime);
        drop_excess(ob);
    }
    return rc;
}

ssize_t outbuf_read(const struct outbuf *ob, uint64_t off, void *buf, size_t len)
{
    char *p = buf;
    uint64_t avail;
    size_t done = 0;
    ssize_t n = 0;
    int fd, opened;

    if (ob->fd < 0 && !ob->path)
        return -EBADF;
    if (off >= ob->produced)
        return 0;
    if (off < ob->dropped)
        off = ob->dropped;
    avail = ob->produced - off;
    if (len > avail)
        len = (size_t)avail;
    if (len > SSIZE_MAX)
        len = SSIZE_MAX;
    fd = outbuf_fd(ob, O_RDONLY, &opened);
    if (fd < 0)
        return fd;
    while (done < len) {
        n = pread(fd, p + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            n = -errno;
            break;
        }
        if (n == 0)
            break; /* cannot happen: the file is at least `produced` long */
        done += (size_t)n;
    }
    if (opened)
        close(fd);
    return done || n >= 0 ? (ssize_t)done : n;
}

void outbuf_free(struct outbuf *ob)
{
    if (ob->fd >= 0)
        close(ob->fd);
    ob->fd = -1;
    if (ob->path) {
        (void)unlink(ob->path);
        free(ob->path);
        ob->path = NULL;
    }
}
