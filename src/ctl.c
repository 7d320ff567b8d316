/* ctl.c - the `ctl` file's command language: one static table of commands, each with
 * the kind of argument it takes and a validator that checks the argument the way the
 * service would and fills a struct ctl_cmd; errors name the command and quote the
 * offending text (escaped, bounded) so the sandbox's `error` file says exactly what was
 * refused. Also the bounded line splitter that turns write(2) calls into whole lines:
 * a line runs once, when its newline (or the close) arrives, never from its middle. */
#include "ctl.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pbjson.h"

/* How the text after the command name is taken. */
enum arg_kind {
    ARG_NONE,     /* nothing may follow the name */
    ARG_OPTIONAL, /* one word or nothing (surrounding blanks trimmed) */
    ARG_WORD,     /* required, surrounding blanks trimmed */
    ARG_TEXT,     /* required, verbatim after the separating blanks (exec, command, env) */
};

/* A validator checks arg (len bytes, no NUL inside, NUL-terminated) and fills cmd.
 * Returns 0, -ENOMEM, or -EINVAL with why set to a phrase completing `"ARG" ...`. */
typedef int ctl_validator(const char *arg, size_t len, struct ctl_cmd *cmd, char *why,
                          size_t whylen);

struct ctl_def {
    const char *name;
    enum ctl_op op;
    enum arg_kind kind;
    ctl_validator *validate; /* NULL for ARG_NONE */
    const char *what;        /* what the argument is, for "missing argument" */
};

#define TAG_MAX 59
#define QUOTE_MAX 120 /* source bytes quoted in a message before "..." */

static ctl_validator v_shell, v_execv, v_grace, v_image, v_env, v_tag, v_cpu, v_memory, v_gpu,
    v_lifetime, v_workdir;

static const struct ctl_def ctl_table[] = {
    {"exec", CTL_EXEC, ARG_TEXT, v_shell, "a command line"},
    {"execv", CTL_EXECV, ARG_WORD, v_execv, "a JSON array of strings"},
    {"start", CTL_START, ARG_NONE, NULL, NULL},
    {"wait", CTL_WAIT, ARG_NONE, NULL, NULL},
    {"stop", CTL_STOP, ARG_OPTIONAL, v_grace, NULL},
    {"snapshot", CTL_SNAPSHOT, ARG_NONE, NULL, NULL},
    {"image", CTL_IMAGE, ARG_WORD, v_image, "an image reference"},
    {"command", CTL_COMMAND, ARG_TEXT, v_shell, "a command line"},
    {"env", CTL_ENV, ARG_TEXT, v_env, "KEY=VALUE"},
    {"tag", CTL_TAG, ARG_WORD, v_tag, "a tag"},
    {"cpu", CTL_CPU, ARG_WORD, v_cpu, "a cpu quantity"},
    {"memory", CTL_MEMORY, ARG_WORD, v_memory, "a memory quantity"},
    {"gpu", CTL_GPU, ARG_WORD, v_gpu, "a count"},
    {"lifetime", CTL_LIFETIME, ARG_WORD, v_lifetime, "a number of seconds"},
    {"workdir", CTL_WORKDIR, ARG_WORD, v_workdir, "an absolute path"},
};

int ctl_is_spec_change(enum ctl_op op)
{
    switch (op) {
    case CTL_IMAGE:
    case CTL_COMMAND:
    case CTL_ENV:
    case CTL_TAG:
    case CTL_CPU:
    case CTL_MEMORY:
    case CTL_GPU:
    case CTL_LIFETIME:
    case CTL_WORKDIR:
        return 1;
    default:
        return 0;
    }
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Render s as a double-quoted C-like literal into dst: quotes, backslashes and control
 * bytes escaped, bytes >= 0x80 kept (names are usually UTF-8), at most QUOTE_MAX source
 * bytes followed by "..." so a megabyte line does not become a megabyte message. */
static void quote(char *dst, size_t dstlen, const char *s, size_t n)
{
    size_t o = 0, i, lim = n > QUOTE_MAX ? QUOTE_MAX : n;
    char esc[8];

    if (dstlen == 0)
        return;
#define PUT(str)                                                                                   \
    do {                                                                                           \
        size_t l_ = strlen(str);                                                                   \
        if (o + l_ >= dstlen)                                                                      \
            goto out;                                                                              \
        memcpy(dst + o, str, l_);                                                                  \
        o += l_;                                                                                   \
    } while (0)
    PUT("\"");
    for (i = 0; i < lim; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            esc[2] = 0;
        } else if (c == '\n') {
            strcpy(esc, "\\n");
        } else if (c == '\t') {
            strcpy(esc, "\\t");
        } else if (c == '\r') {
            strcpy(esc, "\\r");
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", c);
        } else {
            esc[0] = (char)c;
            esc[1] = 0;
        }
        PUT(esc);
    }
    if (lim < n)
        PUT("...");
    PUT("\"");
#undef PUT
out:
    dst[o] = 0;
}

