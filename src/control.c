/* control.c - runs ctl commands in order, answering the write that carried them.
 *
 * Parsing happens up front so a bad line anywhere in a write runs nothing. Spec
 * changes are checked when their turn comes (a `start` earlier in the same write
 * makes them EBUSY). A job survives its request being interrupted: the command in
 * flight still finishes (its callback needs the job), but nothing after it runs. */
#include "control.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

#include "log.h"
#include "pbjson.h"

struct ctl_job {
    struct waiter w;
    struct sandbox *sb;
    struct ctl_cmd *cmds;
    char **lines;
    size_t n, next;
    long reply_size;
    int answered;    /* the FUSE request got its reply (or there is none) */
    int interrupted; /* the request was interrupted: run nothing more */
    int busy;        /* a command's callback is outstanding */
    struct ctl_job *next_job;
};

static void job_run(struct ctl_job *job);

static void job_free(struct ctl_job *job)
{
    for (size_t i = 0; i < job->n; i++) {
        ctl_cmd_free(&job->cmds[i]);
        free(job->lines[i]);
    }
    free(job->cmds);
    free(job->lines);
    sandbox_unref(job->sb);
    free(job);
}

static void job_answer(struct ctl_job *job, int err)
{
    if (job->answered)
        return;
    job->answered = 1;
    park_done(&job->w);
    if (err)
        fuse_reply_err(job->w.req, -err);
    else if (job->reply_size >= 0)
        fuse_reply_write(job->w.req, (size_t)job->reply_size);
    else
        fuse_reply_err(job->w.req, 0);
}

/* The job at the head finished: drop it and start the next one. */
static void job_finish(struct ctl_job *job, int err)
{
    struct sandbox *sb = job->sb;
    job_answer(job, err);
    sb->ctl_head = job->next_job;
    if (!sb->ctl_head)
        sb->ctl_tail = NULL;
    sandbox_ref(sb);
    job_free(job);
    if (sb->ctl_head)
        job_run(sb->ctl_head);
    sandbox_unref(sb);
}

static void job_step_done(struct sandbox *sb, int err, void *ud)
{
    struct ctl_job *job = ud;
    job->busy = 0;
    if (err) {
        /* Say which command failed, in the user's words, before the reason. */
        const char *why = sb->error ? sb->error : strerror(-err);
        char *msg = NULL;
        if (asprintf(&msg, "\"%s\": %s", job->lines[job->next - 1], why) >= 0) {
            free(sb->error);
            sb->error = msg;
        }
        job_finish(job, err);
        return;
    }
    if (job->interrupted) { /* the rest of the write does not run */
        job_finish(job, -EINTR);
        return;
    }
    job_run(job);
}

static int spec_set(struct sandbox *sb, const struct ctl_cmd *c)
{
    json_t *container = json_array_get(json_object_get(sb->spec, "containers"), 0);
    if (!container)
        return -EIO;
    json_t *res = json_object_get(container, "resources");
    if ((c->op == CTL_CPU || c->op == CTL_MEMORY || c->op == CTL_GPU) && !res) {
        res = json_object();
        json_object_set_new(container, "resources", res);
    }
    switch (c->op) {
    case CTL_IMAGE:
        return json_object_set_new(container, "image", json_string(c->arg));
    case CTL_COMMAND: {
        json_t *args = json_array();
        for (size_t i = 1; i < c->argc; i++)
            json_array_append_new(args, json_string(c->argv[i]));
        json_object_set_new(container, "command", json_string(c->argv[0]));
        return json_object_set_new(container, "args", args);
    }
    case CTL_ENV: {
        json_t *env = json_object_get(container, "environmentVariables");
        if (!env) {
            env = json_object();
            json_object_set_new(container, "environmentVariables", env);
        }
        return json_object_set_new(env, c->key, json_string(c->arg));
    }
    case CTL_TAG: {
        json_t *tags = json_object_get(sb->spec, "tags");
        size_t i;
        json_t *t;
        json_array_foreach(tags, i, t)
            if (strcmp(json_string_value(t), c->arg) == 0)
                return 0;
        return json_array_append_new(tags, json_string(c->arg));
    }
    case CTL_CPU:
        return json_object_set_new(res, "cpu", json_string(c->arg));
    case CTL_MEMORY:
        return json_object_set_new(res, "memory", json_string(c->arg));
    case CTL_GPU:
        if (c->num == 0)
            return json_object_del(res, "gpu"), 0;
        return json_object_set_new(res, "gpu", json_pack("{s:o}", "count", pbjson_int64(c->num)));
    case CTL_LIFETIME:
        return json_object_set_new(sb->spec, "maxLifetimeSeconds", json_integer(c->num));
    case CTL_WORKDIR:
        return json_object_set_new(container, "workingDir", json_string(c->arg));
    default:
        return -EINVAL;
    }
}

