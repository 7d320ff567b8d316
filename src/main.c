/* main.c - the cwsfs command: parse options, find the service, check it answers,
 * mount, serve, and unwind in reverse order.
 *
 * Start-up follows sshfs: everything that can fail because of the user's setup (bad
 * options, no credentials, unreachable endpoint, refused key, local backend that will
 * not start) fails on the terminal, before daemonizing. The check is one blocking
 * ListSandboxes call made through the API client.
 *
 * fuse_daemonize() forks, and threads do not survive a fork: the API client used for
 * the check is shut down before daemonizing and started again in the daemon, just
 * before the loop. The local backend is a long-lived service of its own (backend.h):
 * found or started here, never stopped by cwsfs; the mount only holds a connection.
 *
 * Until libfuse's signal handlers are installed (just before mounting), SIGINT,
 * SIGTERM and SIGHUP only set a flag that the start-up waits watch, so a Ctrl-C
 * during start-up ends it cleanly. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <fuse_lowlevel.h>
#include <fuse_opt.h>

#include "api.h"
#include "backend.h"
#include "config.h"
#include "fs.h"
#include "log.h"
#include "options.h"

/* Type=notify units learn when the mount serves; a no-op outside systemd. */
#ifdef CWSFS_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#else
#define sd_notify(unset_env, state) ((void)(state), 0)
#endif

#define CHECK_SLICE_MS 200
#define CHECK_GRACE_MS 30000
#define CHECK_RETRIES 2         /* a start-up check should answer soon, not after 6 s of retries */
#define DEFAULT_IDLE_THREADS 10 /* libfuse's documented default */

static volatile sig_atomic_t startup_signal;

static void startup_handler(int sig)
{
    startup_signal = sig;
}

static void startup_signals(int install)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction sa;
    size_t i;

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = install ? startup_handler : SIG_DFL;
    for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
}

/* ---- the start-up check ----------------------------------------------------------- */

struct check {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;      /* lock */
    int err;       /* lock */
    long status;   /* lock */
    char code[64]; /* lock */
    char msg[512]; /* lock */
};

/* Server text goes to a terminal: no control characters. */
static void copy_printable(char *dst, size_t size, const char *src)
{
    size_t i;

    snprintf(dst, size, "%s", src ? src : "");
    for (i = 0; dst[i]; i++)
        if ((unsigned char)dst[i] < 0x20 || dst[i] == 0x7f)
            dst[i] = ' ';
}

static void check_done(uint64_t call_id, const struct api_result *res, void *ud)
{
    struct check *c = ud;

    pthread_mutex_lock(&c->lock);
    c->err = res->err;
    c->status = res->http_status;
    copy_printable(c->code, sizeof(c->code), res->error.code);
    copy_printable(c->msg, sizeof(c->msg), res->error.message);
    c->done = 1;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static const char *auth_name(enum api_auth auth)
{
    switch (auth) {
    case API_AUTH_BEARER:
        return "cwsandbox";
    case API_AUTH_WANDB:
        return "wandb";
    default:
        return "none";
    }
}

/* One ListSandboxes {"pageSize":1}, waited for. Returns 0 or -errno after saying
 * what went wrong on stderr. */
static int check_service(const char *where, enum api_auth auth, long timeout_ms)
{
    struct check c = {.err = 0};
    pthread_condattr_t attr;
    struct timespec now, until;
    long limit = (timeout_ms > 0 ? timeout_ms : DEFAULT_UNARY_TIMEOUT_MS) + CHECK_GRACE_MS;
    long waited = 0;
    int cancelled = 0, rc;
    json_t *req;
    uint64_t id;

    pthread_mutex_init(&c.lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&c.cond, &attr);
    pthread_condattr_destroy(&attr);

    req = json_pack("{s:i}", "pageSize", 1);
    id = req ? api_unary("ListSandboxes", req, API_IDEMPOTENT, check_done, &c) : 0;
    if (!id) {
        fprintf(stderr, "cwsfs: cannot start a call to %s\n", where);
        rc = -EIO;
        goto out;
    }
    pthread_mutex_lock(&c.lock);
    while (!c.done) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        until = now;
        until.tv_nsec += CHECK_SLICE_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c.cond, &c.lock, &until);
        waited += CHECK_SLICE_MS;
        if (!c.done && !cancelled && (startup_signal || waited >= limit)) {
            /* The done callback still comes (with -ECANCELED): keep waiting for it. */
            cancelled = 1;
            pthread_mutex_unlock(&c.lock);
            api_cancel(id);
            pthread_mutex_lock(&c.lock);
        }
    }
    pthread_mutex_unlock(&c.lock);

    rc = c.err;
    if (rc == 0)
        goto out;
    if (startup_signal) {
        fprintf(stderr, "cwsfs: interrupted while checking %s\n", where);
    } else if (cancelled) {
        fprintf(stderr, "cwsfs: no answer from %s within %ld s\n", where, limit / 1000);
        rc = -ETIMEDOUT;
    } else if (c.status == 401 || c.status == 403 || strcmp(c.code, "unauthenticated") == 0 ||
               strcmp(c.code, "permission_denied") == 0) {
        if (auth == API_AUTH_NONE)
            fprintf(stderr,
                    "cwsfs: %s wants credentials (%s%s%s); set CWSANDBOX_API_KEY or "
                    "WANDB_API_KEY, or give -o api_key_file=PATH\n",
                    where, c.code, c.msg[0] ? ": " : "", c.msg);
        else
            fprintf(stderr, "cwsfs: %s refused the credentials (auth=%s; %s%s%s)\n", where,
                    auth_name(auth), c.code, c.msg[0] ? ": " : "", c.msg);
        rc = -EACCES;
    } else if (strcmp(c.code, "unavailable") == 0 || rc == -EHOSTUNREACH) {
        fprintf(stderr, "cwsfs: cannot reach %s: %s\n", where, c.msg[0] ? c.msg : c.code);
    } else {
        fprintf(stderr, "cwsfs: %s answered ListSandboxes with %s%s%s (HTTP %ld)\n", where,
                c.code[0] ? c.code : strerror(-rc), c.msg[0] ? ": " : "", c.msg, c.status);
    }