__attribute__((format(printf, 3, 4))) static void errf(char *err, size_t errlen, const char *fmt,
                                                       ...)
{
    va_list ap;

    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Parse a decimal integer of digits only (no sign, no blanks) into 0..max. */
static int parse_count(const char *s, size_t len, long long max, long long *out)
{
    long long v = 0;
    size_t i;

    if (len == 0)
        return -EINVAL;
    for (i = 0; i < len; i++) {
        if (!is_digit(s[i]))
            return -EINVAL;
        if (v > (max - (s[i] - '0')) / 10)
            return -ERANGE;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Length of a leading unsigned decimal number (digits, optional '.', digits; at least
 * one digit in all), as Kubernetes quantities write them ("2", "0.5", ".5", "1."). */
static size_t decimal_len(const char *s, size_t len)
{
    size_t i = 0, digits = 0;

    while (i < len && is_digit(s[i])) {
        i++;
        digits++;
    }
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && is_digit(s[i])) {
            i++;
            digits++;
        }
    }
    return digits ? i : 0;
}

static char *dupn(const char *s, size_t n)
{
    char *p = malloc(n + 1);

    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

/* argv, argc and arg for `exec LINE` / `command LINE`: {"/bin/sh", "-c", LINE}. */
static int v_shell(const char *arg, size_t len, struct ctl_cmd *cmd, char *why, size_t whylen)
{
    static const char *const pre[] = {"/bin/sh", "-c"};
    size_t i;
    cmd->argv = calloc(4, sizeof(*cmd->argv));
    if (!cmd->argv)
        return -ENOMEM;
    for (i = 0; i < 2; i++)
        if (!(cmd->argv[i] = dupn(pre[i], strlen(pre[i]))))
            return -ENOMEM;
    if (!(cmd->argv[2] = dupn(arg, len)) || !(cmd->arg = dupn(arg, len)))
        return -ENOMEM;
    cmd->argc = 3;
    return 0;
}

/* A JSON array of at least one string, nothing after it; the program name must not be
 * empty. jansson refuses "\u0000" inside strings unless asked, so every element is a
 * proper C string. arg keeps the JSON text for exec/N/cmd. */
static int v_execv(const char *arg, size_t len, struct ctl_cmd *cmd, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *a = json_loadb(arg, len, 0, &jerr);
    size_t i, n;
    int rc = -EINVAL;

    if (!a && json_error_code(&jerr) == json_error_null_character) {
        snprintf(why, whylen, "has a NUL character in a string");
        goto out;
    }
    if (!a) {
        snprintf(why, whylen, "is not a JSON array of strings (%s)", jerr.text);
        goto out;
    }
    if (!json_is_array(a) || (n = json_array_size(a)) == 0) {
        snprintf(why, whylen, "is not a JSON array of at least one string");
        goto out;
    }
    for (i = 0; i < n; i++) {
        if (!json_is_string(json_array_get(a, i))) {
            snprintf(why, whylen, "is not a JSON array of strings (element %zu)", i);
            goto out;
        }
    }
    if (json_string_length(json_array_get(a, 0)) == 0) {
        snprintf(why, whylen, "has an empty program name");
        goto out;
    }
    rc = -ENOMEM;
    cmd->argv = calloc(n + 1, sizeof(*cmd->argv));
    if (!cmd->argv)
        goto out;
    for (i = 0; i < n; i++) {
        json_t *s = json_array_get(a, i);
        if (!(cmd->argv[i] = dupn(json_string_value(s), json_string_length(s))))
            goto out;
    }
    cmd->argc = n;
    if (!(cmd->arg = dupn(arg, len)))
        goto out;
    rc = 0;
out:
    json_decref(a);
    return rc;
}

static int v_grace(const char *arg, size_t len, struct ctl_cmd *cmd, char *why, size_t whylen)
{
    if (len == 0) {
        cmd->num = -1;
        return 0;
    }
    if (parse_count(arg, len, INT32_MAX, &cmd->num) < 0) {
        snprintf(why, whylen, "is not a number of seconds between 0 and %d", INT32_MAX);
        return -EINVAL;
    }
    return 0;
}

static int v_image(const char *arg, size_t len, struct ctl_cmd *cmd, char *why, size_t whylen)
{
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)arg[i];
        if (c <= ' ' || c == 0x7f) {
            snprintf(why, whylen, "is not an image reference (blank or control character)");
            return -EINVAL;
        }
    }
    return (cmd->arg = dupn(arg, len)) ? 0 : -ENOMEM;
}

