/*
 * runc.c - run the OCI runtime and supervise it (mode "runc").
 *
 * `runc run` and `runc exec` pass our stdio to the container process and write
 * its host pid to --pid-file once it exists. We report that pid and "READY" on
 * fd 3, forward termination signals to the container process itself (runc
 * cannot forward SIGKILL), relay a terminal when the process has one, and exit
 * with the process's status. When runc fails before the process exists, its
 * reason is the last error in its JSON log.
 *
 * With --detach (a sandbox's main process; an exec with a terminal, since runc
 * hands a terminal to a console socket only then) runc leaves once the process
 * runs: we are a child subreaper, the process becomes our child, and we wait
 * for it instead of runc, so no runc process stays for it. Without it (other
 * execs) we wait for runc, which waits for the process.
 *
 * The exec agent's side is here too: starting it (--agent-listen) and running a
 * command through it (--agent), see agent.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "helper.h"

static pid_t runtime_pid = -1;
static volatile pid_t process_pid = -1;

static void forward(int sig)
{
	pid_t p = process_pid > 0 ? process_pid : runtime_pid;
	if (p > 0)
		kill(p, sig);
}

static void on_sigchld(int sig)
{
	(void)sig;
}

/* The signals that ask the command to end, all to `handler`. */
static void on_termination_signals(void (*handler)(int))
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 };
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
}

static void exit_like(int st)
{
	if (WIFEXITED(st))
		_exit(WEXITSTATUS(st));
	if (WIFSIGNALED(st))
		_exit(128 + WTERMSIG(st));
	_exit(125);
}

/* Wait for runc, forwarding termination signals; exit with its status. */
static void supervise(void)
{
	int st;

	for (;;) {
		pid_t r = waitpid(runtime_pid, &st, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			_exit(125);
		break;
	}
	exit_like(st);
}

/* Whether the command ended (its status in *st), without waiting. */
typedef int (*ended_fn)(int *st);

static int runtime_ended(int *st)
{
	return waitpid(runtime_pid, st, WNOHANG) == runtime_pid;
}

static void relay_tty(int master, ended_fn ended)
{
	char buf[65536], rbuf[64];
	size_t rlen = 0;
	int in_open = 1, rs_open = fcntl(4, F_GETFD) >= 0;

	/* the caller set where termination signals go */
	for (;;) {
		struct pollfd p[3];
		int n = 0, r;
		p[n].fd = master;
		p[n++].events = POLLIN;
		if (in_open) {
			p[n].fd = 0;
			p[n++].events = POLLIN;
		}
		if (rs_open) {
			p[n].fd = 4;
			p[n++].events = POLLIN;
		}
		r = poll(p, n, 200);
		if (r < 0 && errno != EINTR)
			break;
		if (r <= 0) {
			/* the command ended and nothing else holds the terminal? */
			int st;
			if (ended(&st)) {
				ssize_t k;
				fcntl(master, F_SETFL, O_NONBLOCK);
				while ((k = read(master, buf, sizeof(buf))) > 0)
					write_all(1, buf, k);
				if (WIFEXITED(st))
					_exit(WEXITSTATUS(st));
				_exit(128 + WTERMSIG(st));
			}
			continue;
		}
		for (int i = 0; i < n; i++) {
			if (!p[i].revents)
				continue;
			if (p[i].fd == master) {
				ssize_t k = read(master, buf, sizeof(buf));
				if (k <= 0)
					return; /* EIO: the other side is closed everywhere */
				if (write_all(1, buf, k) < 0)
					return;
			} else if (p[i].fd == 0) {
				ssize_t k = read(0, buf, sizeof(buf));
				if (k <= 0) {
					struct termios t;
					char eof = 4;
					if (tcgetattr(master, &t) == 0)
						eof = t.c_cc[VEOF];
					write_all(master, &eof, 1);
					in_open = 0;
				} else
					write_all(master, buf, k);
			} else {
				ssize_t k = read(4, rbuf + rlen, sizeof(rbuf) - 1 - rlen);
				char *nl;
				if (k <= 0) {
					rs_open = 0;
					continue;
				}
				rlen += k;
				rbuf[rlen] = 0;
				while ((nl = strchr(rbuf, '\n'))) {
					unsigned w, h;
					*nl = 0;
					if (sscanf(rbuf, "%ux%u", &w, &h) == 2 && w && h) {
						struct winsize z = { .ws_row = h, .ws_col = w };
						ioctl(master, TIOCSWINSZ, &z);
					}
					rlen -= nl + 1 - rbuf;
					memmove(rbuf, nl + 1, rlen + 1);
				}
				if (rlen >= sizeof(rbuf) - 1)
					rlen = 0;
			}
		}
	}
}


/* The pid runc wrote, or -1 while the file is absent or incomplete. */
static pid_t read_pid_file(const char *path)
{
	char buf[32];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	return atoi(buf) > 0 ? atoi(buf) : -1;
}

/* The message of the last "error" entry of runc's JSON log, into out. */
static void last_error(const char *log, char *out, size_t size)
{
	static char buf[1 << 16];
	const char *e = NULL, *p, *m;
	ssize_t n;
	size_t k = 0;
	int fd = open(log, O_RDONLY | O_CLOEXEC);

	snprintf(out, size, "the OCI runtime failed without a message");
	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	for (p = buf; (p = strstr(p, "\"level\":\"error\"")); p++)
		e = p;
	if (!e || !(m = strstr(e, "\"msg\":\"")))
		return;
	for (m += 7; *m && *m != '"' && k + 1 < size; m++) {
		if (*m == '\\' && m[1]) {
			m++;
			out[k++] = *m == 'n' ? ' ' : *m == 't' ? ' ' : *m;
		} else
			out[k++] = *m;
	}
	out[k] = 0;
}

/* A unix socket runc connects to, to hand over a terminal's master side. */
static int console_listen(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (s < 0 || strlen(path) >= sizeof(a.sun_path))
		die("console socket %s: %s", path, s < 0 ? strerror(errno) : "path too long");
	strcpy(a.sun_path, path);
	unlink(path);
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 1) < 0)
		die("console socket %s: %s", path, strerror(errno));
	return s;
}

