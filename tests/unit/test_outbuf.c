/* test_outbuf.c - the on-disk output buffer: appends read back at their logical
 * offsets, reads at and past the end, the cap dropping the oldest bytes (including a
 * single append larger than the cap), hole punching releasing disk space, mtime, and
 * both ways of creating the spool file. */
#undef _FORTIFY_SOURCE /* this file defines open() */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "outbuf.h"

static char spool[] = "/tmp/test_outbuf.XXXXXX";

static int setup(void **state)
{
    return mkdtemp(spool) ? 0 : -1;
}

static int teardown(void **state)
{
    return rmdir(spool); /* fails if a spool file was left behind */
}

/* The byte at logical offset i of the test stream. */
static char pat(uint64_t i)
{
    return (char)('a' + (i * 7 + i / 251) % 26);
}

static void append_pattern(struct outbuf *ob, uint64_t from, size_t len)
{
    char *b = malloc(len ? len : 1);
    size_t i;

    assert_non_null(b);
    for (i = 0; i < len; i++)
        b[i] = pat(from + i);
    assert_int_equal(outbuf_append(ob, b, len), 0);
    free(b);
}

static void check_pattern(const struct outbuf *ob, uint64_t off, size_t len)
{
    char *b = malloc(len + 1);
    size_t i;

    assert_non_null(b);
    assert_int_equal(outbuf_read(ob, off, b, len), (ssize_t)len);
    for (i = 0; i < len; i++)
        assert_int_equal(b[i], pat(off + i));
    free(b);
}

static void test_append_read(void **state)
{
    struct outbuf ob;
    char buf[64];
    struct timespec t0, t1;
    clock_gettime(CLOCK_REALTIME, &t0);
    assert_int_equal(outbuf_init(&ob, spool, 0), 0);
    assert_true(ob.fd >= 0);
    assert_int_equal(ob.cap, OUTBUF_DEFAULT_CAP);
    assert_int_equal(ob.produced, 0);
    assert_int_equal(ob.dropped, 0);
    assert_true(ob.mtime.tv_sec >= t0.tv_sec);
    /* nothing yet: reads are empty */
    assert_int_equal(outbuf_read(&ob, 0, buf, sizeof(buf)), 0);

    assert_int_equal(outbuf_append(&ob, "hello ", 6), 0);
    assert_int_equal(outbuf_append(&ob, "", 0), 0);
    assert_int_equal(outbuf_append(&ob, "world\n", 6), 0);
    assert_int_equal(ob.produced, 12);
    assert_int_equal(ob.dropped, 0);
    clock_gettime(CLOCK_REALTIME, &t1);
    assert_true(ob.mtime.tv_sec <= t1.tv_sec);

    memset(buf, 0, sizeof(buf));
    assert_int_equal(outbuf_read(&ob, 0, buf, sizeof(buf)), 12);
    assert_string_equal(buf, "hello world\n");
    /* offsets and short buffers */
    memset(buf, 0, sizeof(buf));
    assert_int_equal(outbuf_read(&ob, 6, buf, 3), 3);
    assert_string_equal(buf, "wor");
    memset(buf, 0, sizeof(buf));
    assert_int_equal(outbuf_read(&ob, 11, buf, sizeof(buf)), 1);
    assert_string_equal(buf, "\n");
    assert_int_equal(outbuf_read(&ob, 5, buf, 0), 0);
    /* at and past the end */
    assert_int_equal(outbuf_read(&ob, 12, buf, sizeof(buf)), 0);
    assert_int_equal(outbuf_read(&ob, 1000, buf, sizeof(buf)), 0);
    assert_int_equal(outbuf_read(&ob, UINT64_MAX, buf, sizeof(buf)), 0);
    /* later output is seen by a reader that was at the end */
    assert_int_equal(outbuf_append(&ob, "more", 4), 0);
    memset(buf, 0, sizeof(buf));
    assert_int_equal(outbuf_read(&ob, 12, buf, sizeof(buf)), 4);
    assert_string_equal(buf, "more");
    outbuf_free(&ob);
    assert_int_equal(ob.fd, -1);
    outbuf_free(&ob); /* idempotent */
}

