/*
 * sbx-helper: the privileged half of the cwsandbox local backend.
 *
 *   sbx-helper init [options] -- COMMAND [ARGS...]
 *       Creates new pid, mount, uts and ipc namespaces (and a network namespace
 *       with --net-none), builds the sandbox root (an overlay of --upper over
 *       --base, mounted at --merged), pivots into it and executes COMMAND as
 *       the namespace's first process.
 *
 *   sbx-helper exec --pid PID [options] -- COMMAND [ARGS...]
 *       Joins the namespaces and root of the sandbox whose first process is
 *       PID and executes COMMAND there.
 *
 * Both forms stay in the host's pid namespace as a small supervisor: they
 * forward SIGTERM/SIGINT/SIGHUP/SIGKILL-on-parent-death to the child and exit
 * with its status (128+signal when it was killed).  Progress is reported on
 * file descriptor 3 when it is open: "PID <host pid>" once the child exists,
 * then "READY" right before COMMAND is executed, or "ERROR <text>" when the
 * setup failed.  Fd 3 is close-on-exec, so the server sees end-of-file once
 * COMMAND runs.
 *
 * Options (init):
 *   --base DIR --upper DIR --work DIR --merged DIR   the overlay
 *   --hostname NAME                                  uts name
 *   --net-none                                       private network namespace (lo only)
 *   --opaque PATH                                    hide PATH of the base (repeatable)
 *   --bind SRC:DST[:ro]                              bind mount a host path (repeatable)
 *   --tmpfs DST[:SIZE]                               mount a tmpfs (repeatable)
 *   --cgroup DIR                                     join this cgroup (repeatable)
 *   --wd DIR                                         working directory inside
 * Options (exec):
 *   --pid PID --cgroup DIR --wd DIR
 *
 * The environment of COMMAND is the helper's own environment.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <termios.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#define MAXLIST 256

static int status_fd = -1;
static pid_t child_pid = -1;

static void report(const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	int n;

	if (status_fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(status_fd, buf, n) < 0) {
		/* the server went away; nothing to tell */
	}
}

static void die(const char *fmt, ...)
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

static void join_cgroup(const char *dir)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		die("cannot open %s: %s", path, strerror(errno));
	if (write(fd, "0", 1) != 1)
		die("cannot join cgroup %s: %s", dir, strerror(errno));
	close(fd);
}

/* mkdir -p, relative to the current root */
static int mkdirs(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];
	size_t len = strlen(path);
	char *p;

	if (len == 0 || len >= sizeof(tmp))
		return -1;
	memcpy(tmp, path, len + 1);
	for (p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = 0;
			if (mkdir(tmp, mode) < 0 && errno != EEXIST)
				return -1;
			*p = '/';
		}
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

static void ensure_parent(const char *path)
{
	char tmp[PATH_MAX];
	char *slash;

	snprintf(tmp, sizeof(tmp), "%s", path);
	slash = strrchr(tmp, '/');
	if (slash && slash != tmp) {
		*slash = 0;
		if (mkdirs(tmp, 0755) < 0)
			die("cannot create %s: %s", tmp, strerror(errno));
	}
}

static void forward(int sig)
{
	if (child_pid > 0)
		kill(child_pid, sig);
}

/* Wait for the child, forwarding termination signals; exit with its status. */
static void supervise(void)
{
	struct sigaction sa;
	int st;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = forward;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	for (;;) {
		pid_t r = waitpid(child_pid, &st, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			_exit(125);
		break;
	}
	if (WIFEXITED(st))
		_exit(WEXITSTATUS(st));
	if (WIFSIGNALED(st))
		_exit(128 + WTERMSIG(st));
	_exit(125);
}

static void lo_up(void)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		die("socket: %s", strerror(errno));
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		die("SIOCGIFFLAGS lo: %s", strerror(errno));
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		die("SIOCSIFFLAGS lo: %s", strerror(errno));
	close(s);
}

