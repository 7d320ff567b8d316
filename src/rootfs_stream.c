/* rootfs_stream.c - a sandbox's big file opened to read: fetched as it is read.
 *
 * Opening a file above the service's unary cap read-only does not copy it first: the
 * open answers at once, and each read is answered as soon as its bytes have arrived
 * (parked like a stream read until then), so `head -c 10` of a huge file costs what it
 * reads and progress tools see the bytes move. The bytes come in chunks, each one
 * StreamExec of `dd` for a byte range: the first is small, each next one twice the
 * last, up to the window (`-o window=`). The next chunk starts when the reader is
 * within half a window of what has arrived, so a sequential reader rarely waits
 * between chunks. The spool keeps what has arrived minus what lies more than a window
 * behind it (hole-punched), so it holds at most two windows whatever the file's size.
 * A read outside what is kept (a seek) cancels the chunk in flight and starts again
 * there. The file's end is where a chunk came back short. Everything runs under
 * fs_lock. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "execmsg.h"
#include "log.h"
#include "rootfs_int.h"

#define FIRST_CHUNK (1 << 20)

long rootfs_window = ROOTFS_DEFAULT_WINDOW;

struct rootfs_stream {
    struct rootfs_file *f;
    off_t lo, hi;          /* bytes [lo, hi) of the file are in the spool */
    off_t eof;             /* where the file ends, once a chunk came back short; -1 unknown */
    int err;               /* a chunk failed (-errno): reads fail with it */
    off_t want;            /* the furthest byte a read asked for */
    off_t last_chunk;      /* the size of the last chunk asked for */
    struct chunk *current; /* the chunk in flight (asked for, maybe not started), or NULL */
    unsigned fetches;      /* chunks whose done callback has not come yet */
    int released;          /* closed: freed with the file once no chunk is left */
    struct waitq readers;
    struct stat st; /* as listed at open: the attributes while it is open */
};

/* One range asked for. It outlives a seek or the close that makes it stale (no longer
 * s->current) until its done callback; the stream waits for all of them. */
struct chunk {
    struct rootfs_stream *s;
    uint64_t call; /* 0 until started */
    off_t start, off, len;
    struct rootfs_cmd_outcome out;
    struct execbody body;
};

struct stream_read {
    struct waiter w;
    struct rootfs_stream *s;
    size_t size;
    off_t off;
};

static void stream_free_if_done(struct rootfs_stream *s)
{
    if (!s->released || s->fetches)
        return;
    struct rootfs_file *f = s->f;
    free(s);
    f->stream = NULL;
    rootfs_file_free(f);
}

/* Forget what lies before new_lo: the spool keeps a bounded window. */
static void drop_before(struct rootfs_stream *s, off_t new_lo)
{
    if (new_lo <= s->lo)
        return;
    if (new_lo > s->hi)
        new_lo = s->hi;
    /* Where punching is unsupported the bytes stay on disk; the bound is then lost,
     * not the data. */
    (void)fallocate(s->f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, s->lo, new_lo - s->lo);
    s->lo = new_lo;
}

static long chunk_body(uint64_t call, char *buf, size_t cap, void *ud)
{
    struct chunk *c = ud;
    return execbody_read(&c->body, buf, cap);
}

static int chunk_message(uint64_t call, json_t *msg, void *ud)
{
    struct chunk *c = ud;
    struct execmsg m;
    int stop = 0;
    pthread_mutex_lock(&fs_lock);
    struct rootfs_stream *s = c->s;
    if (s->current != c) {
        stop = 1; /* a seek or the close made it stale */
    } else if (execmsg_parse(msg, &m) < 0) {
        stop = 1;
    } else {
        if (rootfs_outcome_take(&c->out, &m) && m.len) {
            int err = rootfs_write_all(s->f->fd, m.data, m.len, c->off);
            if (err < 0) {
                s->err = sandbox_fail(s->f->sb, -err, "read %s: spool%s: %s", s->f->path,
                                      rootfs_spool_full(err), strerror(-err));
                stop = 1;
            } else {
                c->off += (off_t)m.len;
                s->hi = c->off;
                session.bytes_read += m.len;
            }
            park_wake(&s->readers);
        }
        execmsg_clear(&m);
    }
    pthread_mutex_unlock(&fs_lock);
    return stop;
}

static void chunk_start(struct rootfs_stream *s);

static void chunk_done(uint64_t call, const struct api_result *res, void *ud)
{
    struct chunk *c = ud;
    pthread_mutex_lock(&fs_lock);
    struct rootfs_stream *s = c->s;
    s->fetches--;
    if (s->current == c) {
        s->current = NULL;
        int err = res->err;
        if (err)
            s->err = s->err ? s->err
                            : sandbox_fail_call(s->f->sb, res, "read %s: StreamExec", s->f->path);
        else if ((err = rootfs_outcome_check(&c->out, s->f->sb, "read", s->f->path)) < 0)
            s->err = err;
        else if (c->off < c->start + c->len)
            s->eof = c->off; /* came back short: the file ends here */
        /* A reader waits, or one is close to what arrived: the next chunk now. */
        if (!s->err && s->eof < 0 && !s->released &&
            (s->readers.head || s->want > s->hi - rootfs_window / 2))
            chunk_start(s);
        park_wake(&s->readers);
    }
    free(c->out.errtext);
    execbody_free(&c->body);
    free(c);
    stream_free_if_done(s);
    pthread_mutex_unlock(&fs_lock);
}

