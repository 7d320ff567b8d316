/* linkpath.h - how a symbolic link inside a sandbox is shown on the host.
 *
 * The host kernel follows the targets the mount reports, on the host. So a target is
 * presented so that following it never leaves the sandbox's tree: an absolute target
 * /x/y becomes the relative path from the link's directory to the sandbox's /x/y, and
 * a relative one that would climb above the sandbox's root is clamped to it (as
 * sshfs's transform_symlinks does for absolute targets). Pure functions, no state. */
#ifndef CWSFS_LINKPATH_H
#define CWSFS_LINKPATH_H

/* The target to report for a link in directory dir (absolute, in the sandbox, "/" for
 * its root) whose target inside the sandbox is target. A relative target that only
 * climbs first (../../a/b) and stays inside is kept as written; any other is
 * normalised lexically (".", "..", "//" resolved against dir, ".." clamped at the
 * root) and made relative to dir, so the result holds ".." only at its start, exactly
 * as many as lead from dir back to a common ancestor. Sets *out (malloc'd, the
 * caller frees) and returns 0, or -ENOMEM. */
int linkpath_confine(const char *dir, const char *target, char **out);

#endif
