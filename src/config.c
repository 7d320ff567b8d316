/* config.c - decide which service cwsfs talks to and with which credentials.
 *
 * The official clients read the endpoint and key from the environment (CoreWeave:
 * CWSANDBOX_BASE_URL, CWSANDBOX_API_KEY; W&B: WANDB_SANDBOX_BASE_URL, WANDB_API_KEY or
 * the netrc entry for api.wandb.ai, WANDB_ENTITY, WANDB_PROJECT); mount options
 * override them (endpoint=, auth=, api_key_file=). When nothing at all points at a
 * service, the caller starts the bundled local backend (use_local_backend).
 *
 * How auth is picked when auth= is not given: CoreWeave when a CWSANDBOX_ variable is
 * set, else W&B when a WANDB_ key, base URL or netrc entry is there, else CoreWeave
 * when api_key_file= is given, else no auth when endpoint= is given, else the local
 * backend. In that automatic mode a flavour without a key means "no auth" (a private
 * server); an explicit auth=cwsandbox or auth=wandb without a key is an error.
 *
 * Nothing here logs: a key must never reach a log, and errors are sentences in err
 * for main to print. The netrc reader is pure so the unit tests can drive it. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"

#define CONFIG_WANDB_NETRC_MACHINE "api.wandb.ai"
#define CONFIG_KEY_FILE_MAX 4096
#define CONFIG_NETRC_MAX (1024 * 1024)

enum flavour { FLAVOUR_AUTO, FLAVOUR_CWSANDBOX, FLAVOUR_WANDB, FLAVOUR_NONE };

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

/* An environment variable, with "set but empty" read as unset. */
static const char *env_get(const char *name)
{
    const char *v = getenv(name);

    return v && v[0] ? v : NULL;
}

/* ---- netrc ---------------------------------------------------------------------- */

/* The next netrc token at *pp as a malloc'ed string, or NULL at the end (or on
 * ENOMEM, which reads as "no more entries"). Tokens are separated by white space; a
 * token may be double-quoted, and a backslash takes the next character literally
 * (both as Python's netrc and curl accept them). A '#' starting a token comments out
 * the rest of its line. */
static char *netrc_token(const char **pp)
{
    const char *p = *pp;
    const char *start;
    char *tok, *o;
    int quoted;

    for (;;) {
        while (*p && isspace((unsigned char)*p))
            p++;
        if (*p != '#')
            break;
        while (*p && *p != '\n')
            p++;
    }
    if (!*p) {
        *pp = p;
        return NULL;
    }
    quoted = *p == '"';
    if (quoted)
        p++;
    start = p;
    /* Find the raw end first: the unescaped token is never longer. */
    while (*p) {
        if (*p == '\\' && p[1]) {
            p += 2;
            continue;
        }
        if (quoted ? *p == '"' : isspace((unsigned char)*p))
            break;
        p++;
    }
    tok = malloc((size_t)(p - start) + 1);
    if (!tok) {
        *pp = p + strlen(p);
        return NULL;
    }
    for (o = tok; start < p; start++) {
        if (*start == '\\' && start + 1 < p)
            start++;
        *o++ = *start;
    }
    *o = '\0';
    if (quoted && *p == '"')
        p++;
    *pp = p;
    return tok;
}

/* Skip a macdef body: the rest of the macdef line, then lines up to and including
 * the first blank one (or the end of the text). */
static const char *netrc_skip_macdef(const char *p)
{
    const char *line;

    while (*p && *p != '\n')
        p++;
    if (*p)
        p++;
    while (*p) {
        int blank = 1;

        for (line = p; *p && *p != '\n'; p++)
            if (!isspace((unsigned char)*p))
                blank = 0;
        if (*p)
            p++;
        if (blank && p != line)
            break;
    }
    return p;
}

char *config_netrc_password(const char *netrc_text, const char *machine)
{
    enum { ENTRY_NONE, ENTRY_MATCH, ENTRY_DEFAULT, ENTRY_OTHER } entry = ENTRY_NONE;
    char *found = NULL, *fallback = NULL;
    const char *p = netrc_text;
    char *tok;

    if (!netrc_text || !machine)
        return NULL;
    while (!found && (tok = netrc_token(&p))) {
        if (strcmp(tok, "machine") == 0) {
            char *name = netrc_token(&p);

            entry = name && strcasecmp(name, machine) == 0 ? ENTRY_MATCH : ENTRY_OTHER;
            free(name);
        } else if (strcmp(tok, "default") == 0) {
            entry = ENTRY_DEFAULT;
        } else if (strcmp(tok, "macdef") == 0) {
            free(netrc_token(&p)); /* the macro's name */
            p = netrc_skip_macdef(p);
            entry = ENTRY_NONE;
        } else if (strcmp(tok, "password") == 0 || strcmp(tok, "login") == 0 ||
                   strcmp(tok, "account") == 0 || strcmp(tok, "port") == 0) {
            char *value = netrc_token(&p);

            if (value && strcmp(tok, "password") == 0 && entry == ENTRY_MATCH)
                found = value;
            else if (value && strcmp(tok, "password") == 0 && entry == ENTRY_DEFAULT && !fallback)
                fallback = value;
            else
                free(value);
        }
        /* Anything else is a keyword we do not know; skip it alone. */
        free(tok);
    }
    if (found) {
        free(fallback);
        return found;
    }
    return fallback;
}

