/* rootfs_file.c - contents of sandbox files, spooled on local disk: opening (fetching),
 * reading and writing the spool; rootfs_upload.c sends it back.
 *
 * open fetches the file (ReadFile up to the service's 32 MiB cap, a StreamExec `cat`
 * above it; read-only above it, rootfs_stream.c fetches it as it is read) into a spool
 * file; reads and writes work on the spool; flush and fsync
 * send it back (WriteFile, or StreamExec with the spool as stdin) and only then
 * answer, so close(2) reports a failed send. A file that could not be sent keeps its
 * spool, and the `error` file says where: nothing is dropped silently. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utlist.h>

#include "api.h"
#include "log.h"
#include "pbjson.h"
#include "execmsg.h"
#include "rootfs_int.h"

/* ---- open files ---- */

static struct rootfs_file *file_new(struct sandbox *sb, const char *path, int flags)
{
    struct rootfs_file *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->fd = -1;
    f->path = strdup(path);
    if (asprintf(&f->spool_path, "%s/file-XXXXXX", session.spool_dir) < 0)
        f->spool_path = NULL;
    if (!f->path || !f->spool_path || (f->fd = mkostemp(f->spool_path, O_CLOEXEC)) < 0) {
        free(f->path);
        free(f->spool_path);
        free(f);
        return NULL;
    }
    f->append = !!(flags & O_APPEND);
    /* `>>` and loggers: nothing is fetched, and each flush appends only the bytes
     * written since the last one inside the sandbox, so concurrent appenders through
     * the mount (or inside the sandbox) lose nothing and a big log does not travel.
     * O_RDWR|O_APPEND still fetches: its reads need the content. */
    f->appendonly = (flags & O_APPEND) && (flags & O_ACCMODE) == O_WRONLY && !(flags & O_TRUNC);
    f->mode = S_IFREG | 0644;
    f->sb = sb;
    sandbox_ref(sb);
    if (sb->dircache || (sb->dircache = calloc(1, sizeof(*sb->dircache))))
        DL_APPEND(sb->dircache->open_files, f);
    return f;
}

/* What every way of ending an open file does: its spool goes unless it keeps unsent data. */
static void file_destroy(struct rootfs_file *f)
{
    free(f->pending_mode);
    free(f->pending_mtime);
    if (f->fd >= 0)
        close(f->fd);
    if (!f->failed && f->spool_path)
        unlink(f->spool_path);
    free(f->path);
    free(f->spool_path);
    free(f);
}

void rootfs_file_free(struct rootfs_file *f)
{
    struct sandbox *sb = f->sb;
    if (sb->dircache)
        DL_DELETE(sb->dircache->open_files, f);
    file_destroy(f);
    sandbox_unref(sb);
}

void rootfs_file_abandon(struct rootfs_file *f)
{
    if (f->dirty) {
        f->failed = 1;
        log_warn("%s: %s was never sent to the sandbox; its data is kept in %s", f->sb->name,
                 f->path, f->spool_path);
    }
    file_destroy(f);
}

const char *rootfs_spool_full(int err)
{
    return outbuf_full(err) ? " full" : "";
}

