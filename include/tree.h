/* tree.h - the pseudo-files and directories of DESIGN.md's tree: which names exist
 * where, their attributes and, for snapshot files, their text. Pure functions of the
 * session's state; callers hold fs_lock. rootfs nodes are rootfs.c's business. */
#ifndef CWSFS_TREE_H
#define CWSFS_TREE_H

#include <sys/stat.h>

#include "node.h"

#define TREE_DIR_TIMEOUT 1.0

/* The child `name` of a pseudo-directory (made if needed), or NULL. Never for N_ROOTFS
 * parents. Does not count a lookup. */
struct node *tree_child(struct node *parent, const char *name);
/* Attributes of a pseudo node (and of a sandbox's "/"); -ENOENT when it went away.
 * Makes no call: a listing or a lookup costs nothing. */
int tree_attr(struct node *n, struct stat *st);
/* Where an N_LINK node points (malloc'ed; NULL when out of memory). */
char *tree_link_target(const struct node *n);
/* How long the kernel may cache them: 0 for files (sizes grow), a second for dirs. */
double tree_attr_timeout(const struct node *n);
/* The text of a snapshot file, malloc'ed; NULL for streams and directories. */
char *tree_render(struct node *n);
/* Stream files: exec stdout/stderr/exit, logs, events. */
int tree_is_stream(const struct node *n);
/* The stream behind a stream node (NULL for exit, which has none). */
struct stream *tree_stream(struct node *n);
/* The node's sandbox was removed (rmdir): everything under it is gone. */
int tree_gone(const struct sandbox *sb);

/* List a pseudo-directory: add(ud, name, node) per entry, "." and ".." first with a
 * NULL node; the node (when not NULL) has not been counted as looked up. */
typedef void (*tree_entry_fn)(void *ud, const char *name, struct node *n);
void tree_list(struct node *dir, tree_entry_fn add, void *ud);

#endif