/* KEY=VALUE split at the first '='; the value is verbatim and may be empty or hold '='. */
static int v_env(const char *arg, size_t len, struct ctl_cmd *cmd, char *why, size_t whylen)
{
    const char *eq = memchr(arg, '=', len);

    if (!eq) {
        snprintf(why, whylen, "is not KEY=VALUE");
        return -EINVAL;
    }
    if (eq == arg) {
        snprintf(why, whylen, "has an empty variable name");
        return -EINVAL;
    }
    /* Kubernetes's rule for variable names, which the service applies. */
    int name_ok = !is_digit(arg[0]);
    for (const char *p = arg; name_ok && p < eq; p++)
        name_ok = is_alnum(*p) || *p == '_' || *p == '-' || *p == '.';
    if (!name_ok) {
        snprintf(why, whylen,
                 "has a bad variable name (letters, digits, '_', '-', '.', not starting with "
                 "a digit)");
        return -EINVAL;
    }
    if (!(cmd->key = dupn(arg, (size_t)(eq - arg))))
        return -ENOMEM;
    if (!(cmd->arg = dupn(eq + 1, len - (size_t)(eq - arg) - 1)))
        return -ENOMEM;
    return 0;
}

static int v_tag(const char *arg, size_t len, struct ctl_cmd *cmd, char *why, size_t whylen)
{
    size_t i;
    int ok = len <= TAG_MAX && is_alnum(arg[len - 1]);

    for (i = 0; ok && i < len; i++)
        ok = is_alnum(arg[i]) || arg[i] == '.' || arg[i] == '_' || arg[i] == '-';
    if (!ok) {
        snprintf(why, whylen,
                 "is not a tag (letters, digits, '.', '_', '-', ending with a letter or "
                 "digit, at most %d characters)",
                 TAG_MAX);
        return -EINVAL;
    }
    return (cmd->arg = dupn(arg, len)) ? 0 : -ENOMEM;
}

/* Whether the decimal number s[0..n) is more than zero. */
static int decimal_positive(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] >= '1' && s[i] <= '9')
            return 1;
    return 0;
}

/* Whether the decimal number s[0..n) has no non-zero digit after `places` decimals. */
static int decimal_within(const char *s, size_t n, size_t places)
{
    const char *dot = memchr(s, '.', n);
    if (!dot)
        return 1;
    for (size_t i = (size_t)(dot - s) + 1 + places; i < n; i++)
        if (s[i] != '0')
            return 0;
    return 1;
}

/* cpu: a decimal number of cores, or a decimal number of millicores with 'm'; more
 * than zero and in whole millicores, as Kubernetes takes a cpu quantity (the grammar
 * of -o cpu= too, and of the bundled backend). */
static int v_cpu(const char *arg, size_t len, struct ctl_cmd *cmd, char *why, size_t whylen)
{
    size_t n = decimal_len(arg, len);
    int milli = n && n + 1 == len && arg[n] == 'm';

    if (n == 0 || !(n == len || milli)) {
        snprintf(why, whylen, "is not a cpu quantity (like 2, 0.5 or 500m)");
        return -EINVAL;
    }
    if (!decimal_positive(arg, n) || !decimal_within(arg, n, milli ? 0 : 3)) {
        snprintf(why, whylen, "is not a cpu quantity of at least 1m in whole millicores");
        return -EINVAL;
    }
    return (cmd->arg = dupn(arg, len)) ? 0 : -ENOMEM;
}

/* memory: a decimal number of bytes, more than zero, with an optional decimal
 * (k M G T P E) or binary (Ki Mi Gi Ti Pi Ei) suffix. No 'm': milli-bytes are a
 * Kubernetes oddity nobody means. */
