/* stream.c - byte streams readers follow (see stream.h). */
#include "stream.h"

#include "session.h"

int stream_append(struct stream *st, const void *data, size_t len)
{
    int rc = 0;
    /* After a loss nothing more is kept: a stream with a gap in the middle would read
     * as if whole. */
    if (st->lost)
        return -st->lost;
    if (st->ob.fd < 0 && !st->ob.path)
        rc = outbuf_init(&st->ob, session.spool_dir, 0);
    if (rc == 0)
        rc = outbuf_append(&st->ob, data, len);
    park_wake(&st->readers);
    return rc;
}

int stream_mark_lost(struct stream *st, int err)
{
    if (st->lost)
        return 0;
    st->lost = -err;
    park_wake(&st->readers);
    return 1;
}

void stream_end(struct stream *st, int err)
{
    if (st->ended)
        return;
    st->ended = 1;
    st->err = err;
    /* Nothing more will be written: no descriptor is kept for a finished stream. */
    outbuf_idle(&st->ob);
    park_wake(&st->readers);
}

void stream_free(struct stream *st)
{
    outbuf_free(&st->ob);
}