/* Read a small file whole into a NUL-terminated malloc'ed buffer. -EFBIG above max. */
static int read_small_file(const char *path, size_t max, char **out)
{
    struct stat st;
    char *buf = NULL;
    size_t have = 0;
    int fd, err;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        err = -errno;
        goto out;
    }
    err = -EINVAL;
    if (!S_ISREG(st.st_mode))
        goto out;
    err = -EFBIG;
    if ((size_t)st.st_size > max)
        goto out;
    err = -ENOMEM;
    buf = malloc(max + 1);
    if (!buf)
        goto out;
    for (;;) {
        ssize_t n = read(fd, buf + have, max + 1 - have);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = -errno;
            goto out;
        }
        if (n == 0)
            break;
        have += (size_t)n;
        if (have > max) {
            err = -EFBIG;
            goto out;
        }
    }
    buf[have] = '\0';
    *out = buf;
    buf = NULL;
    err = 0;
out:
    free(buf);
    close(fd);
    return err;
}

/* The W&B key from $NETRC or ~/.netrc; NULL when there is none (a missing or
 * unreadable netrc is not an error: the clients skip it too). */
static char *netrc_wandb_key(void)
{
    char path[PATH_MAX];
    const char *file = env_get("NETRC");
    const char *home;
    char *text, *key;

    if (!file) {
        home = env_get("HOME");
        if (!home) {
            struct passwd *pw = getpwuid(getuid());

            home = pw ? pw->pw_dir : NULL;
        }
        if (!home)
            return NULL;
        if ((size_t)snprintf(path, sizeof(path), "%s/.netrc", home) >= sizeof(path))
            return NULL;
        file = path;
    }
    if (read_small_file(file, CONFIG_NETRC_MAX, &text) < 0)
        return NULL;
    key = config_netrc_password(text, CONFIG_WANDB_NETRC_MACHINE);
    free(text);
    return key;
}

/* ---- keys and endpoints --------------------------------------------------------- */

/* A key goes into an HTTP header: refuse control characters (a stray newline would
 * split the header) rather than send something the service will misread. */
static int key_ok(const char *key)
{
    const unsigned char *p;

    if (!key[0])
        return 0;
    for (p = (const unsigned char *)key; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == ' ')
            return 0;
    return 1;
}

/* Read the key from api_key_file: the whole file, surrounding white space dropped. */
static int read_key_file(const char *path, char **key, char *err, size_t errlen)
{
    char *text = NULL, *start, *end;
    int rc;

    rc = read_small_file(path, CONFIG_KEY_FILE_MAX, &text);
    if (rc == -EFBIG || rc == -EINVAL) {
        set_err(err, errlen, "api_key_file %s is not a regular file of at most %d bytes", path,
                CONFIG_KEY_FILE_MAX);
        return -EINVAL;
    }
    if (rc < 0) {
        set_err(err, errlen, "cannot read api_key_file %s: %s", path, strerror(-rc));
        return rc;
    }
    for (start = text; *start && isspace((unsigned char)*start); start++)
        ;
    end = start + strlen(start);
    while (end > start && isspace((unsigned char)end[-1]))
        *--end = '\0';
    if (!key_ok(start)) {
        set_err(err, errlen,
                "api_key_file %s holds no usable key (empty, or it has spaces or "
                "control characters inside)",
                path);
        rc = -EINVAL;
        goto out;
    }
    *key = strdup(start);
    rc = *key ? 0 : -ENOMEM;
out:
    /* The buffer held a secret: clear it before it goes back to the allocator. */
    explicit_bzero(text, strlen(text));
    free(text);
    return rc;
}

/* Take a key from the environment or netrc (source names where it came from). */
static int take_key(const char *value, const char *source, char **key, char *err, size_t errlen)
{
    if (!key_ok(value)) {
        set_err(err, errlen, "the API key from %s has spaces or control characters in it", source);
        return -EINVAL;
    }
    *key = strdup(value);
    return *key ? 0 : -ENOMEM;
}

/* Set base_url / unix_socket from an endpoint: http://, https:// or unix:PATH (a
 * relative PATH is made absolute now, since the daemon changes to /). */