static void exec_when_running(struct sandbox *sb, int err, void *ud)
{
    struct ctl_job *job = ud;
    if (err) {
        job_step_done(sb, err, job);
        return;
    }
    const struct ctl_cmd *c = &job->cmds[job->next - 1];
    const char *line = job->lines[job->next - 1];
    const char *cmdline = c->op == CTL_EXEC ? c->argv[2] : line + strlen("execv ");
    int rc = exec_start(sb, c->argv, c->argc, cmdline, job_step_done, job);
    if (rc < 0)
        job_step_done(sb, sandbox_fail(sb, -rc, "exec: out of memory"), job);
}

static void snapshot_when_running(struct sandbox *sb, int err, void *ud)
{
    if (err)
        job_step_done(sb, err, ud);
    else
        sandbox_snapshot(sb, job_step_done, ud);
}

static void job_run(struct ctl_job *job)
{
    struct sandbox *sb = job->sb;
    if (job->interrupted || job->next == job->n) {
        job_finish(job, job->interrupted ? -EINTR : 0);
        return;
    }
    const struct ctl_cmd *c = &job->cmds[job->next++];
    job->busy = 1;
    if (sb->removed) {
        job_step_done(sb, sandbox_fail(sb, ENOENT, "the sandbox was removed"), job);
        return;
    }
    if (ctl_is_spec_change(c->op)) {
        int rc = 0;
        if (sb->state != SB_UNSTARTED || sb->create_inflight || !sb->spec)
            rc = sandbox_fail(sb, EBUSY, "the sandbox already started; spec changes come before");
        else if (spec_set(sb, c) < 0 || sandbox_spec_changed(sb) < 0)
            rc = sandbox_fail(sb, ENOMEM, "could not change the spec");
        job_step_done(sb, rc, job);
        return;
    }
    switch (c->op) {
    case CTL_START:
        sandbox_when_running(sb, job_step_done, job);
        break;
    case CTL_WAIT:
        sandbox_when_terminal(sb, job_step_done, job);
        break;
    case CTL_STOP:
        sandbox_stop(sb, c->num, job_step_done, job);
        break;
    case CTL_SNAPSHOT:
        sandbox_when_running(sb, snapshot_when_running, job);
        break;
    case CTL_EXEC:
    case CTL_EXECV:
        sandbox_when_running(sb, exec_when_running, job);
        break;
    default:
        job_step_done(sb, -EINVAL, job);
    }
}

static void job_retry(struct waiter *w)
{
}

static void job_interrupted(struct waiter *w)
{
    struct ctl_job *job = (struct ctl_job *)w;
    job->interrupted = 1;
    job_answer(job, -EINTR);
    log_info("%s: ctl write interrupted", job->sb->name);
    /* A `wait` or `start` may wait forever: give up its turn now, or the commands
     * written after it (a `stop`, say) would queue behind it. A command with a call in
     * flight finishes on its own. */
    if (job->busy && job == job->sb->ctl_head && sandbox_cancel_waits(job->sb, job)) {
        job->busy = 0;
        job_finish(job, -EINTR);
    }
}

void control_submit(struct sandbox *sb, fuse_req_t req, char **lines, const size_t *lens,
                    size_t nlines, long reply_size)
{
    struct ctl_job *job = calloc(1, sizeof(*job));
    if (job) {
        job->cmds = calloc(nlines ? nlines : 1, sizeof(*job->cmds));
        job->lines = calloc(nlines ? nlines : 1, sizeof(char *));
    }
    if (!job || !job->cmds || !job->lines) {
        if (job) {
            free(job->cmds);
            free(job->lines);
        }
        free(job);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    sandbox_ref(sb);
    job->sb = sb;
    job->reply_size = reply_size;
    job->w.req = req;
    for (size_t i = 0; i < nlines; i++) {
        char err[512];
        int rc = ctl_parse(lines[i], lens[i], &job->cmds[job->n], err, sizeof(err));
        if (rc < 0) {
            sandbox_fail(sb, EINVAL, "%s", err);
            if (!req)
                job->answered = 1;
            job_answer(job, rc);
            job_free(job);
            return;
        }
        if (rc == 0)
            job->lines[job->n++] = strdup(lines[i]);
    }
    if (req)
        park_register(&job->w, req, job_retry, job_interrupted);
    else
        job->answered = 1; /* nobody waits (a line run at release): errors go to `error` */
    if (sb->ctl_tail)
        sb->ctl_tail->next_job = job;
    else
        sb->ctl_head = job;
    sb->ctl_tail = job;
    if (sb->ctl_head == job)
        job_run(job);
}
