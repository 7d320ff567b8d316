/* test_log.c - log.c's line format, level filter, one-line guarantee, truncation and
 * errno preservation, read back from stderr redirected into a temporary file; and that
 * concurrent loggers never interleave within a line. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"

static int saved_stderr = -1;
static FILE *capture;

static int setup(void **state)
{
    capture = tmpfile();
    saved_stderr = dup(STDERR_FILENO);
    return capture && saved_stderr >= 0 ? 0 : -1;
}

static int teardown(void **state)
{
    close(saved_stderr);
    fclose(capture);
    return 0;
}

/* Send stderr to the capture file until captured(); cmocka's own failure messages
 * must still reach the real stderr, so every capture is short. */
static void begin(void)
{
    assert_int_equal(ftruncate(fileno(capture), 0), 0);
    assert_true(dup2(fileno(capture), STDERR_FILENO) >= 0);
}

/* Everything logged since begin(), NUL-terminated (caller frees); stderr restored. */
static char *captured(void)
{
    off_t n;
    char *buf;

    assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
    n = lseek(fileno(capture), 0, SEEK_END);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fileno(capture), buf, (size_t)n, 0), n);
    buf[n] = '\0';
    lseek(fileno(capture), 0, SEEK_SET);
    return buf;
}

static void test_format(void **state)
{
    char *out;
    begin();
    log_error("disk %s is %d%% full", "sda", 99);
    out = captured();
    /* "2026-11-22T02:48:08.878Z ERROR disk sda is 99% full\n" */
    assert_int_equal(strlen(out), 24 + 1 + 5 + 1 + 20 + 1);
    assert_int_equal(out[4], '-');
    assert_int_equal(out[10], 'T');
    assert_int_equal(out[19], '.');
    assert_int_equal(out[23], 'Z');
    assert_string_equal(out + 24, " ERROR disk sda is 99% full\n");
    free(out);

    begin();
    log_warn("w");
    log_info("i");
    out = captured();
    assert_non_null(strstr(out, " WARN w\n"));
    assert_non_null(strstr(out, " INFO i\n"));
    free(out);
}

static void test_level_filter(void **state)
{
    char *out;
    begin();
    log_debug("hidden");
    out = captured();
    assert_string_equal(out, "");
    free(out);

    log_set_level(LOG_LVL_DEBUG);
    begin();
    log_debug("shown");
    out = captured();
    assert_non_null(strstr(out, " DEBUG shown\n"));
    free(out);

    log_set_level(LOG_LVL_ERROR);
    begin();
    log_warn("hidden");
    log_info("hidden");
    log_error("shown");
    out = captured();
    assert_null(strstr(out, "hidden"));
    assert_non_null(strstr(out, " ERROR shown\n"));
    free(out);
    log_set_level(LOG_LVL_INFO);
}

static void test_one_line(void **state)
{
    char *out;
    begin();
    log_info("server said: %s", "line one\nline two\r\n\x1b[31mred");
    out = captured();
    assert_non_null(strstr(out, " INFO server said: line one line two   [31mred\n"));
    assert_int_equal(strchr(out, '\n') - out, (long)strlen(out) - 1);
    free(out);
}

static void test_truncation(void **state)
{
    char big[5000], *out;
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    begin();
    log_info("%s", big);
    out = captured();
    assert_true(strlen(out) < 2200);
    assert_non_null(strstr(out, "xxx...\n"));
    free(out);
}

static void test_errno_preserved(void **state)
{
    char *out;
    begin();
    errno = ENOENT;
    log_info("x");
    assert_int_equal(errno, ENOENT);
    errno = EPERM;
    log_debug("filtered");
    assert_int_equal(errno, EPERM);
    out = captured();
    free(out);
}

static void test_syslog(void **state)
{
    char *out;
    log_use_syslog(1);
    log_use_syslog(1); /* idempotent */
    begin();
    log_debug("cwsfs unit test: filtered before syslog");
    log_info("cwsfs unit test: to syslog, not stderr");
    out = captured();
    assert_string_equal(out, "");
    free(out);
    log_use_syslog(0);
    begin();
    log_info("back");
    out = captured();
    assert_non_null(strstr(out, " INFO back\n"));
    free(out);
}

static void *logger(void *arg)
{
    int i;

    for (i = 0; i < 200; i++)
        log_info("thread %c %s", *(const char *)arg,
                 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz");
    return NULL;
}

static void test_threads(void **state)
{
    static const char ids[] = "ABCD";
    pthread_t t[4];
    char *out, *line, *save = NULL;
    int i, lines = 0;
    begin();
    for (i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, logger, (void *)&ids[i]), 0);
    for (i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    out = captured();
    for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        assert_int_equal(strlen(line), 24 + 6 + 9 + 78);
        assert_non_null(strstr(line, " INFO thread "));
        lines++;
    }
    assert_int_equal(lines, 800);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),          cmocka_unit_test(test_level_filter),
        cmocka_unit_test(test_one_line),        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_errno_preserved), cmocka_unit_test(test_syslog),
        cmocka_unit_test(test_threads),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
