/* node.h - inodes: what each inode number the kernel holds stands for.
 *
 * Nodes are found by a key (kind, sandbox, exec, path), so looking the same thing
 * up twice gives the same inode, and are freed when the kernel forgets them
 * (lookup count back to 0). The mount root is inode 1 and never freed. All under
 * fs_lock. */
#ifndef CWSFS_NODE_H
#define CWSFS_NODE_H

#include <fuse_lowlevel.h>
#include <stdint.h>
#include <uthash.h>

#include "sandbox.h"

enum node_kind {
    N_MOUNT,   /* MNT/ */
    N_DOTROOT, /* MNT/.root/ */
    N_METRICS, /* MNT/.metrics */
    N_SBDIR,   /* MNT/NAME/ */
    N_FILE,    /* a pseudo-file: NAME/status, NAME/exec/N/stdout, ... (file = enum pseudo) */
    N_LINK,    /* NAME/root, NAME/stdout, NAME/stderr, NAME/exit (file = enum pseudo) */
    N_EXECS,   /* NAME/exec/ */
    N_EXECDIR, /* NAME/exec/N/ */
    N_ROOTFS,  /* .root/NAME/PATH, path "/" for .root/NAME itself */
};

enum pseudo {
    P_CTL,
    P_STATUS,
    P_EVENTS,
    P_ID,
    P_SNAPSHOTS,
    P_SPEC,
    P_ERROR,
    P_LOGS,
    P_STDOUT, /* link in NAME/, stream in exec/N/ */
    P_STDERR,
    P_EXIT,
    P_ROOT,    /* link */
    P_CMD,     /* exec/N/cmd */
    P_XSTATUS, /* exec/N/status */
};

struct node {
    fuse_ino_t ino;
    uint64_t nlookup;
    enum node_kind kind;
    enum pseudo file;
    struct sandbox *sb; /* referenced while the node lives */
    unsigned exec_no;
    char *path; /* N_ROOTFS */
    char *key;
    UT_hash_handle hh_ino, hh_key;
};

void node_init(void);
/* Find or make the node; does not count a lookup (see node_looked_up). NULL on ENOMEM. */
struct node *node_get(enum node_kind kind, enum pseudo file, struct sandbox *sb, unsigned exec_no,
                      const char *path);
struct node *node_by_ino(fuse_ino_t ino);
void node_looked_up(struct node *n);
void node_forget(struct node *n, uint64_t count);
/* After a rename inside a sandbox: nodes at from (and below it) now live at to. */
void node_renamed(struct sandbox *sb, const char *from, const char *to);
void node_destroy_all(void);

#endif
