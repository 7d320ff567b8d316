/* rootfs_int.h - what the rootfs files share: the listing cache, running commands,
 * open-file spools. Internal to rootfs*.c; everything runs under fs_lock. */
#ifndef CWSFS_ROOTFS_INT_H
#define CWSFS_ROOTFS_INT_H

#include <fuse_lowlevel.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <uthash.h>

#include "fsreq.h"
#include "park.h"
#include "rootfs.h"

#define ROOTFS_ATTR_TIMEOUT 1.0
/* How long the kernel may keep attributes it got from a listing. Not at all for
 * regular files: a read past the cached size would otherwise stop there (the kernel
 * trusts i_size), cutting short a file a command just grew; asking again costs no
 * call while our listing is fresh. */
#define ROOTFS_ATTR_TTL(st) (S_ISREG((st)->st_mode) ? 0.0 : ROOTFS_ATTR_TIMEOUT)

struct dirlist;

struct rf_entry {
    char *name;
    struct stat st;
    char *link;
    UT_hash_handle hh;
};

typedef void (*dirlist_fn)(struct sandbox *sb, int err, struct dirlist *dl, void *ud);

struct dl_cont {
    dirlist_fn fn;
    struct rootfs_req *rc; /* the request waiting (its ud) */
    struct dl_cont *next;
};

struct dirlist {
    char *path;
    struct timespec fetched;
    int valid;
    int inflight;
    unsigned gen; /* of the listing in flight: one whose waiters all gave up is replaced */
    struct rf_entry *entries; /* by name, in listing order */
    struct dl_cont *conts;
    UT_hash_handle hh;
};

struct rootfs_cache {
    struct dirlist *dirs;
    struct rootfs_file *open_files; /* files with a spool, for stat before they are sent */
};

struct rootfs_req {
    struct fsreq fr; /* the FUSE request, interruptible from rootfs_req_new on */
    char *path;
    char *name;
    struct fuse_file_info fi;
    mode_t mode;
    int flag;
    int relisted; /* a miss in a cached listing was checked with a fresh one */
    int creating; /* an O_CREAT open of an existing file: answer with fuse_reply_create */
    struct rootfs_file *file;
};

/* A flush or fsync waiting for the file's send. Interrupted, it answers EINTR and the
 * send goes on (the program wrote those bytes); the outcome still reaches `error`. */
struct flush_wait {
    struct fsreq fr;
    struct flush_wait *next;
};

struct rootfs_stream; /* rootfs_stream.c's */

struct rootfs_file {
    struct rootfs_file *prev, *next; /* in the sandbox's open_files */
    struct rootfs_stream *stream;    /* a big file opened to read: fetched as read */
    struct sandbox *sb;
    char *path;
    char *spool_path;
    int fd;
    int append;
    int dirty;      /* the spool differs from the sandbox's file */
    int uploading;  /* a send is in flight */
    int failed;     /* the last send failed: keep the spool at release */
    int appendonly; /* O_WRONLY|O_APPEND: the spool holds only new bytes */
    off_t sent;     /* appendonly: spool bytes already appended in the sandbox */
    int write_err;  /* a write into the spool failed (-errno): never send it */
    int released;   /* closed while a send was in flight: freed when it ends */
    mode_t mode;    /* mode for a file not yet in the sandbox */
    /* chmod and touch of a file not in the sandbox yet, applied after the send; a later
     * one replaces an earlier one, as on a disk. "0644" and "@SECONDS.NANOS", or NULL. */
    char *pending_mode, *pending_mtime;
    uint64_t epoch; /* bumped by each write, to tell writes made during a send */
    struct flush_wait *flushes;
};

/* Freed with its spool (kept when it holds unsent data), off the open files. */
void rootfs_file_free(struct rootfs_file *f);
int rootfs_write_all(int fd, const char *data, size_t len, off_t off);
/* The service refused a ReadFile/WriteFile for its size (StreamExec has no cap). */
struct api_result;
int rootfs_too_large(const struct api_result *res);
/* " full" when a spool write failed for want of space (for `error`), else "". */
const char *rootfs_spool_full(int err);

/* How a command run through StreamExec for a file ended: its exit code and the
 * start of what it said on stderr (for `error` and the errno). */
