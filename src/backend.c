/* backend.c - start and stop the bundled local backend (see backend.h).
 *
 * The backend is a node program; cwsfs only spawns it, waits for the address file
 * it writes once it listens, and stops it after unmount. Failures to start are the
 * most common first-run problem (no node, no `npm ci`), so each gets its own
 * sentence, and an early exit quotes the end of the backend's own log.
 *
 * Waiting for the exit works both while the backend is our child (cwsfs -f) and
 * after fuse_daemonize() forked us away from it: waitpid while it is our child, then a
 * pidfd, which becomes readable when the process ends whoever reaps it; kill(pid, 0)
 * is the fallback on kernels without pidfd_open. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "log.h"

#ifndef CWSFS_BACKEND_SRC_DIR
#define CWSFS_BACKEND_SRC_DIR ""
#endif
#ifndef CWSFS_BACKEND_INSTALL_DIR
#define CWSFS_BACKEND_INSTALL_DIR ""
#endif

#define BACKEND_POLL_MS 50
#define BACKEND_TAIL_BYTES 4096
#define BACKEND_TAIL_LINES 12
#define BACKEND_ADDRESS_MAX 4096
#define PIDFD_UNTRIED (-2)
#define PIDFD_NONE (-1) /* the kernel has no pidfd_open */

extern char **environ;

