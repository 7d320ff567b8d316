/* rootfs.c - the names in a sandbox's filesystem: lookup, stat, readdir, mkdir,
 * unlink, rename, symlink, chmod/truncate/touch. Answers come from the listing cache
 * (rootfs_cache.c); changes are one command each (rootfs_cmd.c), after which the
 * directories involved are listed afresh. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utlist.h>

#include "rootfs_int.h"

/* ---- lookup, getattr, readlink ---- */

static void fill_entry(struct sandbox *sb, const char *path, const struct rf_entry *e,
                       struct fuse_entry_param *ep)
{
    memset(ep, 0, sizeof(*ep));
    struct node *n = node_get(N_ROOTFS, 0, sb, 0, path);
    if (!n)
        return;
    node_looked_up(n);
    ep->ino = n->ino;
    ep->attr = e->st;
    ep->attr.st_ino = n->ino;
    ep->attr_timeout = ROOTFS_ATTR_TTL(&ep->attr);
    ep->entry_timeout = ROOTFS_ATTR_TIMEOUT;
}

static void root_attr(struct sandbox *sb, struct stat *st, fuse_ino_t ino)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    st->st_mtim = sb->mtime;
    st->st_ctim = sb->mtime;
    st->st_atim = sb->mtime;
}

struct rootfs_req *rootfs_req_new(fuse_req_t req, const char *path, const char *name)
{
    struct rootfs_req *rc = calloc(1, sizeof(*rc));
    if (!rc)
        return NULL;
    fsreq_start(&rc->fr, req);
    rc->path = path ? strdup(path) : NULL;
    rc->name = name ? strdup(name) : NULL;
    return rc;
}

void rootfs_req_free(struct rootfs_req *rc)
{
    fsreq_end(&rc->fr);
    free(rc->path);
    free(rc->name);
    free(rc);
}

static void lookup_listed(struct sandbox *sb, int err, struct dirlist *dl, void *ud)
{
    struct rootfs_req *rc = ud;
    struct rf_entry *e = NULL;
    if (!err)
        HASH_FIND_STR(dl->entries, rc->name, e);
    char *path = rootfs_path_join(rc->path, rc->name);
    struct rootfs_file *of = path ? rootfs_open_file(sb, path, 0) : NULL;
    if (of && !e && !of->dirty && !of->uploading)
        of = NULL; /* open here, but gone from the sandbox */
    if (!err && !e && !of && !rc->relisted && rootfs_ms_since(&dl->fetched) > 50) {
        /* A cached listing may predate a command that made the name: ask again. */
        rc->relisted = 1;
        free(path);
        rootfs_cache_invalidate(sb, rc->path);
        rootfs_with_listing(sb, rc->path, lookup_listed, rc);
        return;
    }
    struct fuse_entry_param ep;
    memset(&ep, 0, sizeof(ep));
    if (!path) {
        fsreq_reply_err(&rc->fr, ENOMEM);
    } else if (of) {
        struct node *n = node_get(N_ROOTFS, 0, sb, 0, path);
        if (n) {
            node_looked_up(n);
            ep.ino = n->ino;
            rootfs_spool_attr(of, e ? &e->st : NULL, n->ino, &ep.attr);
            if (fsreq_claim(&rc->fr))
                fuse_reply_entry(rc->fr.req, &ep);
        } else {
            fsreq_reply_err(&rc->fr, ENOMEM);
        }
    } else if (err) {
        fsreq_reply_err(&rc->fr, -err);
    } else if (!e) {
        fsreq_reply_err(&rc->fr, ENOENT);
    } else {
        fill_entry(sb, path, e, &ep);
        if (!ep.ino)
            fsreq_reply_err(&rc->fr, ENOMEM);
        else if (fsreq_claim(&rc->fr))
            fuse_reply_entry(rc->fr.req, &ep);
    }
    free(path);
    rootfs_req_free(rc);
}

void rootfs_lookup(fuse_req_t req, struct sandbox *sb, const char *dir, const char *name)
{
    struct rootfs_req *rc = rootfs_req_new(req, dir, name);
    if (!rc) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    rootfs_with_listing(sb, dir, lookup_listed, rc);
}

