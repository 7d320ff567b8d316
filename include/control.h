/* control.h - running what is written to a sandbox's `ctl`.
 *
 * A write's complete lines become one job; jobs of a sandbox run one after another
 * in the order they were written, each command after the previous one finished. The
 * write is answered when its last command is done, or with the first command's error
 * (the rest then does not run). All under fs_lock. */
#ifndef CWSFS_CONTROL_H
#define CWSFS_CONTROL_H

#include <fuse_lowlevel.h>
#include <stddef.h>

#include "ctl.h"
#include "sandbox.h"

/* Parse lines (lens[i] bytes each, NUL-terminated after them; a NUL inside fails the
 * parse) and queue them. On a parse error, nothing runs: the request is answered
 * EINVAL and the reason goes to `error`.
 * reply_size >= 0 answers with fuse_reply_write(reply_size), -1 with fuse_reply_err(0).
 * req may be NULL (nothing to answer: failures only reach `error`). */
void control_submit(struct sandbox *sb, fuse_req_t req, char **lines, const size_t *lens,
                    size_t nlines, long reply_size);

#endif