int rootfs_write_all(int fd, const char *data, size_t len, off_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, data, len, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        data += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

int rootfs_outcome_take(struct rootfs_cmd_outcome *o, const struct execmsg *m)
{
    if (m->kind == EXECMSG_EXIT) {
        o->ended = 1;
        o->exit_code = m->exit_code;
    } else if (m->kind == EXECMSG_ERROR && !o->errtext) {
        o->errtext = strdup(m->error);
    } else if (m->kind == EXECMSG_OUTPUT && m->is_stderr && m->len && !o->errtext) {
        o->errtext = strndup(m->data, m->len > 500 ? 500 : m->len);
    } else if (m->kind == EXECMSG_OUTPUT && !m->is_stderr) {
        return 1;
    }
    return 0;
}

int rootfs_outcome_check(const struct rootfs_cmd_outcome *o, struct sandbox *sb, const char *what,
                         const char *path)
{
    if (o->ended && o->exit_code == 0)
        return 0;
    return sandbox_fail(sb, rootfs_errno_from_stderr(o->errtext), "%s %s: %s", what, path,
                        o->errtext ? o->errtext : "no exit code");
}

/* Fetching a file bigger than the cap: a StreamExec of `cat`, stdout into the spool. */
struct fetch_ctx {
    struct rootfs_req *rc;
    struct rootfs_file *f;
    off_t off;
    int spool_err; /* writing into the spool failed (-errno): the fetch was stopped */
    struct rootfs_cmd_outcome out;
    struct execbody body;
};

static void open_finish(struct rootfs_req *rc, int err)
{
    struct rootfs_file *f = rc->file;
    if (!fsreq_claim(&rc->fr)) { /* interrupted: the opener is gone */
        rootfs_file_free(f);
        rootfs_req_free(rc);
        return;
    }
    struct node *n = rc->creating && !err ? node_get(N_ROOTFS, 0, f->sb, 0, f->path) : NULL;
    if (rc->creating && !err && !n)
        err = -ENOMEM;
    if (err) {
        rootfs_file_free(f);
        fuse_reply_err(rc->fr.req, -err);
    } else if (n) {
        struct fuse_entry_param ep;
        memset(&ep, 0, sizeof(ep));
        node_looked_up(n);
        ep.ino = n->ino;
        rootfs_spool_attr(f, NULL, n->ino, &ep.attr);
        rc->fi.fh = (uintptr_t)f;
        rc->fi.keep_cache = 0;
        fuse_reply_create(rc->fr.req, &ep, &rc->fi);
    } else {
        rc->fi.fh = (uintptr_t)f;
        rc->fi.keep_cache = 0;
        fuse_reply_open(rc->fr.req, &rc->fi);
    }
    rootfs_req_free(rc);
}

static long fetch_body(uint64_t call, char *buf, size_t cap, void *ud)
{
    struct fetch_ctx *fc = ud;
    return execbody_read(&fc->body, buf, cap);
}

static int fetch_message(uint64_t call, json_t *msg, void *ud)
{
    struct fetch_ctx *fc = ud;
    struct execmsg m;
    int rc = 0;
    pthread_mutex_lock(&fs_lock);
    if (execmsg_parse(msg, &m) < 0) {
        rc = 1;
    } else if (rootfs_outcome_take(&fc->out, &m)) {
        int err = rootfs_write_all(fc->f->fd, m.data, m.len, fc->off);
        if (err < 0) {
            fc->spool_err = err;
            rc = 1;
        } else {
            fc->off += (off_t)m.len;
            session.bytes_read += m.len;
        }
    }
    execmsg_clear(&m);
    pthread_mutex_unlock(&fs_lock);
    return rc;
}

static void fetch_done(uint64_t call, const struct api_result *res, void *ud)
{
    struct fetch_ctx *fc = ud;
    pthread_mutex_lock(&fs_lock);
    struct sandbox *sb = fc->f->sb;
    int err = res->err;
    if (fc->rc->fr.interrupted) /* cancelled after an interrupt: nobody to tell */
        err = -EINTR;
    else if (fc->spool_err)
        err = sandbox_fail(sb, -fc->spool_err, "read %s: spool%s: %s", fc->f->path,
                           rootfs_spool_full(fc->spool_err), strerror(-fc->spool_err));
    else if (err)
        sandbox_fail_call(sb, res, "read %s: StreamExec", fc->f->path);
    else
        err = rootfs_outcome_check(&fc->out, sb, "read", fc->f->path);
    open_finish(fc->rc, err);
    free(fc->out.errtext);
    execbody_free(&fc->body);
    free(fc);
    pthread_mutex_unlock(&fs_lock);
}

static void fetch_when_running(struct sandbox *sb, int err, void *ud)
{
    struct fetch_ctx *fc = ud;
    const char *argv[] = {"cat", "--", fc->f->path, NULL};
    if (!err && fc->rc->fr.interrupted)
        err = -EINTR; /* interrupted while the sandbox started: fetch nothing */
    if (!err && execbody_init(&fc->body, sb->id, argv) < 0)
        err = -ENOMEM;
    if (err) {
        open_finish(fc->rc, err);
        free(fc);
        return;
    }
    fc->rc->fr.call = api_bidi("StreamExec", 0, fetch_body, fetch_message, fetch_done, fc);
}

/* The service refused a ReadFile/WriteFile for its size: CWSANDBOX_FILE_TOO_LARGE, or a
 * bare resource_exhausted (a cap in front of the service). StreamExec has no cap. */
int rootfs_too_large(const struct api_result *res)
{
    return res->err == -EFBIG ||
           (res->err && res->error.code && strcmp(res->error.code, "resource_exhausted") == 0 &&
            !res->error.reason);
}

static void on_read_file(uint64_t call, const struct api_result *res, void *ud)
{
    struct rootfs_req *rc = ud;
    pthread_mutex_lock(&fs_lock);
    struct rootfs_file *f = rc->file;
    int err = res->err;
    rc->fr.call = 0;
    if (rc->fr.interrupted && err) {
        open_finish(rc, err); /* cancelled after an interrupt: nobody to tell */
        pthread_mutex_unlock(&fs_lock);
        return;
    }
    if (rootfs_too_large(res)) {
        /* Above the cap after all (it grew since the listing, or this service's cap is
         * lower): stream it instead. */
        struct fetch_ctx *fc = calloc(1, sizeof(*fc));
        if (fc) {
            fc->rc = rc;
            fc->f = f;
            sandbox_when_running(f->sb, fetch_when_running, fc);
            pthread_mutex_unlock(&fs_lock);
            return;
        }
        err = -ENOMEM;
    }
    if (err == -ENOENT && (rc->flag & O_CREAT)) {
        err = 0; /* opened to write a file that is not there yet */
        f->dirty = 1;
    } else if (err) {
        sandbox_fail_call(f->sb, res, "read %s: ReadFile", f->path);
    } else {
        char *data = NULL;
        size_t len = 0;
        if (pbjson_get_bytes(res->response, "content", &data, &len) < 0)
            err = sandbox_fail(f->sb, EIO, "read %s: ReadFile answered bad base64", f->path);
        else if ((err = rootfs_write_all(f->fd, data, len, 0)) < 0)
            sandbox_fail(f->sb, -err, "read %s: spool%s: %s", f->path, rootfs_spool_full(err),
                         strerror(-err));
        else
            session.bytes_read += len;
        free(data);
    }
    open_finish(rc, err);
    pthread_mutex_unlock(&fs_lock);
}

static void read_file_when_running(struct sandbox *sb, int err, void *ud)
{
    struct rootfs_req *rc = ud;
    if (!err && rc->fr.interrupted)
        err = -EINTR; /* interrupted while the sandbox started: fetch nothing */
    if (err) {
        open_finish(rc, err);
        return;
    }
    json_t *req = json_pack("{s:s, s:s}", "sandboxId", sb->id, "path", rc->path);
    rc->fr.call = api_unary("ReadFile", req, API_IDEMPOTENT | API_SLOW, on_read_file, rc);
}

static void open_listed(struct sandbox *sb, int err, struct dirlist *dl, void *ud)
{
    struct rootfs_req *rc = ud;
    struct rf_entry *e = NULL;
    if (!err)
        HASH_FIND_STR(dl->entries, rootfs_path_base(rc->path), e);
    if (!err && e && S_ISDIR(e->st.st_mode))
        err = -EISDIR;
    if (!err && rc->fr.interrupted)
        err = -EINTR; /* interrupted while listing: fetch nothing */
    if (err) {
        open_finish(rc, err);
        return;
    }
    if (e && (uint64_t)e->st.st_size > ROOTFS_UNARY_CAP && (rc->fi.flags & O_ACCMODE) == O_RDONLY) {
        /* Read-only: fetched as it is read, the open answers now. */
        open_finish(rc, rootfs_stream_open(rc->file, &e->st));
        return;
    }
    if (e && (uint64_t)e->st.st_size > ROOTFS_UNARY_CAP) {
        struct fetch_ctx *fc = calloc(1, sizeof(*fc));
        if (!fc) {
            open_finish(rc, -ENOMEM);
            return;
        }
        fc->rc = rc;
        fc->f = rc->file;
        sandbox_when_running(sb, fetch_when_running, fc);
        return;
    }
    sandbox_when_running(sb, read_file_when_running, rc);
}

/* A path that is not UTF-8 cannot travel in a ReadFile, WriteFile or command. */
static int path_sendable(struct sandbox *sb, const char *path)
{
    if (pbjson_utf8_valid(path, strlen(path)))
        return 0;
    return sandbox_fail(sb, EILSEQ, "%s: not UTF-8; the service takes text only", path);
}

void rootfs_open(fuse_req_t req, struct node *n, struct fuse_file_info *fi)
{
    int err = path_sendable(n->sb, n->path);
    if (err) {
        fuse_reply_err(req, -err);
        return;
    }
    struct rootfs_req *rc = rootfs_req_new(req, n->path, NULL);
    struct rootfs_file *f = rc ? file_new(n->sb, n->path, fi->flags) : NULL;
    if (!f) {
        if (rc)
            rootfs_req_free(rc);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    rc->fi = *fi;
    rc->file = f;
    rc->flag = fi->flags;
    if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY) {
        /* Nothing to fetch: the content is about to be empty. */
        f->dirty = 1;
        open_finish(rc, 0);
        return;
    }
    if (f->appendonly) { /* nothing to fetch: only new bytes are sent */
        open_finish(rc, 0);
        return;
    }
    char *parent = rootfs_path_parent(n->path);
    if (!parent) {
        open_finish(rc, -ENOMEM);
        return;
    }
    rootfs_with_listing(n->sb, parent, open_listed, rc);
    free(parent);
}

static void create_listed(struct sandbox *sb, int err, struct dirlist *dl, void *ud)
{
    struct rootfs_req *rc = ud;
    struct rootfs_file *f = rc->file;
    if (!err && rc->fr.interrupted)
        err = -EINTR;
    if (err) {
        open_finish(rc, err);
        return;
    }
    struct rf_entry *e = NULL;
    HASH_FIND_STR(dl->entries, rootfs_path_base(f->path), e);
    if (e && (rc->fi.flags & O_EXCL)) {
        open_finish(rc, -EEXIST);
        return;
    }
    if (e && S_ISDIR(e->st.st_mode)) {
        open_finish(rc, -EISDIR);
        return;
    }
    if (e && !(rc->fi.flags & O_TRUNC)) {
        /* O_CREAT of a file that exists (made by a command since the kernel looked):
         * it is an open, content first. */
        char *path = strdup(f->path);
        if (!path) {
            open_finish(rc, -ENOMEM);
            return;
        }
        free(rc->path);
        rc->path = path;
        rc->creating = 1;
        rc->flag = rc->fi.flags;
        f->mode = e->st.st_mode;
        if (f->appendonly) {
            open_finish(rc, 0);
            return;
        }
        open_listed(sb, 0, dl, rc);
        return;
    }
    /* The kernel expects the new file's attributes now; it exists once flushed. */
    struct fuse_entry_param ep;
    memset(&ep, 0, sizeof(ep));
    struct node *n = node_get(N_ROOTFS, 0, sb, 0, f->path);
    if (!n) {
        open_finish(rc, -ENOMEM);
        return;
    }
    node_looked_up(n);
    f->dirty = 1;
    f->mode = e ? e->st.st_mode : S_IFREG | (rc->mode & 07777);
    if (!e && (rc->mode & 07777) != 0644) { /* O_CREAT's mode applies to new files only */
        char modebuf[16];
        snprintf(modebuf, sizeof(modebuf), "%o", rc->mode & 07777);
        f->pending_mode = strdup(modebuf);
    }
    ep.ino = n->ino;
    ep.attr.st_ino = n->ino;
    ep.attr.st_mode = f->mode;
    ep.attr.st_nlink = 1;
    clock_gettime(CLOCK_REALTIME, &ep.attr.st_mtim);
    ep.attr.st_ctim = ep.attr.st_atim = ep.attr.st_mtim;
    ep.attr_timeout = 0;
    ep.entry_timeout = 0;
    rc->fi.fh = (uintptr_t)f;
    rc->fi.keep_cache = 0;
    if (fsreq_claim(&rc->fr))
        fuse_reply_create(rc->fr.req, &ep, &rc->fi);
    else
        rootfs_file_free(f); /* interrupted: nobody holds it */
    rootfs_req_free(rc);
}

void rootfs_create(fuse_req_t req, struct node *parent, const char *name, mode_t mode,
                   struct fuse_file_info *fi)
{
    char *path = rootfs_path_join(parent->path, name);
    int err = path ? path_sendable(parent->sb, path) : 0;
    if (err) {
        free(path);
        fuse_reply_err(req, -err);
        return;
    }
    struct rootfs_req *rc = path ? rootfs_req_new(req, parent->path, name) : NULL;
    struct rootfs_file *f = rc ? file_new(parent->sb, path, fi->flags) : NULL;
    free(path);
    if (!f) {
        if (rc)
            rootfs_req_free(rc);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    rc->fi = *fi;
    rc->file = f;
    rc->mode = mode;
    rootfs_with_listing(parent->sb, parent->path, create_listed, rc);
}

void rootfs_read(fuse_req_t req, struct rootfs_file *f, size_t size, off_t off)
{
    if (f->stream) {
        rootfs_stream_read(f->stream, req, size, off);
        return;
    }
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    ssize_t n = pread(f->fd, buf, size, off);
    if (n < 0)
        fuse_reply_err(req, errno);
    else
        fuse_reply_buf(req, buf, (size_t)n);
    free(buf);
}

void rootfs_write(fuse_req_t req, struct rootfs_file *f, const char *buf, size_t size, off_t off)
{
    if (f->append) {
        struct stat st;
        if (fstat(f->fd, &st) < 0) {
            fuse_reply_err(req, errno);
            return;
        }
        off = st.st_size;
    }
    int rc = rootfs_write_all(f->fd, buf, size, off);
    if (rc < 0) {
        /* The spool now holds a part of what the program meant to write: sending it
         * would replace a good file with a truncated one. Every later flush and fsync
         * fails and the sandbox's file stays as it was. */
        if (!f->write_err)
            f->write_err = rc;
        f->failed = 1;
        sandbox_fail(f->sb, -rc,
                     "write %s: local spool %s: %s; the sandbox's file is left as it was", f->path,
                     f->spool_path, strerror(-rc));
        fuse_reply_err(req, -rc);
        return;
    }
    f->dirty = 1;
    f->epoch++;
    fuse_reply_write(req, size);
}