static int v_memory(const char *arg, size_t len, struct ctl_cmd *cmd, char *why, size_t whylen)
{
    static const char *const suffixes[] = {"",   "k",  "M",  "G",  "T",  "P", "E",
                                           "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    size_t n = decimal_len(arg, len), i;
    int ok = 0;

    for (i = 0; n && !ok && i < sizeof(suffixes) / sizeof(suffixes[0]); i++)
        ok = strlen(suffixes[i]) == len - n && memcmp(arg + n, suffixes[i], len - n) == 0;
    if (!ok) {
        snprintf(why, whylen, "is not a memory quantity (like 512Mi, 2Gi, 1G or 1000000)");
        return -EINVAL;
    }
    if (!decimal_positive(arg, n)) {
        snprintf(why, whylen, "is not a memory quantity of more than 0");
        return -EINVAL;
    }
    return (cmd->arg = dupn(arg, len)) ? 0 : -ENOMEM;
}

static int v_gpu(const char *arg, size_t len, struct ctl_cmd *cmd, char *why, size_t whylen)
{
    if (parse_count(arg, len, INT32_MAX, &cmd->num) < 0) {
        snprintf(why, whylen, "is not a count");
        return -EINVAL;
    }
    return 0;
}

static int v_lifetime(const char *arg, size_t len, struct ctl_cmd *cmd, char *why, size_t whylen)
{
    if (parse_count(arg, len, INT32_MAX, &cmd->num) < 0 || cmd->num == 0) {
        snprintf(why, whylen, "is not a number of seconds between 1 and %d", INT32_MAX);
        return -EINVAL;
    }
    return 0;
}

static int v_workdir(const char *arg, size_t len, struct ctl_cmd *cmd, char *why, size_t whylen)
{
    if (arg[0] != '/') {
        snprintf(why, whylen, "is not an absolute path");
        return -EINVAL;
    }
    if (len >= PATH_MAX) {
        snprintf(why, whylen, "is longer than %d bytes", PATH_MAX - 1);
        return -EINVAL;
    }
    return (cmd->arg = dupn(arg, len)) ? 0 : -ENOMEM;
}

static const struct ctl_def *lookup(const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < sizeof(ctl_table) / sizeof(ctl_table[0]); i++)
        if (strlen(ctl_table[i].name) == len && memcmp(ctl_table[i].name, name, len) == 0)
            return &ctl_table[i];
    return NULL;
}

/* The argument of a known command: its presence checked against the table, then its
 * validator run on a NUL-terminated copy. raw is verbatim to the line's end, trimmed is
 * the same without surrounding blanks. Fills c; 0 or -errno with err set. */
static int parse_arg(const struct ctl_def *def, const char *arg, size_t raw, size_t trimmed,
                     struct ctl_cmd *c, char *err, size_t errlen)
{
    char q[QUOTE_MAX * 4 + 8], why[256] = "";
    switch (def->kind) {
    case ARG_NONE:
        if (trimmed == 0)
            return 0;
        quote(q, sizeof(q), arg, trimmed);
        errf(err, errlen, "%s: unexpected argument %s", def->name, q);
        return -EINVAL;
    case ARG_OPTIONAL:
        raw = trimmed;
        break;
    case ARG_WORD:
        raw = trimmed;
        /* fall through */
    case ARG_TEXT:
        if (trimmed == 0) {
            errf(err, errlen, "%s: missing argument (%s)", def->name, def->what);
            return -EINVAL;
        }
        break;
    }
    /* Validators get a NUL-terminated copy so they may use string functions. */
    char *argz = dupn(arg, raw);
    int rc = argz ? def->validate(argz, raw, c, why, sizeof(why)) : -ENOMEM;
    free(argz);
    if (rc == -ENOMEM) {
        errf(err, errlen, "%s: out of memory", def->name);
    } else if (rc < 0) {
        quote(q, sizeof(q), arg, raw);
        errf(err, errlen, "%s: %s %s", def->name, q, why);
    }
    return rc;
}

