/* logs.c - a sandbox's `logs`: StreamLogs following the main process's output into the
 * sandbox's logs stream, started by the first stat or read. A stream that breaks while
 * the sandbox runs resumes where it stopped (logSessionId + nextLogOffset), a second
 * later; LOGS_MAX_RESUMES breaks in a row with no output between them end it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "log.h"
#include "pbjson.h"
#include "sandbox.h"

#define LOGS_MAX_RESUMES 5

static int on_log_entry(uint64_t call, json_t *msg, void *ud)
{
    struct sandbox *sb = ud;
    pthread_mutex_lock(&fs_lock);
    char *data = NULL;
    size_t len = 0;
    if (pbjson_get_bytes(msg, "data", &data, &len) == 0 && len) {
        int rc = stream_append(&sb->logs, data, len);
        if (rc < 0)
            sandbox_output_lost(sb, &sb->logs, rc, "logs");
        session.bytes_out += len;
        sb->logs_retries = 0; /* a job that runs for days may see many breaks */
    }
    free(data);
    const char *sess = pbjson_get_string(msg, "logSessionId", NULL);
    if (sess && *sess && (!sb->logs_session || strcmp(sess, sb->logs_session))) {
        free(sb->logs_session);
        sb->logs_session = strdup(sess);
    }
    int64_t off = 0;
    if (pbjson_get_int64(msg, "nextLogOffset", 0, &off) == 0 && off > 0)
        sb->logs_offset = (uint64_t)off;
    json_t *err = json_object_get(msg, "error");
    if (json_is_object(err))
        sandbox_fail(sb, EIO, "logs: %s", pbjson_get_string(err, "message", "stream error"));
    pthread_mutex_unlock(&fs_lock);
    return 0;
}

static void logs_start(struct sandbox *sb);

static void logs_resume(void *ud)
{
    struct sandbox *sb = ud;
    pthread_mutex_lock(&fs_lock);
    if (!sb->removed && !sb->logs.ended)
        logs_start(sb);
    sandbox_unref(sb);
    pthread_mutex_unlock(&fs_lock);
}

static void on_logs_done(uint64_t call, const struct api_result *res, void *ud)
{
    struct sandbox *sb = ud;
    pthread_mutex_lock(&fs_lock);
    sb->logs_call = 0;
    if (res->err == 0 || res->err == -ECANCELED || res->err == -ESHUTDOWN) {
        stream_end(&sb->logs, 0);
        /* The main process ended: its state changed too. */
        if (res->err == 0)
            sandbox_refresh(sb);
    } else if (sb->state != SB_TERMINATING && sb->state != SB_TERMINATED &&
               sb->logs_retries++ < LOGS_MAX_RESUMES) {
        /* Also after the main process ended: the rest of its output is still there. */
        log_warn("%s: logs stream broke (%s), resuming", sb->name, res->error.code);
        sandbox_ref(sb);
        api_schedule(1000, logs_resume, sb);
    } else {
        sandbox_fail_call(sb, res, "logs: StreamLogs");
        stream_end(&sb->logs, res->err);
    }
    sandbox_unref(sb);
    pthread_mutex_unlock(&fs_lock);
}

static void logs_start(struct sandbox *sb)
{
    json_t *req = json_pack("{s:s, s:b}", "sandboxId", sb->id, "follow", 1);
    if (sb->logs_session) {
        json_object_set_new(req, "resumeLogSessionId", json_string(sb->logs_session));
        json_object_set_new(req, "resumeLogOffset", pbjson_int64((int64_t)sb->logs_offset));
    }
    sandbox_ref(sb);
    sb->logs_call = api_server_stream("StreamLogs", req, on_log_entry, on_logs_done, sb);
}

void sandbox_logs_follow(struct sandbox *sb)
{
    if (sb->logs_started || !sb->id || sb->removed)
        return;
    sb->logs_started = 1;
    logs_start(sb);
}

/* Readers waiting for the main process's output once it may have some: follow it. */
static void logs_state_changed(struct sandbox *sb)
{
    if (sb->logs.readers.head && sb->state != SB_PENDING && sb->state != SB_CREATING)
        sandbox_logs_follow(sb);
}

const struct sandbox_hooks logs_hooks = {.changed = logs_state_changed};
