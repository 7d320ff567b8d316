/* backend.h - the bundled local backend (contrib/local-backend): a long-lived node
 * service private to the user, shared by every mount, that keeps its sandboxes when a
 * mount ends (DESIGN.md, "Removing").
 *
 * It listens on a well-known unix socket: $CWSB_SOCKET, else
 * /run/cwsandbox-local/api.sock for root, else $XDG_RUNTIME_DIR/cwsandbox-local/api.sock
 * (the same rule as the backend's own default). The socket is 0600 in a 0700
 * directory that also holds its pid file (backend.pid) and the log of a backend cwsfs
 * started (backend.log). When nothing answers there, cwsfs starts it detached (its own
 * session, stdin /dev/null, output appended to the log, --idle-exit as asked) and
 * waits until it answers; a lock file in that directory keeps two mounts starting at
 * once from starting two backends. cwsfs never stops it: it exits by itself after its
 * idle time with no live sandbox and no client, or on SIGTERM.
 *
 * While a mount lives, it holds one idle connection to the backend, so an idle
 * backend does not leave under a mount that has no sandbox yet.
 *
 * All functions are for the main thread, before any other thread runs (a start
 * forks). The handle survives fuse_daemonize(). */
#ifndef CWSFS_BACKEND_H
#define CWSFS_BACKEND_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

#define BACKEND_START_TIMEOUT_MS 60000
#define BACKEND_IDLE_DEFAULT_S 300

struct backend;

struct backend_options {
    /* The backend directory (holding server.js and node_modules). NULL: the
     * CWSFS_LOCAL_BACKEND environment variable, else the first with server.js of: the
     * installed copy beside the binary (BIN/../share/cwsfs/local-backend), the one of
     * the configured prefix (CWSFS_BACKEND_INSTALL_DIR), the source tree's through
     * the build tree's link BIN/cwsfs-local-backend. Only looked at when the backend
     * must be started. */
    const char *dir;
    long idle_exit_s;      /* --idle-exit of a backend we start; 0 = never */
    long start_timeout_ms; /* 0 = BACKEND_START_TIMEOUT_MS */
    /* When non-NULL and it becomes non-zero (a signal handler sets it), the wait
     * gives up with -EINTR (a backend already started keeps running). */
    const volatile sig_atomic_t *cancel;
};

/* Find the backend directory as described for backend_options.dir, check that it
 * holds server.js and node_modules, and write its absolute path into out.
 * Returns 0 or -errno with err set to a sentence for the user. */
int backend_find_dir(const char *dir, char *out, size_t outlen, char *err, size_t errlen);

/* The well-known socket path (see above) into out. Returns 0, or -errno with err set:
 * no XDG_RUNTIME_DIR for a user other than root, or a path too long for a unix
 * socket (never a fallback to TCP). */
int backend_socket_path(char *out, size_t outlen, char *err, size_t errlen);

/* Use the backend at the well-known socket, starting it when nothing answers there.
 * On success *out holds the connection this mount keeps (free with backend_release).
 * On failure err says why: an unsafe socket directory, node missing, no server.js, no
 * node_modules (run `npm ci`), the backend exited before it answered (with the last
 * lines of its log), or it did not answer in time. Returns 0 or -errno. */
int backend_connect(const struct backend_options *opts, struct backend **out, char *err,
                    size_t errlen);

/* "unix:/run/cwsandbox-local/api.sock", for people. */
const char *backend_url(const struct backend *be);
/* For api_config: "http://localhost" and the socket's path. */
const char *backend_base_url(const struct backend *be);
const char *backend_unix_socket(const struct backend *be);
/* The log a backend started by cwsfs writes (it may not exist for one started by hand). */
const char *backend_log_path(const struct backend *be);
/* The pid of the backend this call started, or 0 when it was already running. */
pid_t backend_started_pid(const struct backend *be);

/* Close this mount's connection to the backend and free be. The backend keeps
 * running (and its sandboxes with it). NULL is a no-op. */
void backend_release(struct backend *be);

#endif
