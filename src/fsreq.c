/* fsreq.c - a FUSE request answered exactly once (see fsreq.h). */
#include "fsreq.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>

#include "api.h"

static void fsreq_no_retry(struct waiter *w)
{
}

static void fsreq_interrupted(struct waiter *w)
{
    struct fsreq *r = (struct fsreq *)((char *)w - offsetof(struct fsreq, w));
    park_done(w);
    r->interrupted = 1;
    r->answered = 1;
    fuse_reply_err(r->req, EINTR);
    if (r->call)
        api_cancel(r->call);
}

void fsreq_start(struct fsreq *r, fuse_req_t req)
{
    r->req = req;
    r->call = 0;
    r->interrupted = 0;
    r->answered = 0;
    park_register(&r->w, req, fsreq_no_retry, fsreq_interrupted);
}

int fsreq_claim(struct fsreq *r)
{
    park_done(&r->w);
    if (r->interrupted)
        return 0;
    assert(!r->answered);
    r->answered = 1;
    return 1;
}

void fsreq_reply_err(struct fsreq *r, int err)
{
    if (fsreq_claim(r))
        fuse_reply_err(r->req, err);
}

void fsreq_end(struct fsreq *r)
{
    park_done(&r->w);
}
