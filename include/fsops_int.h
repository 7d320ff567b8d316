/* fsops_int.h - what fsops.c and fsops_files.c share: the handles of open pseudo-files
 * and the file operations fsops.c's table names. Everything runs under fs_lock. */
#ifndef CWSFS_FSOPS_INT_H
#define CWSFS_FSOPS_INT_H

#include <fuse_lowlevel.h>
#include <stdint.h>
#include <sys/stat.h>

#include "ctl.h"

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

/* A handle on the list fs_free empties (the kernel may go away without releasing). */
struct handle *fsops_handle_new(void);
void fsops_handle_free(void *fh);

void fsops_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fsops_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                  struct fuse_file_info *fi);
void fsops_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void fsops_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                 struct fuse_file_info *fi);
void fsops_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fsops_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void fsops_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);

#endif