struct backend {
    pid_t pid;
    int pidfd;    /* opened once the backend is no longer our child; or PIDFD_* */
    int lifeline; /* write end of the backend's stdin; closed when we exit */
    char *run_dir;
    char *sock_path; /* NULL over TCP */
    char *address_path;
    char *state_dir;
    char *log_path;
    char *url;
    char *base_url;
    char *unix_socket;
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

int backend_find_dir(const char *dir, char *out, size_t outlen, char *err, size_t errlen)
{
    char real[PATH_MAX];
    const char *source = "-o backend=";
    const char *env = getenv("CWSFS_LOCAL_BACKEND");
    int e;

    if (!dir && env && env[0]) {
        dir = env;
        source = "CWSFS_LOCAL_BACKEND";
    }
    if (!dir) {
        source = "the built-in path";
        if (CWSFS_BACKEND_INSTALL_DIR[0] && has_file(CWSFS_BACKEND_INSTALL_DIR, "server.js"))
            dir = CWSFS_BACKEND_INSTALL_DIR;
        else if (CWSFS_BACKEND_SRC_DIR[0] && has_file(CWSFS_BACKEND_SRC_DIR, "server.js"))
            dir = CWSFS_BACKEND_SRC_DIR;
        if (!dir) {
            set_err(err, errlen,
                    "no local backend found (looked for server.js in %s and %s); "
                    "set CWSFS_LOCAL_BACKEND or -o backend=DIR, or give -o endpoint= and "
                    "credentials",
                    CWSFS_BACKEND_INSTALL_DIR[0] ? CWSFS_BACKEND_INSTALL_DIR : "-",
                    CWSFS_BACKEND_SRC_DIR[0] ? CWSFS_BACKEND_SRC_DIR : "-");
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

static void backend_free(struct backend *be)
{
    if (!be)
        return;
    if (be->pidfd >= 0)
        close(be->pidfd);
    if (be->lifeline >= 0)
        close(be->lifeline);
    free(be->run_dir);
    free(be->sock_path);
    free(be->address_path);
    free(be->state_dir);
    free(be->log_path);
    free(be->url);
    free(be->base_url);
    free(be->unix_socket);
    free(be);
}

/* Wait up to timeout_ms for the backend to exit. Returns 1 when it exited (with
 * *status filled and *have_status = 1 if it was our child and we reaped it), 0 on
 * timeout. */
static int wait_exit(struct backend *be, long timeout_ms, int *status, int *have_status)
{
    long deadline = now_ms() + timeout_ms;

    *have_status = 0;
    for (;;) {
        pid_t r = waitpid(be->pid, status, WNOHANG);
        long left;

        if (r == be->pid) {
            *have_status = 1;
            return 1;
        }
        if (r < 0 && errno != EINTR) {
            /* Not our child any more (we daemonized): ask a pidfd, which sees the exit
             * whoever reaps it, or else the kernel. Opened only now, so runs that stay
             * our parent (cwsfs -f, under valgrind too) never need the syscall. */
            if (be->pidfd == PIDFD_UNTRIED) {
                be->pidfd = (int)syscall(SYS_pidfd_open, be->pid, 0);
                if (be->pidfd < 0)
                    be->pidfd = PIDFD_NONE;
            }
            if (be->pidfd >= 0) {
                struct pollfd pfd = {.fd = be->pidfd, .events = POLLIN};

                if (poll(&pfd, 1, 0) > 0)
                    return 1;
            } else if (kill(be->pid, 0) < 0 && errno == ESRCH) {
                return 1;
            }
        }
        left = deadline - now_ms();
        if (left <= 0)
            return 0;
        if (left > BACKEND_POLL_MS)
            left = BACKEND_POLL_MS;
        if (be->pidfd >= 0) {
            struct pollfd pfd = {.fd = be->pidfd, .events = POLLIN};

            poll(&pfd, 1, (int)left);
        } else {
            sleep_ms(left);
        }
    }
}

static void signal_group(const struct backend *be, int sig)
{
    if (kill(-be->pid, sig) < 0)
        kill(be->pid, sig);
}

/* Used when a start fails: stop the process at once, keep the run directory (its log
 * explains the failure). */
static void kill_and_reap(struct backend *be)
{
    int status, have;

    signal_group(be, SIGTERM);
    if (!wait_exit(be, 2000, &status, &have)) {
        signal_group(be, SIGKILL);
        wait_exit(be, 2000, &status, &have);
    }
}

/* Parse the address file's first line into url / base_url / unix_socket. Accepted:
 * unix:PATH, /PATH, http://HOST:PORT, https://..., HOST:PORT. */
static int parse_address(struct backend *be, char *text)
{
    char *end = strchr(text, '\n');
    size_t len;

    if (end)
        *end = '\0';
    len = strlen(text);
    while (len > 0 && (text[len - 1] == '\r' || text[len - 1] == ' ' || text[len - 1] == '\t'))
        text[--len] = '\0';
    while (*text == ' ' || *text == '\t')
        text++;
    if (strncmp(text, "unix:", 5) == 0 || text[0] == '/') {
        const char *path = text[0] == '/' ? text : text + 5;
        struct sockaddr_un sun;

        if (path[0] != '/' || strlen(path) >= sizeof(sun.sun_path))
            return -EPROTO;
        be->unix_socket = strdup(path);
        if (!be->unix_socket)
            return -ENOMEM;
        be->base_url = strdup("http://localhost");
        if (asprintf(&be->url, "unix:%s", path) < 0)
            be->url = NULL;
    } else if (strncmp(text, "http://", 7) == 0 || strncmp(text, "https://", 8) == 0) {
        be->base_url = strdup(text);
        be->url = strdup(text);
    } else if (text[0] && strchr(text, ':') && !strchr(text, '/')) {
        if (asprintf(&be->base_url, "http://%s", text) < 0)
            be->base_url = NULL;
        be->url = be->base_url ? strdup(be->base_url) : NULL;
    } else {
        return -EPROTO;
    }
    if (!be->base_url || !be->url)
        return -ENOMEM;
    return 0;
}

/* The address file once it is complete: a newline ends it, or the same text two
 * polls in a row (a writer that omits the newline). 1 = ready, 0 = not yet. */
static int read_address(struct backend *be, char *prev, size_t prevlen, char *text, size_t textlen)
{
    ssize_t n;
    int fd;

    fd = open(be->address_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, text, textlen - 1);
    close(fd);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    if (strchr(text, '\n') || strcmp(text, prev) == 0)
        return 1;
    snprintf(prev, prevlen, "%s", text);
    return 0;
}

static int make_run_dir(const struct backend_options *opts, struct backend *be, char *err,
                        size_t errlen)
{
    const char *base = opts->base_dir;
    struct sockaddr_un sun;
    char *tmpl = NULL;
    int e;

    if (!base) {
        base = getenv("XDG_RUNTIME_DIR");
        if (!base || base[0] != '/' || !is_dir(base) || access(base, W_OK) != 0)
            base = "/tmp";
    }
    if (asprintf(&tmpl, "%s/cwsfs-backend-XXXXXX", base) < 0)
        return -ENOMEM;
    if (!mkdtemp(tmpl)) {
        e = errno;
        set_err(err, errlen, "cannot make a run directory for the local backend in %s: %s", base,
                strerror(e));
        free(tmpl);
        return -e;
    }
    be->run_dir = tmpl;
    if (asprintf(&be->address_path, "%s/address", tmpl) < 0)
        be->address_path = NULL;
    if (asprintf(&be->state_dir, "%s/state", tmpl) < 0)
        be->state_dir = NULL;
    if (asprintf(&be->log_path, "%s/backend.log", tmpl) < 0)
        be->log_path = NULL;
    if (!be->address_path || !be->state_dir || !be->log_path)
        return -ENOMEM;
    if (!opts->tcp && strlen(tmpl) + sizeof("/backend.sock") <= sizeof(sun.sun_path)) {
        if (asprintf(&be->sock_path, "%s/backend.sock", tmpl) < 0) {
            be->sock_path = NULL;
            return -ENOMEM;
        }
    }
    /* The backend makes the state directory itself: one it made, it also removes. */
    return 0;
}

static int spawn_node(struct backend *be, const char *dir, char *err, size_t errlen)
{
    static const int reset_signals[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGTERM,
                                        SIGPIPE, SIGCHLD, SIGUSR1, SIGUSR2};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    char server[PATH_MAX], listen_arg[PATH_MAX + 8];
    char *argv[9];
    int lifeline[2] = {-1, -1};
    int logfd = -1, rc, fa_ok = 0, attr_ok = 0;
    sigset_t sigs;
    size_t i;

    if ((size_t)snprintf(server, sizeof(server), "%s/server.js", dir) >= sizeof(server))
        return -ENAMETOOLONG;
    if (be->sock_path)
        snprintf(listen_arg, sizeof(listen_arg), "unix:%s", be->sock_path);
    else
        snprintf(listen_arg, sizeof(listen_arg), "127.0.0.1:0");
    argv[0] = "node";
    argv[1] = server;
    argv[2] = "--listen";
    argv[3] = listen_arg;
    argv[4] = "--state-dir";
    argv[5] = be->state_dir;
    argv[6] = "--address-file";
    argv[7] = be->address_path;
    argv[8] = NULL;

    logfd = open(be->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600);
    if (logfd < 0) {
        rc = -errno;
        set_err(err, errlen, "cannot open %s: %s", be->log_path, strerror(-rc));
        goto out;
    }
    if (pipe2(lifeline, O_CLOEXEC) < 0) {
        rc = -errno;
        goto out;
    }
    rc = -posix_spawn_file_actions_init(&fa);
    if (rc)
        goto out;
    fa_ok = 1;
    rc = -posix_spawnattr_init(&attr);
    if (rc)
        goto out;
    attr_ok = 1;
    /* dup2 clears close-on-exec on the copies; the originals stay close-on-exec. */
    rc = -posix_spawn_file_actions_adddup2(&fa, lifeline[0], STDIN_FILENO);
    if (!rc)
        rc = -posix_spawn_file_actions_adddup2(&fa, logfd, STDOUT_FILENO);
    if (!rc)
        rc = -posix_spawn_file_actions_adddup2(&fa, logfd, STDERR_FILENO);
    /* Its own process group: the terminal's Ctrl-C is for cwsfs, which unmounts
     * first and then stops the backend. Signals start unblocked and at default. */
    if (!rc)
        rc = -posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                  POSIX_SPAWN_SETSIGDEF);
    if (!rc)
        rc = -posix_spawnattr_setpgroup(&attr, 0);
    sigemptyset(&sigs);
    if (!rc)
        rc = -posix_spawnattr_setsigmask(&attr, &sigs);
    for (i = 0; i < sizeof(reset_signals) / sizeof(reset_signals[0]); i++)
        sigaddset(&sigs, reset_signals[i]);
    if (!rc)
        rc = -posix_spawnattr_setsigdefault(&attr, &sigs);
    if (rc)
        goto out;

    rc = -posix_spawnp(&be->pid, "node", &fa, &attr, argv, environ);
    if (rc == -ENOENT) {
        set_err(err, errlen,
                "the local backend needs node, which is not in PATH: install "
                "Node.js 18 or newer (or give -o endpoint= and credentials)");
        goto out;
    }
    if (rc) {
        set_err(err, errlen, "cannot run node: %s", strerror(-rc));
        goto out;
    }
    be->lifeline = lifeline[1];
    lifeline[1] = -1;
out:
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (attr_ok)
        posix_spawnattr_destroy(&attr);
    if (lifeline[0] >= 0)
        close(lifeline[0]);
    if (lifeline[1] >= 0)
        close(lifeline[1]);
    if (logfd >= 0)
        close(logfd);
    return rc;
}

/* Wait for the address file, watching for an early exit, a timeout and cancel. */
static int wait_ready(struct backend *be, const struct backend_options *opts, char *err,
                      size_t errlen)
{
    long timeout = opts->start_timeout_ms > 0 ? opts->start_timeout_ms : BACKEND_START_TIMEOUT_MS;
    long deadline = now_ms() + timeout;
    char prev[BACKEND_ADDRESS_MAX] = "", text[BACKEND_ADDRESS_MAX];
    int status, rc;

    for (;;) {
        if (read_address(be, prev, sizeof(prev), text, sizeof(text))) {
            rc = parse_address(be, text);
            if (rc == -EPROTO)
                set_err(err, errlen,
                        "the local backend wrote an address cwsfs does not "
                        "understand to %s: %.200s",
                        be->address_path, text);
            if (rc < 0)
                kill_and_reap(be);
            return rc;
        }
        if (waitpid(be->pid, &status, WNOHANG) == be->pid) {
            if (WIFEXITED(status))
                set_err(err, errlen,
                        "the local backend exited with status %d before it was "
                        "ready (log: %s):",
                        WEXITSTATUS(status), be->log_path);
            else
                set_err(err, errlen,
                        "the local backend was killed by signal %d before it was "
                        "ready (log: %s):",
                        WTERMSIG(status), be->log_path);
            append_log_tail(be->log_path, err, errlen);
            return -ECHILD;
        }
        if (opts->cancel && *opts->cancel) {
            set_err(err, errlen, "interrupted while the local backend was starting");
            kill_and_reap(be);
            return -EINTR;
        }
        if (now_ms() >= deadline) {
            set_err(err, errlen, "the local backend did not get ready within %ld s (log: %s):",
                    (timeout + 999) / 1000, be->log_path);
            append_log_tail(be->log_path, err, errlen);
            kill_and_reap(be);
            return -ETIMEDOUT;
        }
        sleep_ms(BACKEND_POLL_MS);
    }
}

int backend_start(const struct backend_options *opts, struct backend **out, char *err,
                  size_t errlen)
{
    static const struct backend_options defaults;
    char dir[PATH_MAX];
    struct backend *be = NULL;
    int rc;

    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!opts)
        opts = &defaults;
    rc = backend_find_dir(opts->dir, dir, sizeof(dir), err, errlen);
    if (rc < 0)
        return rc;
    rc = -ENOMEM;
    be = calloc(1, sizeof(*be));
    if (!be)
        goto out;
    be->pid = -1;
    be->pidfd = PIDFD_UNTRIED;
    be->lifeline = -1;
    rc = make_run_dir(opts, be, err, errlen);
    if (rc < 0)
        goto out;
    rc = spawn_node(be, dir, err, errlen);
    if (rc < 0)
        goto out;
    rc = wait_ready(be, opts, err, errlen);
    if (rc < 0)
        goto out;
    *out = be;
    be = NULL;
out:
    if (rc == -ENOMEM && err && errlen && !err[0])
        set_err(err, errlen, "out of memory starting the local backend");
    else if (rc < 0 && err && errlen && !err[0])
        set_err(err, errlen, "cannot start the local backend: %s", strerror(-rc));
    if (be && be->run_dir) {
        /* Keep the run directory only when err sends people to its log. */
        int keep_log = be->pid >= 0 && (rc == -ECHILD || rc == -ETIMEDOUT);

        if (be->address_path)
            unlink(be->address_path);
        if (be->sock_path)
            unlink(be->sock_path);
        if (be->state_dir)
            rmdir(be->state_dir);
        if (!keep_log) {
            if (be->log_path)
                unlink(be->log_path);
            rmdir(be->run_dir);
        }
    }
    backend_free(be);
    return rc;
}

const char *backend_url(const struct backend *be)
{
    return be->url;
}

const char *backend_base_url(const struct backend *be)
{
    return be->base_url;
}

const char *backend_unix_socket(const struct backend *be)
{
    return be->unix_socket;
}

const char *backend_state_dir(const struct backend *be)
{
    return be->state_dir;
}

const char *backend_log_path(const struct backend *be)
{
    return be->log_path;
}

pid_t backend_pid(const struct backend *be)
{
    return be->pid;
}

int backend_stop(struct backend *be)
{
    int status = 0, have_status = 0, rc = 0;

    if (!be)
        return 0;
    signal_group(be, SIGTERM);
    if (!wait_exit(be, BACKEND_STOP_TIMEOUT_MS, &status, &have_status)) {
        log_warn("local backend (pid %d) did not stop within %d s; killing it", (int)be->pid,
                 BACKEND_STOP_TIMEOUT_MS / 1000);
        signal_group(be, SIGKILL);
        wait_exit(be, 2000, &status, &have_status);
        rc = -ETIMEDOUT;
    } else if (have_status && !(WIFEXITED(status) && WEXITSTATUS(status) == 0) &&
               !(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM)) {
        if (WIFEXITED(status))
            log_warn("local backend exited with status %d (log: %s)", WEXITSTATUS(status),
                     be->log_path);
        else
            log_warn("local backend was killed by signal %d (log: %s)", WTERMSIG(status),
                     be->log_path);
        rc = -EIO;
    }
    unlink(be->address_path);
    if (be->sock_path)
        unlink(be->sock_path);
    if (rmdir(be->state_dir) < 0 && errno != ENOENT)
        log_info("the local backend's state stays in %s", be->state_dir);
    if (rc == 0) {
        unlink(be->log_path);
        rmdir(be->run_dir); /* fails, harmlessly, when state was kept */
    }
    backend_free(be);
    return rc;
}
