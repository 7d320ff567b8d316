/* fsops.c - the FUSE low-level operations: the tree of DESIGN.md.
 *
 * Every callback takes fs_lock, looks its inode up, and either answers at once from
 * what is known here (pseudo-files, the tree) or hands the work to the modules that
 * make API calls (control.c, rootfs.c), which answer later from the API worker. No
 * callback waits on the network. Stream files (exec output, logs, events, exit)
 * answer reads with what exists, park the read when there is nothing yet, and EOF
 * once the stream ended; they stay seekable so `tail -f` can start at the end. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <utlist.h>

#include "api.h"
#include "control.h"
#include "ctl.h"
#include "fs.h"
#include "fsreq.h"
#include "log.h"
#include "node.h"
#include "park.h"
#include "reader.h"
#include "rootfs.h"
#include "sandbox.h"
#include "tree.h"

struct dirent_snap {
    char *name;
    struct stat st;
};

/* An open pseudo-file or pseudo-directory. rootfs nodes use rootfs.c's handles. */
struct handle {
    struct handle *prev, *next; /* in open_handles, freed at fs_free if never released */
    char *text;                 /* snapshot files: rendered once at open */
    size_t len;
    int nonblock;
    uint64_t shift;           /* streams: see reader_read */
    struct ctl_lines lines;   /* ctl */
    struct dirent_snap *ents; /* directories */
    size_t nents;
};

static struct fuse_session *fuse_se;
static struct handle *open_handles;

static struct handle *handle_new(void)
{
    struct handle *h = calloc(1, sizeof(*h));
    if (h)
        DL_APPEND(open_handles, h);
    return h;
}

/* ---- attributes ---- */

static int reply_entry_for(fuse_req_t req, struct node *n)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    int rc = tree_attr(n, &e.attr);
    if (rc < 0)
        return rc;
    node_looked_up(n);
    e.ino = n->ino;
    e.attr_timeout = tree_attr_timeout(n);
    e.entry_timeout = TREE_DIR_TIMEOUT;
    fuse_reply_entry(req, &e);
    return 0;
}

/* ---- lookup ---- */

struct lookup_ctx {
    struct fsreq fr;
    char *name;
};

