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

#include "ctl.h"
#include "fs.h"
#include "fsops_int.h"
#include "fsreq.h"
#include "log.h"
#include "node.h"
#include "park.h"
#include "rootfs.h"
#include "sandbox.h"
#include "tree.h"

static struct fuse_session *fuse_se;
static struct handle *open_handles;

struct handle *fsops_handle_new(void)
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
    } else if (!(h = fsops_handle_new())) {
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
        struct handle *h = fsops_handle_new();
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

void fsops_handle_free(void *fh)
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
        fsops_handle_free((struct handle *)(uintptr_t)fi->fh);
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
    .open = fsops_open,
    .read = fsops_read,
    .write = fsops_write,
    .flush = fsops_flush,
    .release = fsops_release,
    .fsync = fsops_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .create = fsops_create,
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
        fsops_handle_free(open_handles);
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
