/* backend.c - find the bundled local backend at its well-known socket, or start it
 * there (see backend.h).
 *
 * The backend is a node program; cwsfs starts it detached (double fork: it is never
 * our child, so it neither dies with the mount nor becomes a zombie of it), waits
 * until it answers GET /_local/health on the socket, and leaves it running at
 * unmount. Failures to start are the most common first-run problem (no node, no
 * `npm ci`), so each gets its own sentence, and an early exit quotes the end of the
 * backend's log. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"

#ifndef CWSFS_BACKEND_INSTALL_DIR
#define CWSFS_BACKEND_INSTALL_DIR ""
#endif

#define BACKEND_POLL_MS 100
#define BACKEND_PROBE_MS 1000 /* one health check; a backend still starting holds it */
#define BACKEND_TAIL_BYTES 4096
#define BACKEND_TAIL_LINES 12
#define SOCKET_NAME "api.sock"

extern char **environ;

struct backend {
    char *sock_path;
    char *log_path;
    char *url;
    pid_t started_pid; /* 0: it was already running */
    int hold;          /* this mount's idle connection; keeps an idle backend up */
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void append_err(char *err, size_t errlen, const char *text)
{
    size_t len;

    if (!err || errlen == 0)
        return;
    len = strlen(err);
    if (len + 1 < errlen)
        snprintf(err + len, errlen - len, "%s", text);
}

static long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int is_dir(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int has_file(const char *dir, const char *name)
{
    char path[PATH_MAX];
    struct stat st;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
        return 0;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int has_dir(const char *dir, const char *name)
{
    char path[PATH_MAX];

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
        return 0;
    return is_dir(path);
}

/* The backend beside the running binary: EXE_DIR/../share/cwsfs/local-backend once
 * installed (whatever the prefix, so a package needs no rebuild), or the link
 * EXE_DIR/cwsfs-local-backend that the build tree holds to the source tree's. Found
 * at run time so the binary embeds no build path. */
static int backend_near_exe(const char *rel, char *out, size_t outlen)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    char *slash;

    if (n <= 0)
        return 0;
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (!slash)
        return 0;
    *slash = '\0';
    if ((size_t)snprintf(out, outlen, "%s/%s", exe, rel) >= outlen)
        return 0;
    return has_file(out, "server.js");
}

int backend_find_dir(const char *dir, char *out, size_t outlen, char *err, size_t errlen)
{
    char real[PATH_MAX], near[PATH_MAX];
    const char *source = "-o backend=";
    const char *env = getenv("CWSFS_LOCAL_BACKEND");
    int e;

    if (!dir && env && env[0]) {
        dir = env;
        source = "CWSFS_LOCAL_BACKEND";
    }
    if (!dir) {
        source = "the built-in path";
        if (backend_near_exe("../share/cwsfs/local-backend", near, sizeof(near)))
            dir = near;
        else if (CWSFS_BACKEND_INSTALL_DIR[0] && has_file(CWSFS_BACKEND_INSTALL_DIR, "server.js"))
            dir = CWSFS_BACKEND_INSTALL_DIR;
        else if (backend_near_exe("cwsfs-local-backend", near, sizeof(near)))
            dir = near;
        if (!dir) {
            set_err(err, errlen,
                    "no local backend found (looked for server.js in ../share/cwsfs/"
                    "local-backend beside the cwsfs binary and in %s); "
                    "set CWSFS_LOCAL_BACKEND or -o backend=DIR, or give -o endpoint= and "
                    "credentials",
                    CWSFS_BACKEND_INSTALL_DIR[0] ? CWSFS_BACKEND_INSTALL_DIR : "-");
            return -ENOENT;
        }
    }
    if (!realpath(dir, real)) {
        e = errno;
        set_err(err, errlen, "local backend directory %s (from %s): %s", dir, source, strerror(e));
        return -e;
    }
    if (!is_dir(real)) {
        set_err(err, errlen, "local backend %s (from %s) is not a directory", real, source);
        return -ENOTDIR;
    }
    if (!has_file(real, "server.js")) {
        set_err(err, errlen, "%s (from %s) has no server.js: it is not the cwsfs local backend",
                real, source);
        return -ENOENT;
    }
    if (!has_dir(real, "node_modules")) {
        set_err(err, errlen, "the local backend in %s has no node_modules: run `npm ci` in %s",
                real, real);
        return -ENOENT;
    }
    if ((size_t)snprintf(out, outlen, "%s", real) >= outlen)
        return -ENAMETOOLONG;
    return 0;
}

/* Append the last lines of the backend's log to err, indented, so a failed start
 * shows why without sending people to a file. */
static void append_log_tail(const char *log_path, char *err, size_t errlen)
{
    char buf[BACKEND_TAIL_BYTES + 1];
    const char *lines[BACKEND_TAIL_LINES];
    size_t nlines = 0, i;
    ssize_t n;
    off_t size;
    char *p, *save = NULL;
    int fd;

    fd = open(log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    size = lseek(fd, 0, SEEK_END);
    if (size < 0 ||
        lseek(fd, size > BACKEND_TAIL_BYTES ? size - BACKEND_TAIL_BYTES : 0, SEEK_SET) < 0) {
        close(fd);
        return;
    }
    n = read(fd, buf, BACKEND_TAIL_BYTES);
    close(fd);
    if (n <= 0) {
        append_err(err, errlen, "\n  (the backend wrote nothing to its log)");
        return;
    }
    buf[n] = '\0';
    p = buf;
    if (size > BACKEND_TAIL_BYTES) { /* drop the partial first line */
        p = strchr(buf, '\n');
        p = p ? p + 1 : buf;
    }
    for (p = strtok_r(p, "\n", &save); p; p = strtok_r(NULL, "\n", &save)) {
        if (nlines == BACKEND_TAIL_LINES) {
            memmove(lines, lines + 1, sizeof(lines[0]) * (BACKEND_TAIL_LINES - 1));
            nlines--;
        }
        lines[nlines++] = p;
    }
    for (i = 0; i < nlines; i++) {
        append_err(err, errlen, "\n  ");
        append_err(err, errlen, lines[i]);
    }
}

int backend_socket_path(char *out, size_t outlen, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    const char *env = getenv("CWSB_SOCKET");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    char cwd[PATH_MAX];
    int n;

    if (env && env[0] == '/') {
        n = snprintf(out, outlen, "%s", env);
    } else if (env && env[0]) { /* relative: as node's path.resolve */
        if (!getcwd(cwd, sizeof(cwd)))
            return -errno;
        n = snprintf(out, outlen, "%s/%s", cwd, env);
    } else if (geteuid() == 0) {
        n = snprintf(out, outlen, "/run/cwsandbox-local/" SOCKET_NAME);
    } else if (xdg && xdg[0] == '/') {
        n = snprintf(out, outlen, "%s/cwsandbox-local/" SOCKET_NAME, xdg);
    } else {
        set_err(err, errlen,
                "XDG_RUNTIME_DIR is not set, so the local backend has no private place for "
                "its socket: set CWSB_SOCKET=PATH (or give -o endpoint= and credentials)");
        return -ENOENT;
    }
    if (n < 0 || (size_t)n >= outlen || (size_t)n >= sizeof(sun.sun_path)) {
        set_err(err, errlen,
                "the local backend's socket path %.300s%s is longer than a unix socket can "
                "have (%zu bytes): set CWSB_SOCKET to a shorter path",
                out, (size_t)n >= outlen ? "..." : "", sizeof(sun.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    return 0;
}

/* The socket's directory: made 0700 when missing; an existing one must be ours and
 * closed to group and others (the backend refuses anything else too). */
static int private_dir(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    int e;

    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        e = errno;
        set_err(err, errlen, "cannot make the local backend's directory %s: %s", dir, strerror(e));
        return -e;
    }
    if (lstat(dir, &st) < 0) {
        e = errno;
        set_err(err, errlen, "%s: %s", dir, strerror(e));
        return -e;
    }
    if (!S_ISDIR(st.st_mode)) {
        set_err(err, errlen, "%s (the local backend's directory) is not a directory", dir);
        return -ENOTDIR;
    }
    if (st.st_uid != geteuid()) {
        set_err(err, errlen,
                "%s belongs to uid %u, not to this user: not using the local "
                "backend there (set CWSB_SOCKET)",
                dir, (unsigned)st.st_uid);
        return -EACCES;
    }
    if (st.st_mode & 077) {
        set_err(err, errlen, "%s is open to group or others (mode %03o): chmod 700 it", dir,
                (unsigned)(st.st_mode & 0777));
        return -EACCES;
    }
    return 0;
}

static int connect_unix(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd;

    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        int e = errno;

        close(fd);
        return -e;
    }
    return fd;
}

/* 1 when the backend answers GET /_local/health within BACKEND_PROBE_MS, else 0. A
 * backend still starting accepts and answers once it is ready; one that is not
 * there refuses at once. */
static int healthy(const char *path)
{
    static const char req[] = "GET /_local/health HTTP/1.0\r\nHost: localhost\r\n\r\n";
    char buf[64];
    size_t got = 0;
    long deadline = now_ms() + BACKEND_PROBE_MS;
    int fd = connect_unix(path), ok = 0;

    if (fd < 0)
        return 0;
    if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(req) - 1))
        goto out;
    while (got < sizeof(buf) - 1) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        long left = deadline - now_ms();
        ssize_t n;

        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    ok = strncmp(buf, "HTTP/1.", 7) == 0 && strncmp(buf + 8, " 200", 4) == 0;
out:
    close(fd);
    return ok;
}

static int process_gone(pid_t pid, int *pidfd)
{
    if (*pidfd >= 0) {
        struct pollfd pfd = {.fd = *pidfd, .events = POLLIN};

        return poll(&pfd, 1, 0) > 0;
    }
    return kill(pid, 0) < 0 && errno == ESRCH;
}

/* A long-lived backend writes a line per call: each start moves a log past
 * BACKEND_LOG_ROTATE bytes to LOG.1 (replacing an older one), so the two never
 * hold much more than twice that. */
#define BACKEND_LOG_ROTATE (16L << 20)
static void rotate_log(const char *log_path)
{
    char old[PATH_MAX];
    struct stat st;

    if (stat(log_path, &st) < 0 || st.st_size <= BACKEND_LOG_ROTATE)
        return;
    if ((size_t)snprintf(old, sizeof(old), "%s.1", log_path) < sizeof(old))
        (void)rename(log_path, old);
}

/* Start `node DIR/server.js [--idle-exit S]` detached: an intermediate child makes a
 * new session and spawns it, then exits, so init adopts the backend. stdin is
 * /dev/null, stdout and stderr append to log_path, cwd is /. The backend computes the
 * same socket from the same environment; a key cwsfs's environment may hold for it
 * is dropped: the private socket is its access control. *pid is the backend's. */
static int spawn_detached(const char *dir, const char *log_path, long idle_s, pid_t *pid, char *err,
                          size_t errlen)
{
    static const int reset_signals[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGTERM,
                                        SIGPIPE, SIGCHLD, SIGUSR1, SIGUSR2};
    char server[PATH_MAX], idle[32];
    char *argv[6];
    struct {
        int err;
        pid_t pid;
    } res = {0, 0};
    int pfd[2], status, argc = 0;
    pid_t mid;
    ssize_t n;

    if ((size_t)snprintf(server, sizeof(server), "%s/server.js", dir) >= sizeof(server))
        return -ENAMETOOLONG;
    snprintf(idle, sizeof(idle), "%ld", idle_s);
    argv[argc++] = "node";
    argv[argc++] = server;
    if (idle_s > 0) {
        argv[argc++] = "--idle-exit";
        argv[argc++] = idle;
    }
    argv[argc] = NULL;
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -errno;
    mid = fork();
    if (mid < 0) {
        int e = errno;

        close(pfd[0]);
        close(pfd[1]);
        return -e;
    }
    if (mid == 0) {
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t sigs;
        size_t i;
        int rc;

        close(pfd[0]);
        unsetenv("CWSB_API_KEY");
        rotate_log(log_path);
        rc = posix_spawn_file_actions_init(&fa);
        if (!rc)
            rc = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        if (!rc)
            rc = posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log_path,
                                                  O_WRONLY | O_CREAT | O_APPEND | O_NOCTTY, 0600);
        if (!rc)
            rc = posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
        if (!rc)
            rc = posix_spawnattr_init(&attr);
        /* Its own session: no terminal's Ctrl-C or hangup reaches it. Signals start
         * unblocked and at their defaults. */
        if (!rc)
            rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
                                                     POSIX_SPAWN_SETSIGDEF);
        sigemptyset(&sigs);
        if (!rc)
            rc = posix_spawnattr_setsigmask(&attr, &sigs);
        for (i = 0; i < sizeof(reset_signals) / sizeof(reset_signals[0]); i++)
            sigaddset(&sigs, reset_signals[i]);
        if (!rc)
            rc = posix_spawnattr_setsigdefault(&attr, &sigs);
        if (!rc && chdir("/") < 0) /* never keep a mount or a directory busy */
            rc = errno;
        if (!rc)
            rc = posix_spawnp(&res.pid, "node", &fa, &attr, argv, environ);
        res.err = rc;
        if (write(pfd[1], &res, sizeof(res)) < 0)
            _exit(1);
        _exit(0);
    }
    close(pfd[1]);
    do
        n = read(pfd[0], &res, sizeof(res));
    while (n < 0 && errno == EINTR);
    close(pfd[0]);
    while (waitpid(mid, &status, 0) < 0 && errno == EINTR)
        ;
    if (n != (ssize_t)sizeof(res))
        return -EIO;
    if (res.err == ENOENT) {
        set_err(err, errlen,
                "the local backend needs node, which is not in PATH: install "
                "Node.js 20 or newer (or give -o endpoint= and credentials)");
        return -ENOENT;
    }
    if (res.err) {
        set_err(err, errlen, "cannot start the local backend (node %s): %s", server,
                strerror(res.err));
        return -res.err;
    }
    *pid = res.pid;
    return 0;
}

