/* sandbox.h - the session's sandboxes: spec, lifecycle, execs, output streams.
 *
 * Everything here is protected by fs_lock, taken by FUSE callbacks and by the API
 * worker's callbacks alike; no one holds it across a network wait. A sandbox is
 * created by mkdir (unstarted, no call) or found by listing (adopted), started on
 * first use, polled while someone waits on its state, and freed when its directory
 * is removed and the kernel forgot all its inodes (refs). */
#ifndef CWSFS_SANDBOX_H
#define CWSFS_SANDBOX_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <jansson.h>
#include <uthash.h>

#include "execmsg.h"
#include "fs.h"
#include "park.h"
#include "session.h"
#include "stream.h"

/* The annotation that keeps the name a sandbox was made with. */
#define SANDBOX_NAME_ANNOTATION "cwsfs-name"
/* Tag every sandbox made by cwsfs carries when the session has no tags of its own. */
#define SANDBOX_DEFAULT_TAG "cwsfs"

enum sb_state {
    SB_UNSTARTED,
    SB_PENDING,
    SB_CREATING,
    SB_RUNNING,
    SB_COMPLETED,
    SB_FAILED,
    SB_TERMINATING,
    SB_TERMINATED,
    SB_PAUSED,
};

struct sandbox;
typedef void (*sandbox_ready_fn)(struct sandbox *sb, int err, void *ud);

struct exec {
    unsigned no; /* N of exec/N, from 1 */
    struct sandbox *sb;
    char *cmdline; /* for exec/N/cmd */
    char **argv;
    size_t argc;
    struct stream out, err;
    int started; /* the service said ready */
    int ended;
    int exit_code;
    char *failure; /* why it could not run or was cut off, NULL otherwise */
    uint64_t call_id;
    struct execbody body;        /* the StreamExec request (init + close), worker-only */
    sandbox_ready_fn started_fn; /* told once `ready` arrives or the start failed */
    void *started_ud;
    struct waitq exit_waiters;
};

struct sandbox {
    uint64_t serial; /* stable across the sandbox's life in this mount, for inode keys */
    char *name;
    char *id; /* NULL until created */
    int refs; /* the name table's (until removed) + one per node + one per call in flight */
    int removed;
    int created_here;

    enum sb_state state;
    int exit_code;
    char *state_reason;
    json_t *spec;   /* pending SandboxSpec (unstarted) */
    json_t *remote; /* the service's last Sandbox message, NULL before */
    char *request_id;
    char *error; /* the last error in words, for the `error` file */

    int create_inflight, poll_inflight, delete_inflight;
    long poll_delay_ms;
    int poll_scheduled;
    struct sb_cont *conts;        /* continuations waiting for running or terminal */
    int stopping;                 /* DeleteSandbox sent: poll until terminal */
    struct timespec polled;       /* last GetSandbox answer, CLOCK_MONOTONIC */
    struct sb_cont *poll_waiters; /* status opens waiting for the GetSandbox in flight */
    int unreachable;              /* the last GetSandbox did not reach the service */

    struct stream events;
    struct stream logs;
    int logs_started;
    uint64_t logs_call;
    char *logs_session;
    uint64_t logs_offset;
    int logs_retries;

    struct exec **execs;
    unsigned nexecs, execs_cap;

    char *snapshots; /* ids, one a line */
    struct timespec mtime;

    struct rootfs_cache *dircache;       /* rootfs.c's */
    struct ctl_job *ctl_head, *ctl_tail; /* control.c's jobs, run in order */

    UT_hash_handle hh;                   /* sandboxes by name */
    struct sandbox *all_prev, *all_next; /* every sandbox not yet freed, for fs_free */
};

const char *sandbox_state_name(enum sb_state st);
int sandbox_is_terminal(enum sb_state st);
/* One status line (no newline) into buf: "running", "completed 0", "failed OOMKilled". */
void sandbox_status_line(const struct sandbox *sb, char *buf, size_t size);

struct sandbox *sandbox_find(const char *name);
/* mkdir: a new unstarted sandbox with the session defaults. -EEXIST, -EINVAL. */
int sandbox_create_local(const char *name, struct sandbox **out);
void sandbox_ref(struct sandbox *sb);
void sandbox_unref(struct sandbox *sb);

