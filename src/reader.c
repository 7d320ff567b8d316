/* reader.c - reading exec output, logs, events and exit.
 *
 * A read at the end of a stream that may still grow is parked on the stream's wait
 * queue and retried when bytes arrive or the stream ends; Ctrl-C answers it EINTR
 * (park.c). Offsets are byte positions in the output, so these files stay seekable
 * and `tail -f` can start at the end. */
#include "reader.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "park.h"
#include "sandbox.h"
#include "tree.h"

struct parked_read {
    struct waiter w; /* first: the waiter is the parked read */
    uint64_t *shift;
    fuse_ino_t ino;
    size_t size;
    off_t off;
};

/* Answer a stream read now if possible: 1 answered, 0 would block. */
static int reader_read_now(fuse_req_t req, struct node *n, size_t size, off_t off, uint64_t *shift)
{
    struct sandbox *sb = n->sb;
    if (n->file == P_EXIT) {
        struct exec *ex = exec_get(sb, n->exec_no);
        if (!ex || !ex->ended)
            return 0;
        if (ex->failure) {
            fuse_reply_err(req, EIO);
            return 1;
        }
        char text[32];
        int len = snprintf(text, sizeof(text), "%d\n", ex->exit_code);
        if (off >= len)
            fuse_reply_buf(req, NULL, 0);
        else
            fuse_reply_buf(req, text + off,
                           (size_t)(len - off) < size ? (size_t)(len - off) : size);
        return 1;
    }
    struct stream *st = tree_stream(n);
    if (!st)
        return 0;
    if (n->file == P_LOGS && sb->state == SB_UNSTARTED && !sb->create_inflight) {
        fuse_reply_buf(req, NULL, 0); /* nothing ran, nothing will until started */
        return 1;
    }
    /* Bytes beyond the cap were dropped from the front. A reader still behind them
     * continues at the oldest kept byte, and its handle remembers the skip so its next
     * reads continue from there instead of getting the same bytes again. */
    if (shift && (uint64_t)off + *shift < st->ob.dropped) {
        uint64_t missed = st->ob.dropped - (uint64_t)off - *shift;
        *shift = st->ob.dropped - (uint64_t)off;
        /* Said once per stream, when a reader really missed bytes; a reader that
         * kept up with a long stream lost nothing and hears nothing. */
        if (!st->missed_told) {
            st->missed_told = 1;
            sandbox_fail(sb, EIO,
                         "%s: a reader missed %llu bytes: output beyond %llu MiB not yet read "
                         "is dropped; the reader gets EIO at the end",
                         n->exec_no ? "exec output" : "logs", (unsigned long long)missed,
                         (unsigned long long)(st->ob.cap >> 20));
        }
    }
    if (shift)
        off += (off_t)*shift;
    if ((uint64_t)off < st->ob.produced) {
        char *buf = malloc(size);
        ssize_t got = buf ? outbuf_read(&st->ob, (uint64_t)off, buf, size) : -ENOMEM;
        if (got < 0)
            fuse_reply_err(req, (int)-got);
        else
            fuse_reply_buf(req, buf, (size_t)got);
        free(buf);
        return 1;
    }
    /* A stream that lost output, or whose dropped bytes this reader missed, ends with
     * EIO: a clean EOF would pass a truncated output for the whole of it. */
    if (st->lost || (st->ended && shift && *shift)) {
        fuse_reply_err(req, EIO);
        return 1;
    }
    if (st->ended) {
        if (st->err)
            fuse_reply_err(req, -st->err == ECANCELED ? EIO : -st->err);
        else
            fuse_reply_buf(req, NULL, 0);
        return 1;
    }
    return 0;
}

static struct waitq *reader_queue(struct node *n)
{
    if (n->file == P_EXIT) {
        struct exec *ex = exec_get(n->sb, n->exec_no);
        return ex ? &ex->exit_waiters : NULL;
    }
    struct stream *st = tree_stream(n);
    return st ? &st->readers : NULL;
}

