/* test_listing.c - the listing command and its parser. The command is run for real
 * (GNU find on this machine) over a directory of awkward entries: blanks, a newline,
 * quotes, UTF-8, shell syntax that must never run, a symlink (also dangling), a fifo, a
 * socket, a subdirectory, special mode bits, times before the epoch; every parsed
 * entry must equal lstat(2) of the file. Then the parser's refusals, field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "listing.h"

static char dir[] = "/tmp/test_listing.XXXXXX";

static const char *const odd_names[] = {
    "plain",
    "with space",
    "two  spaces ",
    "new\nline",
    "quote'single",
    "quote\"dbl",
    "caf\xc3\xa9 \xe2\x98\x83",
    "$(touch x)",
    "`touch y`",
    "-name",
    "back\\slash",
    "%s%d\\0",
    "tab\there",
    ".hidden",
    "...",
    "star*",
    "x;rm -rf nothing",
};

static void touch_file(const char *name, const char *content, mode_t mode)
{
    char p[PATH_MAX];
    int fd;

    snprintf(p, sizeof(p), "%s/%s", dir, name);
    fd = open(p, O_CREAT | O_EXCL | O_WRONLY, 0600);
    assert_true(fd >= 0);
    if (content)
        assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    assert_int_equal(chmod(p, mode), 0);
}

static int setup(void **state)
{
    char p[PATH_MAX], q[PATH_MAX];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct timespec ts[2] = {{-2, 500000000}, {-2, 500000000}};
    size_t i;
    int s;
    if (!mkdtemp(dir))
        return -1;
    for (i = 0; i < sizeof(odd_names) / sizeof(odd_names[0]); i++)
        touch_file(odd_names[i], odd_names[i], 0644);
    touch_file("setuid", NULL, 04755);
    touch_file("empty-mode", NULL, 0);
    snprintf(p, sizeof(p), "%s/old", dir);
    touch_file("old", "x", 0600);
    if (utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/sub dir", dir);
    if (mkdir(p, 01777) < 0 || chmod(p, 01777) < 0)
        return -1;
    snprintf(q, sizeof(q), "%s/sub dir/inner", dir);
    if (mkdir(q, 0700) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/link", dir);
    if (symlink("with space", p) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/dangling \xe2\x86\x92", dir);
    if (symlink("/nonexistent/target\nwith newline", p) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/fifo", dir);
    if (mkfifo(p, 0640) < 0)
        return -1;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/sock", dir);
    s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -1;
    close(s);
    /* a hard link raises nlink */
    snprintf(p, sizeof(p), "%s/plain", dir);
    snprintf(q, sizeof(q), "%s/plain-hardlink", dir);
    return link(p, q);
}