static void test_large(void **state)
{
    struct outbuf ob;
    uint64_t off = 0;
    size_t sizes[] = {1, 4095, 4096, 4097, 65536, 1 << 20, 3, 200000};
    size_t i;
    assert_int_equal(outbuf_init(&ob, spool, 0), 0);
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        append_pattern(&ob, off, sizes[i]);
        off += sizes[i];
    }
    assert_int_equal(ob.produced, off);
    check_pattern(&ob, 0, (size_t)off);
    check_pattern(&ob, 12345, 70000);
    check_pattern(&ob, off - 1, 1);
    outbuf_free(&ob);
}

static void test_cap_drops_oldest(void **state)
{
    struct outbuf ob;
    char buf[32];
    assert_int_equal(outbuf_init(&ob, spool, 10), 0);
    assert_int_equal(ob.cap, 10);
    assert_int_equal(outbuf_append(&ob, "0123456789", 10), 0);
    assert_int_equal(ob.dropped, 0);
    assert_int_equal(outbuf_append(&ob, "abc", 3), 0);
    assert_int_equal(ob.produced, 13);
    assert_int_equal(ob.dropped, 3);
    /* a read in the dropped range starts at the oldest byte kept */
    memset(buf, 0, sizeof(buf));
    assert_int_equal(outbuf_read(&ob, 0, buf, sizeof(buf)), 10);
    assert_string_equal(buf, "3456789abc");
    memset(buf, 0, sizeof(buf));
    assert_int_equal(outbuf_read(&ob, 2, buf, 4), 4);
    assert_string_equal(buf, "3456");
    memset(buf, 0, sizeof(buf));
    assert_int_equal(outbuf_read(&ob, 3, buf, sizeof(buf)), 10);
    assert_string_equal(buf, "3456789abc");
    memset(buf, 0, sizeof(buf));
    assert_int_equal(outbuf_read(&ob, 11, buf, sizeof(buf)), 2);
    assert_string_equal(buf, "bc");
    assert_int_equal(outbuf_read(&ob, 13, buf, sizeof(buf)), 0);

    /* one append larger than the cap keeps only its tail */
    assert_int_equal(outbuf_append(&ob, "ABCDEFGHIJKLMNOPQRSTUVWXYZ", 26), 0);
    assert_int_equal(ob.produced, 39);
    assert_int_equal(ob.dropped, 29);
    memset(buf, 0, sizeof(buf));
    assert_int_equal(outbuf_read(&ob, 0, buf, sizeof(buf)), 10);
    assert_string_equal(buf, "QRSTUVWXYZ");
    memset(buf, 0, sizeof(buf));
    assert_int_equal(outbuf_read(&ob, 35, buf, sizeof(buf)), 4);
    assert_string_equal(buf, "WXYZ");
    outbuf_free(&ob);
}

/* Many megabytes through a small cap: the window is always the last cap bytes, and
 * the disk actually used stays near the cap (where the filesystem punches holes). */
static void test_cap_streaming(void **state)
{
    const uint64_t cap = 1 << 20;
    struct outbuf ob;
    uint64_t off = 0;
    struct stat st;
    size_t chunk = 77777;
    int i;
    assert_int_equal(outbuf_init(&ob, spool, cap), 0);
    for (i = 0; i < 200; i++) {
        append_pattern(&ob, off, chunk);
        off += chunk;
        assert_int_equal(ob.produced, off);
        assert_int_equal(ob.dropped, off > cap ? off - cap : 0);
    }
    check_pattern(&ob, ob.dropped, (size_t)cap);
    {
        char b[100];
        assert_int_equal(outbuf_read(&ob, 0, b, sizeof(b)), 100);
        assert_int_equal(b[0], pat(ob.dropped));
        assert_int_equal(b[99], pat(ob.dropped + 99));
    }
    assert_int_equal(fstat(ob.fd, &st), 0);
    assert_int_equal((uint64_t)st.st_size, off); /* logical size kept */
    /* 15 MB produced; at most cap plus a punch chunk plus slack stays allocated, if
     * this filesystem punches holes at all */
    if (fallocate(ob.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0)
        assert_true((uint64_t)st.st_blocks * 512 <= cap + (256 << 10));
    outbuf_free(&ob);
}

static void test_init_errors(void **state)
{
    struct outbuf ob;
    char buf[4];
    assert_int_equal(outbuf_init(&ob, "/nonexistent/spool/dir", 0), -ENOENT);
    assert_int_equal(ob.fd, -1);
    outbuf_free(&ob);
    assert_int_equal(outbuf_append(&ob, "x", 1), -EBADF);
    assert_int_equal(outbuf_read(&ob, 0, buf, sizeof(buf)), -EBADF);
}

/* Filesystems without O_TMPFILE are simulated by this program's own open(), which
 * takes precedence over the C library's for outbuf.c too: while fail_tmpfile is set an
 * O_TMPFILE open fails as on such a filesystem. Everything else goes to the kernel. */
static int fail_tmpfile;

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    va_list ap;

    if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (fail_tmpfile && (flags & O_TMPFILE) == O_TMPFILE) {
        errno = EOPNOTSUPP;
        return -1;
    }
    return (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);
}