static void chunk_when_running(struct sandbox *sb, int err, void *ud)
{
    struct chunk *c = ud;
    struct rootfs_stream *s = c->s;
    char *in = NULL, skip[40], count[40];
    snprintf(skip, sizeof(skip), "skip=%lld", (long long)c->start);
    snprintf(count, sizeof(count), "count=%lld", (long long)c->len);
    if (!err && s->current != c)
        err = -ECANCELED; /* stale before it started */
    if (!err && asprintf(&in, "if=%s", s->f->path) < 0)
        err = -ENOMEM;
    /* GNU dd: byte offsets, whole blocks, nothing on stderr but errors. */
    const char *argv[] = {"dd",          in,   "iflag=skip_bytes,count_bytes,fullblock",
                          "bs=1M",       skip, count,
                          "status=none", NULL};
    if (!err && execbody_init(&c->body, sb->id, argv) < 0)
        err = -ENOMEM;
    free(in);
    if (!err && (c->call = api_bidi("StreamExec", 0, chunk_body, chunk_message, chunk_done, c)))
        return;
    /* Never started: end it here as its done callback would. */
    if (s->current == c) {
        s->current = NULL;
        s->err = sandbox_fail(sb, err ? -err : EIO, "read %s: could not start a fetch", s->f->path);
        park_wake(&s->readers);
    }
    s->fetches--;
    execbody_free(&c->body);
    free(c);
    stream_free_if_done(s);
}

/* Ask for the bytes from s->hi on. */
static void chunk_start(struct rootfs_stream *s)
{
    struct chunk *c = calloc(1, sizeof(*c));
    if (!c) {
        s->err = sandbox_fail(s->f->sb, ENOMEM, "read %s: out of memory", s->f->path);
        return;
    }
    off_t len = s->last_chunk ? s->last_chunk * 2 : FIRST_CHUNK;
    if (len > rootfs_window)
        len = rootfs_window;
    drop_before(s, s->hi - rootfs_window);
    s->last_chunk = len;
    c->s = s;
    c->start = c->off = s->hi;
    c->len = len;
    s->current = c;
    s->fetches++;
    sandbox_when_running(s->f->sb, chunk_when_running, c);
}

/* The chunk in flight is not wanted any more (its done callback still comes). */
static void chunk_abandon(struct rootfs_stream *s)
{
    if (s->current && s->current->call)
        api_cancel(s->current->call);
    s->current = NULL;
}

/* Start over at off: what is kept is forgotten, the chunk in flight goes stale. */
static void restart_at(struct rootfs_stream *s, off_t off)
{
    chunk_abandon(s);
    drop_before(s, s->hi);
    s->lo = s->hi = off;
    s->last_chunk = 0;
    chunk_start(s);
}

/* Answer the read now if its bytes are here (1), else make sure they are coming (0). */
static int stream_try(struct rootfs_stream *s, fuse_req_t req, size_t size, off_t off)
{
    off_t end = off + (off_t)size;
    if (end > s->want)
        s->want = end;
    if (s->err) {
        fuse_reply_err(req, -s->err);
        return 1;
    }
    if (s->eof >= 0 && end > s->eof)
        end = s->eof;
    if (off >= s->lo && end <= s->hi) {
        char *buf = malloc(end > off ? (size_t)(end - off) : 1);
        ssize_t n = buf ? pread(s->f->fd, buf, (size_t)(end > off ? end - off : 0), off) : -1;
        if (n < 0)
            fuse_reply_err(req, buf ? errno : ENOMEM);
        else
            fuse_reply_buf(req, buf, (size_t)n);
        free(buf);
        return 1;
    }
    /* A read a little ahead (the kernel's readahead) waits for the chunks to reach
     * it; one elsewhere is a seek. */
    off_t coming = s->current ? s->current->start + s->current->len : s->hi;
    if (off < s->lo || off > coming + rootfs_window)
        restart_at(s, off);
    else if (!s->current)
        chunk_start(s);
    return 0;
}

static void read_retry(struct waiter *w)
{
    struct stream_read *r = (struct stream_read *)w;
    if (stream_try(r->s, w->req, r->size, r->off)) {
        park_done(w);
        free(r);
    } else {
        park_on(&r->s->readers, w);
    }
}

static void read_interrupted(struct waiter *w)
{
    park_done(w);
    fuse_reply_err(w->req, EINTR);
    free(w);
}

void rootfs_stream_read(struct rootfs_stream *s, fuse_req_t req, size_t size, off_t off)
{
    if (stream_try(s, req, size, off))
        return;
    struct stream_read *r = calloc(1, sizeof(*r));
    if (!r) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    r->s = s;
    r->size = size;
    r->off = off;
    park_register(&r->w, req, read_retry, read_interrupted);
    park_on(&s->readers, &r->w);
}

int rootfs_stream_open(struct rootfs_file *f, const struct stat *listed)
{
    struct rootfs_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->f = f;
    s->st = *listed;
    s->eof = -1;
    f->stream = s;
    return 0;
}

void rootfs_stream_release(struct rootfs_stream *s)
{
    s->released = 1;
    chunk_abandon(s);
    stream_free_if_done(s);
}

void rootfs_stream_attr(const struct rootfs_stream *s, struct stat *st)
{
    *st = s->st;
    if (s->eof >= 0) /* it ended elsewhere than listed (it shrank) */
        st->st_size = s->eof;
}