static void lookup_after_list(struct sandbox *unused, int err, void *ud)
{
    struct lookup_ctx *lc = ud;
    struct node *parent = node_by_ino(FUSE_ROOT_ID);
    struct node *n = tree_child(parent, lc->name);
    if (fsreq_claim(&lc->fr) && (!n || reply_entry_for(lc->fr.req, n) < 0))
        fuse_reply_err(lc->fr.req, ENOENT);
    fsreq_end(&lc->fr);
    free(lc->name);
    free(lc);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    pthread_mutex_lock(&fs_lock);
    struct node *p = node_by_ino(parent);
    if (!p || tree_gone(p->sb)) {
        fuse_reply_err(req, ENOENT);
    } else if (p->kind == N_ROOTFS) {
        rootfs_lookup(req, p->sb, p->path, name);
    } else {
        struct node *n = tree_child(p, name);
        if (n && reply_entry_for(req, n) == 0) {
            /* answered */
        } else if (p->kind == N_MOUNT && name[0] != '.' && !session.list_fetched.tv_sec) {
            /* Before the session's first listing (primed at mount) has come back, the
             * name may be one of its sandboxes: wait for it. Later, an unknown name is
             * simply not there, so `mkdir NAME` costs no call; `ls MNT` refreshes. */
            struct lookup_ctx *lc = calloc(1, sizeof(*lc));
            if (lc && (lc->name = strdup(name))) {
                fsreq_start(&lc->fr, req);
                sandbox_list_refresh(lookup_after_list, lc);
            } else {
                free(lc);
                fuse_reply_err(req, ENOMEM);
            }
        } else {
            fuse_reply_err(req, ENOENT);
        }
    }
    pthread_mutex_unlock(&fs_lock);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    pthread_mutex_lock(&fs_lock);
    struct node *n = node_by_ino(ino);
    if (n)
        node_forget(n, nlookup);
    pthread_mutex_unlock(&fs_lock);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    pthread_mutex_lock(&fs_lock);
    for (size_t i = 0; i < count; i++) {
        struct node *n = node_by_ino(forgets[i].ino);
        if (n)
            node_forget(n, forgets[i].nlookup);
    }
    pthread_mutex_unlock(&fs_lock);
    fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    pthread_mutex_lock(&fs_lock);
    struct node *n = node_by_ino(ino);
    struct stat st;
    int rc;
    if (!n) {
        fuse_reply_err(req, ENOENT);
    } else if (n->kind == N_ROOTFS) {
        if (tree_gone(n->sb))
            fuse_reply_err(req, ENOENT);
        else
            rootfs_getattr(req, n);
    } else {
        /* A stat of `logs` (not a listing's or a lookup's: `rm -r` does those) follows
         * the main process's output, so that its size is what it printed. */
        if (n->kind == N_FILE && n->file == P_LOGS && n->sb->state != SB_UNSTARTED &&
            !tree_gone(n->sb))
            sandbox_logs_follow(n->sb);
        if ((rc = tree_attr(n, &st)) < 0)
            fuse_reply_err(req, -rc);
        else
            fuse_reply_attr(req, &st, tree_attr_timeout(n));
    }
    pthread_mutex_unlock(&fs_lock);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    pthread_mutex_lock(&fs_lock);
    struct node *n = node_by_ino(ino);
    struct stat st;
    if (!n || tree_gone(n->sb)) {
        fuse_reply_err(req, ENOENT);
    } else if (n->kind == N_ROOTFS) {
        rootfs_setattr(req, n, attr, to_set, fi ? (struct rootfs_file *)(uintptr_t)fi->fh : NULL);
    } else if (to_set &
               ~(FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
                 FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME)) {
        fuse_reply_err(req, EPERM);
    } else if ((to_set & FUSE_SET_ATTR_SIZE) && !(n->kind == N_FILE && n->file == P_CTL)) {
        fuse_reply_err(req, EACCES);
    } else if (tree_attr(n, &st) < 0) {
        fuse_reply_err(req, ENOENT);
    } else {
        /* `> ctl` truncates: accepted, nothing to do; touch is harmless too. */
        fuse_reply_attr(req, &st, tree_attr_timeout(n));
    }
    pthread_mutex_unlock(&fs_lock);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    pthread_mutex_lock(&fs_lock);
    struct node *n = node_by_ino(ino);
    char *target = NULL;
    if (!n || tree_gone(n->sb)) {
        fuse_reply_err(req, ENOENT);
    } else if (n->kind == N_ROOTFS) {
        rootfs_readlink(req, n);
    } else if (n->kind != N_LINK) {
        fuse_reply_err(req, EINVAL);
    } else if (!(target = tree_link_target(n))) {
        fuse_reply_err(req, ENOMEM);
    } else {
        fuse_reply_readlink(req, target);
        free(target);
    }
    pthread_mutex_unlock(&fs_lock);
}

/* ---- directories ---- */

static void snap_add(void *ud, const char *name, struct node *n)
{
    struct handle *h = ud;
    struct dirent_snap *grown = realloc(h->ents, (h->nents + 1) * sizeof(*grown));
    if (!grown)
        return;
    h->ents = grown;
    struct dirent_snap *d = &h->ents[h->nents];
    memset(d, 0, sizeof(*d));
    if (n && tree_attr(n, &d->st) < 0)
        return;
    if (!n) {
        d->st.st_mode = S_IFDIR;
        d->st.st_ino = FUSE_ROOT_ID; /* "." and "..": readdir(3) hides d_ino 0 */
    }
    if (!(d->name = strdup(name)))
        return;
    h->nents++;
}

struct opendir_ctx {
    struct fsreq fr;
    struct fuse_file_info fi;
};

