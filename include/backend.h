/* backend.h - the bundled local backend (contrib/local-backend): a node process that
 * serves the Sandbox API on one machine. main starts it when no endpoint and no
 * credentials are configured, and stops it after unmount.
 *
 * The process runs `node DIR/server.js --listen unix:RUNDIR/backend.sock
 * --state-dir RUNDIR/state --address-file RUNDIR/address` (or --listen 127.0.0.1:0
 * when the socket path would be too long) in its own process group, so a Ctrl-C on
 * the terminal reaches cwsfs, which unmounts and then stops the backend. Its stdout
 * and stderr go to RUNDIR/backend.log; its stdin is a pipe that reaches EOF when cwsfs
 * exits, however it exits, so the backend can notice that it was orphaned. RUNDIR is
 * a fresh private directory (mode 0700) made under the base directory.
 *
 * All functions are for the main thread only. The handle survives fuse_daemonize():
 * the backend then is no longer our child, and backend_stop waits through a pidfd. */
#ifndef CWSFS_BACKEND_H
#define CWSFS_BACKEND_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

#define BACKEND_START_TIMEOUT_MS 15000
#define BACKEND_STOP_TIMEOUT_MS 10000

struct backend;

struct backend_options {
    /* The backend directory (holding server.js and node_modules). NULL: the
     * CWSFS_LOCAL_BACKEND environment variable, else the installed copy
     * (CWSFS_BACKEND_INSTALL_DIR) if it has server.js, else the source tree's
     * (CWSFS_BACKEND_SRC_DIR). */
    const char *dir;
    /* Where RUNDIR is made. NULL: $XDG_RUNTIME_DIR, else /tmp. */
    const char *base_dir;
    int tcp;               /* listen on 127.0.0.1:0 rather than a Unix socket */
    long start_timeout_ms; /* 0 = BACKEND_START_TIMEOUT_MS */
    /* When non-NULL and it becomes non-zero (a signal handler sets it), the start
     * gives up with -EINTR. */
    const volatile sig_atomic_t *cancel;
};

/* Find the backend directory as described for backend_options.dir, check that it
 * holds server.js and node_modules, and write its absolute path into out.
 * Returns 0 or -errno with err set to a sentence for the user. */
int backend_find_dir(const char *dir, char *out, size_t outlen, char *err, size_t errlen);

/* Start the backend and wait until it wrote its address file. On success *out is a
 * running backend (free it with backend_stop). On failure nothing is left running and
 * err says why: node missing, no server.js, no node_modules (run `npm ci`), the
 * process exited early (with the last lines of its log), or it did not get ready in
 * time. Returns 0 or -errno. */
int backend_start(const struct backend_options *opts, struct backend **out, char *err,
                  size_t errlen);

/* Where it listens, for people: "unix:/run/user/1000/cwsfs-backend-x/backend.sock"
 * or "http://127.0.0.1:43121". */
const char *backend_url(const struct backend *be);
/* For api_config: base_url ("http://localhost" with a socket) and unix_socket (NULL
 * over TCP). */
const char *backend_base_url(const struct backend *be);
const char *backend_unix_socket(const struct backend *be);
const char *backend_state_dir(const struct backend *be);
const char *backend_log_path(const struct backend *be);
pid_t backend_pid(const struct backend *be);

/* SIGTERM the backend's process group and wait for the backend to exit (SIGKILL after
 * BACKEND_STOP_TIMEOUT_MS). On a clean exit the run directory is removed (its state
 * directory only if the backend emptied it); otherwise the log is kept and named in
 * the log. Frees be. Returns 0, -ETIMEDOUT when it had to be killed, or -EIO when it
 * exited with a failure status. NULL is a no-op. */
int backend_stop(struct backend *be);

#endif