static int console_receive(int lsock)
{
	char dummy[256], cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { dummy, sizeof(dummy) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c;
	int fd = -1, conn = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);

	if (conn < 0)
		return -1;
	if (recvmsg(conn, &msg, MSG_CMSG_CLOEXEC) > 0) {
		c = CMSG_FIRSTHDR(&msg);
		if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(c), sizeof(int));
	}
	close(conn);
	return fd;
}

/* ---------------------------------------------------------------- the agent */

static int agent_conn = -1;

static void forward_to_agent(int sig)
{
	char line[16];
	int n = snprintf(line, sizeof(line), "SIG %d\n", sig);
	(void)!send(agent_conn, line, n, MSG_NOSIGNAL);
}

/* The agent's next line, with a descriptor if it sent one; 0 at end of file. */
static int agent_line(char *line, size_t cap, int *fd, int dontwait)
{
	static char buf[256];
	static size_t len;
	char *nl;

	for (;;) {
		if ((nl = memchr(buf, '\n', len))) {
			size_t n = nl - buf;
			if (n >= cap)
				n = cap - 1;
			memcpy(line, buf, n);
			line[n] = 0;
			len -= nl + 1 - buf;
			memmove(buf, nl + 1, len);
			return 1;
		}
		if (len == sizeof(buf))
			len = 0; /* a line that long is not the agent's */
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov = { buf + len, sizeof(buf) - len };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		ssize_t r = recvmsg(agent_conn, &msg, MSG_CMSG_CLOEXEC | (dontwait ? MSG_DONTWAIT : 0));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return -1;
		if (r <= 0)
			return 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int))) {
				if (fd && *fd < 0)
					memcpy(fd, CMSG_DATA(c), sizeof(int));
				else {
					int x;
					memcpy(&x, CMSG_DATA(c), sizeof(int));
					close(x);
				}
			}
		len += r;
	}
}

/* "EXIT n" from the agent: the command's status as an exit status. */
static int agent_exit_status(const char *line, int *st)
{
	int code;
	if (sscanf(line, "EXIT %d", &code) != 1)
		return 0;
	*st = code << 8; /* what WEXITSTATUS reads back */
	return 1;
}

static int agent_ended(int *st)
{
	char line[256];
	int r;
	while ((r = agent_line(line, sizeof(line), NULL, 1)) > 0)
		if (agent_exit_status(line, st))
			return 1;
	if (r == 0) {
		fprintf(stderr, "the sandbox's exec agent went away before the command ended\n");
		*st = 137 << 8;
		return 1;
	}
	return 0;
}

/*
 * Run the command through the sandbox's exec agent at `sock`, with the request
 * in `reqfile`. Returns only when the agent cannot be reached (the caller then
 * uses runc exec); otherwise exits with the command's status.
 */
