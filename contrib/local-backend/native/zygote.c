/* zygote.c - start helper processes for the server without forking Node. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"

/*
 * Zygote mode: a small, long-lived process that starts helpers for the server,
 * because forking the server itself (a large Node process) costs milliseconds
 * of page-table copying per exec, on the server's only thread.
 *
 * Requests arrive on stdin, each a sequence of NUL-terminated fields:
 *   ID, DIR, STDIN ("pipe" or "null"), NFDS (4 or 5), ARGC, ARGV..., ENVC, ENV...
 * For each, the zygote creates the FIFOs DIR/0 .. DIR/NFDS-1, forks, and the
 * child opens them as its fds 0..NFDS-1 (0 and 4 for reading, 1-3 for
 * writing; 0 is /dev/null with STDIN "null") and executes this program with
 * ARGV. The zygote answers on stdout, one line each:
 *   "P ID PID"        the child exists (the server now opens its FIFO ends)
 *   "X ID CODE SIG"   the child ended (exit code, or the killing signal)
 *   "E ID MESSAGE"    it could not be started
 */
struct zreq {
	char *fields[4 + 1024 + 1 + 4096];
	int n;
};

static char zbuf[1 << 20];
static size_t zlen;

static int zparse(struct zreq *r, size_t *used)
{
	size_t pos = 0;
	int need = -1, argc = -1, envc = -1;

	r->n = 0;
	while (pos < zlen) {
		char *end = memchr(zbuf + pos, 0, zlen - pos);
		if (!end)
			return 0;
		if (r->n >= (int)(sizeof(r->fields) / sizeof(r->fields[0])))
			return -1;
		r->fields[r->n++] = zbuf + pos;
		pos = end - zbuf + 1;
		if (r->n == 2 && !strcmp(r->fields[0], "C")) {
			*used = pos;
			return 1;
		}
		if (r->n == 5) {
			argc = atoi(r->fields[4]);
			if (argc < 1 || argc > 1024)
				return -1;
		}
		if (argc > 0 && r->n == 5 + argc + 1) {
			envc = atoi(r->fields[5 + argc]);
			if (envc < 0 || envc > 4096)
				return -1;
			need = 5 + argc + 1 + envc;
		}
		if (need >= 0 && r->n == need) {
			*used = pos;
			return 1;
		}
	}
	return 0;
}

static void zsay(const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = write_line(1, fmt, ap);
	va_end(ap);
	if (r < 0)
		_exit(0);
}

/*
 * The zygote keeps its own (read-write) opening of a child's output FIFOs
 * until the server says ("C\0ID\0") that it opened its reading ends: until
 * then the FIFOs keep what the child wrote, even if the child already closed
 * them (a FIFO nobody holds open loses its content, and a reader that opens
 * it after the last writer left never sees end-of-file).
 */
struct zheld {
	long id;
	pid_t pid;
	int fds[3];
};
static struct zheld held[4096];

static void zrelease(long id, pid_t pid)
{
	for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++) {
		if (held[i].id && ((id && held[i].id == id) || (pid && held[i].pid == pid))) {
			for (int j = 0; j < 3; j++)
				close(held[i].fds[j]);
			held[i].id = 0;
			held[i].pid = 0;
		}
	}
}