static void opendir_after_list(struct sandbox *unused, int err, void *ud)
{
    struct opendir_ctx *oc = ud;
    struct handle *h = NULL;
    if (!fsreq_claim(&oc->fr)) {
        /* interrupted: answered already */
    } else if (!(h = handle_new())) {
        fuse_reply_err(oc->fr.req, ENOMEM);
    } else {
        tree_list(node_by_ino(FUSE_ROOT_ID), snap_add, h);
        oc->fi.fh = (uintptr_t)h;
        fuse_reply_open(oc->fr.req, &oc->fi);
    }
    fsreq_end(&oc->fr);
    free(oc);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    pthread_mutex_lock(&fs_lock);
    struct node *n = node_by_ino(ino);
    if (!n || tree_gone(n->sb)) {
        fuse_reply_err(req, ENOENT);
    } else if (n->kind == N_ROOTFS) {
        rootfs_opendir(req, n, fi);
    } else if (n->kind == N_MOUNT) {
        struct opendir_ctx *oc = calloc(1, sizeof(*oc));
        if (!oc) {
            fuse_reply_err(req, ENOMEM);
        } else {
            fsreq_start(&oc->fr, req);
            oc->fi = *fi;
            sandbox_list_refresh(opendir_after_list, oc);
        }
    } else {
        struct handle *h = handle_new();
        if (!h) {
            fuse_reply_err(req, ENOMEM);
        } else {
            tree_list(n, snap_add, h);
            fi->fh = (uintptr_t)h;
            fuse_reply_open(req, fi);
        }
    }
    pthread_mutex_unlock(&fs_lock);
}

static void pseudo_readdir(fuse_req_t req, struct node *dir, struct handle *h, size_t size,
                           off_t off, int plus)
{
    char *buf = malloc(size);
    size_t used = 0;
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    for (off_t i = off; i < (off_t)h->nents; i++) {
        struct dirent_snap *d = &h->ents[i];
        size_t need;
        if (plus) {
            struct fuse_entry_param e = {.attr = d->st};
            need = fuse_add_direntry_plus(req, NULL, 0, d->name, NULL, 0);
            if (used + need > size)
                break;
            if (i >= 2) {
                struct node *c = dir->kind == N_DOTROOT ? NULL : tree_child(dir, d->name);
                if (c && tree_attr(c, &e.attr) == 0) {
                    node_looked_up(c);
                    e.ino = c->ino;
                    e.attr_timeout = tree_attr_timeout(c);
                    e.entry_timeout = TREE_DIR_TIMEOUT;
                }
            }
            need = fuse_add_direntry_plus(req, buf + used, size - used, d->name, &e, i + 1);
        } else {
            need = fuse_add_direntry(req, buf + used, size - used, d->name, &d->st, i + 1);
        }
        if (used + need > size)
            break;
        used += need;
    }
    fuse_reply_buf(req, buf, used);
    free(buf);
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi, int plus)
{
    pthread_mutex_lock(&fs_lock);
    struct node *n = node_by_ino(ino);
    if (!n)
        fuse_reply_err(req, ENOENT);
    else if (n->kind == N_ROOTFS)
        rootfs_readdir(req, (struct rootfs_dir *)(uintptr_t)fi->fh, size, off, plus);
    else
        pseudo_readdir(req, n, (struct handle *)(uintptr_t)fi->fh, size, off, plus);
    pthread_mutex_unlock(&fs_lock);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    do_readdir(req, ino, size, off, fi, 0);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    do_readdir(req, ino, size, off, fi, 1);
}

static void handle_free(void *fh)
{
    struct handle *h = fh;
    DL_DELETE(open_handles, h);
    for (size_t i = 0; i < h->nents; i++)
        free(h->ents[i].name);
    free(h->ents);
    free(h->text);
    ctl_lines_free(&h->lines);
    free(h);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    pthread_mutex_lock(&fs_lock);
    struct node *n = node_by_ino(ino);
    if (n && n->kind == N_ROOTFS)
        rootfs_releasedir((struct rootfs_dir *)(uintptr_t)fi->fh);
    else
        handle_free((struct handle *)(uintptr_t)fi->fh);
    pthread_mutex_unlock(&fs_lock);
    fuse_reply_err(req, 0);
}

/* ---- making and removing ---- */

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    pthread_mutex_lock(&fs_lock);
    struct node *p = node_by_ino(parent);
    struct sandbox *sb;
    int rc;
    if (!p || tree_gone(p->sb)) {
        fuse_reply_err(req, ENOENT);
    } else if (p->kind == N_ROOTFS) {
        rootfs_mkdir(req, p, name, mode);
    } else if (p->kind != N_MOUNT) {
        fuse_reply_err(req, EPERM);
    } else if ((rc = sandbox_create_local(name, &sb)) < 0) {
        fuse_reply_err(req, -rc);
    } else {
        log_info("%s: made (unstarted)", name);
        struct node *n = node_get(N_SBDIR, 0, sb, 0, NULL);
        if (!n || reply_entry_for(req, n) < 0)
            fuse_reply_err(req, ENOMEM);
    }
    pthread_mutex_unlock(&fs_lock);
}