void rootfs_getattr_listed(struct sandbox *sb, int err, struct dirlist *dl, void *ud)
{
    struct rootfs_req *rc = ud;
    struct rf_entry *e = NULL;
    struct rootfs_file *uf = rc->flag ? NULL : rootfs_open_file(sb, rc->path, 0);
    if (!err)
        HASH_FIND_STR(dl->entries, rootfs_path_base(rc->path), e);
    if (uf && !e && !uf->dirty && !uf->uploading)
        uf = NULL;
    if (uf) {
        struct stat st;
        struct node *n = node_get(N_ROOTFS, 0, sb, 0, rc->path);
        rootfs_spool_attr(uf, e ? &e->st : NULL, n ? n->ino : 0, &st);
        if (fsreq_claim(&rc->fr))
            fuse_reply_attr(rc->fr.req, &st, 0);
    } else if (err) {
        fsreq_reply_err(&rc->fr, -err);
    } else if (!e) {
        fsreq_reply_err(&rc->fr, ENOENT);
    } else if (rc->flag) { /* readlink */
        if (!S_ISLNK(e->st.st_mode))
            fsreq_reply_err(&rc->fr, EINVAL);
        else if (fsreq_claim(&rc->fr))
            fuse_reply_readlink(rc->fr.req, e->link);
    } else {
        struct stat st = e->st;
        struct node *n = node_get(N_ROOTFS, 0, sb, 0, rc->path);
        st.st_ino = n ? n->ino : 0;
        if (fsreq_claim(&rc->fr))
            fuse_reply_attr(rc->fr.req, &st, ROOTFS_ATTR_TTL(&st));
    }
    rootfs_req_free(rc);
}