/* Record an error for the `error` file and the log; returns -errnum for chaining. */
int sandbox_fail(struct sandbox *sb, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* sandbox_fail for a call that failed, in the one form `error` uses: the prefix
 * (printf-style, e.g. "stop: DeleteSandbox"), then ": CODE: MESSAGE" in the service's
 * words; the errno is the call's. */
struct api_result;
int sandbox_fail_call(struct sandbox *sb, const struct api_result *res, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* After a change of the spec of an unstarted sandbox: a new CreateSandbox requestId. */
int sandbox_spec_changed(struct sandbox *sb);

/* Call fn(sb, 0, ud) once the sandbox is running (starting it if unstarted), or
 * fn(sb, -errno, ud) if it cannot get there. May call fn before returning. */
void sandbox_when_running(struct sandbox *sb, sandbox_ready_fn fn, void *ud);
/* Same, once the sandbox is in a terminal state (polling meanwhile). */
void sandbox_when_terminal(struct sandbox *sb, sandbox_ready_fn fn, void *ud);

/* Drop the waits above whose ud is ud (their fn is never called); returns how many. */
int sandbox_cancel_waits(struct sandbox *sb, void *ud);

/* Apply a new state from a Sandbox message (GetSandbox, CreateSandbox, lists). */
void sandbox_update_from(struct sandbox *sb, json_t *sandbox_msg);

/* ctl `stop [grace]` and rmdir: DeleteSandbox; fn when answered. */
void sandbox_stop(struct sandbox *sb, long grace, sandbox_ready_fn fn, void *ud);
/* ctl `snapshot`. */
void sandbox_snapshot(struct sandbox *sb, sandbox_ready_fn fn, void *ud);
/* Refresh the state soon if the last answer is older than a second. */
void sandbox_refresh(struct sandbox *sb);
/* Whether `status` asks the service before it answers: a started sandbox that has not
 * ended and whose last answer is older than a second. */
int sandbox_status_stale(const struct sandbox *sb);
/* Run fn once a GetSandbox (the one in flight, or a new one) has answered or failed;
 * -ENOMEM at once if it cannot be queued. */
void sandbox_when_polled(struct sandbox *sb, sandbox_ready_fn fn, void *ud);
/* rmdir done: out of the name table. */
void sandbox_remove(struct sandbox *sb);

/* For adopt.c: enter a sandbox that exists on the server under name with its id
 * (state unknown until updated); NULL when out of memory. */
struct sandbox *sandbox_adopt_new(const char *name, const char *id);
/* Whether this mount removed the sandbox with this id (it must not come back). */
int sandbox_was_removed(const char *id);

/* Adoption (adopt.c): refresh the name table from ListSandboxes (session tags) if older than
 * a second; fn(NULL, err, ud) when done (errors leave the table as it was). */
void sandbox_list_refresh(sandbox_ready_fn fn, void *ud);
/* The first refresh, at mount (takes fs_lock): the session's sandboxes are known by
 * name before anyone asks. */
void sandbox_list_prime(void);

/* logs.c: make sure StreamLogs follows this sandbox's main process (first reader starts it). */
void sandbox_logs_follow(struct sandbox *sb);
extern const struct sandbox_hooks logs_hooks;

/* What other modules keep per sandbox (execs, the file cache) and what follows its
 * state (logs) is theirs: they register hooks (fs_init wires them), so this module
 * calls none of them by name. Any hook may be NULL. */
struct sandbox_hooks {
    void (*freed)(struct sandbox *sb);         /* free what you keep for it */
    void (*changed)(struct sandbox *sb);       /* the service's word on it changed */
    void (*files_changed)(struct sandbox *sb); /* a command ran: its files may differ */
};
/* At most SANDBOX_HOOKS_MAX sets; 0, or -ENOSPC past that. */
#define SANDBOX_HOOKS_MAX 8
int sandbox_add_hooks(const struct sandbox_hooks *h);
/* A command ran in sb (its files_changed hooks run). */
void sandbox_files_changed(struct sandbox *sb);

/* A stream_append that failed: the stream keeps nothing more and `error` says so once
 * (WHAT names the stream). */
void sandbox_output_lost(struct sandbox *sb, struct stream *st, int err, const char *what);

/* Execs: exec_start creates exec/N and starts StreamExec; fn when `ready` arrives or
 * the start failed. */
int exec_start(struct sandbox *sb, char **argv, size_t argc, const char *cmdline,
               sandbox_ready_fn fn, void *ud);
struct exec *exec_get(struct sandbox *sb, unsigned no);
void exec_free(struct exec *ex);
extern const struct sandbox_hooks exec_hooks; /* frees a sandbox's execs */
void exec_status_line(const struct exec *ex, char *buf, size_t size);

/* Blocking helper for start-up and shutdown only (never in a FUSE callback). */
void sandbox_cleanup_all(void);
/* After api_shutdown: free every sandbox, whatever still refers to it (timers the
 * API dropped unrun hold references that will never be released). */
void sandbox_free_all(void);

#endif