/* Likewise fallocate(): counts punches, and can fail them as a filesystem without hole
 * punching does. */
static int fail_punch, punches;

int fallocate(int fd, int mode, off_t off, off_t len)
{
    punches++;
    assert_int_equal(mode, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
    assert_true(off % 4096 == 0 && len % 4096 == 0 && len > 0);
    if (fail_punch) {
        errno = EOPNOTSUPP;
        return -1;
    }
    return (int)syscall(SYS_fallocate, fd, mode, off, len);
}

static void test_punch_unsupported(void **state)
{
    const uint64_t cap = 100000;
    struct outbuf ob;
    uint64_t off = 0;
    int i;
    fail_punch = 1;
    punches = 0;
    assert_int_equal(outbuf_init(&ob, spool, cap), 0);
    for (i = 0; i < 100; i++) {
        append_pattern(&ob, off, 10000);
        off += 10000;
    }
    fail_punch = 0;
    /* 1 MB produced: whole 64 KiB chunks fell out about 13 times, not 100 */
    assert_true(punches > 5 && punches <= 16);
    assert_int_equal(ob.produced, off);
    assert_int_equal(ob.dropped, off - cap);
    check_pattern(&ob, ob.dropped, (size_t)cap);
    {
        char b[10];
        assert_int_equal(outbuf_read(&ob, 5, b, sizeof(b)), 10);
        assert_int_equal(b[0], pat(off - cap));
    }
    outbuf_free(&ob);
}

/* The spool file has a name in the spool directory while the outbuf lives, so a stream
 * that ended holds no descriptor: reads reopen it by name. */
static void test_spool_idle_holds_no_descriptor(void **state)
{
    struct outbuf a;
    char buf[8], *path;
    assert_int_equal(outbuf_init(&a, spool, 4), 0);
    assert_non_null(a.path);
    assert_non_null(strstr(a.path, "/cwsfs-out-"));
    assert_int_equal(fcntl(a.fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    assert_int_equal(outbuf_append(&a, "abcdef", 6), 0);
    outbuf_idle(&a);
    assert_int_equal(a.fd, -1);
    assert_int_equal(access(a.path, F_OK), 0);
    assert_int_equal(outbuf_read(&a, 0, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "cdef", 4);
    assert_int_equal(a.fd, -1); /* the read's descriptor was closed again */
    /* appending after idle reopens it */
    assert_int_equal(outbuf_append(&a, "gh", 2), 0);
    assert_true(a.fd >= 0);
    assert_int_equal(outbuf_read(&a, 0, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "efgh", 4);
    path = strdup(a.path);
    assert_non_null(path);
    outbuf_free(&a);
    assert_null(a.path);
    assert_int_equal(access(path, F_OK), -1); /* removed */
    free(path);

    assert_int_equal(outbuf_init(&a, "/nonexistent/spool/dir", 0), -ENOENT);
    assert_int_equal(a.fd, -1);
    assert_null(a.path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_read),
        cmocka_unit_test(test_large),
        cmocka_unit_test(test_cap_drops_oldest),
        cmocka_unit_test(test_cap_streaming),
        cmocka_unit_test(test_init_errors),
        cmocka_unit_test(test_punch_unsupported),
        cmocka_unit_test(test_spool_idle_holds_no_descriptor),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
