/* rootfs_upload.c - a sandbox file's spool sent back at flush, fsync and close.
 *
 * Up to the service's 32 MiB cap one WriteFile replaces the file; above it a StreamExec
 * writes the spool as stdin to a temporary name beside the target, renamed over it once
 * whole, so a cut send never leaves a half-written file. A write-only O_APPEND file
 * sends only its new bytes, appended (`cat >>`). Flushes wait for the send and report
 * its outcome; a file that could not be sent keeps its spool, and `error` says where. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utlist.h>

#include "api.h"
#include "execmsg.h"
#include "log.h"
#include "pbjson.h"
#include "rootfs_int.h"

#define STREAM_CHUNK (1 << 20)

/* ---- sending a file back ---- */

#define UPLOAD_MAX_ATTEMPTS 3

struct upload_ctx {
    struct rootfs_file *f;
    uint64_t epoch;
    int fd; /* our own dup: the body callback reads it on the worker */
    off_t off, size;
    off_t start;             /* first spool byte sent: an append sends only what is new */
    int stage;               /* 0 head, 1 stdin chunks, 2 close, 3 done */
    int streamed;            /* StreamExec even under the cap (WriteFile refused the size) */
    int attempts;            /* StreamExec sends started */
    int checked;             /* WRITABLE_SCRIPT said the command can write there */
    struct execbody pending; /* the envelope being handed to curl */
    struct rootfs_cmd_outcome out;
};

/* A streamed replacement goes to a temporary name in the target's directory and is
 * renamed over it only once all of it arrived, so a send that fails or is cut leaves
 * the old file (a retry makes a new temporary). The mode is the old file's (as `cat >`
 * kept it) or the umask's for a new one; a link is written through, never replaced. */
#define REPLACE_SCRIPT                                                                             \
    "p=$1; if [ -L \"$p\" ]; then p=$(readlink -f -- \"$p\") || exit 1; fi; "                      \
    "t=$(mktemp \"$(dirname -- \"$p\")/.cwsfs.XXXXXX\") || exit 1; "                               \
    "trap 'rm -f -- \"$t\"; exit 1' HUP INT TERM PIPE; "                                           \
    "if [ -e \"$p\" ]; then m=$(stat -c %a -- \"$p\"); "                                           \
    "else m=$(printf %o $((0666 & ~0$(umask)))); fi; "                                             \
    "chmod \"$m\" \"$t\" && cat > \"$t\" && mv -f -- \"$t\" \"$p\" && exit 0; "                    \
    "rm -f -- \"$t\"; exit 1"

/* Before a StreamExec upload: can the command write there at all? Measured: a sandbox
 * that refuses the write at once (a read-only place, a sandbox gone) leaves this
 * libcurl sending a 32+ MiB body nobody reads until the stall detector gives up, three
 * times, a minute later and blaming a stall. One quick command first says why in ms:
 * the same mktemp (or the file's writability for an append), nothing left behind. */
#define WRITABLE_SCRIPT                                                                            \
    "p=$1; if [ -L \"$p\" ]; then p=$(readlink -f -- \"$p\") || exit 1; fi; "                      \
    "if [ \"$2\" = append ]; then [ ! -e \"$p\" ] || [ -w \"$p\" ] && exit 0; "                    \
    "echo \"$p: Permission denied\" >&2; exit 1; fi; "                                             \
    "t=$(mktemp \"$(dirname -- \"$p\")/.cwsfs.XXXXXX\") && rm -f -- \"$t\""

static void upload_start(struct rootfs_file *f);

static void flushes_answer(struct rootfs_file *f, int err)
{
    struct flush_wait *w, *tmp;
    LL_FOREACH_SAFE(f->flushes, w, tmp) {
        LL_DELETE(f->flushes, w);
        fsreq_reply_err(&w->fr, -err);
        fsreq_end(&w->fr);
        free(w);
    }
    if (f->released)
        rootfs_file_free(f);
}