static int teardown(void **state)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Run argv, return its stdout (malloc'ed, *len bytes); the exit status must be 0. */
static char *run(const char *const argv[], size_t *len)
{
    int pfd[2], status;
    size_t cap = 4096;
    char *out = malloc(cap);
    pid_t pid;
    ssize_t n;

    assert_non_null(out);
    assert_int_equal(pipe(pfd), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    *len = 0;
    for (;;) {
        if (*len == cap) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        n = read(pfd[0], out + *len, cap - *len);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n >= 0);
        if (n == 0)
            break;
        *len += (size_t)n;
    }
    close(pfd[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return out;
}

struct seen {
    char names[64][NAME_MAX + 1];
    size_t n;
};

static int check_entry(const struct listing_entry *e, void *ud)
{
    struct seen *s = ud;
    char p[PATH_MAX], target[PATH_MAX];
    struct stat st;
    ssize_t tl;

    assert_true(s->n < 64);
    strcpy(s->names[s->n++], e->name);
    snprintf(p, sizeof(p), "%s/%s", dir, e->name);
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(e->mode, st.st_mode);
    assert_int_equal(e->size, st.st_size);
    assert_int_equal(e->uid, st.st_uid);
    assert_int_equal(e->gid, st.st_gid);
    assert_int_equal(e->nlink, st.st_nlink);
    assert_int_equal(e->mtime.tv_sec, st.st_mtim.tv_sec);
    assert_int_equal(e->mtime.tv_nsec, st.st_mtim.tv_nsec);
    if (S_ISLNK(st.st_mode)) {
        tl = readlink(p, target, sizeof(target) - 1);
        assert_true(tl > 0);
        target[tl] = 0;
        assert_string_equal(e->link, target);
    } else {
        assert_string_equal(e->link, "");
    }
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_real_find(void **state)
{
    const char *argv[LISTING_ARGC + 1];
    struct seen s = {.n = 0}, want = {.n = 0};
    char p[PATH_MAX];
    size_t len, i;
    char *out;
    struct stat st;
    listing_argv(dir, argv);
    assert_string_equal(argv[0], "find");
    assert_string_equal(argv[1], "-H");
    assert_ptr_equal(argv[2], dir);
    assert_string_equal(argv[3], "-mindepth");
    assert_string_equal(argv[4], "1");
    assert_string_equal(argv[5], "-maxdepth");
    assert_string_equal(argv[6], "1");
    assert_string_equal(argv[7], "-printf");
    assert_string_equal(argv[8], "%y\\0%m\\0%s\\0%T@\\0%U\\0%G\\0%n\\0%P\\0%l\\0");
    assert_null(argv[LISTING_ARGC]);
    out = run(argv, &len);
    assert_true(len > 0);
    assert_int_equal(out[len - 1], 0);
    assert_int_equal(listing_parse(out, len, check_entry, &s), 0);

    /* exactly the directory's entries, no more, no fewer */
    {
        size_t n = sizeof(odd_names) / sizeof(odd_names[0]);
        const char *extra[] = {"setuid",  "empty-mode", "old",
                               "sub dir", "link",       "dangling \xe2\x86\x92",
                               "fifo",    "sock",       "plain-hardlink"};
        for (i = 0; i < n; i++)
            strcpy(want.names[want.n++], odd_names[i]);
        for (i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
            strcpy(want.names[want.n++], extra[i]);
    }
    assert_int_equal(s.n, want.n);
    qsort(s.names, s.n, sizeof(s.names[0]), cmp_names);
    qsort(want.names, want.n, sizeof(want.names[0]), cmp_names);
    for (i = 0; i < s.n; i++)
        assert_string_equal(s.names[i], want.names[i]);

    /* nothing was run by a shell */
    snprintf(p, sizeof(p), "%s/x", dir);
    assert_int_equal(lstat(p, &st), -1);
    snprintf(p, sizeof(p), "%s/y", dir);
    assert_int_equal(lstat(p, &st), -1);
    assert_int_equal(lstat("x", &st), -1);
    free(out);
}

static int inner_cb(const struct listing_entry *e, void *ud)
{
    int *calls = ud;

    (*calls)++;
    assert_string_equal(e->name, "inner");
    assert_true(S_ISDIR(e->mode));
    assert_int_equal(e->mode & 07777, 0700);
    return 0;
}

static int count_cb(const struct listing_entry *e, void *ud)
{
    (*(int *)ud)++;
    return 0;
}

/* -H: a symlink to a directory given as DIR lists the directory it points to. */
static void test_real_find_symlinked_dir(void **state)
{
    const char *argv[LISTING_ARGC + 1];
    char p[PATH_MAX], q[PATH_MAX];
    int calls = 0;
    size_t len;
    char *out;
    snprintf(p, sizeof(p), "%s/sub dir", dir);
    snprintf(q, sizeof(q), "%s.link", dir);
    assert_int_equal(symlink(p, q), 0);
    listing_argv(q, argv);
    out = run(argv, &len);
    unlink(q);
    assert_int_equal(listing_parse(out, len, inner_cb, &calls), 0);
    assert_int_equal(calls, 1);
    free(out);
}

static void test_real_find_empty_dir(void **state)
{
    const char *argv[LISTING_ARGC + 1];
    char p[PATH_MAX];
    size_t len;
    char *out;
    int calls = 0;
    snprintf(p, sizeof(p), "%s/sub dir/inner", dir);
    listing_argv(p, argv);
    out = run(argv, &len);
    assert_int_equal(len, 0);
    assert_int_equal(listing_parse(out, len, count_cb, &calls), 0);
    assert_int_equal(calls, 0);
    free(out);
}

/* ---- the parser on made-up output ---- */

/* Build a buffer of records from fields; "|" separates records' field lists. */
struct rbuf {
    char b[16384];
    size_t len;
};

static void add(struct rbuf *r, const char *const f[LISTING_FIELDS])
{
    size_t i, l;

    for (i = 0; i < LISTING_FIELDS; i++) {
        l = strlen(f[i]);
        assert_true(r->len + l + 1 <= sizeof(r->b));
        memcpy(r->b + r->len, f[i], l + 1);
        r->len += l + 1;
    }
}

struct last {
    struct listing_entry e;
    int calls, stop_at;
};

static int keep_cb(const struct listing_entry *e, void *ud)
{
    struct last *l = ud;

    l->e = *e;
    l->calls++;
    return l->calls == l->stop_at ? 5 : 0;
}

static const char *const good[LISTING_FIELDS] = {
    "f", "644", "123", "1732245123.1234567890", "1000", "1001", "1", "name", ""};

/* Parse one record made of good[] with field idx replaced by val. */
static int one(int idx, const char *val, struct last *l)
{
    /* static: the entry's name and link stay borrowed from it after return */
    static struct rbuf r;
    const char *f[LISTING_FIELDS];

    r.len = 0;
    memcpy(f, good, sizeof(f));
    if (idx >= 0)
        f[idx] = val;
    add(&r, f);
    memset(l, 0, sizeof(*l));
    return listing_parse(r.b, r.len, keep_cb, l);
}

static void test_parse_fields(void **state)
{
    struct last l;
    assert_int_equal(one(-1, NULL, &l), 0);
    assert_int_equal(l.calls, 1);
    assert_int_equal(l.e.mode, S_IFREG | 0644);
    assert_int_equal(l.e.size, 123);
    assert_int_equal(l.e.mtime.tv_sec, 1732245123);
    assert_int_equal(l.e.mtime.tv_nsec, 123456789);
    assert_int_equal(l.e.uid, 1000);
    assert_int_equal(l.e.gid, 1001);
    assert_int_equal(l.e.nlink, 1);
    assert_string_equal(l.e.name, "name");
    assert_string_equal(l.e.link, "");

    assert_int_equal(one(1, "7777", &l), 0);
    assert_int_equal(l.e.mode, S_IFREG | 07777);
    assert_int_equal(one(1, "0", &l), 0);
    assert_int_equal(l.e.mode, S_IFREG);
    assert_int_equal(one(2, "9223372036854775807", &l), 0);
    assert_int_equal(l.e.size, INT64_MAX);
    assert_int_equal(one(4, "4294967295", &l), 0);
    assert_int_equal(l.e.uid, 4294967295u);
    assert_int_equal(one(5, "0", &l), 0);
    assert_int_equal(l.e.gid, 0);
    assert_int_equal(one(6, "65000", &l), 0);
    assert_int_equal(l.e.nlink, 65000);
    assert_int_equal(one(7, "caf\xc3\xa9 \n\t'\"$(x)", &l), 0);
    assert_string_equal(l.e.name, "caf\xc3\xa9 \n\t'\"$(x)");
}

static void test_parse_types(void **state)
{
    const struct {
        const char *letter;
        mode_t type;
    } types[] = {{"f", S_IFREG}, {"d", S_IFDIR}, {"l", S_IFLNK}, {"p", S_IFIFO}, {"s", S_IFSOCK},
                 {"c", S_IFCHR}, {"b", S_IFBLK}, {"D", S_IFREG}, {"U", S_IFREG}};
    const char *bad[] = {"", "x", "F", "?", "ff", "-", "N"};
    struct last l;
    size_t i;
    for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        assert_int_equal(one(0, types[i].letter, &l), 0);
        assert_int_equal(l.e.mode & S_IFMT, types[i].type);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(one(0, bad[i], &l), -EPROTO);
}

static void test_parse_times(void **state)
{
    const struct {
        const char *s;
        long long sec;
        long nsec;
    } ok[] = {{"0", 0, 0},
              {"5", 5, 0},
              {"0.1", 0, 100000000},
              {"1.000000001", 1, 1},
              {"1.0000000019", 1, 1},
              {"-2.5000000000", -2, 500000000},
              {"-1.0000000000", -1, 0},
              {"-0", 0, 0},
              {"1732245123.1234567890", 1732245123, 123456789},
              {"253402300799.9999999990", 253402300799LL, 999999999}};
    const char *bad[] = {"",
                         ".",
                         "1.",
                         ".5",
                         "-",
                         "--1",
                         "+1",
                         "1.2.3",
                         "1e5",
                         " 1",
                         "1 ",
                         "1.-5",
                         "x",
                         "1.5x",
                         "99999999999999999999",
                         "1.1234567890123456789012345"};
    struct last l;
    size_t i;
    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(one(3, ok[i].s, &l), 0);
        assert_int_equal(l.e.mtime.tv_sec, ok[i].sec);
        assert_int_equal(l.e.mtime.tv_nsec, ok[i].nsec);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(one(3, bad[i], &l), -EPROTO);
    }
}

static void test_parse_bad_numbers(void **state)
{
    struct last l;
    assert_int_equal(one(1, "10000", &l), -EPROTO);
    assert_int_equal(one(1, "8", &l), -EPROTO);
    assert_int_equal(one(1, "", &l), -EPROTO);
    assert_int_equal(one(1, "-1", &l), -EPROTO);
    assert_int_equal(one(1, "0x1ff", &l), -EPROTO);
    /* size */
    assert_int_equal(one(2, "9223372036854775808", &l), -EPROTO);
    assert_int_equal(one(2, "-1", &l), -EPROTO);
    assert_int_equal(one(2, "1k", &l), -EPROTO);
    assert_int_equal(one(2, "", &l), -EPROTO);
    assert_int_equal(one(2, " 1", &l), -EPROTO);
    assert_int_equal(one(2, "0000000000000000000000000001", &l), -EPROTO);
    /* uid, gid */
    assert_int_equal(one(4, "4294967296", &l), -EPROTO);
    assert_int_equal(one(4, "root", &l), -EPROTO);
    assert_int_equal(one(5, "-1", &l), -EPROTO);
    assert_int_equal(one(5, "", &l), -EPROTO);
    /* nlink */
    assert_int_equal(one(6, "abc", &l), -EPROTO);
    assert_int_equal(one(6, "18446744073709551616", &l), -EPROTO);
    assert_int_equal(l.calls, 0);
}

static void test_parse_names_and_links(void **state)
{
    char longname[NAME_MAX + 2], longlink[PATH_MAX + 1];
    const char *f[LISTING_FIELDS];
    struct rbuf r = {.len = 0};
    struct last l;
    assert_int_equal(one(7, "", &l), -EPROTO);
    assert_int_equal(one(7, "a/b", &l), -EPROTO);
    assert_int_equal(one(7, "/", &l), -EPROTO);
    assert_int_equal(one(7, ".", &l), -EPROTO);
    assert_int_equal(one(7, "..", &l), -EPROTO);
    assert_int_equal(one(7, "...", &l), 0);
    assert_int_equal(one(7, ".x", &l), 0);
    memset(longname, 'n', sizeof(longname));
    longname[NAME_MAX] = 0;
    assert_int_equal(one(7, longname, &l), 0);
    longname[NAME_MAX] = 'n';
    longname[NAME_MAX + 1] = 0;
    assert_int_equal(one(7, longname, &l), -EPROTO);
    /* only symlinks have targets */
    assert_int_equal(one(8, "target", &l), -EPROTO);
    memcpy(f, good, sizeof(f));
    f[0] = "l";
    f[8] = "../t a\nrget";
    add(&r, f);
    memset(&l, 0, sizeof(l));
    assert_int_equal(listing_parse(r.b, r.len, keep_cb, &l), 0);
    assert_int_equal(l.e.mode & S_IFMT, S_IFLNK);
    assert_string_equal(l.e.link, "../t a\nrget");
    /* a symlink whose target vanished between lstat and readlink */
    f[8] = "";
    r.len = 0;
    add(&r, f);
    assert_int_equal(listing_parse(r.b, r.len, keep_cb, &l), 0);
    /* targets are bounded by PATH_MAX */
    memset(longlink, 't', sizeof(longlink));
    longlink[PATH_MAX - 1] = 0;
    f[8] = longlink;
    r.len = 0;
    add(&r, f);
    assert_int_equal(listing_parse(r.b, r.len, keep_cb, &l), 0);
    longlink[PATH_MAX - 1] = 't';
    longlink[PATH_MAX] = 0;
    r.len = 0;
    add(&r, f);
    assert_int_equal(listing_parse(r.b, r.len, keep_cb, &l), -EPROTO);
}

static void test_parse_stream(void **state)
{
    const char *f2[LISTING_FIELDS] = {"d", "755", "4096", "1.5", "0", "0", "2", "dir", ""};
    const char *f3[LISTING_FIELDS] = {"l", "777", "3", "2", "0", "0", "1", "ln", "dir"};
    struct rbuf r = {.len = 0};
    size_t cut, bounds[4], nb = 0;
    struct last l;
    int rc;
    memset(&l, 0, sizeof(l));
    assert_int_equal(listing_parse("", 0, keep_cb, &l), 0);
    assert_int_equal(l.calls, 0);

    bounds[nb++] = 0;
    add(&r, good);
    bounds[nb++] = r.len;
    add(&r, f2);
    bounds[nb++] = r.len;
    add(&r, f3);
    bounds[nb++] = r.len;
    memset(&l, 0, sizeof(l));
    assert_int_equal(listing_parse(r.b, r.len, keep_cb, &l), 0);
    assert_int_equal(l.calls, 3);
    assert_string_equal(l.e.name, "ln");

    /* every cut inside a record is a truncated record; cuts at records are fine */
    for (cut = 0; cut <= r.len; cut++) {
        size_t k, whole = 0;
        int boundary = 0;
        for (k = 0; k < nb; k++) {
            if (bounds[k] == cut)
                boundary = 1;
            if (bounds[k] <= cut && k > 0)
                whole = k;
        }
        memset(&l, 0, sizeof(l));
        rc = listing_parse(r.b, cut, keep_cb, &l);
        assert_int_equal(rc, boundary ? 0 : -EPROTO);
        assert_int_equal(l.calls, (int)whole);
    }

    /* trailing bytes without their NUL */
    memcpy(r.b + r.len, "f", 1);
    assert_int_equal(listing_parse(r.b, r.len + 1, keep_cb, &l), -EPROTO);

    /* the callback stops the walk and its return is passed on */
    memset(&l, 0, sizeof(l));
    l.stop_at = 2;
    assert_int_equal(listing_parse(r.b, r.len, keep_cb, &l), 5);
    assert_int_equal(l.calls, 2);
    assert_string_equal(l.e.name, "dir");

    /* a bad record after good ones: the good ones were delivered, the result is -EPROTO */
    r.len = 0;
    add(&r, good);
    add(&r, (const char *const[LISTING_FIELDS]){"f", "644", "x", "1", "0", "0", "1", "n", ""});
    memset(&l, 0, sizeof(l));
    assert_int_equal(listing_parse(r.b, r.len, keep_cb, &l), -EPROTO);
    assert_int_equal(l.calls, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_find),           cmocka_unit_test(test_real_find_symlinked_dir),
        cmocka_unit_test(test_real_find_empty_dir), cmocka_unit_test(test_parse_fields),
        cmocka_unit_test(test_parse_types),         cmocka_unit_test(test_parse_times),
        cmocka_unit_test(test_parse_bad_numbers),   cmocka_unit_test(test_parse_names_and_links),
        cmocka_unit_test(test_parse_stream),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
