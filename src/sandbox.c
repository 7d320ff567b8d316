/* sandbox.c - sandboxes of the session: spec, lifecycle and its polling (stop,
 * snapshot and shutdown are sandbox_ops.c's).
 *
 * A sandbox made by mkdir holds a pending spec and costs no call until something
 * needs it running: then CreateSandbox (with a requestId fixed for its life, so a
 * retried create is the same create) and GetSandbox polls as the SDKs do (0.2 s,
 * x1.5, at most 2 s apart) until RUNNING. After that it is polled only while
 * somebody waits on its state (ctl `wait`, a blocked `events` reader, a stop), once
 * a second. Every observed transition becomes a line of `events`. */
#include "sandbox.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <utlist.h>

#include "api.h"
#include "log.h"
#include "pbjson.h"
#include "sandbox_int.h"

#define DEFAULT_IMAGE "python:3.11"
/* The SDKs' keep-alive: runs until SIGTERM, then exits 0. */
#define KEEPALIVE_SCRIPT "trap \"exit 0\" TERM INT; sleep infinity & wait"
#define POLL_FIRST_MS 200
#define POLL_MAX_MS 2000
#define POLL_WATCH_MS 1000

struct sb_cont {
    int want_terminal;
    sandbox_ready_fn fn;
    void *ud;
    struct sb_cont *next;
};

static const char *const state_enum_names[] = {
    "STATE_UNSPECIFIED", "STATE_CREATING",   "STATE_RUNNING", "STATE_COMPLETED", "STATE_FAILED",
    "STATE_TERMINATING", "STATE_TERMINATED", "STATE_PENDING", "STATE_PAUSED",
};
/* The service's enum numbers, in our order. */
static const enum sb_state state_from_enum[] = {
    SB_UNSTARTED,   SB_CREATING,   SB_RUNNING, SB_COMPLETED, SB_FAILED,
    SB_TERMINATING, SB_TERMINATED, SB_PENDING, SB_PAUSED,
};

const char *sandbox_state_name(enum sb_state st)
{
    static const char *const names[] = {"unstarted",   "pending",    "creating",
                                        "running",     "completed",  "failed",
                                        "terminating", "terminated", "paused"};
    return names[st];
}

int sandbox_is_terminal(enum sb_state st)
{
    return st == SB_COMPLETED || st == SB_FAILED || st == SB_TERMINATED;
}

void sandbox_status_line(const struct sandbox *sb, char *buf, size_t size)
{
    if (sb->unreachable && !sandbox_is_terminal(sb->state))
        snprintf(buf, size, "unknown"); /* `error` says why */
    else if (sb->state == SB_COMPLETED)
        snprintf(buf, size, "completed %d", sb->exit_code);
    else if (sb->state == SB_FAILED)
        snprintf(buf, size, "failed %s",
                 sb->state_reason && *sb->state_reason ? sb->state_reason : "unknown");
    else
        snprintf(buf, size, "%s", sandbox_state_name(sb->state));
}

struct sandbox *sandbox_find(const char *name)
{
    struct sandbox *sb = NULL;
    HASH_FIND_STR(session.by_name, name, sb);
    return sb;
}

void sandbox_ref(struct sandbox *sb)
{
    sb->refs++;
}

static struct sandbox *all_sandboxes;

/* Ids of sandboxes removed by rmdir: they stay listed while they terminate, and must
 * not come back under their name (a script's `[ -d NAME ] && rm -r NAME` would stop
 * them twice). */
struct removed_id {
    UT_hash_handle hh;
    char id[];
};
static struct removed_id *removed_ids;

static void remember_removed(const char *id)
{
    struct removed_id *r = NULL;
    HASH_FIND_STR(removed_ids, id, r);
    if (r || !(r = malloc(sizeof(*r) + strlen(id) + 1)))
        return;
    strcpy(r->id, id);
    HASH_ADD_STR(removed_ids, id, r);
}

static const struct sandbox_hooks *hooks[SANDBOX_HOOKS_MAX];
static size_t nhooks;