static void stat_path(fuse_req_t req, struct sandbox *sb, const char *path, int readlink)
{
    struct rootfs_req *rc = rootfs_req_new(req, path, NULL);
    char *parent = rootfs_path_parent(path);
    if (!rc || !parent) {
        if (rc)
            rootfs_req_free(rc);
        free(parent);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    rc->flag = readlink;
    rootfs_with_listing(sb, parent, rootfs_getattr_listed, rc);
    free(parent);
}

void rootfs_getattr(fuse_req_t req, struct node *n)
{
    if (strcmp(n->path, "/") == 0) {
        struct stat st;
        root_attr(n->sb, &st, n->ino);
        fuse_reply_attr(req, &st, ROOTFS_ATTR_TIMEOUT);
        return;
    }
    struct rootfs_file *uf = rootfs_open_file(n->sb, n->path, 1);
    if (!uf && (uf = rootfs_open_file(n->sb, n->path, 0)) && !uf->stream)
        uf = NULL;
    /* No need to ask the sandbox: our spool is the truth, or (a big file being read)
     * what was listed at its open. */
    if (uf) {
        struct stat st;
        rootfs_spool_attr(uf, NULL, n->ino, &st);
        fuse_reply_attr(req, &st, 0);
        return;
    }
    stat_path(req, n->sb, n->path, 0);
}

void rootfs_readlink(fuse_req_t req, struct node *n)
{
    stat_path(req, n->sb, n->path, 1);
}

/* ---- directories ---- */

struct rootfs_dir {
    struct sandbox *sb;
    char *path;
    size_t n;
    char **names;
    struct stat *st;
};

static void opendir_listed(struct sandbox *sb, int err, struct dirlist *dl, void *ud)
{
    struct rootfs_req *rc = ud;
    struct rootfs_dir *d = NULL;
    if (err)
        goto fail;
    err = -ENOMEM;
    d = calloc(1, sizeof(*d));
    size_t count = HASH_COUNT(dl->entries);
    if (!d || !(d->path = strdup(rc->path)) || !(d->names = calloc(count + 1, sizeof(char *))) ||
        !(d->st = calloc(count + 1, sizeof(struct stat))))
        goto fail;
    for (struct rf_entry *e = dl->entries; e; e = e->hh.next) {
        if (!(d->names[d->n] = strdup(e->name)))
            goto fail;
        d->st[d->n++] = e->st;
    }
    d->sb = sb;
    sandbox_ref(sb);
    rc->fi.fh = (uintptr_t)d;
    if (fsreq_claim(&rc->fr))
        fuse_reply_open(rc->fr.req, &rc->fi);
    else
        rootfs_releasedir(d); /* interrupted: nobody holds it */
    rootfs_req_free(rc);
    return;
fail:
    if (d) {
        d->sb = NULL;
        rootfs_releasedir(d);
    }
    fsreq_reply_err(&rc->fr, -err);
    rootfs_req_free(rc);
}

void rootfs_opendir(fuse_req_t req, struct node *n, struct fuse_file_info *fi)
{
    struct rootfs_req *rc = rootfs_req_new(req, n->path, NULL);
    if (!rc) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    rc->fi = *fi;
    /* A new opendir always lists afresh: `ls` right after a command must see it. */
    rootfs_cache_invalidate(n->sb, n->path);
    rootfs_with_listing(n->sb, n->path, opendir_listed, rc);
}

void rootfs_readdir(fuse_req_t req, struct rootfs_dir *d, size_t size, off_t off, int plus)
{
    char *buf = malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0;
    /* Offsets: 0 ".", 1 "..", 2+i entry i. */
    for (off_t i = off; i < (off_t)d->n + 2; i++) {
        const char *name = i == 0 ? "." : i == 1 ? ".." : d->names[i - 2];
        struct stat st = {.st_mode = S_IFDIR, .st_ino = FUSE_ROOT_ID}; /* d_ino 0 is hidden */
        size_t need;
        if (i >= 2)
            st = d->st[i - 2];
        if (plus) {
            struct fuse_entry_param ep = {.attr = st};
            char *path = NULL;
            if (i >= 2) {
                /* Only count a lookup once the entry fits (the kernel counts the same). */
                need = fuse_add_direntry_plus(req, NULL, 0, name, NULL, 0);
                if (used + need > size)
                    break;
                struct node *n = (path = rootfs_path_join(d->path, name))
                                     ? node_get(N_ROOTFS, 0, d->sb, 0, path)
                                     : NULL;
                free(path);
                if (n) {
                    node_looked_up(n);
                    ep.ino = n->ino;
                    ep.attr.st_ino = n->ino;
                    ep.attr_timeout = ROOTFS_ATTR_TTL(&ep.attr);
                    ep.entry_timeout = ROOTFS_ATTR_TIMEOUT;
                }
            }
            need = fuse_add_direntry_plus(req, buf + used, size - used, name, &ep, i + 1);
        } else {
            /* readdir(3) hides entries with d_ino 0, and listed entries have no inode
             * until looked up: give a stable stand-in (readdir's d_ino is advisory). */
            if (!st.st_ino) {
                uint64_t h = 1469598103934665603ull;
                for (const char *c = name; *c; c++)
                    h = (h ^ (unsigned char)*c) * 1099511628211ull;
                st.st_ino = (ino_t)(h | 1ull << 63);
            }
            need = fuse_add_direntry(req, buf + used, size - used, name, &st, i + 1);
        }
        if (used + need > size)
            break;
        used += need;
    }
    fuse_reply_buf(req, buf, used);
    free(buf);
}

void rootfs_releasedir(struct rootfs_dir *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->names[i]);
    free(d->names);
    free(d->st);
    free(d->path);
    if (d->sb)
        sandbox_unref(d->sb);
    free(d);
}

/* ---- changes by command ---- */

static void entry_listed(struct sandbox *sb, int err, struct dirlist *dl, void *ud)
{
    lookup_listed(sb, err, dl, ud);
}

static void on_changed_entry(struct sandbox *sb, int err, int code, const char *out, size_t outlen,
                             const char *errtext, void *ud)
{
    struct rootfs_req *rc = ud;
    if (!err && code != 0)
        err = sandbox_fail(sb, rootfs_errno_from_stderr(errtext), "%s/%s: %s", rc->path, rc->name,
                           errtext);
    rootfs_cache_invalidate(sb, rc->path);
    if (err) {
        fsreq_reply_err(&rc->fr, -err);
        rootfs_req_free(rc);
        return;
    }
    rootfs_with_listing(sb, rc->path, entry_listed, rc);
}

static void on_changed(struct sandbox *sb, int err, int code, const char *out, size_t outlen,
                       const char *errtext, void *ud)
{
    struct rootfs_req *rc = ud;
    if (!err && code != 0)
        err = sandbox_fail(sb, rootfs_errno_from_stderr(errtext), "%s: %s", rc->path, errtext);
    rootfs_cache_invalidate(sb, rc->path);
    if (rc->name)
        rootfs_cache_invalidate(sb, rc->name);
    fsreq_reply_err(&rc->fr, -err);
    rootfs_req_free(rc);
}