static int set_endpoint(struct config *cfg, const char *url, const char *source, char *err,
                        size_t errlen)
{
    char cwd[PATH_MAX];
    const char *path;
    size_t len;
    int n;

    for (path = url; *path; path++) {
        if (isspace((unsigned char)*path) || iscntrl((unsigned char)*path)) {
            set_err(err, errlen, "%s has white space or control characters in it", source);
            return -EINVAL;
        }
    }
    if (strncmp(url, "unix:", 5) == 0) {
        struct sockaddr_un sun;

        path = url + 5;
        if (strncmp(path, "//", 2) == 0 && path[2] == '/')
            path += 2; /* unix:///run/x.sock */
        if (!path[0]) {
            set_err(err, errlen, "%s: unix: needs a socket path (unix:/run/sandbox.sock)", source);
            return -EINVAL;
        }
        if (path[0] == '/') {
            cfg->unix_socket = strdup(path);
        } else {
            if (!getcwd(cwd, sizeof(cwd))) {
                int e = errno;

                set_err(err, errlen, "%s: cannot make %s absolute: %s", source, path, strerror(e));
                return -e;
            }
            n = asprintf(&cfg->unix_socket, "%s/%s", cwd, path);
            if (n < 0)
                cfg->unix_socket = NULL;
        }
        if (!cfg->unix_socket)
            return -ENOMEM;
        if (strlen(cfg->unix_socket) >= sizeof(sun.sun_path)) {
            set_err(err, errlen, "%s: the socket path %s is longer than %zu bytes", source,
                    cfg->unix_socket, sizeof(sun.sun_path) - 1);
            return -ENAMETOOLONG;
        }
        cfg->base_url = strdup("http://localhost");
        return cfg->base_url ? 0 : -ENOMEM;
    }
    if (!((strncmp(url, "http://", 7) == 0 && url[7]) ||
          (strncmp(url, "https://", 8) == 0 && url[8]))) {
        set_err(err, errlen,
                "%s must be http://HOST[:PORT], https://HOST[:PORT] or unix:PATH "
                "(got %s)",
                source, url);
        return -EINVAL;
    }
    cfg->base_url = strdup(url);
    if (!cfg->base_url)
        return -ENOMEM;
    len = strlen(cfg->base_url);
    while (len > 0 && cfg->base_url[len - 1] == '/')
        cfg->base_url[--len] = '\0';
    return 0;
}

static int parse_auth(const char *auth, enum flavour *out, char *err, size_t errlen)
{
    if (!auth || !auth[0])
        *out = FLAVOUR_AUTO;
    else if (strcmp(auth, "cwsandbox") == 0)
        *out = FLAVOUR_CWSANDBOX;
    else if (strcmp(auth, "wandb") == 0)
        *out = FLAVOUR_WANDB;
    else if (strcmp(auth, "none") == 0)
        *out = FLAVOUR_NONE;
    else {
        set_err(err, errlen, "auth= must be cwsandbox, wandb or none (got %s)", auth);
        return -EINVAL;
    }
    return 0;
}

/* Pick the flavour in automatic mode (see the top of the file). *netrc_key may be
 * filled as a side effect so netrc is read once. */
static enum flavour pick_flavour(const struct config_overrides *ov, char **netrc_key)
{
    if (env_get("CWSANDBOX_API_KEY") || env_get("CWSANDBOX_BASE_URL"))
        return FLAVOUR_CWSANDBOX;
    if (env_get("WANDB_API_KEY") || env_get("WANDB_SANDBOX_BASE_URL"))
        return FLAVOUR_WANDB;
    *netrc_key = netrc_wandb_key();
    if (*netrc_key)
        return FLAVOUR_WANDB;
    if (ov->api_key_file)
        return FLAVOUR_CWSANDBOX;
    return FLAVOUR_NONE;
}

static int resolve_cwsandbox(const struct config_overrides *ov, int explicit_auth,
                             struct config *cfg, char *err, size_t errlen)
{
    const char *base = ov->endpoint ? ov->endpoint : env_get("CWSANDBOX_BASE_URL");
    const char *env_key = env_get("CWSANDBOX_API_KEY");
    int rc;

    rc = set_endpoint(cfg, base ? base : CONFIG_DEFAULT_BASE_URL,
                      ov->endpoint ? "endpoint=" : "CWSANDBOX_BASE_URL", err, errlen);
    if (rc < 0)
        return rc;
    if (ov->api_key_file)
        rc = read_key_file(ov->api_key_file, &cfg->api_key, err, errlen);
    else if (env_key)
        rc = take_key(env_key, "CWSANDBOX_API_KEY", &cfg->api_key, err, errlen);
    if (rc < 0)
        return rc;
    if (!cfg->api_key && explicit_auth) {
        set_err(err, errlen,
                "auth=cwsandbox needs an API key: set CWSANDBOX_API_KEY or give "
                "-o api_key_file=PATH");
        return -ENOKEY;
    }
    cfg->auth = cfg->api_key ? API_AUTH_BEARER : API_AUTH_NONE;
    return 0;
}