/* Take the start lock (flock on DIR/start.lock), waiting while another cwsfs starts
 * the backend. Returns the locked fd or -errno. */
static int start_lock(const char *dir, long deadline, const struct backend_options *opts, char *err,
                      size_t errlen)
{
    char path[PATH_MAX];
    int fd, e;

    if ((size_t)snprintf(path, sizeof(path), "%s/start.lock", dir) >= sizeof(path))
        return -ENAMETOOLONG;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        e = errno;
        set_err(err, errlen, "cannot open %s: %s", path, strerror(e));
        return -e;
    }
    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno != EWOULDBLOCK && errno != EINTR) {
            e = errno;
            close(fd);
            set_err(err, errlen, "cannot lock %s: %s", path, strerror(e));
            return -e;
        }
        if (opts->cancel && *opts->cancel) {
            close(fd);
            set_err(err, errlen, "interrupted while another cwsfs was starting the local backend");
            return -EINTR;
        }
        if (now_ms() >= deadline) {
            close(fd);
            set_err(err, errlen,
                    "another cwsfs has been starting the local backend for too "
                    "long (%s is locked)",
                    path);
            return -ETIMEDOUT;
        }
        sleep_ms(BACKEND_POLL_MS);
    }
    return fd;
}

/* Wait until the socket answers, watching for the backend's exit, a timeout and cancel. */
static int wait_ready(struct backend *be, long timeout_ms, const struct backend_options *opts,
                      char *err, size_t errlen)
{
    long deadline = now_ms() + timeout_ms;
    int pidfd = (int)syscall(SYS_pidfd_open, be->started_pid, 0);
    int rc = 0;

    for (;;) {
        if (healthy(be->sock_path))
            break;
        /* (it may have left because another one took the socket: asked once more) */
        if (process_gone(be->started_pid, &pidfd) && !healthy(be->sock_path)) {
            set_err(err, errlen,
                    "the local backend (pid %d) exited before it answered on %s (log: %s):",
                    (int)be->started_pid, be->sock_path, be->log_path);
            append_log_tail(be->log_path, err, errlen);
            rc = -ECHILD;
            break;
        }
        if (opts->cancel && *opts->cancel) {
            set_err(err, errlen,
                    "interrupted while the local backend was starting (it goes "
                    "on starting; log: %s)",
                    be->log_path);
            rc = -EINTR;
            break;
        }
        if (now_ms() >= deadline) {
            set_err(err, errlen,
                    "the local backend (pid %d) did not answer on %s within %ld s "
                    "(log: %s):",
                    (int)be->started_pid, be->sock_path, (timeout_ms + 999) / 1000, be->log_path);
            append_log_tail(be->log_path, err, errlen);
            rc = -ETIMEDOUT;
            break;
        }
        sleep_ms(BACKEND_POLL_MS);
    }
    if (pidfd >= 0)
        close(pidfd);
    return rc;
}

