/* exec.c - commands run in a sandbox, each one exec/N.
 *
 * Every exec is one StreamExec call. With Debian 12's libcurl no response data flows
 * while the request body is open (api/README.md), so the body is complete from the
 * start: the init message, then close (no stdin). Output chunks are appended to the
 * exec's stdout/stderr streams as they arrive, which wakes parked readers; `exit`
 * ends both streams and answers blocked readers of exec/N/exit. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "execmsg.h"
#include "log.h"
#include "pbjson.h"
#include "rootfs.h"
#include "sandbox.h"

struct exec *exec_get(struct sandbox *sb, unsigned no)
{
    if (no == 0 || no > sb->nexecs)
        return NULL;
    return sb->execs[no - 1];
}

void exec_free(struct exec *ex)
{
    for (size_t i = 0; i < ex->argc; i++)
        free(ex->argv[i]);
    free(ex->argv);
    free(ex->cmdline);
    free(ex->failure);
    execbody_free(&ex->body);
    stream_free(&ex->out);
    stream_free(&ex->err);
    free(ex);
}

void exec_status_line(const struct exec *ex, char *buf, size_t size)
{
    if (ex->failure)
        snprintf(buf, size, "failed %s", ex->failure);
    else if (ex->ended)
        snprintf(buf, size, "exited %d", ex->exit_code);
    else if (ex->started)
        snprintf(buf, size, "running");
    else
        snprintf(buf, size, "starting");
}

static void exec_tell_started(struct exec *ex, int err)
{
    sandbox_ready_fn fn = ex->started_fn;
    ex->started_fn = NULL;
    if (fn)
        fn(ex->sb, err, ex->started_ud);
}

/* Worker thread, no lock: only the worker touches the body after the start. */
static long exec_body(uint64_t call, char *buf, size_t cap, void *ud)
{
    struct exec *ex = ud;
    return execbody_read(&ex->body, buf, cap);
}

static int exec_on_message(uint64_t call, json_t *msg, void *ud)
{
    struct exec *ex = ud;
    struct sandbox *sb = ex->sb;
    struct execmsg m;
    pthread_mutex_lock(&fs_lock);
    if (execmsg_parse(msg, &m) < 0) {
        sandbox_fail(sb, EIO, "exec %u: the service sent a malformed StreamExec message", ex->no);
    } else if (m.kind == EXECMSG_READY) {
        ex->started = 1;
        exec_tell_started(ex, 0);
    } else if (m.kind == EXECMSG_OUTPUT && m.len) {
        struct stream *st = m.is_stderr ? &ex->err : &ex->out;
        /* Bytes dropped beyond the cap are reported by the reader that misses them
         * (reader.c), not here: a reader that kept up lost nothing. */
        int rc = stream_append(st, m.data, m.len);
        if (rc < 0) {
            char what[48];
            snprintf(what, sizeof(what), "exec %u: %s", ex->no, m.is_stderr ? "stderr" : "stdout");
            sandbox_output_lost(sb, st, rc, what);
        }
        session.bytes_out += m.len;
    } else if (m.kind == EXECMSG_EXIT) {
        ex->exit_code = m.exit_code;
        ex->ended = 1;
        sandbox_files_changed(sb);
    } else if (m.kind == EXECMSG_ERROR) {
        free(ex->failure);
        ex->failure = strdup(m.error);
        sandbox_fail(sb, EIO, "exec %u: %s", ex->no, m.error);
    }
    execmsg_clear(&m);
    pthread_mutex_unlock(&fs_lock);
    return 0;
}

static void exec_on_done(uint64_t call, const struct api_result *res, void *ud)
{
    struct exec *ex = ud;
    struct sandbox *sb = ex->sb;
    pthread_mutex_lock(&fs_lock);
    int err = 0;
    if (res->err && !ex->ended && res->sent &&
        (res->err == -EHOSTUNREACH || res->err == -ETIMEDOUT)) {
        /* The request left and its answer never came (or stopped): the service may
         * have run the command. Saying "failed" would invite a retry that runs it
         * twice; an exec is never sent again (api.c retries only idempotent calls). */
        err = -ETIMEDOUT;
        free(ex->failure);
        if (asprintf(&ex->failure,
                     "outcome unknown: %s, then no answer (%s); the command may have run",
                     ex->started ? "it started" : "the request was sent",
                     res->error.message ? res->error.message : res->error.code) < 0)
            ex->failure = NULL;
        sandbox_fail(sb, ETIMEDOUT, "exec %u: StreamExec: %s", ex->no,
                     ex->failure ? ex->failure : "outcome unknown");
    } else if (res->err && !ex->ended) {
        err = res->err;
        if (!ex->failure && asprintf(&ex->failure, "%s: %s", res->error.code,
                                     res->error.message ? res->error.message : "") < 0)
            ex->failure = NULL;
        sandbox_fail(sb, -err, "exec %u: StreamExec: %s", ex->no,
                     ex->failure ? ex->failure : res->error.code);
    } else if (!ex->ended && !ex->failure) {
        err = -EIO;
        ex->failure = strdup("the stream ended without an exit code");
        sandbox_fail(sb, EIO, "exec %u: %s", ex->no, ex->failure);
    } else if (ex->failure) {
        err = -EIO;
    }
    ex->ended = 1;
    sandbox_files_changed(sb); /* what the command changed is seen at the next open */
    execbody_free(&ex->body);
    exec_tell_started(ex, err);
    stream_end(&ex->out, err);
    stream_end(&ex->err, err);
    park_wake(&ex->exit_waiters);
    clock_gettime(CLOCK_REALTIME, &sb->mtime);
    sandbox_unref(sb);
    pthread_mutex_unlock(&fs_lock);
}

int exec_start(struct sandbox *sb, char **argv, size_t argc, const char *cmdline,
               sandbox_ready_fn fn, void *ud)
{
    if (sb->nexecs == sb->execs_cap) {
        unsigned cap = sb->execs_cap ? sb->execs_cap * 2 : 8;
        struct exec **grown = realloc(sb->execs, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        sb->execs = grown;
        sb->execs_cap = cap;
    }
    struct exec *ex = calloc(1, sizeof(*ex));
    if (!ex)
        return -ENOMEM;
    ex->sb = sb;
    ex->out.ob.fd = ex->err.ob.fd = -1;
    ex->exit_code = -1;
    ex->cmdline = strdup(cmdline);
    ex->argv = calloc(argc + 1, sizeof(char *));
    if (!ex->cmdline || !ex->argv)
        goto fail;
    for (size_t i = 0; i < argc; i++)
        if (!(ex->argv[ex->argc++] = strdup(argv[i])))
            goto fail;
    if (execbody_init(&ex->body, sb->id, (const char *const *)ex->argv) < 0)
        goto fail;
    ex->no = sb->nexecs + 1;
    sb->execs[sb->nexecs++] = ex;
    ex->started_fn = fn;
    ex->started_ud = ud;
    session.execs_started++;
    clock_gettime(CLOCK_REALTIME, &sb->mtime);
    sandbox_ref(sb);
    ex->call_id = api_bidi("StreamExec", 0, exec_body, exec_on_message, exec_on_done, ex);
    return 0;
fail:
    exec_free(ex);
    return -ENOMEM;
}

static void exec_free_all(struct sandbox *sb)
{
    for (unsigned i = 0; i < sb->nexecs; i++)
        exec_free(sb->execs[i]);
    free(sb->execs);
    sb->execs = NULL;
    sb->nexecs = sb->execs_cap = 0;
}

const struct sandbox_hooks exec_hooks = {.freed = exec_free_all};