int ctl_parse(const char *line, size_t len, struct ctl_cmd *cmd, char *err, size_t errlen)
{
    struct ctl_cmd c = {0};
    const struct ctl_def *def;
    char q[QUOTE_MAX * 4 + 8];
    const char *name;
    size_t i = 0, end;
    int rc = -EINVAL;

    if (len > 0 && line[len - 1] == '\r')
        len--;
    while (i < len && is_blank(line[i]))
        i++;
    if (i == len || line[i] == '#')
        return 1;
    end = len;
    while (end > i && is_blank(line[end - 1]))
        end--;
    if (memchr(line, 0, len)) {
        quote(q, sizeof(q), line + i, end - i);
        errf(err, errlen, "command contains a NUL byte: %s", q);
        goto out;
    }
    if (!pbjson_utf8_valid(line, len)) {
        quote(q, sizeof(q), line + i, end - i);
        errf(err, errlen, "command is not UTF-8 (the service takes text only): %s", q);
        goto out;
    }
    name = line + i;
    while (i < len && !is_blank(line[i]))
        i++;
    def = lookup(name, (size_t)(line + i - name));
    if (!def) {
        quote(q, sizeof(q), name, (size_t)(line + end - name));
        errf(err, errlen, "unknown command %s", q);
        goto out;
    }
    while (i < len && is_blank(line[i]))
        i++;
    c.op = def->op;
    rc = parse_arg(def, line + i, len - i, end > i ? end - i : 0, &c, err, errlen);
out:
    if (rc == 0)
        *cmd = c;
    else
        ctl_cmd_free(&c);
    return rc;
}

void ctl_cmd_free(struct ctl_cmd *cmd)
{
    size_t i;

    if (!cmd)
        return;
    if (cmd->argv) {
        for (i = 0; cmd->argv[i]; i++)
            free(cmd->argv[i]);
        free(cmd->argv);
    }
    free(cmd->key);
    free(cmd->arg);
    memset(cmd, 0, sizeof(*cmd));
}

/* After a failure the rest of the current write is dropped; if that rest ended in the
 * middle of a line, the line's continuation in later writes is dropped too, up to its
 * newline, so no command ever runs from a fragment. */
static void drop_rest(struct ctl_lines *cl, const char *rest, const char *end)
{
    cl->len = 0;
    cl->skipping = rest < end && end[-1] != '\n';
}

static int lines_append(struct ctl_lines *cl, const char *p, size_t n)
{
    size_t need = cl->len + n + 1, ncap;
    char *nb;

    if (need > cl->cap) {
        ncap = cl->cap ? cl->cap : 256;
        while (ncap < need)
            ncap *= 2;
        if (ncap > CTL_MAX_LINE + 1)
            ncap = CTL_MAX_LINE + 1;
        nb = realloc(cl->buf, ncap);
        if (!nb)
            return -ENOMEM;
        cl->buf = nb;
        cl->cap = ncap;
    }
    memcpy(cl->buf + cl->len, p, n);
    cl->len += n;
    cl->buf[cl->len] = 0;
    return 0;
}

int ctl_lines_feed(struct ctl_lines *cl, const char *data, size_t len,
                   int (*fn)(const char *line, size_t len, void *ud), void *ud)
{
    const char *p = data, *end = data + len, *nl;
    size_t n;
    int rc;

    if (cl->skipping) {
        /* The rest of a refused line: each write carrying it fails too, so a writer
         * that retried after a short write still hears of the refusal. */
        nl = memchr(p, '\n', len);
        if (!nl)
            return -E2BIG;
        cl->skipping = 0;
        p = nl + 1;
        if (p == end)
            return -E2BIG;
    }
    while (p < end) {
        nl = memchr(p, '\n', (size_t)(end - p));
        n = (size_t)((nl ? nl : end) - p);
        if (n > CTL_MAX_LINE - cl->len) {
            drop_rest(cl, nl ? nl + 1 : end, end);
            if (!nl)
                cl->skipping = 1;
            return -E2BIG;
        }
        if (!nl) {
            rc = lines_append(cl, p, n);
            if (rc < 0) {
                drop_rest(cl, end, end);
                cl->skipping = 1;
            }
            return rc;
        }
        if (cl->len == 0) {
            rc = fn(p, n, ud);
        } else {
            rc = lines_append(cl, p, n);
            if (rc == 0)
                rc = fn(cl->buf, cl->len, ud);
            cl->len = 0;
        }
        p = nl + 1;
        if (rc) {
            drop_rest(cl, p, end);
            return rc;
        }
    }
    return 0;
}

int ctl_lines_finish(struct ctl_lines *cl, int (*fn)(const char *line, size_t len, void *ud),
                     void *ud)
{
    int rc = 0;

    if (!cl->skipping && cl->len > 0)
        rc = fn(cl->buf, cl->len, ud);
    cl->len = 0;
    cl->skipping = 0;
    return rc;
}

void ctl_lines_free(struct ctl_lines *cl)
{
    free(cl->buf);
    memset(cl, 0, sizeof(*cl));
}
