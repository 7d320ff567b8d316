/* stream.h - a byte stream readers follow: exec stdout/stderr, logs, events.
 *
 * Its bytes are spooled (outbuf.h) in the session's spool directory; readers parked on
 * it (park.h) are woken by each append and at its end. Under fs_lock. */
#ifndef CWSFS_STREAM_H
#define CWSFS_STREAM_H

#include <stddef.h>

#include "outbuf.h"
#include "park.h"

/* A byte stream readers follow: exec stdout/stderr, logs, events. */
struct stream {
    struct outbuf ob; /* fd -1 until the first byte (no fd for silent commands) */
    int ended;        /* no more bytes will come */
    int err;          /* 0, or -errno readers get after the last byte instead of EOF */
    int lost;         /* errno of the first output not kept (spool full, no descriptor):
                       * later output is not kept and readers get EIO after the kept bytes */
    int missed_told;  /* a reader missed bytes dropped beyond the cap: said once in error */
    struct waitq readers;
};

/* Keep len more bytes; -errno when they cannot be kept (then see stream_mark_lost). */
int stream_append(struct stream *st, const void *data, size_t len);
/* After a failed append: nothing more is kept, readers get EIO after the kept bytes.
 * 1 the first time (the caller says so once), else 0. */
int stream_mark_lost(struct stream *st, int err);
void stream_end(struct stream *st, int err);
void stream_free(struct stream *st);

#endif
