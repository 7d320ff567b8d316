/* fsops_files.c - the FUSE operations on open files: the pseudo-files of the tree
 * (snapshot files rendered at open, streams read as they grow, ctl lines run as they
 * complete) and, through rootfs.h, a sandbox's own files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "ctl.h"
#include "fsops_int.h"
#include "fsreq.h"
#include "node.h"
#include "reader.h"
#include "rootfs.h"
#include "sandbox.h"
#include "tree.h"

/* `status` says what the service says: an open whose last answer is older than a
 * second waits for a GetSandbox (bounded by timeout=, interruptible), and reads
 * `unknown` when the service cannot be reached. It never waits for a change. */
struct status_open {
    struct fsreq fr;
    struct fuse_file_info fi;
    fuse_ino_t ino;
    struct handle *h;
};

/* Whatever the poll's outcome: a failed one shows in the status line and `error`. */
static void status_polled(struct sandbox *sb, int err, void *ud)
{
    struct status_open *so = ud;
    struct node *n = node_by_ino(so->ino);
    if (!fsreq_claim(&so->fr)) {
        fsops_handle_free(so->h); /* interrupted: answered already */
    } else if (!n) {
        fsops_handle_free(so->h);
        fuse_reply_err(so->fr.req, ENOENT);
    } else {
        so->h->text = tree_render(n);
        so->h->len = so->h->text ? strlen(so->h->text) : 0;
        fuse_reply_open(so->fr.req, &so->fi);
    }
    fsreq_end(&so->fr);
    free(so);
}

static void status_open_after_poll(fuse_req_t req, struct node *n, struct fuse_file_info *fi,
                                   struct handle *h)
{
    struct status_open *so = calloc(1, sizeof(*so));
    if (!so) {
        fsops_handle_free(h);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    so->fi = *fi;
    so->ino = n->ino;
    so->h = h;
    fsreq_start(&so->fr, req);
    sandbox_when_polled(n->sb, status_polled, so);
}

void fsops_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    pthread_mutex_lock(&fs_lock);
    struct node *n = node_by_ino(ino);
    int writing = (fi->flags & O_ACCMODE) != O_RDONLY;
    if (!n || tree_gone(n->sb)) {
        fuse_reply_err(req, ENOENT);
    } else if (n->kind == N_ROOTFS) {
        rootfs_open(req, n, fi);
    } else if (n->kind != N_FILE && n->kind != N_METRICS) {
        fuse_reply_err(req, EISDIR);
    } else if (writing && !(n->kind == N_FILE && n->file == P_CTL)) {
        fuse_reply_err(req, EACCES);
    } else if (n->exec_no && !exec_get(n->sb, n->exec_no)) {
        fuse_reply_err(req, ENOENT);
    } else {
        struct handle *h = fsops_handle_new();
        if (!h) {
            fuse_reply_err(req, ENOMEM);
        } else {
            h->nonblock = !!(fi->flags & O_NONBLOCK);
            fi->fh = (uintptr_t)h;
            fi->direct_io = 1;
            if (n->kind == N_FILE && n->file == P_STATUS && sandbox_status_stale(n->sb)) {
                status_open_after_poll(req, n, fi, h);
                pthread_mutex_unlock(&fs_lock);
                return;
            }
            if (!tree_is_stream(n)) {
                h->text = tree_render(n);
                h->len = h->text ? strlen(h->text) : 0;
            } else if (n->file == P_LOGS && n->sb->state != SB_UNSTARTED) {
                sandbox_logs_follow(n->sb);
            }
            if (tree_is_stream(n) && !h->nonblock)
                reader_open(req, n, fi, fsops_handle_free);
            else
                fuse_reply_open(req, fi);
        }
    }
    pthread_mutex_unlock(&fs_lock);
}

void fsops_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                  struct fuse_file_info *fi)
{
    pthread_mutex_lock(&fs_lock);
    struct node *p = node_by_ino(parent);
    if (!p || tree_gone(p->sb))
        fuse_reply_err(req, ENOENT);
    else if (p->kind == N_ROOTFS)
        rootfs_create(req, p, name, mode, fi);
    else
        fuse_reply_err(req, EACCES);
    pthread_mutex_unlock(&fs_lock);
}