static void agent_exec(const char *sock, const char *reqfile)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct agent_header h = { .magic = AGENT_MAGIC };
	char *req, line[512], cbuf[CMSG_SPACE(3 * sizeof(int))];
	int fds[3] = { 0, 1, 2 }, master = -1, st, r, tty;
	struct stat sst;
	int rfd;

	if (strlen(sock) >= sizeof(a.sun_path))
		return;
	strcpy(a.sun_path, sock);
	agent_conn = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (agent_conn < 0 || connect(agent_conn, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(agent_conn);
		agent_conn = -1;
		return;
	}
	rfd = open(reqfile, O_RDONLY | O_CLOEXEC);
	if (rfd < 0 || fstat(rfd, &sst) < 0 || sst.st_size > AGENT_MAX_REQUEST)
		die("request %s: %s", reqfile, rfd < 0 ? strerror(errno) : "too large");
	req = malloc(sst.st_size + 1);
	if (!req || read(rfd, req, sst.st_size) != sst.st_size)
		die("request %s: cannot read it", reqfile);
	close(rfd);
	tty = !strncmp(req, "tty", 4);
	h.length = sst.st_size;
	h.nfds = tty ? 0 : 3;
	{
		struct iovec iov = { &h, sizeof(h) };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (!tty) {
			struct cmsghdr *c;
			msg.msg_control = cbuf;
			msg.msg_controllen = sizeof(cbuf);
			c = CMSG_FIRSTHDR(&msg);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(fds));
			memcpy(CMSG_DATA(c), fds, sizeof(fds));
		}
		if (sendmsg(agent_conn, &msg, MSG_NOSIGNAL) != sizeof(h) || write_all(agent_conn, req, h.length) < 0)
			die("the sandbox's exec agent took no request: %s", strerror(errno));
	}
	free(req);
	r = agent_line(line, sizeof(line), &master, 0);
	if (r <= 0)
		die("the sandbox's exec agent went away before starting the command");
	if (!strncmp(line, "ERROR ", 6))
		die("%s", line + 6);
	if (strncmp(line, "PID ", 4) || (tty && master < 0))
		die("the sandbox's exec agent answered \"%s\"", line);
	report("READY"); /* no "PID": the agent's pid is not a host pid */

	on_termination_signals(forward_to_agent);
	if (master >= 0)
		relay_tty(master, agent_ended);
	for (;;) {
		r = agent_line(line, sizeof(line), NULL, 0);
		if (r == 0) {
			agent_ended(&st);
			break;
		}
		if (r > 0 && agent_exit_status(line, &st))
			break;
	}
	_exit(WEXITSTATUS(st));
}

/* For `runc exec` of the agent: a listening socket at `path` and a sealed copy
 * of our own binary, which the agent is started from (nothing of the host's
 * file system is named inside the sandbox). */
