/* options.c - the cwsfs command line: the option table, the help text, and the checks
 * that make a bad option fail on the terminal before anything starts. The sandbox spec
 * options are checked by the ctl grammar (ctl.h), so both accept the same values. */
#include "options.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "ctl.h"
#include "log.h"

#define MAX_TIMEOUT_MS (24L * 3600 * 1000)

enum {
    KEY_TAGS,
    KEY_TAG,
    KEY_ENV,
    KEY_SECRET,
    KEY_FSNAME,
    KEY_SUBTYPE,
};

#define CWSFS_OPT(t, field, value)                                                                 \
    {                                                                                              \
        t, offsetof(struct cmd_opts, field), value                                                 \
    }

static const struct fuse_opt option_spec[] = {
    CWSFS_OPT("endpoint=%s", endpoint, 0),
    CWSFS_OPT("auth=%s", auth, 0),
    CWSFS_OPT("api_key_file=%s", api_key_file, 0),
    CWSFS_OPT("http1", http1, 1),
    CWSFS_OPT("cleanup", cleanup, 1),
    CWSFS_OPT("spool=%s", spool, 0),
    CWSFS_OPT("logfile=%s", logfile, 0),
    CWSFS_OPT("log_level=%s", log_level, 0),
    CWSFS_OPT("backend=%s", backend, 0),
    CWSFS_OPT("backend_idle=%s", backend_idle, 0),
    CWSFS_OPT("image=%s", image, 0),
    CWSFS_OPT("command=%s", command, 0),
    CWSFS_OPT("lifetime=%s", lifetime, 0),
    CWSFS_OPT("cpu=%s", cpu, 0),
    CWSFS_OPT("memory=%s", memory, 0),
    CWSFS_OPT("gpu=%s", gpu, 0),
    CWSFS_OPT("timeout=%s", timeout, 0),
    CWSFS_OPT("window=%s", window, 0),
    FUSE_OPT_KEY("tags=", KEY_TAGS),
    FUSE_OPT_KEY("tag=", KEY_TAG),
    FUSE_OPT_KEY("env=", KEY_ENV),
    /* Keys on a command line are readable by every user (ps, /proc): refuse them
     * here, before libfuse could echo one in an "unknown option" message. */
    FUSE_OPT_KEY("api_key=", KEY_SECRET),
    FUSE_OPT_KEY("apikey=", KEY_SECRET),
    FUSE_OPT_KEY("api-key=", KEY_SECRET),
    FUSE_OPT_KEY("key=", KEY_SECRET),
    FUSE_OPT_KEY("token=", KEY_SECRET),
    FUSE_OPT_KEY("password=", KEY_SECRET),
    FUSE_OPT_KEY("fsname=", KEY_FSNAME),
    FUSE_OPT_KEY("subtype=", KEY_SUBTYPE),
    FUSE_OPT_END,
};

/* mount(8) and fstab options that mean nothing to a FUSE filesystem. */
static const char *const fstab_noise[] = {
    "_netdev", "nofail", "auto",  "noauto",   "user", "users",
    "nouser",  "owner",  "group", "defaults", "rw",
};