static void bind_dev(const char *name)
{
	char src[64], dst[64];
	int fd;

	snprintf(src, sizeof(src), "/dev/.oldroot/dev/%s", name);
	snprintf(dst, sizeof(dst), "/dev/%s", name);
	fd = open(dst, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
	if (fd >= 0)
		close(fd);
	if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
		die("bind %s on %s: %s", src, dst, strerror(errno));
}

static int do_init(int argc, char **argv)
{
	const char *base = NULL, *upper = NULL, *work = NULL, *merged = NULL;
	const char *hostname = NULL, *wd = NULL;
	const char *opaque[MAXLIST], *binds[MAXLIST], *tmpfss[MAXLIST], *cgroups[MAXLIST];
	int nopaque = 0, nbinds = 0, ntmpfs = 0, ncgroups = 0, netnone = 0;
	int i, flags, sync_pipe[2];
	char opts[3 * PATH_MAX + 64], path[PATH_MAX];

	for (i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (!strcmp(a, "--net-none")) {
			netnone = 1;
			continue;
		}
		if (i + 1 >= argc)
			die("option %s needs a value", a);
		if (!strcmp(a, "--base"))
			base = argv[++i];
		else if (!strcmp(a, "--upper"))
			upper = argv[++i];
		else if (!strcmp(a, "--work"))
			work = argv[++i];
		else if (!strcmp(a, "--merged"))
			merged = argv[++i];
		else if (!strcmp(a, "--hostname"))
			hostname = argv[++i];
		else if (!strcmp(a, "--wd"))
			wd = argv[++i];
		else if (!strcmp(a, "--opaque") && nopaque < MAXLIST)
			opaque[nopaque++] = argv[++i];
		else if (!strcmp(a, "--bind") && nbinds < MAXLIST)
			binds[nbinds++] = argv[++i];
		else if (!strcmp(a, "--tmpfs") && ntmpfs < MAXLIST)
			tmpfss[ntmpfs++] = argv[++i];
		else if (!strcmp(a, "--cgroup") && ncgroups < MAXLIST)
			cgroups[ncgroups++] = argv[++i];
		else
			die("unknown option %s", a);
	}
	if (i >= argc)
		die("no command");
	if (!base || !upper || !work || !merged)
		die("--base, --upper, --work and --merged are required");
	argv += i;

	for (i = 0; i < ncgroups; i++)
		join_cgroup(cgroups[i]);

	/* Hide parts of the base: an opaque directory in the upper layer. */
	for (i = 0; i < nopaque; i++) {
		snprintf(path, sizeof(path), "%s%s", upper, opaque[i]);
		if (mkdirs(path, 0755) < 0)
			die("mkdir %s: %s", path, strerror(errno));
		{
			char lower[PATH_MAX];
			struct stat lst;
			snprintf(lower, sizeof(lower), "%s%s", strcmp(base, "/") ? base : "", opaque[i]);
			if (stat(lower, &lst) == 0)
				chmod(path, lst.st_mode & 07777);
		}
		if (setxattr(path, "trusted.overlay.opaque", "y", 1, 0) < 0)
			die("setxattr %s: %s", path, strerror(errno));
	}

	flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC;
	if (netnone)
		flags |= CLONE_NEWNET;
	if (unshare(flags) < 0)
		die("unshare(pid, mount, uts, ipc%s): %s", netnone ? ", net" : "", strerror(errno));
	if (pipe2(sync_pipe, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));

	child_pid = fork();
	if (child_pid < 0)
		die("fork: %s", strerror(errno));
	if (child_pid > 0) {
		report("PID %d", (int)child_pid);
		close(sync_pipe[0]);
		close(sync_pipe[1]);
		/* fd 3 stays open in the child until it executes the command */
		if (status_fd >= 0)
			close(status_fd);
		status_fd = -1;
		supervise();
	}

	/* the namespace's first process: wait until the parent has reported our pid
	 * (EOF on the pipe), so "READY" can never come before "PID" */
	close(sync_pipe[1]);
	{
		char c;
		while (read(sync_pipe[0], &c, 1) < 0 && errno == EINTR)
			;
	}
	close(sync_pipe[0]);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		_exit(125);

	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die("make / private: %s", strerror(errno));
	if (hostname && sethostname(hostname, strlen(hostname)) < 0)
		die("sethostname: %s", strerror(errno));
	if (netnone)
		lo_up();

	snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s,workdir=%s", base, upper, work);
	if (mount("overlay", merged, "overlay", 0, opts) < 0)
		die("mount overlay on %s: %s", merged, strerror(errno));

	if (chdir(merged) < 0)
		die("chdir %s: %s", merged, strerror(errno));
	/* proc, dev (a tmpfs holding the old root while we pivot), sys */
	mkdirs("proc", 0555);
	if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		die("mount proc: %s", strerror(errno));
	mkdirs("dev", 0755);
	if (mount("tmpfs", "dev", "tmpfs", MS_NOSUID, "mode=755,size=65536k") < 0)
		die("mount /dev: %s", strerror(errno));
	mkdirs("sys", 0555);
	if (mount("sysfs", "sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
		/* not fatal: fall back to a read-only bind of the host's */
		if (mount("/sys", "sys", NULL, MS_BIND | MS_REC, NULL) == 0)
			mount(NULL, "sys", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL);
	}
	mkdirs("dev/.oldroot", 0700);
	if (syscall(SYS_pivot_root, ".", "dev/.oldroot") < 0)
		die("pivot_root: %s", strerror(errno));
	if (chdir("/") < 0)
		die("chdir /: %s", strerror(errno));

	/* a minimal /dev */
	bind_dev("null");
	bind_dev("zero");
	bind_dev("full");
	bind_dev("random");
	bind_dev("urandom");
	bind_dev("tty");
	mkdirs("/dev/pts", 0755);
	if (mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		  "newinstance,ptmxmode=0666,mode=0620") == 0)
		symlink("pts/ptmx", "/dev/ptmx");
	mkdirs("/dev/shm", 01777);
	mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k");
	mkdirs("/dev/mqueue", 0755);
	mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	symlink("/proc/self/fd", "/dev/fd");
	symlink("/proc/self/fd/0", "/dev/stdin");
	symlink("/proc/self/fd/1", "/dev/stdout");
	symlink("/proc/self/fd/2", "/dev/stderr");
	symlink("/proc/kcore", "/dev/core");

	/* tmpfs mounts and binds, targets resolved inside the new root */
	for (i = 0; i < ntmpfs; i++) {
		char dst[PATH_MAX], o[128] = "mode=1777";
		char *colon;
		snprintf(dst, sizeof(dst), "%s", tmpfss[i]);
		colon = strchr(dst, ':');
		if (colon) {
			*colon = 0;
			snprintf(o, sizeof(o), "mode=1777,size=%s", colon + 1);
		}
		if (mkdirs(dst, 0755) < 0)
			die("mkdir %s: %s", dst, strerror(errno));
		if (mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, o) < 0)
			die("mount tmpfs on %s: %s", dst, strerror(errno));
	}
	for (i = 0; i < nbinds; i++) {
		char spec[PATH_MAX], src[PATH_MAX + 16];
		char *dst, *ro;
		struct stat st;
		int readonly = 0;

		snprintf(spec, sizeof(spec), "%s", binds[i]);
		dst = strchr(spec, ':');
		if (!dst)
			die("bad --bind %s", binds[i]);
		*dst++ = 0;
		ro = strchr(dst, ':');
		if (ro) {
			*ro++ = 0;
			readonly = !strcmp(ro, "ro");
		}
		snprintf(src, sizeof(src), "/dev/.oldroot%s", spec);
		if (stat(src, &st) < 0)
			die("bind source %s: %s", spec, strerror(errno));
		if (S_ISDIR(st.st_mode)) {
			if (mkdirs(dst, 0755) < 0)
				die("mkdir %s: %s", dst, strerror(errno));
		} else {
			int fd;
			ensure_parent(dst);
			fd = open(dst, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
			if (fd < 0 && errno != EISDIR)
				die("create %s: %s", dst, strerror(errno));
			if (fd >= 0)
				close(fd);
		}
		if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) < 0)
			die("bind %s on %s: %s", spec, dst, strerror(errno));
		if (readonly &&
		    mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
			die("remount %s read-only: %s", dst, strerror(errno));
	}

	if (umount2("/dev/.oldroot", MNT_DETACH) < 0)
		die("detach old root: %s", strerror(errno));
	rmdir("/dev/.oldroot");

	if (wd && *wd) {
		/* like container runtimes, create a missing working directory */
		mkdirs(wd, 0755);
		if (chdir(wd) < 0)
			die("working directory %s: %s", wd, strerror(errno));
	}
	report("READY");
	execvp(argv[0], argv);
	die("exec %s: %s", argv[0], strerror(errno));
	return 127;
}

