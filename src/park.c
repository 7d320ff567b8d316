/* park.c - parked FUSE requests and their interrupts.
 *
 * The FUSE interrupt callback can run on a FUSE thread while that thread holds
 * fs_lock (libfuse calls it at once from fuse_req_interrupt_func when the interrupt
 * came first), so it only hands the request's id to the API worker; the worker takes
 * fs_lock and answers EINTR if the request is still parked. An id, not a pointer,
 * crosses threads, so a request answered meanwhile is simply not found.
 *
 * Only a signal that means "stop" answers EINTR (interrupt.h); a bookkeeping one
 * (SIGCHLD) lets the request go on. The kernel sends one interrupt per request, so a
 * request that went on is looked at again every INTERRUPT_RECHECK_MS while it waits:
 * a Ctrl-C after the SIGCHLD still ends it. */
#include "park.h"

#include <errno.h>
#include <stdlib.h>
#include <utlist.h>

#include "api.h"
#include "interrupt.h"
#include "log.h"
#include "session.h"

#define INTERRUPT_RECHECK_MS 200

static struct waiter *interruptible;
static uint64_t next_id = 1;
static unsigned parked;

static void park_interrupt_on_worker(void *ud)
{
    uint64_t id = (uint64_t)(uintptr_t)ud;
    struct waiter *w = NULL;
    pthread_mutex_lock(&fs_lock);
    HASH_FIND(hh, interruptible, &id, sizeof(id), w);
    if (w) {
        int sig;
        /* /proc is read with fs_lock held: a short local read, and the answer must
         * not race the request being answered. */
        if (interrupt_should_stop(w->tid, &sig)) {
            w->interrupted(w);
        } else {
            if (!w->went_on) {
                w->went_on = 1;
                log_debug("interrupt of thread %d by signal %d (its own bookkeeping): "
                          "the request goes on",
                          (int)w->tid, sig);
            }
            api_schedule(INTERRUPT_RECHECK_MS, park_interrupt_on_worker, ud);
        }
    }
    pthread_mutex_unlock(&fs_lock);
}

/* FUSE thread, possibly with fs_lock held: must not take it. */
static void park_interrupt(fuse_req_t req, void *data)
{
    api_schedule(0, park_interrupt_on_worker, data);
}

void park_register(struct waiter *w, fuse_req_t req, waiter_fn retry, waiter_fn interrupted)
{
    w->id = next_id++;
    w->req = req;
    w->retry = retry;
    w->interrupted = interrupted;
    w->queue = NULL;
    w->tid = fuse_req_ctx(req)->pid;
    w->went_on = 0;
    HASH_ADD(hh, interruptible, id, sizeof(w->id), w);
    fuse_req_interrupt_func(req, park_interrupt, (void *)(uintptr_t)w->id);
}

void park_on(struct waitq *q, struct waiter *w)
{
    if (w->queue == q)
        return;
    if (w->queue)
        DL_DELETE(w->queue->head, w);
    else
        parked++;
    w->queue = q;
    DL_APPEND(q->head, w);
}

void park_done(struct waiter *w)
{
    if (w->queue) {
        DL_DELETE(w->queue->head, w);
        w->queue = NULL;
        parked--;
    }
    if (w->id) {
        HASH_DELETE(hh, interruptible, w);
        w->id = 0;
    }
}

void park_wake(struct waitq *q)
{
    /* Detach the list first: a retry may park again on this same queue. */
    struct waiter *list = q->head, *w, *tmp;
    q->head = NULL;
    DL_FOREACH_SAFE(list, w, tmp) {
        DL_DELETE(list, w);
        w->queue = NULL;
        parked--;
        w->retry(w);
    }
}

unsigned park_count(void)
{
    return parked;
}

void park_drain(void)
{
    struct waiter *w, *tmp;
    HASH_ITER(hh, interruptible, w, tmp)
        w->interrupted(w);
}