out:
    pthread_cond_destroy(&c.cond);
    pthread_mutex_destroy(&c.lock);
    return rc;
}

static void fill_api_config(struct api_config *ac, const struct config *cfg, int http1,
                            long timeout_ms)
{
    memset(ac, 0, sizeof(*ac));
    ac->base_url = cfg->base_url;
    ac->unix_socket = cfg->unix_socket;
    ac->auth = cfg->auth;
    ac->api_key = cfg->api_key;
    ac->wandb_entity = cfg->wandb_entity;
    ac->wandb_project = cfg->wandb_project;
    ac->http1 = http1;
    ac->unary_timeout_ms = timeout_ms;
}

/* Replace the (empty) endpoint of a local-backend config with the backend's. */
static int use_backend(struct config *cfg, const struct backend *be)
{
    const char *sock = backend_unix_socket(be);

    free(cfg->base_url);
    free(cfg->unix_socket);
    cfg->base_url = strdup(backend_base_url(be));
    cfg->unix_socket = sock ? strdup(sock) : NULL;
    if (!cfg->base_url || (sock && !cfg->unix_socket))
        return -ENOMEM;
    return 0;
}

/* Where the log goes. logfile= wins, in the foreground too. A background mount uses
 * syslog when it has a socket; without one every line would vanish, so they go to a
 * file, and the terminal is told which before daemonizing. *use_syslog is set when the
 * daemon should switch to syslog. 0 or -errno (said on stderr). */
static int log_destination(const char *logfile, int foreground, int *use_syslog)
{
    char *dflt = NULL;
    const char *path = logfile;
    const char *run = getenv("XDG_RUNTIME_DIR");
    int rc;

    *use_syslog = 0;
    if (!path && foreground)
        return 0;
    if (!path && log_syslog_available()) {
        *use_syslog = 1;
        return 0;
    }
    if (!path) {
        rc = run && *run == '/' ? asprintf(&dflt, "%s/cwsfs.log", run)
                                : asprintf(&dflt, "/tmp/cwsfs-%u.log", (unsigned)geteuid());
        if (rc < 0)
            return -ENOMEM;
        path = dflt;
    }
    if (path[0] != '/') {
        fprintf(stderr, "cwsfs: logfile= needs an absolute path (got `%s')\n", path);
        rc = -EINVAL;
        goto out;
    }
    rc = log_open_file(path);
    if (rc < 0)
        fprintf(stderr, "cwsfs: cannot log to %s: %s\n", path, strerror(-rc));
    else if (!logfile)
        fprintf(stderr, "cwsfs: no syslog socket (/dev/log): the log goes to %s\n", path);
out:
    free(dflt);
    return rc;
}

/* libfuse reopens 0-2 at mount time; do it first so no file we open lands there. */
static void ensure_std_fds(void)
{
    int fd;

    do {
        fd = open("/dev/null", O_RDWR);
        if (fd > 2)
            close(fd);
    } while (fd >= 0 && fd <= 2);
}

/* The FUSE loop, as the command line asked (-s, max_threads, clone_fd); a positive
 * value is the signal that ended it (a normal unmount), -errno a failure. */