static void on_sigchld(int sig)
{
	(void)sig;
}

static int write_all(int fd, const char *buf, ssize_t n)
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

/*
 * Terminal mode: copy our stdin to the terminal, the terminal to our stdout,
 * and "COLSxROWS" lines read on fd 4 to the terminal's size. The end of our
 * stdin is sent as the terminal's end-of-file character. Returns once the
 * terminal has no more output (every holder of its other side is gone).
 */
static void relay_tty(int master)
{
	struct sigaction sa;
	char buf[65536], rbuf[64];
	size_t rlen = 0;
	int in_open = 1, rs_open = fcntl(4, F_GETFD) >= 0;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = forward;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = on_sigchld;
	sigaction(SIGCHLD, &sa, NULL);
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
			if (waitpid(child_pid, &st, WNOHANG) == child_pid) {
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

static int do_exec(int argc, char **argv)
{
	const char *wd = NULL, *cgroups[MAXLIST];
	const char *nsnames[] = { "ipc", "uts", "net", "pid", "mnt" };
	int nsfd[5], rootfd, master = -1;
	int ncgroups = 0, i, pid = 0, tty = 0;
	struct winsize ws = { .ws_row = 24, .ws_col = 80 };
	char path[PATH_MAX];

	for (i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (i + 1 >= argc)
			die("option %s needs a value", a);
		if (!strcmp(a, "--pid"))
			pid = atoi(argv[++i]);
		else if (!strcmp(a, "--wd"))
			wd = argv[++i];
		else if (!strcmp(a, "--cgroup") && ncgroups < MAXLIST)
			cgroups[ncgroups++] = argv[++i];
		else if (!strcmp(a, "--tty")) {
			unsigned w = 0, h = 0;
			tty = 1;
			if (sscanf(argv[++i], "%ux%u", &w, &h) == 2 && w && h) {
				ws.ws_col = w;
				ws.ws_row = h;
			}
		} else
			die("unknown option %s", a);
	}
	if (i >= argc)
		die("no command");
	if (pid <= 0)
		die("--pid is required");
	argv += i;

	for (i = 0; i < 5; i++) {
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", pid, nsnames[i]);
		nsfd[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (nsfd[i] < 0)
			die("open %s: %s", path, strerror(errno));
	}
	snprintf(path, sizeof(path), "/proc/%d/root", pid);
	rootfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		die("open %s: %s", path, strerror(errno));
	for (i = 0; i < ncgroups; i++)
		join_cgroup(cgroups[i]);
	for (i = 0; i < 5; i++) {
		if (setns(nsfd[i], 0) < 0)
			die("setns %s: %s", nsnames[i], strerror(errno));
		close(nsfd[i]);
	}
	if (fchdir(rootfd) < 0 || chroot(".") < 0)
		die("enter root: %s", strerror(errno));
	close(rootfd);
	if (tty) {
		/* a terminal of the sandbox's own devpts */
		master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0)
			die("cannot allocate a terminal: %s", strerror(errno));
		ioctl(master, TIOCSWINSZ, &ws);
	}

	child_pid = fork();
	if (child_pid < 0)
		die("fork: %s", strerror(errno));
	if (child_pid > 0) {
		report("PID %d", (int)child_pid);
		if (status_fd >= 0)
			close(status_fd);
		status_fd = -1;
		if (tty)
			relay_tty(master);
		supervise();
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		_exit(125);
	if (tty) {
		char *name = ptsname(master);
		int slave;
		setsid();
		slave = name ? open(name, O_RDWR) : -1;
		if (slave < 0)
			die("open terminal: %s", strerror(errno));
		ioctl(slave, TIOCSCTTY, 0);
		dup2(slave, 0);
		dup2(slave, 1);
		dup2(slave, 2);
		if (slave > 2)
			close(slave);
		close(master);
		close(4);
	}
	if (chdir(wd && *wd ? wd : "/") < 0)
		die("working directory %s: %s", wd, strerror(errno));
	report("READY");
	execvp(argv[0], argv);
	{
		int e = errno;
		report("ERROR exec %s: %s", argv[0], strerror(e));
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(e));
		_exit(e == ENOENT ? 127 : 126);
	}
}

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
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write_all(1, buf, n) < 0)
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

static int do_zygote(void)
{
	sigset_t mask, oldmask;
	int sfd;
	struct zreq *r = calloc(1, sizeof(*r));

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
				return 0; /* the server is gone */
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

	close_from(5);

	if (fstat(3, &st) == 0) {
		status_fd = 3;
		fcntl(3, F_SETFD, FD_CLOEXEC);
	}
	/* Die with the server. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGPIPE, SIG_DFL);
	if (argc < 2)
		die("usage: sbx-helper init|exec [options] -- command [args...]");
	if (!strcmp(argv[1], "init"))
		return do_init(argc - 2, argv + 2);
	if (!strcmp(argv[1], "exec"))
		return do_exec(argc - 2, argv + 2);
	if (!strcmp(argv[1], "zygote"))
		return do_zygote();
	if (!strcmp(argv[1], "check")) {
		/* can we create the namespaces and mount? */
		if (unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET) < 0) {
			fprintf(stderr, "unshare: %s\n", strerror(errno));
			return 1;
		}
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
			fprintf(stderr, "mount: %s\n", strerror(errno));
			return 1;
		}
		return 0;
	}
	die("unknown mode %s", argv[1]);
	return 127;
}
