/* options.h - the cwsfs command line (options.c): parsed into struct cmd_opts, then
 * validated into the filesystem's options and the API timeout. Start-up only, one
 * thread. */
#ifndef CWSFS_OPTIONS_H
#define CWSFS_OPTIONS_H

#include <stddef.h>

#include <fuse_lowlevel.h>
#include <fuse_opt.h>

#include "fs.h"

#define DEFAULT_UNARY_TIMEOUT_MS 30000

/* Everything the command line says, before validation. Strings from "%s" templates
 * are allocated by fuse_opt_parse; all are freed by opts_free. */
struct cmd_opts {
    char *endpoint;
    char *auth;
    char *api_key_file;
    char *spool;
    char *logfile;
    char *log_level;
    char *backend;
    char *backend_idle;
    char *image;
    char *command;
    char *lifetime;
    char *cpu;
    char *memory;
    char *gpu;
    char *timeout;
    char *window;
    int http1;
    int cleanup;
    int has_fsname;
    int has_subtype;
    char **tags;
    size_t ntags;
    char **env;
    size_t nenv;
    char *nonopt[2];
    size_t nnonopt;
};

/* fuse_opt_parse with cwsfs's table; -1 on a bad option (libfuse said why). */
int options_parse(struct fuse_args *args, struct cmd_opts *o);
/* fsname= and subtype= for /proc/mounts unless given. 0 or -1. */
int options_add_names(struct fuse_args *args, const struct cmd_opts *o);
void options_usage(const char *prog);
/* Check o and fill fo and the numbers; a message on stderr and -EINVAL when bad. */
int options_validate(struct cmd_opts *o, struct fs_options *fo, long *timeout_ms, long *idle_s);
/* libfuse's own options judged on a throwaway session: 0 or -EINVAL. */
int options_check_fuse(const struct fuse_args *args);
void options_free(struct cmd_opts *o);

#endif
