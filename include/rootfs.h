/* rootfs.h - the sandbox's own filesystem under .root/NAME (and NAME/root).
 *
 * Listing and stat come from one listing command per directory (listing.h), cached
 * for a second and dropped by this mount's own changes. File contents move with
 * ReadFile/WriteFile up to the service's 32 MiB cap and through StreamExec above it,
 * spooled on local disk in between: an open fetches (a big file opened read-only is
 * fetched as it is read), writes go to the spool, flush
 * and fsync send it back, and a failed send keeps the spool and says where.
 * Changes to names and modes are commands with exact argv. Every rootfs_* FUSE entry
 * point answers its request itself, now or when the calls it needs complete; all
 * run under fs_lock. */
#ifndef CWSFS_ROOTFS_H
#define CWSFS_ROOTFS_H

#include <fuse_lowlevel.h>

#include "node.h"
#include "sandbox.h"

/* The service's cap for one ReadFile/WriteFile message. */
#define ROOTFS_UNARY_CAP (32ull << 20)

/* The largest chunk of a big file fetched as it is read (-o window=); its spool keeps
 * at most two. */
#define ROOTFS_DEFAULT_WINDOW (16L << 20)
extern long rootfs_window;

struct rootfs_file; /* an open file's spool */
struct rootfs_dir;  /* an open directory's entries */

/* Frees the file cache with its sandbox; a command that ran drops its listings. */
extern const struct sandbox_hooks rootfs_hooks;

void rootfs_lookup(fuse_req_t req, struct sandbox *sb, const char *dir, const char *name);
void rootfs_getattr(fuse_req_t req, struct node *n);
void rootfs_setattr(fuse_req_t req, struct node *n, struct stat *attr, int to_set,
                    struct rootfs_file *f);
void rootfs_readlink(fuse_req_t req, struct node *n);

void rootfs_opendir(fuse_req_t req, struct node *n, struct fuse_file_info *fi);
void rootfs_readdir(fuse_req_t req, struct rootfs_dir *d, size_t size, off_t off, int plus);
void rootfs_releasedir(struct rootfs_dir *d);

void rootfs_open(fuse_req_t req, struct node *n, struct fuse_file_info *fi);
void rootfs_create(fuse_req_t req, struct node *parent, const char *name, mode_t mode,
                   struct fuse_file_info *fi);
void rootfs_read(fuse_req_t req, struct rootfs_file *f, size_t size, off_t off);
void rootfs_write(fuse_req_t req, struct rootfs_file *f, const char *buf, size_t size, off_t off);
void rootfs_flush(fuse_req_t req, struct rootfs_file *f);
void rootfs_release(struct rootfs_file *f);

void rootfs_mkdir(fuse_req_t req, struct node *parent, const char *name, mode_t mode);
void rootfs_symlink(fuse_req_t req, const char *target, struct node *parent, const char *name);
void rootfs_unlink(fuse_req_t req, struct node *parent, const char *name, int is_dir);
void rootfs_rename(fuse_req_t req, struct node *parent, const char *name, struct node *newparent,
                   const char *newname);

#endif