static void reader_retry(struct waiter *w);

static void reader_interrupted(struct waiter *w)
{
    park_done(w);
    fuse_reply_err(w->req, EINTR);
    free(w);
}

/* Read a stream, parking the request when nothing is there yet. */
static void reader_park(fuse_req_t req, struct node *n, size_t size, off_t off, uint64_t *shift,
                        struct parked_read *pr)
{
    if (reader_read_now(req, n, size, off, shift)) {
        if (pr) {
            park_done(&pr->w);
            free(pr);
        }
        return;
    }
    struct waitq *q = reader_queue(n);
    if (!pr) {
        pr = calloc(1, sizeof(*pr));
        if (!pr || !q) {
            free(pr);
            fuse_reply_err(req, q ? ENOMEM : EIO);
            return;
        }
        pr->ino = n->ino;
        pr->size = size;
        pr->off = off;
        pr->shift = shift;
        park_register(&pr->w, req, reader_retry, reader_interrupted);
    }
    park_on(q, &pr->w);
    if (n->file == P_EVENTS)
        sandbox_refresh(n->sb); /* someone waits for the next transition: poll */
}

static void reader_retry(struct waiter *w)
{
    struct parked_read *pr = (struct parked_read *)w;
    struct node *n = node_by_ino(pr->ino);
    if (!n) {
        park_done(w);
        fuse_reply_err(w->req, EIO);
        free(pr);
        return;
    }
    reader_park(w->req, n, pr->size, pr->off, pr->shift, pr);
}

void reader_read(fuse_req_t req, struct node *n, size_t size, off_t off, int nonblock,
                 uint64_t *shift)
{
    if (!nonblock)
        reader_park(req, n, size, off, shift, NULL);
    else if (!reader_read_now(req, n, size, off, shift))
        fuse_reply_err(req, EAGAIN);
}

struct parked_open {
    struct waiter w; /* first */
    fuse_ino_t ino;
    struct fuse_file_info fi;
    void (*discard)(void *fh);
};

/* 1 when an open of n may be answered: bytes exist, the stream ended or never will
 * start (logs of an unstarted sandbox). */
static int open_ready(struct node *n)
{
    struct stream *st = tree_stream(n);
    if (!st || n->file == P_EXIT)
        return 1;
    if (n->file == P_LOGS && n->sb->state == SB_UNSTARTED && !n->sb->create_inflight)
        return 1;
    return st->ob.produced > 0 || st->ended || st->lost;
}

static void open_finish(struct parked_open *po, int err)
{
    park_done(&po->w);
    if (err) {
        po->discard((void *)(uintptr_t)po->fi.fh);
        fuse_reply_err(po->w.req, err);
    } else {
        fuse_reply_open(po->w.req, &po->fi);
    }
    free(po);
}

static void open_retry(struct waiter *w)
{
    struct parked_open *po = (struct parked_open *)w;
    struct node *n = node_by_ino(po->ino);
    if (!n || tree_gone(n->sb))
        open_finish(po, ENOENT);
    else if (open_ready(n))
        open_finish(po, 0);
    else
        park_on(&tree_stream(n)->readers, w);
}

static void open_interrupted(struct waiter *w)
{
    open_finish((struct parked_open *)w, EINTR);
}

void reader_open(fuse_req_t req, struct node *n, struct fuse_file_info *fi,
                 void (*discard)(void *fh))
{
    if (open_ready(n)) {
        fuse_reply_open(req, fi);
        return;
    }
    struct parked_open *po = calloc(1, sizeof(*po));
    if (!po) {
        discard((void *)(uintptr_t)fi->fh);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    po->ino = n->ino;
    po->fi = *fi;
    po->discard = discard;
    park_register(&po->w, req, open_retry, open_interrupted);
    park_on(&tree_stream(n)->readers, &po->w);
    if (n->file == P_EVENTS)
        sandbox_refresh(n->sb);
}
