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
#include "log.h"
#include "pbjson.h"
#include "sandbox.h"

static const char *const stream_names[] = {"STREAM_UNSPECIFIED", "STREAM_STDOUT", "STREAM_STDERR"};

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
    free(ex->body);
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

/* Worker thread, no lock: only the worker touches body/body_pos after the start. */
static long exec_body(uint64_t call, char *buf, size_t cap, void *ud)
{
    struct exec *ex = ud;
    size_t n = ex->body_len - ex->body_pos;
    if (n > cap)
        n = cap;
    memcpy(buf, ex->body + ex->body_pos, n);
    ex->body_pos += n;
    (void)call;
    return (long)n;
}

static int exec_on_message(uint64_t call, json_t *msg, void *ud)
{
    struct exec *ex = ud;
    struct sandbox *sb = ex->sb;
    pthread_mutex_lock(&fs_lock);
    json_t *output = json_object_get(msg, "output");
    json_t *exitm = json_object_get(msg, "exit");
    json_t *errm = json_object_get(msg, "error");
    if (json_object_get(msg, "ready")) {
        ex->started = 1;
        exec_tell_started(ex, 0);
    } else if (json_is_object(output)) {
        int which = 0;
        char *data = NULL;
        size_t len = 0;
        pbjson_get_enum(output, "stream", stream_names, 3, &which);
        if (pbjson_get_bytes(output, "data", &data, &len) == 0 && len) {
            struct stream *st = which == 2 ? &ex->err : &ex->out;
            if (stream_append(st, data, len) < 0)
                sandbox_fail(sb, EIO, "exec %u: output lost: the spool is full", ex->no);
            else if (st->ob.dropped)
                sandbox_fail(sb, EFBIG,
                             "exec %u: output beyond %llu MiB: the oldest %llu bytes were dropped",
                             ex->no, (unsigned long long)(st->ob.cap >> 20),
                             (unsigned long long)st->ob.dropped);
            session.bytes_out += len;
        }
        free(data);
    } else if (json_is_object(exitm)) {
        int64_t code = 0;
        pbjson_get_int64(exitm, "exitCode", 0, &code);
        ex->exit_code = (int)code;
        ex->ended = 1;
    } else if (json_is_object(errm)) {
        free(ex->failure);
        ex->failure = strdup(pbjson_get_string(errm, "message", "error"));
        sandbox_fail(sb, EIO, "exec %u: %s", ex->no, ex->failure);
    }
    pthread_mutex_unlock(&fs_lock);
    (void)call;
    return 0;
}

static void exec_on_done(uint64_t call, const struct api_result *res, void *ud)
{
    struct exec *ex = ud;
    struct sandbox *sb = ex->sb;
    pthread_mutex_lock(&fs_lock);
    int err = 0;
    if (res->err && !ex->ended) {
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
    free(ex->body);
    ex->body = NULL;
    exec_tell_started(ex, err);
    stream_end(&ex->out, err);
    stream_end(&ex->err, err);
    park_wake(&ex->exit_waiters);
    clock_gettime(CLOCK_REALTIME, &sb->mtime);
    sandbox_unref(sb);
    pthread_mutex_unlock(&fs_lock);
    (void)call;
}

static int exec_build_body(struct exec *ex)
{
    json_t *cmd = json_array();
    for (size_t i = 0; i < ex->argc; i++)
        json_array_append_new(cmd, json_string(ex->argv[i]));
    json_t *init = json_pack("{s:{s:s, s:o}}", "init", "sandboxId", ex->sb->id, "command", cmd);
    json_t *close = json_pack("{s:{}}", "close");
    char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    int rc = -ENOMEM;
    if (!init || !close || api_body_envelope(init, 0, &a, &alen) < 0 ||
        api_body_envelope(close, 0, &b, &blen) < 0)
        goto out;
    ex->body = malloc(alen + blen);
    if (!ex->body)
        goto out;
    memcpy(ex->body, a, alen);
    memcpy(ex->body + alen, b, blen);
    ex->body_len = alen + blen;
    rc = 0;
out:
    free(a);
    free(b);
    json_decref(init);
    json_decref(close);
    return rc;
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
    if (exec_build_body(ex) < 0)
        goto fail;
    ex->no = sb->nexecs + 1;
    sb->execs[sb->nexecs++] = ex;
    ex->started_fn = fn;
    ex->started_ud = ud;
    session.execs_started++;
    clock_gettime(CLOCK_REALTIME, &sb->mtime);
    sandbox_ref(sb);
    ex->call_id = api_bidi("StreamExec", exec_body, exec_on_message, exec_on_done, ex);
    return 0;
fail:
    exec_free(ex);
    return -ENOMEM;
}