static void pending_applied(struct sandbox *sb, int err, int code, const char *out, size_t outlen,
                            const char *errtext, void *ud)
{
    struct rootfs_file *f = ud;
    f->uploading = 0; /* set while the attributes were applied: the file is sent now */
    if (!err && code != 0)
        err = sandbox_fail(sb, rootfs_errno_from_stderr(errtext), "%s: %s", f->path, errtext);
    free(f->pending_mode);
    free(f->pending_mtime);
    f->pending_mode = f->pending_mtime = NULL;
    rootfs_cache_invalidate_parent(sb, f->path);
    flushes_answer(f, err);
}

/* Mode and times set on a file before it existed in the sandbox, applied once sent. */
static void apply_pending_attrs(struct rootfs_file *f)
{
    const char *argv[10] = {"sh", "-c", SETATTR_SCRIPT, "sh", f->path};
    size_t a = 5;
    if (f->pending_mode) {
        argv[a++] = "mode";
        argv[a++] = f->pending_mode;
    }
    if (f->pending_mtime) {
        argv[a++] = "mtime";
        argv[a++] = f->pending_mtime;
    }
    argv[a] = NULL;
    f->uploading = 1;
    rootfs_run_cmd(f->sb, argv, pending_applied, f);
}

/* err: how the send ended; said: `error` already holds that failure in the service's
 * (or the command's) words, which stay in front of where the data is kept. */
static void upload_finish(struct upload_ctx *uc, int err, int said)
{
    struct rootfs_file *f = uc->f;
    f->uploading = 0;
    if (!err && f->appendonly)
        f->sent = uc->size;
    if (!err && f->epoch == uc->epoch && !f->write_err) {
        f->dirty = 0;
        f->failed = 0;
    }
    if (err) {
        char *reason = said && f->sb->error ? strdup(f->sb->error) : NULL;
        f->failed = 1;
        sandbox_fail(f->sb, -err, "%s%s%s: not saved in the sandbox; the data is kept in %s",
                     reason ? reason : "", reason ? "; " : "", f->path, f->spool_path);
        free(reason);
    }
    rootfs_cache_invalidate_parent(f->sb, f->path);
    if (uc->fd >= 0)
        close(uc->fd);
    execbody_free(&uc->pending);
    free(uc->out.errtext);
    free(uc);
    if (f->write_err) { /* a write failed while sending: the rest is never sent */
        flushes_answer(f, f->write_err);
        return;
    }
    if (!err && f->dirty && !f->released) { /* written to while sending: send again */
        upload_start(f);
        return;
    }
    if (!err && (f->pending_mode || f->pending_mtime)) {
        apply_pending_attrs(f);
        return;
    }
    flushes_answer(f, err);
}

static void upload_when_running(struct sandbox *sb, int err, void *ud);

static void on_written(uint64_t call, const struct api_result *res, void *ud)
{
    struct upload_ctx *uc = ud;
    pthread_mutex_lock(&fs_lock);
    if (rootfs_too_large(res) && !uc->streamed) {
        uc->streamed = 1;
        log_info("%s: %s: WriteFile refused its size (%s); sending it through StreamExec",
                 uc->f->sb->name, uc->f->path, res->error.code);
        upload_when_running(uc->f->sb, 0, uc);
        pthread_mutex_unlock(&fs_lock);
        return;
    }
    if (res->err)
        sandbox_fail_call(uc->f->sb, res, "write %s: WriteFile", uc->f->path);
    upload_finish(uc, res->err, 1);
    pthread_mutex_unlock(&fs_lock);
}

