/* fs.h - the filesystem as main.c sees it: options in, FUSE operations out.
 *
 * Lifecycle: api_init, fs_init, fuse_session_new(&fs_ops), fs_set_session, mount,
 * loop, unmount, fs_destroy, api_shutdown, fs_free, fuse_session_destroy.
 * fs_destroy runs after the FUSE loop ended and may make blocking API calls (the
 * `cleanup` option stops the sandboxes this mount created). api_shutdown then answers
 * the calls still in flight, whose callbacks may still reply to FUSE requests, so the
 * session must outlive it; fs_free answers what is still parked and frees the rest. */
#ifndef CWSFS_FS_H
#define CWSFS_FS_H

#include <stddef.h>

struct fuse_session;

/* Session defaults, mirroring the SDKs' SandboxDefaults; every field optional. */
struct fs_options {
    const char *image;   /* default "python:3.11" */
    const char *command; /* shell line; default: the SDKs' keep-alive */
    char **tags;         /* session tags: given to new sandboxes, used to adopt */
    size_t ntags;
    char **env; /* "K=V" */
    size_t nenv;
    long lifetime;   /* maxLifetimeSeconds, 0 = service default */
    const char *cpu; /* Kubernetes quantities, NULL = unset */
    const char *memory;
    long gpu;              /* 0 = none */
    int cleanup;           /* stop this mount's sandboxes at unmount */
    const char *spool_dir; /* output and file spools; default $XDG_RUNTIME_DIR or /tmp */
    long window_mib;       /* chunk of a streamed file read, MiB; 0 = 16 */
};

struct fuse_lowlevel_ops;
extern const struct fuse_lowlevel_ops fs_ops;

/* Keeps a copy of *opts; the strings it points to must live until fs_free.
 * Returns 0 or -errno. */
int fs_init(const struct fs_options *opts);
void fs_set_session(struct fuse_session *se);
/* After api_init in the serving process: the first listing of the session's sandboxes. */
void fs_api_started(void);
void fs_destroy(void);
void fs_free(void);

#endif