int sandbox_add_hooks(const struct sandbox_hooks *h)
{
    for (size_t i = 0; i < nhooks; i++)
        if (hooks[i] == h)
            return 0;
    if (nhooks == SANDBOX_HOOKS_MAX)
        return -ENOSPC;
    hooks[nhooks++] = h;
    return 0;
}

void sandbox_files_changed(struct sandbox *sb)
{
    for (size_t i = 0; i < nhooks; i++)
        if (hooks[i]->files_changed)
            hooks[i]->files_changed(sb);
}

static void sandbox_free(struct sandbox *sb)
{
    DL_DELETE2(all_sandboxes, sb, all_prev, all_next);
    for (size_t i = 0; i < nhooks; i++)
        if (hooks[i]->freed)
            hooks[i]->freed(sb);
    stream_free(&sb->events);
    stream_free(&sb->logs);
    json_decref(sb->spec);
    json_decref(sb->remote);
    free(sb->name);
    free(sb->id);
    free(sb->state_reason);
    free(sb->request_id);
    free(sb->error);
    free(sb->logs_session);
    free(sb->snapshots);
    free(sb);
}

void sandbox_unref(struct sandbox *sb)
{
    if (--sb->refs == 0)
        sandbox_free(sb);
}

/* printf into a malloc'ed string, NULL when out of memory. */
static char *vformat(const char *fmt, va_list ap)
{
    char *text = NULL;
    return vasprintf(&text, fmt, ap) < 0 ? NULL : text;
}

int sandbox_fail(struct sandbox *sb, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = vformat(fmt, ap);
    va_end(ap);
    if (text) {
        log_warn("%s: %s", sb->name, text);
        free(sb->error);
        sb->error = text;
        clock_gettime(CLOCK_REALTIME, &sb->mtime);
    }
    return -errnum;
}

int sandbox_fail_call(struct sandbox *sb, const struct api_result *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *what = vformat(fmt, ap);
    va_end(ap);
    int err = sandbox_fail(sb, -res->err, "%s: %s: %s", what ? what : "a call",
                           res->error.code ? res->error.code : "unknown",
                           res->error.message ? res->error.message : "");
    free(what);
    return err;
}

char *sandbox_new_request_id(void)
{
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        return NULL;
    b[6] = (b[6] & 0x0f) | 0x40; /* version 4 */
    b[8] = (b[8] & 0x3f) | 0x80; /* RFC 4122 variant */
    char *id = NULL;
    if (asprintf(&id, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                 b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                 b[14], b[15]) < 0)
        return NULL;
    return id;
}

/* The pending spec from the session defaults: one container named "main", as the
 * SDKs build it. */
static json_t *default_spec(const char *name)
{
    const struct fs_options *o = &session.opts;
    json_t *env = json_object();
    for (size_t i = 0; i < o->nenv; i++) {
        const char *eq = strchr(o->env[i], '=');
        if (!eq)
            continue;
        char *key = strndup(o->env[i], (size_t)(eq - o->env[i]));
        json_object_set_new(env, key, json_string(eq + 1));
        free(key);
    }
    json_t *container = json_pack("{s:s, s:s, s:s, s:[s,s]}", "name", "main", "image",
                                  o->image ? o->image : DEFAULT_IMAGE, "command", "/bin/sh", "args",
                                  "-c", o->command ? o->command : KEEPALIVE_SCRIPT);
    if (json_object_size(env))
        json_object_set(container, "environmentVariables", env);
    json_decref(env);
    if (o->cpu || o->memory || o->gpu) {
        json_t *res = json_object();
        if (o->cpu)
            json_object_set_new(res, "cpu", json_string(o->cpu));
        if (o->memory)
            json_object_set_new(res, "memory", json_string(o->memory));
        if (o->gpu)
            json_object_set_new(res, "gpu", json_pack("{s:o}", "count", pbjson_int64(o->gpu)));
        json_object_set_new(container, "resources", res);
    }
    json_t *tags = json_array();
    for (size_t i = 0; i < session.ntags; i++)
        json_array_append_new(tags, json_string(session.tags[i]));
    json_t *spec =
        json_pack("{s:[o], s:s, s:o, s:{s:s}}", "containers", container, "primaryContainer", "main",
                  "tags", tags, "annotations", SANDBOX_NAME_ANNOTATION, name);
    if (spec && o->lifetime > 0)
        json_object_set_new(spec, "maxLifetimeSeconds", json_integer(o->lifetime));
    return spec;
}