static int serve(struct fuse_session *se, const struct fuse_cmdline_opts *fuse_opts)
{
    if (fuse_opts->singlethread)
        return fuse_session_loop(se);
    struct fuse_loop_config *loop = fuse_loop_cfg_create();
    if (!loop) {
        log_error("out of memory setting up the FUSE loop");
        return -ENOMEM;
    }
    fuse_loop_cfg_set_clone_fd(loop, (unsigned)fuse_opts->clone_fd);
    /* "Not given" is UINT_MAX, which this libfuse rejects with a message. */
    fuse_loop_cfg_set_idle_threads(loop, fuse_opts->max_idle_threads == UINT_MAX
                                             ? DEFAULT_IDLE_THREADS
                                             : fuse_opts->max_idle_threads);
    fuse_loop_cfg_set_max_threads(loop, fuse_opts->max_threads);
    int rc = fuse_session_loop_mt(se, loop);
    fuse_loop_cfg_destroy(loop);
    return rc;
}

/* Where the service is: the endpoint and credentials the options and environment
 * give, else the bundled local backend (found or started; it outlives the mount).
 * 0, or -1 with the reason on stderr. */
static int find_service(const struct cmd_opts *o, long idle_s, struct config *cfg,
                        struct backend **be)
{
    struct config_overrides ov = {
        .endpoint = o->endpoint, .auth = o->auth, .api_key_file = o->api_key_file};
    struct backend_options bo;
    char err[4096];
    if (config_resolve(&ov, cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "cwsfs: %s\n", err);
        return -1;
    }
    if (!cfg->use_local_backend)
        return 0;
    memset(&bo, 0, sizeof(bo));
    bo.dir = o->backend;
    bo.idle_exit_s = idle_s;
    bo.cancel = &startup_signal;
    if (backend_connect(&bo, be, err, sizeof(err)) < 0) {
        fprintf(stderr, "cwsfs: %s\n", err);
        return -1;
    }
    if (backend_started_pid(*be))
        fprintf(stderr,
                "cwsfs: no endpoint or credentials set; started the local backend at %s "
                "(pid %d, log %s; it outlives this mount)\n",
                backend_url(*be), (int)backend_started_pid(*be), backend_log_path(*be));
    else
        fprintf(stderr,
                "cwsfs: no endpoint or credentials set; using the local backend at %s "
                "(log %s)\n",
                backend_url(*be), backend_log_path(*be));
    return use_backend(cfg, *be);
}

/* The start-up check with an API client of its own, ended before the fork (threads do
 * not survive it). 0, or -1 with the reason on stderr. */
static int check_once(struct api_config *ac, const char *where, enum api_auth auth, long timeout_ms)
{
    ac->max_retries = CHECK_RETRIES;
    int rc = api_init(ac);
    if (rc < 0) {
        fprintf(stderr, "cwsfs: cannot set up the API client for %s: %s\n", where, strerror(-rc));
        return -1;
    }
    rc = check_service(where, auth, timeout_ms);
    api_shutdown();
    return rc < 0 ? -1 : 0;
}

/* Everything the command line says, checked: libfuse's options and ours, the
 * mountpoint, the log level. 1 when it was -h or -V (printed), 0 to go on, -1 with the
 * reason on stderr. */
static int read_command_line(struct fuse_args *args, struct cmd_opts *o,
                             struct fuse_cmdline_opts *fuse_opts, char *mountpoint,
                             struct fs_options *fs_opts, long *timeout_ms, long *idle_s)
{
    if (options_parse(args, o) < 0)
        return -1;
    /* Before fuse_parse_cmdline, which would otherwise name the subtype after argv[0]
     * (mount.fuse.cwsfs when run through the symlink). */
    if (options_add_names(args, o) < 0)
        return -1;
    if (fuse_parse_cmdline(args, fuse_opts) != 0)
        return -1;
    if (fuse_opts->show_help) {
        options_usage("cwsfs");
        fuse_cmdline_help();
        fuse_lowlevel_help();
        return 1;
    }
    if (fuse_opts->show_version) {
        printf("cwsfs version %s\n", CWSFS_VERSION);
        fflush(stdout);
        fuse_lowlevel_version();
        return 1;
    }
    enum log_level level = LOG_LVL_INFO;
    if (o->log_level && log_level_parse(o->log_level, &level) < 0) {
        fprintf(stderr, "cwsfs: log_level= is error, warn, info or debug (got `%s')\n",
                o->log_level);
        return -1;
    }
    log_set_level(fuse_opts->debug ? LOG_LVL_DEBUG : level);
    if (o->nnonopt == 0) {
        fprintf(stderr, "cwsfs: no mountpoint given (see cwsfs -h)\n");
        return -1;
    }
    if (!realpath(o->nonopt[o->nnonopt - 1], mountpoint)) {
        fprintf(stderr, "cwsfs: bad mountpoint %s: %s\n", o->nonopt[o->nnonopt - 1],
                strerror(errno));
        return -1;
    }
    if (options_validate(o, fs_opts, timeout_ms, idle_s) < 0)
        return -1;
    if (options_check_fuse(args) < 0)
        return -1;