/* Worker thread: envelopes of the spool's bytes, read through our own fd. */
static long upload_body(uint64_t call, char *buf, size_t cap, void *ud)
{
    struct upload_ctx *uc = ud;
    while (uc->pending.pos == uc->pending.len) {
        execbody_free(&uc->pending);
        if (uc->stage == 1 && uc->off < uc->size) {
            size_t want = (size_t)(uc->size - uc->off) < STREAM_CHUNK ? (size_t)(uc->size - uc->off)
                                                                      : STREAM_CHUNK;
            char *raw = malloc(want);
            ssize_t got = raw ? pread(uc->fd, raw, want, uc->off) : -1;
            if (got <= 0) {
                free(raw);
                return -EIO;
            }
            uc->off += got;
            int rc = execmsg_stdin(raw, (size_t)got, &uc->pending.data, &uc->pending.len);
            free(raw);
            if (rc < 0)
                return rc;
        } else if (uc->stage <= 1) {
            uc->stage = 2;
            if (execmsg_close(&uc->pending.data, &uc->pending.len) < 0)
                return -ENOMEM;
        } else {
            return 0;
        }
    }
    return execbody_read(&uc->pending, buf, cap);
}

static int upload_message(uint64_t call, json_t *msg, void *ud)
{
    struct upload_ctx *uc = ud;
    struct execmsg m;
    pthread_mutex_lock(&fs_lock);
    if (execmsg_parse(msg, &m) == 0 && rootfs_outcome_take(&uc->out, &m) && m.len &&
        !uc->out.errtext)
        uc->out.errtext = strndup(m.data, m.len > 500 ? 500 : m.len); /* cat says nothing */
    execmsg_clear(&m);
    pthread_mutex_unlock(&fs_lock);
    return 0;
}

static void upload_stream_done(uint64_t call, const struct api_result *res, void *ud)
{
    struct upload_ctx *uc = ud;
    pthread_mutex_lock(&fs_lock);
    int err = res->err;
    /* An append sent twice would be appended twice: never repeated. */
    if (err == -EHOSTUNREACH && uc->attempts < UPLOAD_MAX_ATTEMPTS && !uc->f->appendonly) {
        /* The whole content goes again (`cat >` rewrites the file), so a send whose end
         * got stuck (api.c) or whose connection broke can simply be repeated. */
        log_warn("%s: %s: sending again (%s)", uc->f->sb->name, uc->f->path,
                 res->error.message ? res->error.message : res->error.code);
        upload_when_running(uc->f->sb, 0, uc);
        pthread_mutex_unlock(&fs_lock);
        return;
    }
    if (err)
        sandbox_fail_call(uc->f->sb, res, "write %s: StreamExec", uc->f->path);
    else
        err = rootfs_outcome_check(&uc->out, uc->f->sb, "write", uc->f->path);
    if (!err)
        session.bytes_written += (uint64_t)(uc->size - uc->start);
    upload_finish(uc, err, 1);
    pthread_mutex_unlock(&fs_lock);
}

/* Every StreamExec try sends the whole content from its start (`cat >` rewrites the
 * file): nothing of an earlier try is kept. */
static void upload_stream_reset(struct upload_ctx *uc)
{
    if (uc->fd >= 0)
        close(uc->fd);
    uc->fd = -1;
    execbody_free(&uc->pending);
    uc->off = uc->start;
    free(uc->out.errtext);
    memset(&uc->out, 0, sizeof(uc->out));
}

static void upload_checked(struct sandbox *sb, int err, int code, const char *out, size_t outlen,
                           const char *errtext, void *ud)
{
    struct upload_ctx *uc = ud;
    int said = err != 0; /* rootfs_cmd said why a failed call failed */
    if (!err && code != 0) {
        err = sandbox_fail(sb, rootfs_errno_from_stderr(errtext), "write %s: %s", uc->f->path,
                           errtext && *errtext ? errtext : "cannot write there");
        said = 1;
    }
    if (err) {
        upload_finish(uc, err, said);
        return;
    }
    uc->checked = 1;
    upload_when_running(sb, 0, uc);
}