static struct sandbox *sandbox_new(const char *name)
{
    struct sandbox *sb = calloc(1, sizeof(*sb));
    if (!sb || !(sb->name = strdup(name))) {
        free(sb);
        return NULL;
    }
    sb->serial = ++session.next_serial;
    sb->refs = 1; /* the name table's */
    sb->exit_code = -1;
    sb->events.ob.fd = sb->logs.ob.fd = -1;
    clock_gettime(CLOCK_REALTIME, &sb->mtime);
    DL_APPEND2(all_sandboxes, sb, all_prev, all_next);
    HASH_ADD_KEYPTR(hh, session.by_name, sb->name, strlen(sb->name), sb);
    return sb;
}

struct sandbox *sandbox_adopt_new(const char *name, const char *id)
{
    struct sandbox *sb = sandbox_new(name);
    if (!sb)
        return NULL;
    sb->state = SB_UNSTARTED;
    if (!(sb->id = strdup(id))) {
        sandbox_remove(sb);
        return NULL;
    }
    return sb;
}

int sandbox_was_removed(const char *id)
{
    struct removed_id *r = NULL;
    HASH_FIND_STR(removed_ids, id, r);
    return r != NULL;
}

static void fail_conts(struct sandbox *sb, int err, int want_terminal);

void sandbox_events_line(struct sandbox *sb)
{
    char line[300];
    sandbox_status_line(sb, line, sizeof(line) - 1);
    strcat(line, "\n");
    int rc = stream_append(&sb->events, line, strlen(line));
    if (rc < 0)
        sandbox_output_lost(sb, &sb->events, rc, "events");
}

int sandbox_create_local(const char *name, struct sandbox **out)
{
    if (strlen(name) > 200)
        return -ENAMETOOLONG;
    if (!*name || name[0] == '.')
        return -EINVAL;
    if (sandbox_find(name))
        return -EEXIST;
    struct sandbox *sb = sandbox_new(name);
    if (!sb)
        return -ENOMEM;
    sb->created_here = 1;
    sb->spec = default_spec(name);
    sb->request_id = sandbox_new_request_id();
    if (!sb->spec || !sb->request_id) {
        sandbox_remove(sb);
        return -ENOMEM;
    }
    sandbox_events_line(sb);
    *out = sb;
    return 0;
}

void sandbox_remove(struct sandbox *sb)
{
    if (sb->removed)
        return;
    sb->removed = 1;
    HASH_DEL(session.by_name, sb);
    if (sb->id)
        remember_removed(sb->id);
    if (sb->logs_call)
        api_cancel(sb->logs_call);
    for (unsigned i = 0; i < sb->nexecs; i++)
        if (!sb->execs[i]->ended)
            api_cancel(sb->execs[i]->call_id);
    stream_end(&sb->events, 0);
    sandbox_ref(sb);
    sandbox_unref(sb); /* the name table's */
    fail_conts(sb, -ENOENT, 0);
    fail_conts(sb, -ENOENT, 1);
    sandbox_unref(sb);
}

void sandbox_free_all(void)
{
    struct removed_id *r, *tmp;
    while (all_sandboxes)
        sandbox_free(all_sandboxes);
    HASH_ITER(hh, removed_ids, r, tmp) {
        HASH_DEL(removed_ids, r);
        free(r);
    }
}

/* ---- continuations on state ---- */

