/* rootfs_cache.c - directory listings of sandboxes, one command per directory.
 *
 * Every lookup, getattr and readdir in a directory is answered from one `find`
 * listing (listing.c) kept for a second; this mount's own changes drop it at once.
 * Concurrent askers of the same directory share one command. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utlist.h>

#include "api.h"
#include "linkpath.h"
#include "listing.h"
#include "log.h"
#include "pbjson.h"
#include "rootfs_int.h"

#define CACHE_TTL_MS 1000
#define CACHE_MAX_DIRS 256

/* ---- directory listings ---- */

static void dirlist_clear_entries(struct dirlist *dl)
{
    struct rf_entry *e, *tmp;
    HASH_ITER(hh, dl->entries, e, tmp) {
        HASH_DEL(dl->entries, e);
        free(e->name);
        free(e->link);
        free(e);
    }
}

static void dirlist_free(struct dirlist *dl)
{
    dirlist_clear_entries(dl);
    free(dl->path);
    free(dl);
}

static void rootfs_cache_free(struct sandbox *sb)
{
    if (!sb->dircache)
        return;
    struct dirlist *dl, *tmp;
    HASH_ITER(hh, sb->dircache->dirs, dl, tmp) {
        HASH_DEL(sb->dircache->dirs, dl);
        dirlist_free(dl);
    }
    /* Files still open now were never released (unmounted under them). */
    struct rootfs_file *f, *ftmp;
    DL_FOREACH_SAFE(sb->dircache->open_files, f, ftmp) {
        DL_DELETE(sb->dircache->open_files, f);
        rootfs_file_abandon(f);
    }
    free(sb->dircache);
    sb->dircache = NULL;
}

static void rootfs_cache_drop(struct sandbox *sb)
{
    struct dirlist *dl, *tmp;
    if (sb->dircache)
        HASH_ITER(hh, sb->dircache->dirs, dl, tmp)
            dl->valid = 0;
}

/* Forget what we know of dir (our own change made it stale). */
void rootfs_cache_invalidate(struct sandbox *sb, const char *dir)
{
    struct dirlist *dl = NULL;
    if (sb->dircache)
        HASH_FIND_STR(sb->dircache->dirs, dir, dl);
    if (dl)
        dl->valid = 0;
}

void rootfs_cache_invalidate_parent(struct sandbox *sb, const char *path)
{
    char *parent = rootfs_path_parent(path);
    if (parent)
        rootfs_cache_invalidate(sb, parent);
    free(parent);
}

static void cache_trim(struct sandbox *sb)
{
    if (HASH_COUNT(sb->dircache->dirs) < CACHE_MAX_DIRS)
        return;
    struct dirlist *dl, *tmp;
    HASH_ITER(hh, sb->dircache->dirs, dl, tmp) {
        if (dl->inflight || dl->conts)
            continue;
        HASH_DEL(sb->dircache->dirs, dl);
        dirlist_free(dl);
    }
}

static int add_entry(const struct listing_entry *le, void *ud)
{
    struct dirlist *dl = ud;
    struct rf_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->name = strdup(le->name);
    /* The host follows the link: keep it inside the sandbox (linkpath.h). */
    if (linkpath_confine(dl->path, le->link, &e->link) < 0 || !e->name) {
        free(e->name);
        free(e->link);
        free(e);
        return -ENOMEM;
    }
    e->st.st_mode = le->mode;
    /* lstat's size of a link is the length of what readlink gives */
    e->st.st_size = S_ISLNK(le->mode) ? (off_t)strlen(e->link) : le->size;
    e->st.st_mtim = le->mtime;
    e->st.st_ctim = le->mtime;
    e->st.st_atim = le->mtime;
    e->st.st_uid = le->uid;
    e->st.st_gid = le->gid;
    e->st.st_nlink = le->nlink;
    e->st.st_blksize = 4096;
    e->st.st_blocks = (le->size + 511) / 512;
    struct rf_entry *dup = NULL;
    HASH_FIND_STR(dl->entries, e->name, dup);
    if (dup) { /* cannot happen with find, but a table must not hold a name twice */
        free(e->name);
        free(e->link);
        free(e);
        return 0;
    }
    HASH_ADD_KEYPTR(hh, dl->entries, e->name, strlen(e->name), e);
    return 0;
}

static void dirlist_done(struct sandbox *sb, struct dirlist *dl, int err)
{
    struct dl_cont *conts = dl->conts, *c, *tmp;
    dl->conts = NULL;
    LL_FOREACH_SAFE(conts, c, tmp) {
        c->fn(sb, err, err ? NULL : dl, c->rc);
        free(c);
    }
}

/* One listing command in flight, for the dirlist of path (found again by path: the
 * cache may have dropped it meanwhile). */
struct listing_query {
    unsigned gen;
    char path[];
};