struct rmdir_ctx {
    struct fsreq fr;
};

/* The stop goes on after an interrupt: the sandbox is removed when it ends. */
static void rmdir_stopped(struct sandbox *sb, int err, void *ud)
{
    struct rmdir_ctx *rc = ud;
    if (err == 0 || err == -ENOENT) {
        log_info("%s: removed", sb->name);
        sandbox_remove(sb);
        err = 0;
    }
    fsreq_reply_err(&rc->fr, -err);
    fsreq_end(&rc->fr);
    free(rc);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    pthread_mutex_lock(&fs_lock);
    struct node *p = node_by_ino(parent);
    struct sandbox *sb;
    if (!p || tree_gone(p->sb)) {
        fuse_reply_err(req, ENOENT);
    } else if (p->kind == N_ROOTFS) {
        rootfs_unlink(req, p, name, 1);
    } else if (p->kind == N_MOUNT) {
        if (!(sb = sandbox_find(name))) {
            fuse_reply_err(req, ENOENT);
        } else if (!sb->id || sandbox_is_terminal(sb->state)) {
            if (sb->create_inflight) {
                fuse_reply_err(req, EBUSY);
            } else {
                sandbox_remove(sb);
                fuse_reply_err(req, 0);
            }
        } else {
            struct rmdir_ctx *rc = calloc(1, sizeof(*rc));
            if (!rc) {
                fuse_reply_err(req, ENOMEM);
            } else {
                fsreq_start(&rc->fr, req);
                sandbox_stop(sb, -1, rmdir_stopped, rc);
            }
        }
    } else if (p->kind == N_SBDIR || p->kind == N_EXECS) {
        /* exec/ and exec/N are not contents (cgroupfs-like): rm -r passes them. */
        fuse_reply_err(req, tree_child(p, name) ? 0 : ENOENT);
    } else {
        fuse_reply_err(req, EPERM);
    }
    pthread_mutex_unlock(&fs_lock);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    pthread_mutex_lock(&fs_lock);
    struct node *p = node_by_ino(parent);
    if (!p || tree_gone(p->sb))
        fuse_reply_err(req, ENOENT);
    else if (p->kind == N_ROOTFS)
        rootfs_unlink(req, p, name, 0);
    else if (p->kind == N_SBDIR || p->kind == N_EXECDIR)
        /* Pseudo-files are not contents: unlinking them succeeds and changes nothing,
         * so `rm -r NAME` reaches the rmdir that stops the sandbox. */
        fuse_reply_err(req, tree_child(p, name) ? 0 : ENOENT);
    else
        fuse_reply_err(req, EPERM);
    pthread_mutex_unlock(&fs_lock);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    pthread_mutex_lock(&fs_lock);
    struct node *p = node_by_ino(parent), *np = node_by_ino(newparent);
    if (!p || !np || tree_gone(p->sb))
        fuse_reply_err(req, ENOENT);
    else if (p->kind != N_ROOTFS || np->kind != N_ROOTFS)
        fuse_reply_err(req, EPERM);
    else if (p->sb != np->sb)
        fuse_reply_err(req, EXDEV);
    else if (flags)
        fuse_reply_err(req, EINVAL); /* no RENAME_NOREPLACE/EXCHANGE in one mv */
    else
        rootfs_rename(req, p, name, np, newname);
    pthread_mutex_unlock(&fs_lock);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    pthread_mutex_lock(&fs_lock);
    struct node *p = node_by_ino(parent);
    if (p && p->kind == N_ROOTFS && !tree_gone(p->sb))
        rootfs_symlink(req, link, p, name);
    else
        fuse_reply_err(req, EPERM);
    pthread_mutex_unlock(&fs_lock);
}

static void op_not_supported(fuse_req_t req)
{
    fuse_reply_err(req, ENOTSUP);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    op_not_supported(req);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    op_not_supported(req);
}