static void run_conts(struct sandbox *sb)
{
    struct sb_cont *c, *tmp, *keep = NULL, *ready = NULL;
    LL_FOREACH_SAFE(sb->conts, c, tmp) {
        LL_DELETE(sb->conts, c);
        int done = c->want_terminal ? sandbox_is_terminal(sb->state)
                                    : sb->state != SB_UNSTARTED && sb->state != SB_PENDING &&
                                          sb->state != SB_CREATING;
        if (done)
            LL_APPEND(ready, c);
        else
            LL_APPEND(keep, c);
    }
    sb->conts = keep;
    LL_FOREACH_SAFE(ready, c, tmp) {
        int err = 0;
        if (!c->want_terminal && sb->state != SB_RUNNING) {
            char line[300];
            sandbox_status_line(sb, line, sizeof(line));
            err = sandbox_fail(sb, ESRCH, "sandbox is not running: %s", line);
        }
        c->fn(sb, err, c->ud);
        free(c);
    }
}

static void fail_conts(struct sandbox *sb, int err, int want_terminal)
{
    struct sb_cont *c, *tmp, *failed = NULL;
    LL_FOREACH_SAFE(sb->conts, c, tmp) {
        if (c->want_terminal != want_terminal)
            continue;
        LL_DELETE(sb->conts, c);
        LL_APPEND(failed, c);
    }
    LL_FOREACH_SAFE(failed, c, tmp) {
        c->fn(sb, err, c->ud);
        free(c);
    }
}

static int add_cont(struct sandbox *sb, int want_terminal, sandbox_ready_fn fn, void *ud)
{
    struct sb_cont *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->want_terminal = want_terminal;
    c->fn = fn;
    c->ud = ud;
    LL_APPEND(sb->conts, c);
    return 0;
}

int sandbox_cancel_waits(struct sandbox *sb, void *ud)
{
    struct sb_cont *c, *tmp;
    int n = 0;
    LL_FOREACH_SAFE(sb->conts, c, tmp) {
        if (c->ud != ud)
            continue;
        LL_DELETE(sb->conts, c);
        free(c);
        n++;
    }
    return n;
}

/* ---- polling ---- */

static int needs_poll(const struct sandbox *sb)
{
    if (!sb->id || sb->removed || sandbox_is_terminal(sb->state))
        return 0;
    return sb->conts || sb->stopping || sb->events.readers.head || sb->state == SB_PENDING ||
           sb->state == SB_CREATING;
}

static void poll_waiters_run(struct sandbox *sb, int err)
{
    struct sb_cont *waiters = sb->poll_waiters, *c, *tmp;
    sb->poll_waiters = NULL;
    LL_FOREACH_SAFE(waiters, c, tmp) {
        c->fn(sb, err, c->ud);
        free(c);
    }
}

/* The call did not reach the service, or got no answer from it: the state is unknown. */
static int unreachable(const struct api_result *res)
{
    /* connect.c's table: unavailable (and every transport failure) is EHOSTUNREACH,
     * deadline_exceeded ETIMEDOUT. */
    return res->err == -EHOSTUNREACH || res->err == -ETIMEDOUT;
}

static void on_polled(uint64_t call, const struct api_result *res, void *ud)
{
    struct sandbox *sb = ud;
    pthread_mutex_lock(&fs_lock);
    sb->poll_inflight = 0;
    clock_gettime(CLOCK_MONOTONIC, &sb->polled);
    sb->unreachable = res->err && unreachable(res);
    if (res->err == 0) {
        sandbox_update_from(sb, res->response);
    } else if (res->err == -ENOENT && sb->id) {
        /* Gone from the service (deleted elsewhere, or expired and purged). */
        free(sb->state_reason);
        sb->state_reason = strdup("gone");
        json_t *msg =
            json_pack("{s:s, s:{s:s}}", "sandboxId", sb->id, "status", "state", "STATE_TERMINATED");
        sandbox_update_from(sb, msg);
        json_decref(msg);
    } else {
        sandbox_fail_call(sb, res, "GetSandbox");
        if (sb->state == SB_PENDING || sb->state == SB_CREATING)
            fail_conts(sb, res->err, 0);
    }
    if (needs_poll(sb)) {
        long next = POLL_WATCH_MS;
        if (sb->state == SB_PENDING || sb->state == SB_CREATING) {
            sb->poll_delay_ms = sb->poll_delay_ms ? sb->poll_delay_ms * 3 / 2 : POLL_FIRST_MS;
            if (sb->poll_delay_ms > POLL_MAX_MS)
                sb->poll_delay_ms = POLL_MAX_MS;
            next = sb->poll_delay_ms;
        }
        sandbox_poll_schedule(sb, next);
    }
    poll_waiters_run(sb, res->err);
    sandbox_unref(sb);
    pthread_mutex_unlock(&fs_lock);
}