static void upload_when_running(struct sandbox *sb, int err, void *ud)
{
    struct upload_ctx *uc = ud;
    struct rootfs_file *f = uc->f;
    struct stat st;
    if (!err && fstat(f->fd, &st) < 0)
        err = -errno;
    if (err) {
        upload_finish(uc, err, 0);
        return;
    }
    uc->size = st.st_size;
    uc->epoch = f->epoch;
    uc->start = f->appendonly ? f->sent : 0;
    if ((uint64_t)st.st_size <= ROOTFS_UNARY_CAP && !uc->streamed && !f->appendonly) {
        char *data = malloc((size_t)st.st_size + 1);
        ssize_t got = data ? pread(f->fd, data, (size_t)st.st_size, 0) : -1;
        if (got != st.st_size) {
            free(data);
            upload_finish(uc, -EIO, 0);
            return;
        }
        json_t *req = json_pack("{s:s, s:s, s:o}", "sandboxId", sb->id, "path", f->path, "content",
                                pbjson_bytes(data, (size_t)got));
        free(data);
        session.bytes_written += (uint64_t)got;
        /* Writing the same bytes twice is harmless: retry like a read. */
        api_unary("WriteFile", req, API_IDEMPOTENT | API_SLOW, on_written, uc);
        return;
    }
    /* Only a body too big to be taken whole (beyond one chunk) can be left unread: a
     * `>>` of a few lines costs no extra call. */
    if (!uc->checked && uc->size - uc->start > STREAM_CHUNK) {
        const char *check[] = {
            "sh", "-c", WRITABLE_SCRIPT, "sh", f->path, f->appendonly ? "append" : "replace", NULL};
        rootfs_run_cmd(sb, check, upload_checked, uc);
        return;
    }
    /* Above the cap: stdin of a command that writes its input to the path ($1, never
     * pasted into the script), atomically (REPLACE_SCRIPT). */
    const char *argv[] = {"sh", "-c",    f->appendonly ? "cat >> \"$1\"" : REPLACE_SCRIPT,
                          "sh", f->path, NULL};
    upload_stream_reset(uc);
    uc->fd = dup(f->fd);
    if (uc->fd < 0 || execmsg_init(sb->id, argv, &uc->pending.data, &uc->pending.len) < 0) {
        upload_finish(uc, -EIO, 0);
        return;
    }
    uc->stage = 1;
    uc->attempts++;
    api_bidi("StreamExec", API_ENDS_WITH_BODY, upload_body, upload_message, upload_stream_done, uc);
}

static void upload_start(struct rootfs_file *f)
{
    struct upload_ctx *uc = calloc(1, sizeof(*uc));
    if (!uc) {
        struct flush_wait *w, *tmp;
        LL_FOREACH_SAFE(f->flushes, w, tmp) {
            LL_DELETE(f->flushes, w);
            fsreq_reply_err(&w->fr, ENOMEM);
            fsreq_end(&w->fr);
            free(w);
        }
        return;
    }
    uc->f = f;
    uc->fd = -1;
    f->uploading = 1;
    sandbox_when_running(f->sb, upload_when_running, uc);
}

void rootfs_flush(fuse_req_t req, struct rootfs_file *f)
{
    if (f->write_err && !f->uploading) {
        fuse_reply_err(req, -f->write_err);
        return;
    }
    if (!f->dirty && !f->uploading) {
        fuse_reply_err(req, 0);
        return;
    }
    struct flush_wait *w = calloc(1, sizeof(*w));
    if (!w) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fsreq_start(&w->fr, req);
    LL_APPEND(f->flushes, w);
    if (!f->uploading)
        upload_start(f);
}

void rootfs_release(struct rootfs_file *f)
{
    if (f->dirty && !f->failed && !f->uploading) {
        /* Released without a flush (the kernel may do that after an error): still
         * keep what was written. */
        f->failed = 1;
    }
    if (f->dirty && f->failed)
        log_warn("%s: %s was not saved in the sandbox; its data is kept in %s", f->sb->name,
                 f->path, f->spool_path);
    if (f->stream) {
        rootfs_stream_release(f->stream);
        return;
    }
    if (f->uploading) {
        /* The send in flight still needs the file; it frees it when it ends. */
        f->released = 1;
        return;
    }
    rootfs_file_free(f);
}