/* ---- files ---- */

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
        handle_free(so->h); /* interrupted: answered already */
    } else if (!n) {
        handle_free(so->h);
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
        handle_free(h);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    so->fi = *fi;
    so->ino = n->ino;
    so->h = h;
    fsreq_start(&so->fr, req);
    sandbox_when_polled(n->sb, status_polled, so);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
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
        struct handle *h = handle_new();
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
                reader_open(req, n, fi, handle_free);
            else
                fuse_reply_open(req, fi);
        }
    }
    pthread_mutex_unlock(&fs_lock);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
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

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
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

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
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

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
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

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    pthread_mutex_lock(&fs_lock);
    struct node *n = node_by_ino(ino);
    if (n && n->kind == N_ROOTFS)
        rootfs_flush(req, (struct rootfs_file *)(uintptr_t)fi->fh);
    else
        fuse_reply_err(req, 0);
    pthread_mutex_unlock(&fs_lock);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
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
        handle_free(h);
    }
    pthread_mutex_unlock(&fs_lock);
    fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct statvfs st = {.f_bsize = 4096, .f_frsize = 4096, .f_namemax = 255};
    fuse_reply_statfs(req, &st);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    op_not_supported(req);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    op_not_supported(req);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    op_not_supported(req);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    op_not_supported(req);
}

static void op_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock)
{
    op_not_supported(req);
}

static void op_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock,
                     int sleep)
{
    op_not_supported(req);
}

static void op_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
    op_not_supported(req);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    /* Locks are not supported: ask the kernel to send them so they fail (ENOTSUP)
     * instead of silently working on this machine only. */
    if (conn->capable & FUSE_CAP_POSIX_LOCKS)
        conn->want |= FUSE_CAP_POSIX_LOCKS;
    if (conn->capable & FUSE_CAP_FLOCK_LOCKS)
        conn->want |= FUSE_CAP_FLOCK_LOCKS;
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    /* Bigger writes: fewer round trips for cp into a sandbox. */
    conn->max_write = 1u << 20;
    _Static_assert(CTL_MAX_LINE <= (1u << 20) / 2,
                   "a long ctl line must fail one write's first chunk");
}

const struct fuse_lowlevel_ops fs_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .create = op_create,
    .getlk = op_getlk,
    .setlk = op_setlk,
    .flock = op_flock,
};

/* ---- life cycle ---- */

int fs_init(const struct fs_options *opts)
{
    static char *default_tags[] = {SANDBOX_DEFAULT_TAG};
    session.opts = *opts;
    session.tags = opts->ntags ? opts->tags : default_tags;
    session.ntags = opts->ntags ? opts->ntags : 1;
    if (opts->window_mib > 0)
        rootfs_window = opts->window_mib << 20;
    sandbox_add_hooks(&exec_hooks);
    sandbox_add_hooks(&logs_hooks);
    sandbox_add_hooks(&rootfs_hooks);
    const char *base = opts->spool_dir ? opts->spool_dir : getenv("XDG_RUNTIME_DIR");
    if (!base || access(base, W_OK) != 0)
        base = "/tmp";
    if (asprintf(&session.spool_dir, "%s/cwsfs-spool-XXXXXX", base) < 0)
        return -ENOMEM;
    if (!mkdtemp(session.spool_dir)) {
        int err = errno;
        log_error("cannot make a spool directory under %s: %s", base, strerror(err));
        free(session.spool_dir);
        session.spool_dir = NULL;
        return -err;
    }
    /* Each exec's output and each open file is a spool file: allow many. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    node_init();
    return 0;
}

void fs_set_session(struct fuse_session *se)
{
    fuse_se = se;
}

void fs_api_started(void)
{
    sandbox_list_prime();
}

void fs_destroy(void)
{
    if (session.opts.cleanup)
        sandbox_cleanup_all();
}

void fs_free(void)
{
    pthread_mutex_lock(&fs_lock);
    park_drain();
    while (open_handles) /* open when the kernel went away: no release will come */
        handle_free(open_handles);
    node_destroy_all();
    struct sandbox *sb, *tmp;
    HASH_ITER(hh, session.by_name, sb, tmp)
        sandbox_remove(sb);
    sandbox_free_all();
    pthread_mutex_unlock(&fs_lock);
    if (session.spool_dir && rmdir(session.spool_dir) < 0 && errno == ENOTEMPTY)
        log_warn("the spool %s keeps files that could not be sent; see the log above",
                 session.spool_dir);
    free(session.spool_dir);
    session.spool_dir = NULL;
}
