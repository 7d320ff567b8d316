/* fsreq.h - a FUSE request that waits on the service, answered exactly once.
 *
 * Every operation that waits for a call (a listing, a command, a stop) keeps one of
 * these in its context. From fsreq_start on, an interrupt for a signal that means
 * "stop" (park.h decides; a caught SIGCHLD does not) answers EINTR at once and cancels
 * the call the request waits on alone; the operation's chain of callbacks still runs to
 * its end and frees its context, but its reply is dropped. All replies go through
 * fsreq_claim, which asserts that nothing answers twice (lib9p's respond is the model).
 * Everything here runs with fs_lock held. */
#ifndef CWSFS_FSREQ_H
#define CWSFS_FSREQ_H

#include <fuse_lowlevel.h>
#include <stdint.h>

#include "park.h"

struct fsreq {
    fuse_req_t req;
    struct waiter w;
    uint64_t call;   /* a call only this request waits on: cancelled by an interrupt */
    int interrupted; /* answered EINTR by an interrupt: later replies are dropped */
    int answered;
};

/* Make r interruptible from now on. */
void fsreq_start(struct fsreq *r, fuse_req_t req);
/* 1: the caller answers r->req now (exactly once); 0: an interrupt already did. */
int fsreq_claim(struct fsreq *r);
/* fsreq_claim, then fuse_reply_err(err) (a positive errno; 0 for success). */
void fsreq_reply_err(struct fsreq *r, int err);
/* Out of the interrupt table, answered or not: before freeing the context. */
void fsreq_end(struct fsreq *r);

#endif
