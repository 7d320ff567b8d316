/*
 * fileops.c - ReadFile and WriteFile inside a sandbox (mode "file").
 *
 * A path named by a sandbox is hostile: its links and directories can change
 * while we look. So we never check it from outside: we open the sandbox's root
 * (/proc/PID/root), then take on the sandbox's own credentials (its user
 * namespace, as its root) and let the kernel resolve every path inside that
 * root with openat2(RESOLVE_IN_ROOT): absolute links and ".." stop at the
 * sandbox's root, whatever is swapped meanwhile, and what we create belongs to
 * the sandbox's root user, not the host's.
 *
 * Status on fd 3: "BEGIN", then "OK SIZE" (read, before the bytes on stdout) or "OK" (write,
 * after the bytes from stdin are written), or "ERROR ERRNO-NAME text".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "helper.h"

static int root_fd = -1;

static void fail(int err, const char *what)
{
	const char *name = strerrorname_np(err);
	report("ERROR %s %s: %s", name ? name : "EIO", what, strerror(err));
	_exit(1);
}

static int open_in_root(const char *path, int flags, mode_t mode)
{
	struct open_how how = {
		.flags = flags | O_CLOEXEC,
		.mode = (flags & O_CREAT) ? mode : 0,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	long fd;

	do
		fd = syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
	while (fd < 0 && errno == EAGAIN);
	return (int)fd;
}

/* Open the root of sandbox PID, then become its root user. */
static void enter(int pid)
{
	char p[64];
	int user_ns;

	snprintf(p, sizeof(p), "/proc/%d/root", pid);
	root_fd = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root_fd < 0)
		fail(errno, "the sandbox's root");
	snprintf(p, sizeof(p), "/proc/%d/ns/user", pid);
	user_ns = open(p, O_RDONLY | O_CLOEXEC);
	if (user_ns < 0 || setns(user_ns, CLONE_NEWUSER) < 0)
		fail(errno, "the sandbox's user namespace");
	close(user_ns);
	if (setgroups(0, NULL) < 0 && errno != EPERM)
		fail(errno, "setgroups");
	if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
		fail(errno, "the sandbox's root user");
}

/* mkdir -p of the parents of path, each step resolved inside the root. */
static void make_parents(const char *path)
{
	char dir[PATH_MAX];
	size_t len = strlen(path);
	int parent = dup(root_fd);

	if (len >= sizeof(dir))
		fail(ENAMETOOLONG, path);
	for (size_t i = 1; i <= len; i++) {
		int fd;
		if (path[i] != '/')
			continue;
		memcpy(dir, path, i);
		dir[i] = 0;
		fd = open_in_root(dir, O_PATH | O_DIRECTORY, 0);
		if (fd < 0 && errno == ENOENT) {
			const char *name = strrchr(dir, '/') + 1;
			if (mkdirat(parent, name, 0755) < 0 && errno != EEXIST)
				fail(errno, "a parent directory");
			fd = open_in_root(dir, O_PATH | O_DIRECTORY, 0);
		}
		if (fd < 0)
			fail(errno, "a parent directory");
		close(parent);
		parent = fd;
	}
	close(parent);
}

static void file_read(const char *path, long long max)
{
	static char buf[1 << 16];
	struct stat st;
	long long total = 0;
	ssize_t n;
	int fd = open_in_root(path, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0);

	if (fd < 0)
		fail(errno, "open");
	if (fstat(fd, &st) < 0)
		fail(errno, "stat");
	if (S_ISDIR(st.st_mode))
		fail(EISDIR, "open");
	if (S_ISREG(st.st_mode) && st.st_size > max)
		fail(EFBIG, "size");
	fcntl(fd, F_SETFL, 0);
	report("OK %lld", (long long)st.st_size);
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		total += n;
		if (write_all(1, buf, n) < 0 || total > max)
			_exit(1); /* the server counts the bytes and says why */
	}
	_exit(n < 0 ? 1 : 0);
}

static void file_write(const char *path, long long max, mode_t mode)
{
	static char buf[1 << 16];
	struct stat st;
	long long total = 0;
	ssize_t n;
	int fd;

	if (!*path || path[strlen(path) - 1] == '/')
		fail(EISDIR, "open");
	make_parents(path);
	fd = open_in_root(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOCTTY | O_NONBLOCK, mode);
	if (fd < 0)
		fail(errno, "open");
	if (fstat(fd, &st) < 0)
		fail(errno, "stat");
	if (!S_ISREG(st.st_mode))
		fail(EINVAL, "not a regular file");
	fcntl(fd, F_SETFL, 0);
	while ((n = read(0, buf, sizeof(buf))) > 0) {
		total += n;
		if (total > max)
			fail(EFBIG, "size");
		if (write_all(fd, buf, n) < 0)
			fail(errno, "write");
	}
	if (n < 0)
		fail(errno, "read");
	if (close(fd) < 0)
		fail(errno, "close");
	report("OK");
	_exit(0);
}

int do_file(int argc, char **argv)
{
	const char *op = argc > 0 ? argv[0] : "", *path = NULL;
	long long max = 32LL << 20;
	mode_t mode = 0644;
	int pid = 0;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--pid"))
			pid = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--path"))
			path = argv[i + 1];
		else if (!strcmp(argv[i], "--max"))
			max = atoll(argv[i + 1]);
		else if (!strcmp(argv[i], "--mode"))
			mode = strtol(argv[i + 1], NULL, 8) & 07777;
		else
			die("unknown option %s", argv[i]);
	}
	if (pid <= 0 || !path || *path != '/')
		die("usage: file read|write --pid PID --path /ABSOLUTE [--max N] [--mode M]");
	/* first words: the server closes our stdin only after them (spawner.js) */
	report("BEGIN");
	enter(pid);
	if (!strcmp(op, "read"))
		file_read(path, max);
	if (!strcmp(op, "write"))
		file_write(path, max, mode);
	die("unknown file operation %s", op);
}