void options_usage(const char *prog)
{
    printf("usage: %s MOUNTPOINT [-o OPTION[,OPTION...]] [-f] [-d] [-s]\n"
           "       %s -h | --help\n"
           "       %s -V | --version\n"
           "\n"
           "Mounts a CoreWeave Sandbox API session at MOUNTPOINT: each directory is a\n"
           "sandbox, driven through its ctl, exec/N/ and root/ files.\n"
           "\n"
           "Service and credentials (default: as the official clients read them from\n"
           "CWSANDBOX_BASE_URL, CWSANDBOX_API_KEY, WANDB_SANDBOX_BASE_URL, WANDB_API_KEY or\n"
           "~/.netrc, WANDB_ENTITY, WANDB_PROJECT; with none set, the bundled local backend\n"
           "at $CWSB_SOCKET, else /run/cwsandbox-local/api.sock (root) or\n"
           "$XDG_RUNTIME_DIR/cwsandbox-local/api.sock, started there when absent; it keeps\n"
           "its sandboxes across mounts and logs to backend.log beside its socket):\n"
           "    -o endpoint=URL        service base URL: http://HOST[:PORT], https://HOST[:PORT]\n"
           "                           or unix:PATH\n"
           "    -o auth=MODE           cwsandbox (Bearer key), wandb (W&B headers) or none\n"
           "    -o api_key_file=PATH   read the API key from PATH (keys are never accepted on\n"
           "                           the command line)\n"
           "    -o http1               use HTTP/1.1 (streaming calls then fail: they need HTTP/2)\n"
           "    -o timeout=MS          deadline of each quick call in ms, retries included\n"
           "                           (default %d; file transfers, commands and stops\n"
           "                           get 300 s)\n"
           "    -o backend=DIR         local backend directory (default $CWSFS_LOCAL_BACKEND,\n"
           "                           then the installed copy, then the source tree's)\n"
           "    -o backend_idle=S      a local backend cwsfs starts exits after S seconds with\n"
           "                           no live sandbox and no mount (default %d; 0 = never)\n"
           "\n"
           "Defaults for the sandboxes this mount creates:\n"
           "    -o image=REF           container image (default python:3.11)\n"
           "    -o command=LINE        main command, run by /bin/sh -c (default: a keep-alive)\n"
           "    -o tags=T1:T2:...      session tags, colon-separated; listing shows existing\n"
           "                           sandboxes carrying all of them\n"
           "    -o tag=T               add one session tag (repeatable)\n"
           "    -o env=K=V             set an environment variable (repeatable)\n"
           "    -o lifetime=SECONDS    maximum lifetime\n"
           "    -o cpu=QUANTITY        CPU request, e.g. 2 or 500m\n"
           "    -o memory=QUANTITY     memory request, e.g. 512Mi or 4Gi\n"
           "    -o gpu=N               number of GPUs\n"
           "\n"
           "Mount behaviour:\n"
           "    -o cleanup             stop the sandboxes this mount created at unmount\n"
           "    -o spool=DIR           directory for output and write spools (default\n"
           "                           $XDG_RUNTIME_DIR, else /tmp)\n"
           "    -o window=MIB          a big file opened to read is fetched as it is read, in\n"
           "                           chunks of up to MIB MiB; its spool keeps at most two\n"
           "                           (default 16)\n"
           "    -o logfile=PATH        append the log to PATH (default: stderr in the\n"
           "                           foreground; in the background syslog, or without a\n"
           "                           syslog socket $XDG_RUNTIME_DIR/cwsfs.log, else\n"
           "                           /tmp/cwsfs-UID.log)\n"
           "    -o log_level=LEVEL     error, warn, info (default) or debug: debug adds a\n"
           "                           line per API call (-d implies debug)\n"
           "\n"
           "A comma inside a value is written \\, (-o command=echo\\,hi).\n"
           "For fstab and mount -t fuse.cwsfs, these are accepted and ignored: _netdev,\n"
           "nofail, auto, noauto, user, users, nouser, owner, group, defaults, rw,\n"
           "comment=..., x-...; a first argument before MOUNTPOINT names the source.\n"
           "\n"
           "FUSE options:\n",
           prog, prog, prog, DEFAULT_UNARY_TIMEOUT_MS, BACKEND_IDLE_DEFAULT_S);
    fflush(stdout);
}

static int add_string(char ***list, size_t *n, const char *value)
{
    char **grown = realloc(*list, (*n + 1) * sizeof(**list));

    if (!grown)
        return -ENOMEM;
    *list = grown;
    grown[*n] = strdup(value);
    if (!grown[*n])
        return -ENOMEM;
    (*n)++;
    return 0;
}