struct rootfs_cmd_outcome {
    int ended, exit_code;
    char *errtext;
};
struct execmsg;
/* Record m if it tells how the command ends; 1 when it was stdout data for the caller. */
int rootfs_outcome_take(struct rootfs_cmd_outcome *o, const struct execmsg *m);
/* 0 when the command succeeded, else the errno its words mean (and `error` says so). */
int rootfs_outcome_check(const struct rootfs_cmd_outcome *o, struct sandbox *sb, const char *what,
                         const char *path);

/* rootfs_stream.c: a file above the unary cap opened read-only is fetched in chunks as
 * it is read, into a spool that keeps at most two windows of it. */
int rootfs_stream_open(struct rootfs_file *f, const struct stat *listed);
/* Its attributes while open (close-to-open: a stat costs no listing meanwhile). */
void rootfs_stream_attr(const struct rootfs_stream *s, struct stat *st);
void rootfs_stream_read(struct rootfs_stream *s, fuse_req_t req, size_t size, off_t off);
/* At close: the chunk in flight is cancelled; the file is freed once none is left. */
void rootfs_stream_release(struct rootfs_stream *s);

typedef void (*rootfs_cmd_fn)(struct sandbox *sb, int err, int exit_code, const char *out,
                              size_t outlen, const char *errtext, void *ud);

#define SETATTR_SCRIPT                                                                             \
    "p=$1; shift; while [ $# -gt 0 ]; do case $1 in "                                              \
    "mode) chmod -- \"$2\" \"$p\" || exit;; "                                                      \
    "size) truncate -s \"$2\" -- \"$p\" || exit;; "                                                \
    "owner) chown -h -- \"$2\" \"$p\" || exit;; "                                                  \
    "mtime) touch -h -m -d \"$2\" -- \"$p\" || exit;; "                                            \
    "esac; shift 2; done"

/* Paths inside the sandbox, always absolute; results malloc'ed (base: borrowed). */
char *rootfs_path_join(const char *dir, const char *name);
char *rootfs_path_parent(const char *path);
const char *rootfs_path_base(const char *path);
long rootfs_ms_since(const struct timespec *t);
/* The errno a failed coreutils/find command means, from its stderr words. */
int rootfs_errno_from_stderr(const char *text);

/* Run argv (NULL-terminated, exact, no shell) with Exec once the sandbox runs; fn gets
 * the outcome, exit code and output (borrowed for the call). */
void rootfs_run_cmd(struct sandbox *sb, const char *const *argv, rootfs_cmd_fn fn, void *ud);
/* The same for a command that changes nothing (a listing): retried like a read. */
void rootfs_run_query(struct sandbox *sb, const char *const *argv, rootfs_cmd_fn fn, void *ud);

/* Call fn with a listing of dir no older than a second (one Exec when stale). */
void rootfs_with_listing(struct sandbox *sb, const char *dir, dirlist_fn fn, struct rootfs_req *rc);
void rootfs_cache_invalidate(struct sandbox *sb, const char *dir);
void rootfs_cache_invalidate_parent(struct sandbox *sb, const char *path);
/* A file open here (with unsent changes only, when unsent_only), or NULL. An open
 * file's spool is the freshest view of it: its size answers stat, so the kernel never
 * cuts a read at a size cached before a command changed the file. */
struct rootfs_file *rootfs_open_file(struct sandbox *sb, const char *path, int unsent_only);
/* Attributes of an open file: the listing's (when listed) with the spool's size. */
void rootfs_spool_attr(struct rootfs_file *f, const struct stat *listed, fuse_ino_t ino,
                       struct stat *st);

/* Free an open file whose sandbox is being freed (at unmount); unsent data keeps its
 * spool and is logged. */
void rootfs_file_abandon(struct rootfs_file *f);

struct rootfs_req *rootfs_req_new(fuse_req_t req, const char *path, const char *name);
void rootfs_req_free(struct rootfs_req *rc);
/* A dirlist_fn answering getattr (or readlink when rc->flag) for rc->path. */
void rootfs_getattr_listed(struct sandbox *sb, int err, struct dirlist *dl, void *ud);

#endif
