/*
 * sbx-helper: the small native half of the cwsandbox local backend.
 *
 *   sbx-helper zygote
 *       Starts the other modes for the server (see zygote.c).
 *
 *   sbx-helper runc --pid-file F --log F [--exec] [--console SOCK WxH] -- RUNC ARGS...
 *       Runs the OCI runtime (`runc run --detach` for a sandbox's main process,
 *       `runc exec` for a command) and supervises it: reports the container
 *       process's host pid once it exists, relays a terminal, forwards signals to
 *       that process and exits with its status (see runc.c).
 *
 *   sbx-helper runc ... --agent-listen SOCK -- runc exec --detach --preserve-fds 2 ...
 *   sbx-helper runc ... --agent SOCK --agent-request FILE -- runc exec ...
 *       Starts a sandbox's exec agent (agent.c), or runs a command through it,
 *       falling back to `runc exec` when there is none.
 *
 *   sbx-helper agent
 *       The exec agent, inside a sandbox (started by the above).
 *
 *   sbx-helper overlay NAME LOWER UPPER WORK TARGET  |  sbx-helper umount TARGET
 *       Mounts a sandbox's root (the image's read-only tree under its own writable
 *       layer) on the host, where runc takes it as the bundle's root, and detaches it.
 *       NAME (cwsandbox-local-PID) is the mount's source: it tells whose it is.
 *
 *   sbx-helper reap PID
 *       Kills the sandboxes of the server PID that is gone, detaches their roots
 *       and removes their cgroups (see reap.c).
 *
 *   sbx-helper file read|write --pid PID --path P [--max N] [--mode M]
 *       Reads or writes one file inside the sandbox whose first process is PID,
 *       with the sandbox's own credentials and every path resolved by the kernel
 *       inside the sandbox's root (see fileops.c).
 *
 * Progress is reported on file descriptor 3 when it is open: "PID <host pid>",
 * "READY", or "ERROR <text>". Fd 3 is close-on-exec.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "helper.h"

static int status_fd = -1;

int write_line(int fd, const char *fmt, va_list ap)
{
	char buf[4096];
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);

	if (n < 0)
		return -1;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	return write_all(fd, buf, n);
}

void report(const char *fmt, ...)
{
	va_list ap;

	if (status_fd < 0)
		return;
	va_start(ap, fmt);
	(void)write_line(status_fd, fmt, ap); /* the server may be gone: nothing to tell */
	va_end(ap);
}

void die(const char *fmt, ...)
{
	char buf[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	report("ERROR %s", buf);
	fprintf(stderr, "sbx-helper: %s\n", buf);
	_exit(127);
}

int write_all(int fd, const char *buf, long n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		buf += w;
		n -= w;
	}
	return 0;
}

/* Close every descriptor from `from` on: nothing the server's own parent
 * left open may reach a sandbox. */
static void close_from(int from)
{
#ifdef SYS_close_range
	if (syscall(SYS_close_range, from, ~0U, 0) == 0)
		return;
#endif
	for (int fd = from; fd < 4096; fd++)
		close(fd);
}

int main(int argc, char **argv)
{
	struct stat st;

	/* inside a sandbox, with its own descriptors (agent.c) */
	if (argc == 2 && !strcmp(argv[1], "agent"))
		return do_agent();
	close_from(5);
	if (fstat(3, &st) == 0) {
		status_fd = 3;
		fcntl(3, F_SETFD, FD_CLOEXEC);
	}
	/* Die with the server. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGPIPE, SIG_DFL);
	if (argc < 2)
		die("usage: sbx-helper zygote|runc|file ...");
	if (!strcmp(argv[1], "zygote"))
		return do_zygote();
	if (!strcmp(argv[1], "runc"))
		return do_runc(argc - 2, argv + 2);
	if (!strcmp(argv[1], "file"))
		return do_file(argc - 2, argv + 2);
	if (!strcmp(argv[1], "overlay") && argc == 7) {
		char opts[3 * 4096 + 64];
		snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s,workdir=%s", argv[3], argv[4], argv[5]);
		/* the source names the server, for reap_server */
		if (mount(argv[2], argv[6], "overlay", MS_NODEV, opts) < 0)
			die("overlay on %s: %s", argv[6], strerror(errno));
		return 0;
	}
	if (!strcmp(argv[1], "reap") && argc == 3)
		return reap_server(atol(argv[2]));
	if (!strcmp(argv[1], "umount") && argc == 3) {
		if (umount2(argv[2], MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
			die("umount %s: %s", argv[2], strerror(errno));
		return 0;
	}
	die("unknown mode %s", argv[1]);
}