static void poll_now(struct sandbox *sb)
{
    if (sb->poll_inflight || !sb->id)
        return;
    sb->poll_inflight = 1;
    sandbox_ref(sb);
    if (api_unary("GetSandbox", json_pack("{s:s}", "sandboxId", sb->id), API_IDEMPOTENT, on_polled,
                  sb))
        return;
    /* Not started (shutting down, or no memory): no answer will come. */
    sb->poll_inflight = 0;
    poll_waiters_run(sb, -ESHUTDOWN);
    sandbox_unref(sb);
}

static void poll_tick(void *ud)
{
    struct sandbox *sb = ud;
    pthread_mutex_lock(&fs_lock);
    sb->poll_scheduled = 0;
    if (needs_poll(sb))
        poll_now(sb);
    sandbox_unref(sb);
    pthread_mutex_unlock(&fs_lock);
}

void sandbox_poll_schedule(struct sandbox *sb, long delay_ms)
{
    if (sb->poll_scheduled || sb->poll_inflight)
        return;
    sb->poll_scheduled = 1;
    sandbox_ref(sb);
    api_schedule(delay_ms, poll_tick, sb);
}

static long poll_age_ms(const struct sandbox *sb)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - sb->polled.tv_sec) * 1000 + (now.tv_nsec - sb->polled.tv_nsec) / 1000000;
}

void sandbox_refresh(struct sandbox *sb)
{
    if (!sb->id || sb->removed || sandbox_is_terminal(sb->state) || sb->poll_inflight)
        return;
    if (poll_age_ms(sb) >= 1000)
        poll_now(sb);
    if (needs_poll(sb))
        sandbox_poll_schedule(sb, POLL_WATCH_MS);
}

int sandbox_status_stale(const struct sandbox *sb)
{
    return sb->id && !sb->removed && !sandbox_is_terminal(sb->state) &&
           (sb->poll_inflight || poll_age_ms(sb) >= 1000);
}

void sandbox_when_polled(struct sandbox *sb, sandbox_ready_fn fn, void *ud)
{
    struct sb_cont *c = calloc(1, sizeof(*c));
    if (!c) {
        fn(sb, -ENOMEM, ud);
        return;
    }
    c->fn = fn;
    c->ud = ud;
    LL_APPEND(sb->poll_waiters, c);
    poll_now(sb);
}

void sandbox_update_from(struct sandbox *sb, json_t *msg)
{
    if (!json_is_object(msg))
        return;
    const char *id = pbjson_get_string(msg, "sandboxId", NULL);
    if (id && *id && !sb->id)
        sb->id = strdup(id);
    json_t *status = json_object_get(msg, "status");
    int st = 0;
    if (json_is_object(status) &&
        pbjson_get_enum(status, "state", state_enum_names,
                        sizeof(state_enum_names) / sizeof(*state_enum_names), &st) == 0 &&
        st > 0 && st < (int)(sizeof(state_from_enum) / sizeof(*state_from_enum))) {
        enum sb_state next = state_from_enum[st];
        int64_t code = -1;
        if (json_object_get(status, "exitCode"))
            pbjson_get_int64(status, "exitCode", -1, &code);
        const char *reason = pbjson_get_string(status, "stateReason", NULL);
        /* Once terminal, a late answer from an earlier poll must not revive it. */
        int changed = next != sb->state && !sandbox_is_terminal(sb->state);
        if (reason && *reason && (changed || !sb->state_reason)) {
            free(sb->state_reason);
            sb->state_reason = strdup(reason);
        }
        if (changed) {
            sb->state = next;
            if (code >= 0)
                sb->exit_code = (int)code;
            else if (next == SB_COMPLETED)
                sb->exit_code = 0;
            sandbox_events_line(sb);
            clock_gettime(CLOCK_REALTIME, &sb->mtime);
            if (sandbox_is_terminal(next)) {
                sb->stopping = 0;
                stream_end(&sb->events, 0);
            }
        }
    }
    if (msg != sb->remote) {
        json_incref(msg);
        json_decref(sb->remote);
        sb->remote = msg;
    }
    for (size_t i = 0; i < nhooks; i++)
        if (hooks[i]->changed)
            hooks[i]->changed(sb);
    run_conts(sb);
    park_wake(&sb->events.readers);
}

