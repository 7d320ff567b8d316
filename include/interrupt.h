/* interrupt.h - whether a FUSE interrupt should stop the request it names.
 *
 * The kernel sends FUSE_INTERRUPT when the requesting thread gets any signal it does
 * not ignore, once per request. Some signals mean "stop" (Ctrl-C, kill, a default
 * action that ends the process); others are the program's own bookkeeping that its
 * handler takes and returns from (a shell's SIGCHLD when a background job ends,
 * SIGWINCH), and failing the call for those breaks scripts at random. The signal is
 * still pending while the thread waits in the call, so its kind can be read from
 * /proc/TID/task/TID/status. */
#ifndef CWSFS_INTERRUPT_H
#define CWSFS_INTERRUPT_H

#include <stdint.h>
#include <sys/types.h>

/* A thread's signal masks as /proc shows them: bit n-1 is signal n. */
struct interrupt_sigs {
    uint64_t pending; /* SigPnd | ShdPnd: the thread's own and its process's */
    uint64_t blocked; /* SigBlk */
    uint64_t ignored; /* SigIgn */
    uint64_t caught;  /* SigCgt: a handler is installed */
};

/* Parse the text of a /proc status file. Returns 0, or -EINVAL when a mask is
 * missing or malformed. Pure. */
int interrupt_parse_status(const char *text, struct interrupt_sigs *s);

/* Read the masks of thread tid (as fuse_req_ctx()->pid gives it). 0 or -errno (the
 * thread is gone, or /proc is not ours to read). Any thread; no locks. */
int interrupt_read(pid_t tid, struct interrupt_sigs *s);

/* Whether a pending, unblocked signal should stop the call: SIGKILL; SIGINT, SIGTERM,
 * SIGHUP, SIGQUIT even when caught (a person or the system asked to stop; scripts
 * trap them to clean up); any other signal whose default action ends the process and
 * which is not caught. Caught signals, and those whose default is to ignore, stop or
 * continue, let it go on. Returns 1 (stop) or 0; *signo gets the deciding signal (the
 * first stopping one, else the first pending one, else 0). Pure. */
int interrupt_stops(const struct interrupt_sigs *s, int *signo);

/* interrupt_read + interrupt_stops for the thread behind a request. When the masks
 * cannot be read, the call stops (as before this check existed: nobody may be left
 * waiting on a thread we cannot see). */
int interrupt_should_stop(pid_t tid, int *signo);

#endif
