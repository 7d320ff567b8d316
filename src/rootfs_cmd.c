/* rootfs_cmd.c - commands run in a sandbox on the filesystem's behalf.
 *
 * The service has no stat, list, mkdir or rename rpc: cwsfs runs coreutils and find
 * with Exec. Names are argv elements, never pasted into a shell string, so a file
 * named `$(touch x)` is only a name. A failed command's errno is read from the words
 * its stderr carries; the words themselves go to the sandbox's `error` file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utlist.h>

#include "api.h"
#include "listing.h"
#include "log.h"
#include "pbjson.h"
#include "rootfs_int.h"

#define EXEC_MAX_OUTPUT (16 << 20)

/* ---- small helpers ---- */

char *rootfs_path_join(const char *dir, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", name) < 0)
        return NULL;
    return p;
}

/* Parent directory of an absolute path ("/" for "/x"). */
char *rootfs_path_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

const char *rootfs_path_base(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

long rootfs_ms_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

/* A failed command's errno, from the words coreutils and find print. */
int rootfs_errno_from_stderr(const char *text)
{
    static const struct {
        const char *words;
        int err;
    } table[] = {
        {"No such file or directory", ENOENT},
        {"Permission denied", EACCES},
        {"File exists", EEXIST},
        {"Directory not empty", ENOTEMPTY},
        {"Not a directory", ENOTDIR},
        {"Is a directory", EISDIR},
        {"Operation not permitted", EPERM},
        {"Read-only file system", EROFS},
        {"No space left on device", ENOSPC},
        {"Invalid argument", EINVAL},
        {"subdirectory of itself", EINVAL},
        {"File name too long", ENAMETOOLONG},
        {"Too many levels of symbolic links", ELOOP},
        {"Disk quota exceeded", EDQUOT},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(*table); i++)
        if (text && strstr(text, table[i].words))
            return table[i].err;
    return EIO;
}

/* ---- running a command ---- */

struct cmd_ctx {
    struct sandbox *sb;
    json_t *argv;
    rootfs_cmd_fn fn;
    void *ud;
    int flags; /* API_* of the Exec */
};

static void cmd_on_done(uint64_t call, const struct api_result *res, void *ud)
{
    struct cmd_ctx *cc = ud;
    struct sandbox *sb = cc->sb;
    pthread_mutex_lock(&fs_lock);
    char *out = NULL, *errtext = NULL;
    size_t outlen = 0, errlen = 0;
    int64_t code = 0;
    int err = res->err;
    if (err) {
        sandbox_fail_call(sb, res, "Exec %s", json_string_value(json_array_get(cc->argv, 0)));
    } else if (pbjson_get_bytes(res->response, "stdout", &out, &outlen) < 0 ||
               pbjson_get_bytes(res->response, "stderr", &errtext, &errlen) < 0 ||
               pbjson_get_int64(res->response, "exitCode", 0, &code) < 0) {
        err = sandbox_fail(sb, EIO, "Exec: the answer is not an ExecResponse");
    } else if (pbjson_get_bool(res->response, "stdoutTruncated")) {
        err = sandbox_fail(sb, EFBIG, "Exec %s: output beyond %d bytes",
                           json_string_value(json_array_get(cc->argv, 0)), EXEC_MAX_OUTPUT);
    }
    cc->fn(sb, err, (int)code, out ? out : "", outlen, errtext ? errtext : "", cc->ud);
    free(out);
    free(errtext);
    json_decref(cc->argv);
    sandbox_unref(sb);
    free(cc);
    pthread_mutex_unlock(&fs_lock);
}

static void cmd_when_running(struct sandbox *sb, int err, void *ud)
{
    struct cmd_ctx *cc = ud;
    if (err) {
        cc->fn(sb, err, -1, "", 0, "", cc->ud);
        json_decref(cc->argv);
        sandbox_unref(sb);
        free(cc);
        return;
    }
    json_t *req = json_pack("{s:s, s:O, s:i}", "sandboxId", sb->id, "command", cc->argv,
                            "maxOutputBytes", EXEC_MAX_OUTPUT);
    api_unary("Exec", req, API_SLOW | cc->flags, cmd_on_done, cc);
}

/* Run argv (NULL-terminated) in the sandbox, starting it if needed. */
static void run_cmd(struct sandbox *sb, const char *const *argv, int flags, rootfs_cmd_fn fn,
                    void *ud)
{
    struct cmd_ctx *cc = calloc(1, sizeof(*cc));
    if (!cc) {
        fn(sb, -ENOMEM, -1, "", 0, "", ud);
        return;
    }
    size_t bad;
    if (!(cc->argv = pbjson_string_array(argv, &bad))) {
        free(cc);
        fn(sb, sandbox_fail(sb, EILSEQ, "%s: not UTF-8; the service takes text only", argv[bad]),
           -1, "", 0, "", ud);
        return;
    }
    cc->sb = sb;
    cc->fn = fn;
    cc->ud = ud;
    cc->flags = flags;
    sandbox_ref(sb);
    sandbox_when_running(sb, cmd_when_running, cc);
}

/* Not idempotent in general (mkdir, mv): never retried. */
void rootfs_run_cmd(struct sandbox *sb, const char *const *argv, rootfs_cmd_fn fn, void *ud)
{
    run_cmd(sb, argv, 0, fn, ud);
}

void rootfs_run_query(struct sandbox *sb, const char *const *argv, rootfs_cmd_fn fn, void *ud)
{
    run_cmd(sb, argv, API_IDEMPOTENT, fn, ud);
}