static int resolve_wandb(const struct config_overrides *ov, int explicit_auth, char **netrc_key,
                         struct config *cfg, char *err, size_t errlen)
{
    const char *base = ov->endpoint ? ov->endpoint : env_get("WANDB_SANDBOX_BASE_URL");
    const char *env_key = env_get("WANDB_API_KEY");
    const char *entity = env_get("WANDB_ENTITY");
    const char *project = env_get("WANDB_PROJECT");
    int rc;

    rc = set_endpoint(cfg, base ? base : CONFIG_DEFAULT_BASE_URL,
                      ov->endpoint ? "endpoint=" : "WANDB_SANDBOX_BASE_URL", err, errlen);
    if (rc < 0)
        return rc;
    if (ov->api_key_file) {
        rc = read_key_file(ov->api_key_file, &cfg->api_key, err, errlen);
    } else if (env_key) {
        rc = take_key(env_key, "WANDB_API_KEY", &cfg->api_key, err, errlen);
    } else {
        if (!*netrc_key)
            *netrc_key = netrc_wandb_key();
        if (*netrc_key)
            rc = take_key(*netrc_key, "the netrc entry for " CONFIG_WANDB_NETRC_MACHINE,
                          &cfg->api_key, err, errlen);
    }
    if (rc < 0)
        return rc;
    if (!cfg->api_key && explicit_auth) {
        set_err(err, errlen,
                "auth=wandb needs an API key: set WANDB_API_KEY, add "
                "machine " CONFIG_WANDB_NETRC_MACHINE " to ~/.netrc, or give -o api_key_file=PATH");
        return -ENOKEY;
    }
    if ((entity && !(cfg->wandb_entity = strdup(entity))) ||
        (project && !(cfg->wandb_project = strdup(project))))
        return -ENOMEM;
    cfg->auth = cfg->api_key ? API_AUTH_WANDB : API_AUTH_NONE;
    return 0;
}

int config_resolve(const struct config_overrides *ov, struct config *cfg, char *err, size_t errlen)
{
    static const struct config_overrides no_overrides;
    enum flavour flavour;
    char *netrc_key = NULL;
    int explicit_auth, local = 0;
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    if (err && errlen)
        err[0] = '\0';
    if (!ov)
        ov = &no_overrides;
    rc = parse_auth(ov->auth, &flavour, err, errlen);
    if (rc < 0)
        goto out;
    explicit_auth = flavour != FLAVOUR_AUTO;
    if (flavour == FLAVOUR_NONE && ov->api_key_file) {
        set_err(err, errlen, "api_key_file= cannot be used with auth=none");
        rc = -EINVAL;
        goto out;
    }
    if (flavour == FLAVOUR_AUTO)
        flavour = pick_flavour(ov, &netrc_key);

    switch (flavour) {
    case FLAVOUR_CWSANDBOX:
        rc = resolve_cwsandbox(ov, explicit_auth, cfg, err, errlen);
        break;
    case FLAVOUR_WANDB:
        rc = resolve_wandb(ov, explicit_auth, &netrc_key, cfg, err, errlen);
        break;
    default: {
        /* No credentials: an explicit endpoint, else a base URL from the environment,
         * else the local backend (whose address main fills in once it runs). */
        const char *base = ov->endpoint;
        const char *source = "endpoint=";

        if (!base && (base = env_get("CWSANDBOX_BASE_URL")))
            source = "CWSANDBOX_BASE_URL";
        if (!base && (base = env_get("WANDB_SANDBOX_BASE_URL")))
            source = "WANDB_SANDBOX_BASE_URL";
        cfg->auth = API_AUTH_NONE;
        if (base)
            rc = set_endpoint(cfg, base, source, err, errlen);
        else
            local = 1;
        break;
    }
    }
    if (rc == 0)
        cfg->use_local_backend = local;
out:
    if (netrc_key) {
        explicit_bzero(netrc_key, strlen(netrc_key));
        free(netrc_key);
    }
    if (rc == -ENOMEM)
        set_err(err, errlen, "out of memory reading the configuration");
    if (rc < 0)
        config_free(cfg);
    return rc;
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    if (cfg->api_key) {
        explicit_bzero(cfg->api_key, strlen(cfg->api_key));
        free(cfg->api_key);
    }
    free(cfg->base_url);
    free(cfg->unix_socket);
    free(cfg->wandb_entity);
    free(cfg->wandb_project);
    memset(cfg, 0, sizeof(*cfg));
}
