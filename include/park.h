/* park.h - FUSE requests that wait: parked reads and other deferred replies.
 *
 * A request that cannot be answered yet (a read at the end of a running command's
 * output, a ctl write waiting for `wait`) is parked. Whoever makes progress wakes the
 * wait queue it parked on; each waiter's retry function then answers it or parks it
 * again. Interrupts (Ctrl-C) reach us through fuse_req_interrupt_func on a FUSE thread
 * that may already hold fs_lock, so the interrupt handler only schedules work on the
 * API worker by id; the worker then answers EINTR if the request is still parked and
 * the signal means "stop" (interrupt.h): a caught SIGCHLD lets the request go on.
 * All functions here run with fs_lock held. */
#ifndef CWSFS_PARK_H
#define CWSFS_PARK_H

#include <fuse_lowlevel.h>
#include <stdint.h>
#include <sys/types.h>
#include <uthash.h>

struct waiter;
typedef void (*waiter_fn)(struct waiter *w);

/* One deferred reply. Embedded in the owner's struct; the owner frees it after
 * replying (in its retry or interrupt function). */
struct waiter {
    uint64_t id;
    fuse_req_t req;
    waiter_fn retry;       /* the awaited thing changed: answer or stay parked */
    waiter_fn interrupted; /* the request was interrupted: reply EINTR and free */
    struct waitq *queue;   /* where it is parked, NULL when not */
    pid_t tid;             /* the requesting thread, whose pending signals decide */
    int went_on;           /* an interrupt was not one to stop for (logged once) */
    struct waiter *prev, *next;
    UT_hash_handle hh; /* in the table of interruptible requests, by id */
};

struct waitq {
    struct waiter *head;
};

/* Make w interruptible (registers the FUSE interrupt callback). Call once per request,
 * before parking. */
void park_register(struct waiter *w, fuse_req_t req, waiter_fn retry, waiter_fn interrupted);
/* Park w on q (removing it from any queue it was on). */
void park_on(struct waitq *q, struct waiter *w);
/* Forget w: off its queue and out of the interrupt table. Call before replying. */
void park_done(struct waiter *w);
/* Retry every waiter on q (each may answer and free itself or park again). */
void park_wake(struct waitq *q);
/* At shutdown: interrupt every registered request (each answers and frees itself). */
void park_drain(void);
/* How many requests are parked, for .metrics. */
unsigned park_count(void);

#endif