/* ---- start ---- */

static void on_created(uint64_t call, const struct api_result *res, void *ud)
{
    struct sandbox *sb = ud;
    pthread_mutex_lock(&fs_lock);
    sb->create_inflight = 0;
    if (res->err) {
        sandbox_fail_call(sb, res, "start: CreateSandbox");
        /* Back to unstarted: the spec can be fixed and the start tried again. */
        sb->state = SB_UNSTARTED;
        fail_conts(sb, res->err, 0);
        fail_conts(sb, res->err, 1);
    } else {
        sandbox_update_from(sb, res->response);
        if (!sb->id) {
            sandbox_fail(sb, EIO, "start: CreateSandbox answered without a sandboxId");
            sb->state = SB_UNSTARTED; /* nothing was made that we know of: may retry */
            fail_conts(sb, -EIO, 0);
        } else if (needs_poll(sb)) {
            sb->poll_delay_ms = 0;
            sandbox_poll_schedule(sb, POLL_FIRST_MS);
        }
    }
    sandbox_unref(sb);
    pthread_mutex_unlock(&fs_lock);
}

static void sandbox_start(struct sandbox *sb)
{
    if (sb->create_inflight || sb->state != SB_UNSTARTED || sb->removed)
        return;
    sb->create_inflight = 1;
    sb->state = SB_PENDING;
    sandbox_events_line(sb);
    json_t *req =
        json_pack("{s:{s:O}, s:s}", "sandbox", "spec", sb->spec, "requestId", sb->request_id);
    sandbox_ref(sb);
    api_unary("CreateSandbox", req, API_IDEMPOTENT, on_created, sb);
}

int sandbox_spec_changed(struct sandbox *sb)
{
    /* A retried create must be the same create, but a changed spec is a new one: the
     * service may answer an old requestId with the old result. */
    char *rid = sandbox_new_request_id();
    if (!rid)
        return -ENOMEM;
    free(sb->request_id);
    sb->request_id = rid;
    return 0;
}

void sandbox_when_running(struct sandbox *sb, sandbox_ready_fn fn, void *ud)
{
    if (sb->state == SB_RUNNING) {
        fn(sb, 0, ud);
        return;
    }
    if (sandbox_is_terminal(sb->state) || sb->state == SB_TERMINATING || sb->state == SB_PAUSED) {
        char line[300];
        sandbox_status_line(sb, line, sizeof(line));
        fn(sb, sandbox_fail(sb, ESRCH, "sandbox is not running: %s", line), ud);
        return;
    }
    if (add_cont(sb, 0, fn, ud) < 0) {
        fn(sb, -ENOMEM, ud);
        return;
    }
    if (sb->state == SB_UNSTARTED)
        sandbox_start(sb);
    else
        sandbox_refresh(sb);
}

void sandbox_when_terminal(struct sandbox *sb, sandbox_ready_fn fn, void *ud)
{
    if (sandbox_is_terminal(sb->state)) {
        fn(sb, 0, ud);
        return;
    }
    if (sb->state == SB_UNSTARTED) {
        fn(sb, sandbox_fail(sb, ESRCH, "wait: the sandbox was never started"), ud);
        return;
    }
    if (add_cont(sb, 1, fn, ud) < 0) {
        fn(sb, -ENOMEM, ud);
        return;
    }
    sandbox_refresh(sb);
}