static void agent_prepare(const char *path, int *lsock, int *bin)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	struct stat sst;
	off_t off = 0;

	if (strlen(path) >= sizeof(a.sun_path))
		die("agent socket %s: path too long", path);
	strcpy(a.sun_path, path);
	unlink(path);
	*lsock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*lsock < 0 || bind(*lsock, (struct sockaddr *)&a, sizeof(a)) < 0 || chmod(path, 0600) < 0 || listen(*lsock, 128) < 0)
		die("agent socket %s: %s", path, strerror(errno));
	*bin = memfd_create("cwsb-agent", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (self < 0 || *bin < 0 || fstat(self, &sst) < 0)
		die("agent binary: %s", strerror(errno));
	while (off < sst.st_size)
		if (sendfile(*bin, self, &off, sst.st_size - off) <= 0)
			die("agent binary: %s", strerror(errno));
	close(self);
	if (fchmod(*bin, 0555) < 0 || fcntl(*bin, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
		die("agent binary: %s", strerror(errno));
}

int do_runc(int argc, char **argv)
{
	const char *pid_file = NULL, *log = NULL, *console = NULL;
	const char *agent = NULL, *agent_request = NULL, *agent_listen = NULL;
	int agent_lsock = -1, agent_bin = -1;
	struct winsize ws = { .ws_row = 24, .ws_col = 80 };
	struct sigaction sa;
	int i, exec_mode = 0, detached = 0, lsock = -1, master = -1, st;

	for (i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (!strcmp(a, "--exec")) {
			exec_mode = 1;
			continue;
		}
		if (i + 1 >= argc)
			die("option %s needs a value", a);
		if (!strcmp(a, "--pid-file"))
			pid_file = argv[++i];
		else if (!strcmp(a, "--agent"))
			agent = argv[++i];
		else if (!strcmp(a, "--agent-request"))
			agent_request = argv[++i];
		else if (!strcmp(a, "--agent-listen"))
			agent_listen = argv[++i];
		else if (!strcmp(a, "--log"))
			log = argv[++i];
		else if (!strcmp(a, "--console") && i + 2 < argc) {
			unsigned w = 0, h = 0;
			console = argv[++i];
			if (sscanf(argv[++i], "%ux%u", &w, &h) == 2 && w && h) {
				ws.ws_col = w;
				ws.ws_row = h;
			}
		} else
			die("unknown option %s", a);
	}
	if (i >= argc || !pid_file || !log)
		die("usage: runc --pid-file F --log F [--exec] [--console SOCK WxH] -- RUNC ARGS...");
	argv += i;
	if (agent && agent_request)
		agent_exec(agent, agent_request); /* returns when there is no agent */
	if (agent_listen)
		agent_prepare(agent_listen, &agent_lsock, &agent_bin);
	for (int k = 0; argv[k]; k++)
		if (!strcmp(argv[k], "--detach"))
			detached = 1;
	if (console)
		lsock = console_listen(console);

	on_termination_signals(forward);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigchld;
	sigaction(SIGCHLD, &sa, NULL);
	if (detached && prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		die("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));

	runtime_pid = fork();
	if (runtime_pid < 0)
		die("fork: %s", strerror(errno));
	if (runtime_pid == 0) {
		if (lsock >= 0)
			close(lsock);
		close(4);
		/* runc dies with us: a runc exec left alone can wait forever */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (agent_lsock >= 0) {
			/* --preserve-fds 2: the agent's socket and binary as fds 3 and 4 */
			int s = fcntl(agent_lsock, F_DUPFD, 10), b = fcntl(agent_bin, F_DUPFD, 10);
			if (s < 0 || b < 0 || dup2(s, 3) < 0 || dup2(b, 4) < 0)
				_exit(125);
		}
		execv(argv[0], argv);
		fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(125);
	}
	if (agent_lsock >= 0) {
		/* only the agent may hold them: an agent that dies refuses connections */
		close(agent_lsock);
		close(agent_bin);
	}
	/* Until the process exists: watch the pid file, take the terminal. */
	for (;;) {
		pid_t p = read_pid_file(pid_file);
		if (p > 0 && (!console || master >= 0)) {
			process_pid = p;
			break;
		}
		if (waitpid(runtime_pid, &st, WNOHANG) == runtime_pid) {
			char why[1024];
			p = read_pid_file(pid_file);
			if (detached && p > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
				/* runc left the process to us; its terminal is queued */
				if (master < 0)
					master = console_receive(lsock);
				if (master < 0)
					die("runc started the process but sent no terminal");
				ioctl(master, TIOCSWINSZ, &ws);
				process_pid = p;
				runtime_pid = p;
				break;
			}
			if (p > 0) {
				/* it started and already ended */
				report("PID %d", (int)p);
				report("READY");
				exit_like(st);
			}
			last_error(log, why, sizeof(why));
			if (exec_mode && (strstr(why, "executable file not found") || strstr(why, "no such file or directory")))
				_exit(127); /* like a shell: runc said why on our stderr */
			if (exec_mode && strstr(why, "permission denied"))
				_exit(126);
			report("ERROR %s", why);
			_exit(exec_mode ? 125 : 127);
		}
		if (lsock >= 0 && master < 0) {
			struct pollfd pf = { .fd = lsock, .events = POLLIN };
			if (poll(&pf, 1, 1) > 0) {
				master = console_receive(lsock);
				if (master >= 0)
					ioctl(master, TIOCSWINSZ, &ws);
			}
		} else {
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
		}
	}
	if (lsock >= 0) {
		close(lsock);
		unlink(console);
	}
	if (detached && runtime_pid != process_pid) {
		/* runc leaves once the process runs; from then on we wait for it */
		while (waitpid(runtime_pid, &st, 0) < 0 && errno == EINTR)
			;
		runtime_pid = process_pid;
	}
	report("PID %d", (int)process_pid);
	report("READY");
	if (master >= 0)
		relay_tty(master, runtime_ended);
	supervise();
	return 125;
}
