/*
 * agent.c - the exec agent (mode "agent"), a process inside a sandbox.
 *
 * `runc exec` costs tens of milliseconds per command (a Go runtime starting,
 * joining seven namespaces and a cgroup, compiling the seccomp filter). The
 * server starts this agent once per sandbox with `runc exec`, so it holds
 * exactly what a command started by runc would: the sandbox's namespaces,
 * cgroup, user, capabilities, seccomp filter and no_new_privs. Each command
 * is then a fork and an exec of the agent, which inherits all of that.
 *
 * fd 3 is a listening unix socket the host bound (its path is on the host,
 * out of the sandbox's reach); fd 4 is the agent's own binary (a sealed memfd).
 * A connection carries one command (see agent_request in helper.h), with the
 * command's stdin, stdout and stderr as SCM_RIGHTS, or none for a terminal:
 * the agent then makes one in the sandbox's devpts and sends back its master.
 * The agent answers "PID n" (the pid inside the sandbox), then "EXIT status"
 * (128+signal when killed), or "ERROR text" when the command could not start
 * (a working directory that is missing). "SIG n" from the host signals the
 * command's process group; the host closing the connection kills it.
 *
 * The agent trusts nothing beyond its connections: code in the sandbox may kill
 * or trace it, and then commands fall back to `runc exec`. It gains nothing by
 * that: the agent has no right the sandbox does not have.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "helper.h"

#define MAX_CONNS 4096

struct conn {
	int fd;
	pid_t pid; /* the command, 0 before it started */
	char in[64];
	size_t inlen;
};

static struct conn conns[MAX_CONNS];
static int nconns;

static void say(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(int fd, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	if (n > 0)
		(void)!send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* The request: header { u32 magic, u32 length, u32 nfds } with 0 or 3 fds, then
 * `length` bytes of NUL-terminated strings (agent_request). */
static int read_full(int fd, void *buf, size_t n)
{
	char *p = buf;
	while (n) {
		ssize_t r = read(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= r;
	}
	return 0;
}

static int recv_header(int fd, struct agent_header *h, int fds[3])
{
	char cbuf[CMSG_SPACE(3 * sizeof(int))];
	struct iovec iov = { h, sizeof(*h) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c;
	ssize_t r;
	int n = 0;

	do
		r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
	while (r < 0 && errno == EINTR);
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			if (n > 3) {
				int extra[16];
				memcpy(extra, CMSG_DATA(c), (n < 16 ? n : 16) * sizeof(int));
				for (int i = 0; i < n && i < 16; i++)
					close(extra[i]);
				return -1;
			}
			memcpy(fds, CMSG_DATA(c), n * sizeof(int));
		}
	}
	if (r != (ssize_t)sizeof(*h) || h->magic != AGENT_MAGIC || h->length > AGENT_MAX_REQUEST ||
	    (unsigned)n != h->nfds || (n != 0 && n != 3)) {
		for (int i = 0; i < n; i++)
			close(fds[i]);
		return -1;
	}
	return 0;
}

/* The next string of the request, or NULL past its end. */
static char *next_string(char **p, char *end)
{
	char *s = *p, *z;
	if (s >= end || !(z = memchr(s, 0, end - s)))
		return NULL;
	*p = z + 1;
	return s;
}

static char **string_list(char **p, char *end)
{
	char *n = next_string(p, end), *e;
	unsigned long count;
	char **v;

	if (!n)
		return NULL;
	count = strtoul(n, &e, 10);
	if (*e || count > AGENT_MAX_REQUEST / 2)
		return NULL;
	v = calloc(count + 1, sizeof(*v));
	for (unsigned long i = 0; v && i < count; i++)
		if (!(v[i] = next_string(p, end))) {
			free(v);
			return NULL;
		}
	return v;
}

int agent_request_parse(char *buf, size_t len, struct agent_request *rq)
{
	char *p = buf, *end = buf + len, *kind, *cols, *rows;

	memset(rq, 0, sizeof(*rq));
	kind = next_string(&p, end);
	cols = next_string(&p, end);
	rows = next_string(&p, end);
	rq->cwd = next_string(&p, end);
	if (!kind || !cols || !rows || !rq->cwd || (strcmp(kind, "tty") && strcmp(kind, "pipe")))
		return -1;
	rq->tty = !strcmp(kind, "tty");
	rq->cols = strtoul(cols, NULL, 10);
	rq->rows = strtoul(rows, NULL, 10);
	rq->argv = string_list(&p, end);
	rq->env = rq->argv ? string_list(&p, end) : NULL;
	if (!rq->argv || !rq->env || !rq->argv[0] || p != end) {
		agent_request_free(rq);
		return -1;
	}
	return 0;
}

void agent_request_free(struct agent_request *rq)
{
	free(rq->argv);
	free(rq->env);
	rq->argv = rq->env = NULL;
}

/* A terminal in the sandbox's own devpts: its master, and the slave's path. */
static int open_terminal(char *slave, size_t cap, unsigned cols, unsigned rows)
{
	struct winsize ws = { .ws_row = rows ? rows : 24, .ws_col = cols ? cols : 80 };
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);

	if (m < 0)
		return -1;
	if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, slave, cap) != 0) {
		close(m);
		return -1;
	}
	ioctl(m, TIOCSWINSZ, &ws);
	return m;
}