static void free_strings(char **list, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

static int option_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    struct cmd_opts *o = data;
    size_t i;

    switch (key) {
    case FUSE_OPT_KEY_NONOPT:
        if (o->nnonopt == 2) {
            fprintf(stderr, "cwsfs: too many arguments: %s (see cwsfs -h)\n", arg);
            return -1;
        }
        o->nonopt[o->nnonopt] = strdup(arg);
        return o->nonopt[o->nnonopt++] ? 0 : -1;
    case KEY_TAGS: {
        const char *p = arg + strlen("tags=");

        for (;;) {
            const char *colon = strchr(p, ':');
            size_t len = colon ? (size_t)(colon - p) : strlen(p);
            char *tag = strndup(p, len);
            int rc = tag ? add_string(&o->tags, &o->ntags, tag) : -ENOMEM;

            free(tag);
            if (rc < 0)
                return -1;
            if (!colon)
                return 0;
            p = colon + 1;
        }
    }
    case KEY_TAG:
        return add_string(&o->tags, &o->ntags, arg + strlen("tag=")) < 0 ? -1 : 0;
    case KEY_ENV:
        return add_string(&o->env, &o->nenv, arg + strlen("env=")) < 0 ? -1 : 0;
    case KEY_SECRET:
        fprintf(stderr, "cwsfs: API keys are not accepted on the command line, where every "
                        "user can read them; use -o api_key_file=PATH or set "
                        "CWSANDBOX_API_KEY (or WANDB_API_KEY)\n");
        return -1;
    case KEY_FSNAME:
        o->has_fsname = 1;
        return 1;
    case KEY_SUBTYPE:
        o->has_subtype = 1;
        return 1;
    case FUSE_OPT_KEY_OPT:
        if (strncmp(arg, "x-", 2) == 0 || strncmp(arg, "comment=", 8) == 0)
            return 0;
        for (i = 0; i < sizeof(fstab_noise) / sizeof(fstab_noise[0]); i++)
            if (strcmp(arg, fstab_noise[i]) == 0)
                return 0;
        return 1;
    default:
        return 1;
    }
}

void options_free(struct cmd_opts *o)
{
    size_t i;

    free(o->endpoint);
    free(o->auth);
    free(o->api_key_file);
    free(o->spool);
    free(o->logfile);
    free(o->log_level);
    free(o->backend);
    free(o->backend_idle);
    free(o->image);
    free(o->command);
    free(o->lifetime);
    free(o->cpu);
    free(o->memory);
    free(o->gpu);
    free(o->timeout);
    free(o->window);
    free_strings(o->tags, o->ntags);
    free_strings(o->env, o->nenv);
    for (i = 0; i < o->nnonopt; i++)
        free(o->nonopt[i]);
}