void rootfs_mkdir(fuse_req_t req, struct node *parent, const char *name, mode_t mode)
{
    char *path = rootfs_path_join(parent->path, name);
    struct rootfs_req *rc = path ? rootfs_req_new(req, parent->path, name) : NULL;
    if (!rc) {
        free(path);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    char modebuf[16];
    snprintf(modebuf, sizeof(modebuf), "%o", mode & 07777);
    const char *argv[] = {"mkdir", "-m", modebuf, "--", path, NULL};
    rootfs_run_cmd(parent->sb, argv, on_changed_entry, rc);
    free(path);
}

void rootfs_symlink(fuse_req_t req, const char *target, struct node *parent, const char *name)
{
    char *path = rootfs_path_join(parent->path, name);
    struct rootfs_req *rc = path ? rootfs_req_new(req, parent->path, name) : NULL;
    if (!rc) {
        free(path);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    const char *argv[] = {"ln", "-s", "--", target, path, NULL};
    rootfs_run_cmd(parent->sb, argv, on_changed_entry, rc);
    free(path);
}

void rootfs_unlink(fuse_req_t req, struct node *parent, const char *name, int is_dir)
{
    char *path = rootfs_path_join(parent->path, name);
    struct rootfs_req *rc = path ? rootfs_req_new(req, parent->path, NULL) : NULL;
    if (!rc) {
        free(path);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    if (is_dir)
        rc->name = strdup(path); /* its own listing goes stale too */
    const char *argv_file[] = {"rm", "-f", "--", path, NULL};
    const char *argv_dir[] = {"rmdir", "--", path, NULL};
    rootfs_run_cmd(parent->sb, is_dir ? argv_dir : argv_file, on_changed, rc);
    free(path);
}

struct rename_ctx {
    struct rootfs_req *rc;
    char *from, *to;
};

static void on_renamed(struct sandbox *sb, int err, int code, const char *out, size_t outlen,
                       const char *errtext, void *ud)
{
    struct rename_ctx *rn = ud;
    if (!err && code == 0)
        node_renamed(sb, rn->from, rn->to);
    rootfs_cache_invalidate(sb, rn->to);
    rootfs_cache_invalidate(sb, rn->from);
    on_changed(sb, err, code, out, outlen, errtext, rn->rc);
    free(rn->from);
    free(rn->to);
    free(rn);
}

void rootfs_rename(fuse_req_t req, struct node *parent, const char *name, struct node *newparent,
                   const char *newname)
{
    struct rename_ctx *rn = calloc(1, sizeof(*rn));
    if (rn) {
        rn->from = rootfs_path_join(parent->path, name);
        rn->to = rootfs_path_join(newparent->path, newname);
        rn->rc = rootfs_req_new(req, parent->path, newparent->path);
    }
    if (!rn || !rn->from || !rn->to || !rn->rc) {
        if (rn) {
            free(rn->from);
            free(rn->to);
            if (rn->rc)
                rootfs_req_free(rn->rc);
            free(rn);
        }
        fuse_reply_err(req, ENOMEM);
        return;
    }
    /* One mv: atomic in the sandbox; -T makes it rename(2), never "move into". */
    const char *argv[] = {"mv", "-f", "-T", "--", rn->from, rn->to, NULL};
    rootfs_run_cmd(parent->sb, argv, on_renamed, rn);
}

/* ---- setattr ---- */

static void setattr_done(struct sandbox *sb, int err, int code, const char *out, size_t outlen,
                         const char *errtext, void *ud)
{
    struct rootfs_req *rc = ud;
    if (!err && code != 0)
        err = sandbox_fail(sb, rootfs_errno_from_stderr(errtext), "%s: %s", rc->path, errtext);
    rootfs_cache_invalidate_parent(sb, rc->path);
    if (err) {
        fsreq_reply_err(&rc->fr, -err);
        rootfs_req_free(rc);
        return;
    }
    char *parent = rootfs_path_parent(rc->path);
    rc->flag = 0;
    rootfs_with_listing(sb, parent, rootfs_getattr_listed, rc);
    free(parent);
}

void rootfs_setattr(fuse_req_t req, struct node *n, struct stat *attr, int to_set,
                    struct rootfs_file *f)
{
    struct sandbox *sb = n->sb;
    if (strcmp(n->path, "/") == 0) {
        fuse_reply_err(req, EPERM);
        return;
    }
    if ((to_set & FUSE_SET_ATTR_SIZE) && f) {
        /* An open file: the spool is the truth until it is flushed. */
        if (ftruncate(f->fd, attr->st_size) < 0) {
            fuse_reply_err(req, errno);
            return;
        }
        f->dirty = 1;
        f->epoch++;
        to_set &= ~FUSE_SET_ATTR_SIZE;
        if (!(to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
            struct stat st;
            fstat(f->fd, &st);
            st.st_ino = n->ino;
            st.st_mode = S_IFREG | 0644;
            st.st_nlink = 1;
            fuse_reply_attr(req, &st, 0);
            return;
        }
    }
    struct rootfs_file *uf = f ? f : rootfs_open_file(sb, n->path, 1);
    if (uf && (uf->dirty || uf->uploading) && !(to_set & FUSE_SET_ATTR_SIZE)) {
        /* Not in the sandbox yet (or about to be replaced): apply after the send. */
        char *mode = NULL, *when = NULL;
        if (((to_set & FUSE_SET_ATTR_MODE) &&
             asprintf(&mode, "%o", (unsigned)(attr->st_mode & 07777)) < 0) ||
            ((to_set & FUSE_SET_ATTR_MTIME) &&
             asprintf(&when, "@%lld.%09ld", (long long)attr->st_mtim.tv_sec,
                      attr->st_mtim.tv_nsec) < 0)) {
            free(mode);
            fuse_reply_err(req, ENOMEM);
            return;
        }
        if (mode) {
            free(uf->pending_mode);
            uf->pending_mode = mode;
            uf->mode = S_IFREG | (attr->st_mode & 07777);
        }
        if (when) {
            free(uf->pending_mtime);
            uf->pending_mtime = when;
        }
        struct stat st;
        rootfs_spool_attr(uf, NULL, n->ino, &st);
        fuse_reply_attr(req, &st, 0);
        return;
    }
    struct rootfs_req *rc = rootfs_req_new(req, n->path, NULL);
    if (!rc) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    /* One command does all the changes asked, in order, each with exact argv. */
    const char *argv[24];
    size_t a = 0;
    char modebuf[16], sizebuf[32], owner[48], mtime[48];
    argv[a++] = "sh";
    argv[a++] = "-c";
    argv[a++] = SETATTR_SCRIPT;
    argv[a++] = "sh";
    argv[a++] = n->path;
    if (to_set & FUSE_SET_ATTR_MODE) {
        snprintf(modebuf, sizeof(modebuf), "%o", attr->st_mode & 07777);
        argv[a++] = "mode";
        argv[a++] = modebuf;
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
        snprintf(sizebuf, sizeof(sizebuf), "%lld", (long long)attr->st_size);
        argv[a++] = "size";
        argv[a++] = sizebuf;
    }
    if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
        if ((to_set & FUSE_SET_ATTR_UID) && (to_set & FUSE_SET_ATTR_GID))
            snprintf(owner, sizeof(owner), "%u:%u", attr->st_uid, attr->st_gid);
        else if (to_set & FUSE_SET_ATTR_UID)
            snprintf(owner, sizeof(owner), "%u", attr->st_uid);
        else
            snprintf(owner, sizeof(owner), ":%u", attr->st_gid);
        argv[a++] = "owner";
        argv[a++] = owner;
    }
    if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
        if (to_set & FUSE_SET_ATTR_MTIME_NOW)
            snprintf(mtime, sizeof(mtime), "now");
        else
            snprintf(mtime, sizeof(mtime), "@%lld.%09ld", (long long)attr->st_mtim.tv_sec,
                     attr->st_mtim.tv_nsec);
        argv[a++] = "mtime";
        argv[a++] = mtime;
    }
    argv[a] = NULL;
    if (a == 5) { /* nothing we keep (atime, ctime): answer with what is there */
        rc->flag = 0;
        char *parent = rootfs_path_parent(n->path);
        rootfs_with_listing(sb, parent, rootfs_getattr_listed, rc);
        free(parent);
        return;
    }
    rootfs_run_cmd(sb, argv, setattr_done, rc);
}