    return 0;
}

/* One function on purpose: each stage is unwound in reverse order at `out`, as
 * libfuse's examples do, which splitting would spread over several places. */
int main(int argc, char *argv[])
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_cmdline_opts fuse_opts;
    struct cmd_opts o;
    int use_syslog = 0;
    struct fs_options fs_opts;
    struct config cfg;
    struct api_config ac;
    struct backend *be = NULL;
    struct fuse_session *se = NULL;
    char mountpoint[PATH_MAX], where[PATH_MAX + 16];
    int api_up = 0, fs_up = 0, handlers = 0, mounted = 0;
    long timeout_ms = 0, idle_s = 0;
    int ret = 1, rc;

    memset(&o, 0, sizeof(o));
    memset(&fuse_opts, 0, sizeof(fuse_opts));
    memset(&cfg, 0, sizeof(cfg));
    ensure_std_fds();

    rc = read_command_line(&args, &o, &fuse_opts, mountpoint, &fs_opts, &timeout_ms, &idle_s);
    if (rc != 0) {
        ret = rc > 0 ? 0 : 1; /* -h and -V end here */
        goto out;
    }

    startup_signals(1);
    if (find_service(&o, idle_s, &cfg, &be) < 0)
        goto out;
    if (cfg.unix_socket)
        snprintf(where, sizeof(where), "unix:%s", cfg.unix_socket);
    else
        snprintf(where, sizeof(where), "%s", cfg.base_url);

    /* The check, with an API client that ends before the fork. */
    fill_api_config(&ac, &cfg, o.http1, timeout_ms);
    if (check_once(&ac, where, cfg.auth, timeout_ms) < 0)
        goto out;
    log_debug("%s answers (auth=%s)", where, auth_name(cfg.auth));

    /* fs_init starts no threads (it makes the spool directory): before the fork, so
     * its failures reach the terminal. */
    rc = fs_init(&fs_opts);
    if (rc < 0) {
        fprintf(stderr, "cwsfs: cannot set up the filesystem: %s\n", strerror(-rc));
        goto out;
    }
    fs_up = 1;
    se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), NULL);
    if (!se)
        goto out;
    fs_set_session(se);
    startup_signals(0);
    if (startup_signal)
        goto out;
    if (fuse_set_signal_handlers(se) != 0)
        goto out;
    handlers = 1;
    if (fuse_session_mount(se, mountpoint) != 0)
        goto out;
    mounted = 1;
    if (log_destination(o.logfile, fuse_opts.foreground, &use_syslog) < 0)
        goto out;
    if (fuse_daemonize(fuse_opts.foreground) != 0)
        goto out;
    if (use_syslog)
        log_use_syslog(1);

    /* In the process that serves: threads start here. */
    ac.max_retries = 0;
    rc = api_init(&ac);
    if (rc < 0) {
        log_error("cannot start the API client for %s: %s", where, strerror(-rc));
        goto out;
    }
    api_up = 1;
    fs_api_started();
    log_info("mounted %s on %s (auth=%s)", where, mountpoint, auth_name(cfg.auth));
    sd_notify(0, "READY=1");

    rc = serve(se, &fuse_opts);
    sd_notify(0, "STOPPING=1");
    /* A positive value is the signal that ended the loop: a normal unmount. */
    if (rc < 0)
        log_error("the FUSE loop failed: %s", strerror(-rc));
    else
        ret = 0;
out:
    if (handlers)
        fuse_remove_signal_handlers(se);
    if (mounted)
        fuse_session_unmount(se);
    /* fs_destroy may stop sandboxes through the API (cleanup), so only while it runs;
     * before the API came up in the daemon this mount created none. */
    if (fs_up && api_up)
        fs_destroy();
    /* Calls still in flight are answered here and may reply to FUSE requests: the
     * session outlives them. */
    if (api_up)
        api_shutdown();
    if (fs_up)
        fs_free();
    if (se)
        fuse_session_destroy(se);
    /* The backend keeps running, with its sandboxes (-o cleanup stopped ours). */
    backend_release(be);
    startup_signals(0);
    config_free(&cfg);
    options_free(&o);
    free(fuse_opts.mountpoint);
    fuse_opt_free_args(&args);
    return ret;
}