/* A whole decimal number in [min, max]. */
static int parse_number(const char *name, const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (!s[0] || *end || errno || v < min || v > max) {
        fprintf(stderr, "cwsfs: %s must be a whole number from %ld to %ld (got `%s')\n", name, min,
                max, s);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

/* A spec option is checked by the ctl grammar (ctl.c's table): `-o cpu=X` accepts
 * exactly what the ctl line `cpu X` does, with the same words when it does not. */
static int spec_option(const char *key, const char *value, struct ctl_cmd *cmd)
{
    char *line = NULL, err[300];
    if (asprintf(&line, "%s %s", key, value) < 0)
        return -ENOMEM;
    int rc = ctl_parse(line, strlen(line), cmd, err, sizeof(err));
    free(line);
    if (rc == 0)
        return 0;
    if (rc == 1) /* blank or a comment: no value */
        snprintf(err, sizeof(err), "%s: missing argument", key);
    fprintf(stderr, "cwsfs: -o %s=%s: %s\n", key, value, err);
    return -EINVAL;
}

/* Check a spec option and keep its number (gpu=, lifetime=). */
static int spec_number(const char *key, const char *value, long *out)
{
    struct ctl_cmd cmd;
    if (spec_option(key, value, &cmd) < 0)
        return -EINVAL;
    *out = (long)cmd.num;
    ctl_cmd_free(&cmd);
    return 0;
}

/* Check a spec option whose text is kept as given. */
static int spec_text(const char *key, const char *value)
{
    struct ctl_cmd cmd;
    if (spec_option(key, value, &cmd) < 0)
        return -EINVAL;
    ctl_cmd_free(&cmd);
    return 0;
}

/* Make a directory option absolute (the daemon runs in /) and check it is usable. */
static int absolute_dir(const char *name, char **value, int need_write)
{
    char real[PATH_MAX];
    struct stat st;

    if (!realpath(*value, real) || stat(real, &st) < 0) {
        fprintf(stderr, "cwsfs: %s%s: %s\n", name, *value, strerror(errno));
        return -EINVAL;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "cwsfs: %s%s is not a directory\n", name, *value);
        return -EINVAL;
    }
    if (need_write && access(real, W_OK | X_OK) < 0) {
        fprintf(stderr, "cwsfs: %s%s is not writable\n", name, *value);
        return -EINVAL;
    }
    free(*value);
    *value = strdup(real);
    return *value ? 0 : -ENOMEM;
}

/* Check the options and fill the fs options and the API timeout from them. */
int options_validate(struct cmd_opts *o, struct fs_options *fo, long *timeout_ms, long *idle_s)
{
    size_t i;

    memset(fo, 0, sizeof(*fo));
    *timeout_ms = 0;
    *idle_s = BACKEND_IDLE_DEFAULT_S;
    if (o->backend_idle &&
        parse_number("backend_idle=", o->backend_idle, 0, 365L * 24 * 3600, idle_s) < 0)
        return -EINVAL;
    if (o->window && parse_number("window=", o->window, 1, 1024, &fo->window_mib) < 0)
        return -EINVAL;
    if (o->timeout && parse_number("timeout=", o->timeout, 1, MAX_TIMEOUT_MS, timeout_ms) < 0)
        return -EINVAL;
    /* The sandbox spec: one grammar with the ctl lines. */
    if ((o->lifetime && spec_number("lifetime", o->lifetime, &fo->lifetime) < 0) ||
        (o->gpu && spec_number("gpu", o->gpu, &fo->gpu) < 0) ||
        (o->cpu && spec_text("cpu", o->cpu) < 0) ||
        (o->memory && spec_text("memory", o->memory) < 0) ||
        (o->image && spec_text("image", o->image) < 0) ||
        (o->command && spec_text("command", o->command) < 0))
        return -EINVAL;
    for (i = 0; i < o->ntags; i++)
        if (spec_text("tag", o->tags[i]) < 0)
            return -EINVAL;
    for (i = 0; i < o->nenv; i++)
        if (spec_text("env", o->env[i]) < 0)
            return -EINVAL;
    if (o->spool && absolute_dir("spool=", &o->spool, 1) < 0)
        return -EINVAL;
    if (o->backend && absolute_dir("backend=", &o->backend, 0) < 0)
        return -EINVAL;

    fo->image = o->image;
    fo->command = o->command;
    fo->tags = o->tags;
    fo->ntags = o->ntags;
    fo->env = o->env;
    fo->nenv = o->nenv;
    fo->cpu = o->cpu;
    fo->memory = o->memory;
    fo->cleanup = o->cleanup;
    fo->spool_dir = o->spool;
    return 0;
}

/* Name the filesystem in /proc/mounts: fsname is the mount source (or "cwsfs"),
 * subtype "cwsfs", unless the user chose them. */
int options_add_names(struct fuse_args *args, const struct cmd_opts *o)
{
    const char *source = o->nnonopt == 2 ? o->nonopt[0] : "cwsfs";
    char *names = NULL, *opt = NULL, *arg = NULL;
    int rc = -ENOMEM;

    if (o->has_fsname && o->has_subtype)
        return 0;
    if (!o->has_subtype && fuse_opt_add_opt(&names, "subtype=cwsfs") < 0)
        goto out;
    if (!o->has_fsname) {
        if (asprintf(&opt, "fsname=%s", source) < 0) {
            opt = NULL;
            goto out;
        }
        if (fuse_opt_add_opt_escaped(&names, opt) < 0)
            goto out;
    }
    if (asprintf(&arg, "-o%s", names) < 0) {
        arg = NULL;
        goto out;
    }
    rc = fuse_opt_add_arg(args, arg) < 0 ? -ENOMEM : 0;
out:
    free(names);
    free(opt);
    free(arg);
    return rc;
}

/* Let libfuse judge its own options on a copy now, so a typo fails before a backend
 * starts or the network is used. The throwaway session is never mounted. */
int options_check_fuse(const struct fuse_args *args)
{
    static const struct fuse_lowlevel_ops no_ops;
    struct fuse_args copy = FUSE_ARGS_INIT(0, NULL);
    struct fuse_session *se;
    int i, rc = -EINVAL;

    for (i = 0; i < args->argc; i++)
        if (fuse_opt_add_arg(&copy, args->argv[i]) < 0)
            goto out;
    se = fuse_session_new(&copy, &no_ops, sizeof(no_ops), NULL);
    if (se) {
        fuse_session_destroy(se);
        rc = 0;
    }
out:
    fuse_opt_free_args(&copy);
    return rc;
}

int options_parse(struct fuse_args *args, struct cmd_opts *o)
{
    return fuse_opt_parse(args, o, option_spec, option_proc);
}