static int send_fd(int sock, const char *line, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { (void *)line, strlen(line) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

/* The command's process: never returns. Failures go to `report_fd` (close-on-exec:
 * an exec that works closes it unwritten) as "errno stage". */
static void run_command(struct agent_request *rq, int fds[3], const char *slave, int report_fd, const sigset_t *oldmask)
{
	extern char **environ;
	int err;

	sigprocmask(SIG_SETMASK, oldmask, NULL);
	signal(SIGPIPE, SIG_DFL);
	if (slave) {
		int s;
		setsid();
		s = open(slave, O_RDWR);
		if (s < 0 || ioctl(s, TIOCSCTTY, 0) < 0)
			goto fail_setup;
		fds[0] = fds[1] = fds[2] = s;
	} else {
		setpgid(0, 0);
	}
	for (int i = 0; i < 3; i++)
		if (dup2(fds[i], i) < 0)
			goto fail_setup;
	if (chdir(rq->cwd) < 0) {
		err = errno;
		dprintf(report_fd, "%d chdir", err);
		_exit(126);
	}
	environ = rq->env;
	execvpe(rq->argv[0], rq->argv, rq->env);
	err = errno;
	/* like a shell: the reason on the command's stderr, 127 or 126 */
	dprintf(2, "%s: %s\n", rq->argv[0], strerror(err));
	dprintf(report_fd, "%d exec", err);
	_exit(err == ENOENT || err == ENOTDIR ? 127 : 126);
fail_setup:
	err = errno;
	dprintf(report_fd, "%d setup", err);
	_exit(126);
}

/* Start the command of a new connection; on failure answer and close it. */
static void start(struct conn *c, const sigset_t *oldmask)
{
	struct agent_header h;
	struct agent_request rq = { 0 };
	struct timeval tv = { 5, 0 };
	int fds[3] = { -1, -1, -1 }, master = -1, rp[2];
	char *buf = NULL, slave[128], why[64] = "";
	ssize_t n;

	/* the host sends the whole request at once; never wait on it for long */
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (recv_header(c->fd, &h, fds) < 0)
		goto drop;
	buf = malloc(h.length + 1);
	if (!buf || read_full(c->fd, buf, h.length) < 0)
		goto drop;
	buf[h.length] = 0;
	if (agent_request_parse(buf, h.length, &rq) < 0 || (h.nfds == 0) != rq.tty) {
		say(c->fd, "ERROR malformed request\n");
		goto drop;
	}
	if (rq.tty && (master = open_terminal(slave, sizeof(slave), rq.cols, rq.rows)) < 0) {
		say(c->fd, "ERROR no terminal: %s\n", strerror(errno));
		goto drop;
	}
	if (pipe2(rp, O_CLOEXEC) < 0)
		goto drop;
	c->pid = fork();
	if (c->pid == 0) {
		close(rp[0]);
		run_command(&rq, fds, rq.tty ? slave : NULL, rp[1], oldmask);
	}
	close(rp[1]);
	if (c->pid < 0) {
		say(c->fd, "ERROR fork: %s\n", strerror(errno));
		close(rp[0]);
		c->pid = 0;
		goto drop;
	}
	/* wait for the exec: a missing working directory is the call's error */
	n = read(rp[0], why, sizeof(why) - 1);
	close(rp[0]);
	if (n > 0 && strstr(why, " chdir")) {
		say(c->fd, "ERROR chdir to cwd (\"%s\"): %s\n", rq.cwd, strerror(atoi(why)));
		/* the child exits by itself; its EXIT is not sent (connection closed) */
		goto drop_keep_child;
	}
	{
		char line[64];
		snprintf(line, sizeof(line), "PID %d\n", (int)c->pid);
		if (master >= 0 ? send_fd(c->fd, line, master) < 0 : send(c->fd, line, strlen(line), MSG_NOSIGNAL) < 0)
			kill(-c->pid, SIGKILL);
	}
	fcntl(c->fd, F_SETFL, O_NONBLOCK);
	goto out;
drop_keep_child:
	c->pid = -c->pid; /* reaped, not reported */
drop:
	shutdown(c->fd, SHUT_RDWR);
	if (c->pid <= 0) {
		close(c->fd);
		c->fd = -1;
	}
out:
	/* the command has its own copies */
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (master >= 0)
		close(master);
	agent_request_free(&rq);
	free(buf);
}

/* "SIG n" lines from the host; end of file kills the command's group. */
static void from_host(struct conn *c)
{
	ssize_t r = read(c->fd, c->in + c->inlen, sizeof(c->in) - 1 - c->inlen);
	char *nl;

	if (r <= 0) {
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (c->pid > 0)
			kill(-c->pid, SIGKILL);
		close(c->fd);
		c->fd = -1;
		return;
	}
	c->inlen += r;
	c->in[c->inlen] = 0;
	while ((nl = strchr(c->in, '\n'))) {
		int sig;
		*nl = 0;
		if (sscanf(c->in, "SIG %d", &sig) == 1 && sig > 0 && sig < 65 && c->pid > 0)
			kill(-c->pid, sig);
		memmove(c->in, nl + 1, c->inlen - (nl + 1 - c->in) + 1);
		c->inlen -= nl + 1 - c->in;
	}
	if (c->inlen == sizeof(c->in) - 1)
		c->inlen = 0; /* a line that long is nothing we sent */
}

static void reap(void)
{
	int st;
	pid_t p;

	while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
		for (int i = 0; i < nconns; i++) {
			struct conn *c = &conns[i];
			if (c->pid != p && c->pid != -p)
				continue;
			if (c->pid > 0 && c->fd >= 0)
				say(c->fd, "EXIT %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
			if (c->fd >= 0)
				close(c->fd);
			c->fd = -1;
			c->pid = 0;
		}
	}
}

int do_agent(void)
{
	static struct pollfd p[MAX_CONNS + 2];
	sigset_t mask, oldmask;
	int sfd;

	prctl(PR_SET_NAME, "cwsb-agent");
	close(4); /* our binary: nothing of ours stays open in the sandbox */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, &oldmask);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		return 1;
	fcntl(3, F_SETFD, FD_CLOEXEC);
	for (;;) {
		int n = 0, w = 0;
		p[n].fd = 3;
		p[n++].events = nconns < MAX_CONNS ? POLLIN : 0;
		p[n].fd = sfd;
		p[n++].events = POLLIN;
		for (int i = 0; i < nconns; i++) {
			p[n].fd = conns[i].fd;
			p[n++].events = conns[i].pid > 0 ? POLLIN : 0;
		}
		if (poll(p, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if (p[1].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) > 0)
				;
			reap();
		}
		for (int i = 0; i < nconns; i++)
			if (conns[i].fd >= 0 && p[2 + i].revents)
				from_host(&conns[i]);
		if (p[0].revents & POLLIN) {
			int fd = accept4(3, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0) {
				struct conn *c = &conns[nconns++];
				memset(c, 0, sizeof(*c));
				c->fd = fd;
				start(c, &oldmask);
			}
		}
		/* forget what is over */
		for (int i = 0; i < nconns; i++)
			if (conns[i].fd >= 0 || conns[i].pid != 0)
				conns[w++] = conns[i];
		nconns = w;
	}
}