void fsops_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    pthread_mutex_lock(&fs_lock);
    struct node *n = node_by_ino(ino);
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    if (!n) {
        fuse_reply_err(req, ENOENT);
    } else if (n->kind == N_ROOTFS) {
        rootfs_read(req, (struct rootfs_file *)(uintptr_t)fi->fh, size, off);
    } else if (tree_is_stream(n)) {
        reader_read(req, n, size, off, h->nonblock, &h->shift);
    } else if ((size_t)off >= h->len) {
        fuse_reply_buf(req, NULL, 0);
    } else {
        size_t len = h->len - (size_t)off;
        fuse_reply_buf(req, h->text + off, len < size ? len : size);
    }
    pthread_mutex_unlock(&fs_lock);
}

struct line_batch {
    char **lines;
    size_t *lens; /* a line may hold a NUL byte, which the parser refuses */
    size_t n;
};

static int collect_line(const char *line, size_t len, void *ud)
{
    struct line_batch *lb = ud;
    char **lines = realloc(lb->lines, (lb->n + 1) * sizeof(*lines));
    if (!lines)
        return -ENOMEM;
    lb->lines = lines;
    size_t *lens = realloc(lb->lens, (lb->n + 1) * sizeof(*lens));
    if (!lens)
        return -ENOMEM;
    lb->lens = lens;
    char *copy = malloc(len + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, line, len);
    copy[len] = '\0';
    lb->lines[lb->n] = copy;
    lb->lens[lb->n++] = len;
    return 0;
}

static void batch_free(struct line_batch *lb)
{
    for (size_t i = 0; i < lb->n; i++)
        free(lb->lines[i]);
    free(lb->lines);
    free(lb->lens);
}

void fsops_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                 struct fuse_file_info *fi)
{
    pthread_mutex_lock(&fs_lock);
    struct node *n = node_by_ino(ino);
    if (!n || tree_gone(n->sb)) {
        fuse_reply_err(req, ENOENT);
    } else if (n->kind == N_ROOTFS) {
        rootfs_write(req, (struct rootfs_file *)(uintptr_t)fi->fh, buf, size, off);
    } else if (n->kind != N_FILE || n->file != P_CTL) {
        fuse_reply_err(req, EBADF);
    } else {
        struct handle *h = (struct handle *)(uintptr_t)fi->fh;
        struct line_batch lb = {0};
        int rc = ctl_lines_feed(&h->lines, buf, size, collect_line, &lb);
        if (rc == -E2BIG) {
            sandbox_fail(n->sb, EINVAL, "ctl: a line longer than %u bytes was refused",
                         CTL_MAX_LINE);
            fuse_reply_err(req, EINVAL);
        } else if (rc < 0) {
            fuse_reply_err(req, -rc);
        } else if (lb.n == 0) {
            fuse_reply_write(req, size);
        } else {
            control_submit(n->sb, req, lb.lines, lb.lens, lb.n, (long)size);
        }
        batch_free(&lb);
    }
    pthread_mutex_unlock(&fs_lock);
}

void fsops_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    pthread_mutex_lock(&fs_lock);
    struct node *n = node_by_ino(ino);
    if (!n) {
        fuse_reply_err(req, 0);
    } else if (n->kind == N_ROOTFS) {
        rootfs_flush(req, (struct rootfs_file *)(uintptr_t)fi->fh);
    } else {
        fuse_reply_err(req, 0);
    }
    pthread_mutex_unlock(&fs_lock);
}

void fsops_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    pthread_mutex_lock(&fs_lock);
    struct node *n = node_by_ino(ino);
    if (n && n->kind == N_ROOTFS)
        rootfs_flush(req, (struct rootfs_file *)(uintptr_t)fi->fh);
    else
        fuse_reply_err(req, 0);
    pthread_mutex_unlock(&fs_lock);
}

void fsops_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    pthread_mutex_lock(&fs_lock);
    struct node *n = node_by_ino(ino);
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    if (n && n->kind == N_ROOTFS) {
        rootfs_release((struct rootfs_file *)(uintptr_t)fi->fh);
    } else {
        /* An unterminated last line runs at the last close. Not at FLUSH: that comes
         * at every close of every duplicate of the descriptor (a forked child exiting,
         * a shell's dup2 dance around a builtin), in the middle of a line. */
        struct line_batch lb = {0};
        if (n && n->kind == N_FILE && n->file == P_CTL && !tree_gone(n->sb) &&
            ctl_lines_finish(&h->lines, collect_line, &lb) == 0 && lb.n)
            control_submit(n->sb, NULL, lb.lines, lb.lens, lb.n, -1);
        batch_free(&lb);
        fsops_handle_free(h);
    }
    pthread_mutex_unlock(&fs_lock);
    fuse_reply_err(req, 0);
}