static void zstart(struct zreq *r, const sigset_t *oldmask)
{
	const char *id = r->fields[0], *dir = r->fields[1];
	int nullin = !strcmp(r->fields[2], "null");
	int nfds = atoi(r->fields[3]);
	int argc = atoi(r->fields[4]);
	char **argv = &r->fields[5];
	char **envp = &r->fields[5 + argc + 1];
	int envc = atoi(r->fields[5 + argc]);
	char path[PATH_MAX];
	pid_t pid;
	int i;

	if (nfds < 4 || nfds > 5) {
		zsay("E %s bad fd count", id);
		return;
	}
	for (i = nullin ? 1 : 0; i < nfds; i++) {
		snprintf(path, sizeof(path), "%s/%d", dir, i);
		if (mkfifo(path, 0600) < 0) {
			zsay("E %s mkfifo %s: %s", id, path, strerror(errno));
			return;
		}
	}
	/*
	 * The output FIFOs are opened here, before the server learns the pid:
	 * a reader that opens a FIFO with no writer yet would see end-of-file.
	 * O_RDWR never waits for the other side.
	 */
	int outs[4] = { -1, -1, -1, -1 };
	for (i = 1; i <= 3; i++) {
		snprintf(path, sizeof(path), "%s/%d", dir, i);
		outs[i] = open(path, O_RDWR | O_CLOEXEC);
		if (outs[i] < 0) {
			zsay("E %s open %s: %s", id, path, strerror(errno));
			for (int j = 1; j < i; j++)
				close(outs[j]);
			return;
		}
	}
	pid = fork();
	if (pid < 0) {
		zsay("E %s fork: %s", id, strerror(errno));
		for (i = 1; i <= 3; i++)
			close(outs[i]);
		return;
	}
	if (pid == 0) {
		int fds[5];
		char **nargv = calloc(argc + 1, sizeof(char *));
		char **nenv = calloc(envc + 1, sizeof(char *));
		sigprocmask(SIG_SETMASK, oldmask, NULL);
		signal(SIGCHLD, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		for (i = 0; i < nfds; i++) {
			if (i >= 1 && i <= 3)
				fds[i] = outs[i];
			else if (i == 0 && nullin)
				fds[i] = open("/dev/null", O_RDONLY);
			else {
				/* waits for the server to open its (writing) end */
				snprintf(path, sizeof(path), "%s/%d", dir, i);
				fds[i] = open(path, O_RDONLY);
			}
			if (fds[i] < 0)
				_exit(125);
		}
		/* move them out of the way, then into place */
		for (i = 0; i < nfds; i++) {
			int f = fcntl(fds[i], F_DUPFD, 10);
			close(fds[i]);
			fds[i] = f;
		}
		for (i = 0; i < nfds; i++) {
			dup2(fds[i], i);
			close(fds[i]);
		}
		for (i = 0; i < argc; i++)
			nargv[i] = argv[i];
		for (i = 0; i < envc; i++)
			nenv[i] = envp[i];
		execve("/proc/self/exe", nargv, nenv);
		_exit(126);
	}
	{
		size_t k;
		for (k = 0; k < sizeof(held) / sizeof(held[0]) && held[k].id; k++)
			;
		if (k < sizeof(held) / sizeof(held[0])) {
			held[k].id = atol(id);
			held[k].pid = pid;
			for (i = 0; i < 3; i++)
				held[k].fds[i] = outs[i + 1];
		} else {
			for (i = 1; i <= 3; i++)
				close(outs[i]);
		}
	}
	zsay("P %s %d", id, (int)pid);
}

int do_zygote(void)
{
	sigset_t mask, oldmask;
	int sfd;
	struct zreq *r = calloc(1, sizeof(*r));

	/*
	 * Outlive the server: when its end of our stdin closes, whatever it left
	 * running is ours to end (runc's containers are not our children).
	 */
	pid_t server = getppid();
	prctl(PR_SET_PDEATHSIG, 0);
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, &oldmask);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sfd < 0 || !r)
		return 1;
	fcntl(0, F_SETFD, FD_CLOEXEC);
	fcntl(1, F_SETFD, FD_CLOEXEC);
	for (;;) {
		struct pollfd p[2] = { { .fd = 0, .events = POLLIN }, { .fd = sfd, .events = POLLIN } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if (p[1].revents) {
			struct signalfd_siginfo si;
			int st;
			pid_t c;
			if (read(sfd, &si, sizeof(si)) < 0) {
				/* nothing */
			}
			while ((c = waitpid(-1, &st, WNOHANG)) > 0)
				zsay("X %d %d %d", (int)c, WIFEXITED(st) ? WEXITSTATUS(st) : -1,
				     WIFSIGNALED(st) ? WTERMSIG(st) : 0);
		}
		if (p[0].revents) {
			ssize_t k = read(0, zbuf + zlen, sizeof(zbuf) - zlen);
			size_t used;
			int rc;
			if (k <= 0)
				return reap_server(server); /* the server is gone */
			zlen += k;
			while ((rc = zparse(r, &used)) == 1) {
				if (!strcmp(r->fields[0], "C"))
					zrelease(atol(r->fields[1]), 0);
				else
					zstart(r, &oldmask);
				memmove(zbuf, zbuf + used, zlen - used);
				zlen -= used;
			}
			if (rc < 0 || zlen == sizeof(zbuf))
				return 2;
		}
	}
}

