/* sandbox_int.h - what sandbox.c lends sandbox_ops.c. Under fs_lock. */
#ifndef CWSFS_SANDBOX_INT_H
#define CWSFS_SANDBOX_INT_H

#include "sandbox.h"

/* A fresh requestId (UUID v4, malloc'ed), NULL on failure. */
char *sandbox_new_request_id(void);
/* The sandbox's state changed: one line of `events`. */
void sandbox_events_line(struct sandbox *sb);
/* Ask GetSandbox again after delay_ms, unless a poll is already due or in flight. */
void sandbox_poll_schedule(struct sandbox *sb, long delay_ms);

#endif