void backend_release(struct backend *be)
{
    if (!be)
        return;
    if (be->hold >= 0)
        close(be->hold);
    free(be->sock_path);
    free(be->log_path);
    free(be->url);
    free(be);
}

int backend_connect(const struct backend_options *opts, struct backend **out, char *err,
                    size_t errlen)
{
    static const struct backend_options defaults;
    char sock[PATH_MAX], dir[PATH_MAX], bdir[PATH_MAX];
    struct backend *be = NULL;
    long timeout, deadline;
    int lock = -1, rc;
    char *slash;

    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!opts)
        opts = &defaults;
    timeout = opts->start_timeout_ms > 0 ? opts->start_timeout_ms : BACKEND_START_TIMEOUT_MS;
    deadline = now_ms() + timeout;
    rc = backend_socket_path(sock, sizeof(sock), err, errlen);
    if (rc < 0)
        return rc;
    snprintf(dir, sizeof(dir), "%s", sock);
    slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    rc = private_dir(dir, err, errlen);
    if (rc < 0)
        return rc;
    rc = -ENOMEM;
    be = calloc(1, sizeof(*be));
    if (!be)
        goto out;
    be->hold = -1;
    be->sock_path = strdup(sock);
    if (asprintf(&be->log_path, "%s/backend.log", dir) < 0)
        be->log_path = NULL;
    if (asprintf(&be->url, "unix:%s", sock) < 0)
        be->url = NULL;
    if (!be->sock_path || !be->log_path || !be->url)
        goto out;

    if (!healthy(sock)) {
        /* One starter at a time; whoever waited finds it running. */
        lock = start_lock(dir, deadline, opts, err, errlen);
        if (lock < 0) {
            rc = lock;
            goto out;
        }
        if (!healthy(sock)) {
            rc = backend_find_dir(opts->dir, bdir, sizeof(bdir), err, errlen);
            if (rc < 0)
                goto out;
            rc = spawn_detached(bdir, be->log_path, opts->idle_exit_s, &be->started_pid, err,
                                errlen);
            if (rc < 0)
                goto out;
            rc = wait_ready(be, deadline - now_ms() > 0 ? deadline - now_ms() : 1, opts, err,
                            errlen);
            if (rc < 0)
                goto out;
        }
    }
    /* This mount's connection: the backend counts it as a client while we live. */
    be->hold = connect_unix(sock);
    if (be->hold < 0) {
        rc = be->hold;
        set_err(err, errlen, "cannot connect to the local backend at %s: %s", sock, strerror(-rc));
        goto out;
    }
    *out = be;
    be = NULL;
    rc = 0;
out:
    if (lock >= 0)
        close(lock); /* releases the flock */
    if (rc == -ENOMEM && err && errlen && !err[0])
        set_err(err, errlen, "out of memory finding the local backend");
    backend_release(be);
    return rc;
}

const char *backend_url(const struct backend *be)
{
    return be->url;
}

const char *backend_base_url(const struct backend *be)
{
    return "http://localhost";
}

const char *backend_unix_socket(const struct backend *be)
{
    return be->sock_path;
}

const char *backend_log_path(const struct backend *be)
{
    return be->log_path;
}

pid_t backend_started_pid(const struct backend *be)
{
    return be->started_pid;
}