static void on_listed(struct sandbox *sb, int err, int code, const char *out, size_t outlen,
                      const char *errtext, void *ud)
{
    struct listing_query *q = ud;
    struct dirlist *dl = NULL;
    if (sb->dircache)
        HASH_FIND_STR(sb->dircache->dirs, q->path, dl);
    unsigned gen = q->gen;
    free(q);
    if (!dl || !dl->inflight || gen != dl->gen)
        return; /* replaced by a later query, whose answer its waiters get */
    dl->inflight = 0;
    if (!err && code != 0 && outlen == 0)
        err = sandbox_fail(sb, rootfs_errno_from_stderr(errtext), "listing %s: %s", dl->path,
                           errtext);
    if (!err) {
        dirlist_clear_entries(dl);
        int rc = listing_parse(out, outlen, add_entry, dl);
        if (rc < 0) {
            dirlist_clear_entries(dl);
            err = sandbox_fail(sb, EIO,
                               "listing %s: output not understood (is GNU find "
                               "installed in the image?)",
                               dl->path);
        } else {
            dl->valid = 1;
            clock_gettime(CLOCK_MONOTONIC, &dl->fetched);
        }
    }
    dirlist_done(sb, dl, err);
}

/* A new waiter joins the listing in flight unless every request waiting for it was
 * interrupted: then the service may have stopped answering it (the user gave up), and
 * joining would wait out its whole deadline; a new query is asked instead. */
static int joinable(const struct dirlist *dl)
{
    if (!dl->inflight)
        return 0;
    for (const struct dl_cont *c = dl->conts; c; c = c->next)
        if (!c->rc->fr.interrupted)
            return 1;
    return !dl->conts;
}

/* Call fn with a listing of dir no older than a second. */
void rootfs_with_listing(struct sandbox *sb, const char *dir, dirlist_fn fn, struct rootfs_req *rc)
{
    if (!sb->dircache && !(sb->dircache = calloc(1, sizeof(*sb->dircache)))) {
        fn(sb, -ENOMEM, NULL, rc);
        return;
    }
    struct dirlist *dl = NULL;
    HASH_FIND_STR(sb->dircache->dirs, dir, dl);
    if (dl && dl->valid && !dl->inflight && rootfs_ms_since(&dl->fetched) < CACHE_TTL_MS) {
        fn(sb, 0, dl, rc);
        return;
    }
    if (!dl) {
        cache_trim(sb);
        dl = calloc(1, sizeof(*dl));
        if (!dl || !(dl->path = strdup(dir))) {
            free(dl);
            fn(sb, -ENOMEM, NULL, rc);
            return;
        }
        HASH_ADD_KEYPTR(hh, sb->dircache->dirs, dl->path, strlen(dl->path), dl);
    }
    struct dl_cont *c = calloc(1, sizeof(*c));
    struct listing_query *q = NULL;
    if (!c || (!joinable(dl) && !(q = malloc(sizeof(*q) + strlen(dl->path) + 1)))) {
        free(c);
        fn(sb, -ENOMEM, NULL, rc);
        return;
    }
    c->fn = fn;
    c->rc = rc;
    LL_APPEND(dl->conts, c);
    if (!q)
        return; /* joins the listing in flight */
    if (dl->inflight)
        log_info("%s: listing %s: every request waiting for it was interrupted; asking again",
                 sb->name, dl->path);
    dl->inflight = 1;
    q->gen = ++dl->gen;
    strcpy(q->path, dl->path);
    const char *argv[LISTING_ARGC + 1];
    listing_argv(dl->path, argv);
    rootfs_run_query(sb, argv, on_listed, q);
}

/* A file open here whose spool has not reached the sandbox yet answers stat itself. */
struct rootfs_file *rootfs_open_file(struct sandbox *sb, const char *path, int unsent_only)
{
    struct rootfs_file *f;
    if (!sb->dircache)
        return NULL;
    DL_FOREACH(sb->dircache->open_files, f)
        if ((!unsent_only || f->dirty || f->uploading) && strcmp(f->path, path) == 0)
            return f;
    return NULL;
}

void rootfs_spool_attr(struct rootfs_file *f, const struct stat *listed, fuse_ino_t ino,
                       struct stat *st)
{
    struct stat sp;
    if (f->stream && !listed) {
        rootfs_stream_attr(f->stream, st);
        st->st_ino = ino;
        return;
    }
    if (listed) {
        *st = *listed;
    } else {
        memset(st, 0, sizeof(*st));
        st->st_mode = f->mode;
        st->st_nlink = 1;
        st->st_uid = getuid();
        st->st_gid = getgid();
        st->st_blksize = 4096;
    }
    /* A streamed file's spool holds a window of it: the listing has its size. */
    if (!f->stream && fstat(f->fd, &sp) == 0) {
        /* An append-only spool holds only the new bytes, which go after the listed ones. */
        if (f->appendonly)
            st->st_size = (listed ? listed->st_size : 0) + sp.st_size - f->sent;
        else
            st->st_size = sp.st_size;
        st->st_blocks = sp.st_blocks;
        if (f->dirty || f->uploading || !listed)
            st->st_mtim = st->st_ctim = st->st_atim = sp.st_mtim;
    }
    st->st_ino = ino;
}

const struct sandbox_hooks rootfs_hooks = {.freed = rootfs_cache_free,
                                           .files_changed = rootfs_cache_drop};
