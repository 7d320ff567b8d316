/* sandbox_ops.c - what is done to a sandbox once it exists: stop (DeleteSandbox, then
 * polled until terminal), snapshot, output that could not be kept, and stopping the
 * mount's own sandboxes at unmount (-o cleanup). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "log.h"
#include "pbjson.h"
#include "sandbox.h"
#include "sandbox_int.h"

/* The SDKs' default grace for a stop without a number (and for rmdir). */
#define STOP_GRACE_DEFAULT_S 10

/* ---- stop, snapshot ---- */

struct op_ctx {
    struct sandbox *sb;
    sandbox_ready_fn fn;
    void *ud;
};

static struct op_ctx *op_ctx_new(struct sandbox *sb, sandbox_ready_fn fn, void *ud)
{
    struct op_ctx *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->sb = sb;
    op->fn = fn;
    op->ud = ud;
    sandbox_ref(sb);
    return op;
}

static void op_ctx_finish(struct op_ctx *op, int err)
{
    op->fn(op->sb, err, op->ud);
    sandbox_unref(op->sb);
    free(op);
}

static void on_deleted(uint64_t call, const struct api_result *res, void *ud)
{
    struct op_ctx *op = ud;
    struct sandbox *sb = op->sb;
    pthread_mutex_lock(&fs_lock);
    sb->delete_inflight = 0;
    int err = res->err;
    if (err == -ENOENT) {
        err = 0; /* already gone is what stop wanted */
        json_t *msg = json_pack("{s:{s:s}}", "status", "state", "STATE_TERMINATED");
        sandbox_update_from(sb, msg);
        json_decref(msg);
    } else if (err) {
        sb->stopping = 0;
        sandbox_fail_call(sb, res, "stop: DeleteSandbox");
    } else {
        json_t *got = json_object_get(res->response, "sandbox");
        if (json_is_object(got))
            sandbox_update_from(sb, got);
        if (!sandbox_is_terminal(sb->state))
            sandbox_poll_schedule(sb, 500);
    }
    op_ctx_finish(op, err);
    pthread_mutex_unlock(&fs_lock);
}

void sandbox_stop(struct sandbox *sb, long grace, sandbox_ready_fn fn, void *ud)
{
    if (!sb->id) {
        if (sb->create_inflight) {
            fn(sb, sandbox_fail(sb, EBUSY, "stop: the sandbox is still being created"), ud);
            return;
        }
        fn(sb, sandbox_fail(sb, ESRCH, "stop: the sandbox was never started"), ud);
        return;
    }
    struct op_ctx *op = op_ctx_new(sb, fn, ud);
    if (!op) {
        fn(sb, -ENOMEM, ud);
        return;
    }
    /* Always explicit: on the wire an absent grace is 0, which the service may take as
     * "kill now"; a stop without a number (and rmdir) asks for the SDKs' default. */
    json_t *req = json_pack("{s:s, s:b, s:i}", "sandboxId", sb->id, "allowMissing", 1,
                            "gracePeriodSeconds", grace >= 0 ? (int)grace : STOP_GRACE_DEFAULT_S);
    if (!sandbox_is_terminal(sb->state) && sb->state != SB_TERMINATING) {
        sb->state = SB_TERMINATING;
        sandbox_events_line(sb);
        park_wake(&sb->events.readers);
    }
    sb->stopping = 1;
    sb->delete_inflight = 1;
    /* allowMissing makes a repeated delete harmless, so it may retry. */
    api_unary("DeleteSandbox", req, API_IDEMPOTENT | API_SLOW, on_deleted, op);
}

static void on_snapshot(uint64_t call, const struct api_result *res, void *ud)
{
    struct op_ctx *op = ud;
    struct sandbox *sb = op->sb;
    pthread_mutex_lock(&fs_lock);
    int err = res->err;
    const char *id = err ? NULL : pbjson_get_string(res->response, "fileSystemSnapshotId", NULL);
    if (err) {
        sandbox_fail_call(sb, res, "snapshot: CreateFileSystemSnapshot");
    } else if (!id || !*id) {
        err = sandbox_fail(sb, EIO, "snapshot: the answer carries no fileSystemSnapshotId");
    } else {
        char *all = NULL;
        if (asprintf(&all, "%s%s\n", sb->snapshots ? sb->snapshots : "", id) >= 0) {
            free(sb->snapshots);
            sb->snapshots = all;
            clock_gettime(CLOCK_REALTIME, &sb->mtime);
        }
    }
    op_ctx_finish(op, err);
    pthread_mutex_unlock(&fs_lock);
}

void sandbox_snapshot(struct sandbox *sb, sandbox_ready_fn fn, void *ud)
{
    struct op_ctx *op = op_ctx_new(sb, fn, ud);
    char *rid = sandbox_new_request_id();
    if (!op || !rid) {
        free(rid);
        if (op)
            op_ctx_finish(op, -ENOMEM);
        else
            fn(sb, -ENOMEM, ud);
        return;
    }
    json_t *req = json_pack("{s:s, s:s}", "sandboxId", sb->id, "requestId", rid);
    free(rid);
    api_unary("CreateFileSystemSnapshot", req, API_IDEMPOTENT, on_snapshot, op);
}

/* ---- output ---- */

void sandbox_output_lost(struct sandbox *sb, struct stream *st, int err, const char *what)
{
    if (!stream_mark_lost(st, err))
        return;
    if (outbuf_full(err))
        sandbox_fail(sb, ENOSPC, "%s: output lost after %llu bytes: spool full (%s)", what,
                     (unsigned long long)st->ob.produced, session.spool_dir);
    else
        sandbox_fail(sb, -err, "%s: output lost after %llu bytes: the spool could not keep it: %s",
                     what, (unsigned long long)st->ob.produced, strerror(-err));
}

/* ---- shutdown ---- */

struct cleanup_wait {
    pthread_cond_t cond;
    int pending;
};

static void on_cleanup_stopped(struct sandbox *sb, int err, void *ud)
{
    struct cleanup_wait *cw = ud;
    if (err)
        log_warn("cleanup: could not stop %s: %s", sb->name, sb->error ? sb->error : "");
    else
        log_info("cleanup: stopped %s", sb->name);
    if (--cw->pending == 0)
        pthread_cond_signal(&cw->cond);
}

void sandbox_cleanup_all(void)
{
    /* Static: a stop answered after the deadline still finds it. */
    static struct cleanup_wait cw = {.cond = PTHREAD_COND_INITIALIZER};
    pthread_mutex_lock(&fs_lock);
    struct sandbox *sb, *tmp;
    HASH_ITER(hh, session.by_name, sb, tmp) {
        if (!sb->created_here || !sb->id || sandbox_is_terminal(sb->state))
            continue;
        cw.pending++;
        sandbox_stop(sb, -1, on_cleanup_stopped, &cw);
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 60;
    while (cw.pending > 0)
        if (pthread_cond_timedwait(&cw.cond, &fs_lock, &deadline) != 0)
            break;
    pthread_mutex_unlock(&fs_lock);
}
