/* session.h - the mount's session: its options, its sandboxes by name, its counters,
 * and fs_lock, the one lock over all of it.
 *
 * fs_lock is taken by FUSE callbacks and by the API worker's callbacks alike; no one
 * holds it across a network wait. Every field of session is guarded by it. */
#ifndef CWSFS_SESSION_H
#define CWSFS_SESSION_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "fs.h"

extern pthread_mutex_t fs_lock;

struct sandbox;

/* Session-wide state, set by fs_init. */
struct session {
    struct fs_options opts;
    char **tags; /* effective session tags */
    size_t ntags;
    char *spool_dir;
    struct sandbox *by_name;
    uint64_t next_serial;
    struct timespec list_fetched; /* last ListSandboxes, CLOCK_MONOTONIC */
    uint64_t execs_started;
    uint64_t bytes_out, bytes_read, bytes_written;
};
extern struct session session;

#endif
