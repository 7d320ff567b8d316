/* ctl.h - the `ctl` file's command language (DESIGN.md "ctl commands").
 *
 * Pure parsing, table-driven: one line in, one struct ctl_cmd out, or -EINVAL with a
 * message that echoes the command. Acting on a command is the sandbox module's job.
 * Also the line splitter that turns a stream of write(2) calls into whole lines. */
#ifndef CWSFS_CTL_H
#define CWSFS_CTL_H

#include <stddef.h>

enum ctl_op {
    CTL_EXEC,     /* exec LINE          argv = {"/bin/sh", "-c", LINE}, arg = LINE */
    CTL_EXECV,    /* execv ["p","a"]    argv = the JSON array's strings (at least one,
                                        the first non-empty), arg = the JSON text */
    CTL_START,    /* start */
    CTL_WAIT,     /* wait */
    CTL_STOP,     /* stop [GRACE]       num = grace seconds, -1 when not given */
    CTL_SNAPSHOT, /* snapshot */
    /* spec changes: only before start (EBUSY after) */
    CTL_IMAGE,    /* image REF          arg */
    CTL_COMMAND,  /* command LINE       argv = {"/bin/sh", "-c", LINE}, arg = LINE */
    CTL_ENV,      /* env K=V            key (non-empty, no '='), arg = value (verbatim) */
    CTL_TAG,      /* tag T              arg ([A-Za-z0-9._-], ending alphanumeric, <= 59) */
    CTL_CPU,      /* cpu Q              arg (a Kubernetes quantity: 2, 0.5, 500m) */
    CTL_MEMORY,   /* memory Q           arg (512Mi, 2Gi, 1G, 1000000; k M G T P E, Ki..Ei) */
    CTL_GPU,      /* gpu N              num >= 0, fits int32 */
    CTL_LIFETIME, /* lifetime SECONDS   num > 0, fits int32 */
    CTL_WORKDIR,  /* workdir PATH       arg, absolute */
};

/* Every pointer is malloc'ed and owned by the struct (ctl_cmd_free); unused ones are
 * NULL and num is 0 unless the op above says otherwise. */
struct ctl_cmd {
    enum ctl_op op;
    char **argv; /* NULL-terminated, malloc'ed, for EXEC/EXECV/COMMAND */
    size_t argc;
    char *key; /* ENV */
    char *arg;
    long long num;
};

/* Whether op changes the spec (and so is refused once the sandbox started). */
int ctl_is_spec_change(enum ctl_op op);

/* Parse one line (no trailing newline; one trailing '\r' is dropped and blanks around
 * the command are ignored). Command names are case-sensitive and end at the first
 * blank (space or tab); one or more blanks separate the argument. The LINE of
 * exec/command and the K=V of env are kept verbatim from the first non-blank after the
 * name to the end (internal and trailing blanks included); other arguments have their
 * surrounding blanks trimmed. A line holding a NUL byte is refused. Returns 0 and fills
 * cmd, 1 for a blank line or a `#` comment (nothing to do, cmd untouched), or -EINVAL
 * (or -ENOMEM) with err set to a sentence that names the command and quotes the bad
 * text (escaped, bounded), e.g. `unknown command "exce ls"` or `gpu: "x" is not a
 * count`; cmd is untouched on error. */
int ctl_parse(const char *line, size_t len, struct ctl_cmd *cmd, char *err, size_t errlen);
void ctl_cmd_free(struct ctl_cmd *cmd);

/* The line splitter: bytes written to a ctl handle accumulate here; a line runs when
 * its newline arrives (or at close, ctl_lines_finish). Bounded: a line longer than
 * CTL_MAX_LINE is an error, not a growing buffer. */
#define CTL_MAX_LINE (1u << 19)
/* Half of max_write (fsops.c) on purpose: the kernel hands one write(2) over in chunks
 * of max_write less at most a page, so a line too long to hold always fails the first
 * chunk, and with it the write(2) (EINVAL); a limit that a chunk could fit would accept
 * that chunk, fail the next, and the writer would see a short count. (A command line
 * is at most 128 KiB for the kernel anyway.) */

/* Zero-initialise before first use. */
struct ctl_lines {
    char *buf;
    size_t len, cap;
    int skipping; /* dropping the rest of a failed line up to its newline */
};

/* Append data; for each completed line call fn(line, len, ud) in order (line is not
 * NUL-terminated and excludes the '\n'), stopping at the first non-zero return, which
 * is returned. -E2BIG when a line exceeds CTL_MAX_LINE bytes, -ENOMEM. After any error
 * the rest of data is dropped, and when it ended inside a line, that line's remainder
 * in later writes is dropped too (up to its newline), each such write failing with
 * -E2BIG as well: no command ever runs from a fragment. Lines completed before the
 * error have run. */
int ctl_lines_feed(struct ctl_lines *cl, const char *data, size_t len,
                   int (*fn)(const char *line, size_t len, void *ud), void *ud);
/* At close: run a final unterminated line, if any, through fn; returns fn's result.
 * Leaves cl empty and reusable (its buffer kept until ctl_lines_free). */
int ctl_lines_finish(struct ctl_lines *cl, int (*fn)(const char *line, size_t len, void *ud),
                     void *ud);
void ctl_lines_free(struct ctl_lines *cl);

#endif
