/* test_ctl.c - the ctl command language and its line splitter: every command with the
 * arguments the service accepts, every refusal with the exact message the `error` file
 * will show, and line assembly across writes (byte by byte, CRLF, overlong lines,
 * failures mid-write, a final line without newline). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static char err[512];

static int parse(const char *line, struct ctl_cmd *cmd)
{
    err[0] = 0;
    return ctl_parse(line, strlen(line), cmd, err, sizeof(err));
}

/* Parse line expecting success; returns the command (caller frees). */
static struct ctl_cmd ok(const char *line, enum ctl_op op)
{
    struct ctl_cmd c;

    memset(&c, 0xa5, sizeof(c));
    assert_int_equal(parse(line, &c), 0);
    assert_int_equal(c.op, op);
    assert_string_equal(err, "");
    return c;
}

static void assert_untouched(const struct ctl_cmd *c)
{
    struct ctl_cmd ref;

    memset(&ref, 0xa5, sizeof(ref));
    assert_memory_equal(c, &ref, sizeof(ref));
}

static void bad(const char *line, const char *msg)
{
    struct ctl_cmd c;

    memset(&c, 0xa5, sizeof(c));
    assert_int_equal(parse(line, &c), -EINVAL);
    assert_string_equal(err, msg);
    assert_untouched(&c);
}

static void test_blank_and_comment(void **state)
{
    const char *lines[] = {"", " ", "\t \t", "\r", "  \r", "#", "# exec ls", "   #x"};
    struct ctl_cmd c;
    size_t i;
    for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        memset(&c, 0xa5, sizeof(c));
        assert_int_equal(ctl_parse(lines[i], strlen(lines[i]), &c, err, sizeof(err)), 1);
        assert_untouched(&c);
    }
}

static void test_exec(void **state)
{
    struct ctl_cmd c;
    c = ok("exec ls -l", CTL_EXEC);
    assert_int_equal(c.argc, 3);
    assert_string_equal(c.argv[0], "/bin/sh");
    assert_string_equal(c.argv[1], "-c");
    assert_string_equal(c.argv[2], "ls -l");
    assert_null(c.argv[3]);
    assert_string_equal(c.arg, "ls -l");
    assert_null(c.key);
    assert_int_equal(c.num, 0);
    ctl_cmd_free(&c);
    assert_null(c.argv);

    /* leading blanks, tabs as separators, internal spacing and trailing blanks kept */
    c = ok("  exec \t echo  'a   b'\t  \r", CTL_EXEC);
    assert_string_equal(c.argv[2], "echo  'a   b'\t  ");
    ctl_cmd_free(&c);

    /* only one trailing \r is stripped */
    c = ok("exec echo x\r\r", CTL_EXEC);
    assert_string_equal(c.argv[2], "echo x\r");
    ctl_cmd_free(&c);

    c = ok("exec echo \"$(id -u)\" | tr a b; exit 3", CTL_EXEC);
    assert_string_equal(c.argv[2], "echo \"$(id -u)\" | tr a b; exit 3");
    ctl_cmd_free(&c);

    /* length-delimited: bytes after len are not part of the line */
    memset(&c, 0, sizeof(c));
    assert_int_equal(ctl_parse("exec true\nexec false", 9, &c, err, sizeof(err)), 0);
    assert_string_equal(c.argv[2], "true");
    ctl_cmd_free(&c);
}

static void test_exec_errors(void **state)
{
    bad("exec", "exec: missing argument (a command line)");
    bad("exec   ", "exec: missing argument (a command line)");
    bad("exec \t\r", "exec: missing argument (a command line)");
    bad("EXEC ls", "unknown command \"EXEC ls\"");
    bad("exce ls", "unknown command \"exce ls\"");
    bad("execls", "unknown command \"execls\"");
    bad("  exec-ls  ", "unknown command \"exec-ls\"");
}

static void test_nul_byte(void **state)
{
    struct ctl_cmd c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(ctl_parse("exec a\0b", 8, &c, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "command contains a NUL byte: \"exec a\\x00b\"");
    assert_null(c.argv);
}

static void test_not_utf8(void **state)
{
    struct ctl_cmd c;
    memset(&c, 0, sizeof(c));
    /* the service takes text only: a byte that is not UTF-8 would be dropped on the
     * way, so the line is refused whole */
    assert_int_equal(ctl_parse("exec echo caf\xe9", 14, &c, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not UTF-8"));
    assert_null(c.argv);
    assert_int_equal(ctl_parse("env K=\xff", 7, &c, err, sizeof(err)), -EINVAL);
    assert_int_equal(ctl_parse("exec echo caf\xc3\xa9", 15, &c, err, sizeof(err)), 0);
    ctl_cmd_free(&c);
}

static void test_quoting(void **state)
{
    char line[400];
    bad("bogus \"q\" back\\slash \x01\x7f caf\xc3\xa9",
        "unknown command \"bogus \\\"q\\\" back\\\\slash \\x01\\x7f caf\xc3\xa9\"");
    bad("bogus\ttab", "unknown command \"bogus\\ttab\"");
    /* long lines are quoted in part */
    memset(line, 'x', sizeof(line) - 1);
    line[sizeof(line) - 1] = 0;
    memcpy(line, "nope ", 5);
    err[0] = 0;
    assert_int_equal(ctl_parse(line, strlen(line), &(struct ctl_cmd){0}, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(strlen(err), strlen("unknown command \"\"...") + 120);
    assert_memory_equal(err, "unknown command \"nope xxx", 25);
    assert_string_equal(err + strlen(err) - 5, "x...\"");
    /* a tiny err buffer is filled, truncated, terminated */
    {
        char small[8];
        assert_int_equal(ctl_parse("nope", 4, &(struct ctl_cmd){0}, small, sizeof(small)), -EINVAL);
        assert_string_equal(small, "unknown");
        assert_int_equal(ctl_parse("nope", 4, &(struct ctl_cmd){0}, NULL, 0), -EINVAL);
    }
}

static void test_execv(void **state)
{
    struct ctl_cmd c;
    c = ok("execv [\"ls\", \"-l\", \"a b\", \"\"]", CTL_EXECV);
    assert_int_equal(c.argc, 4);
    assert_string_equal(c.argv[0], "ls");
    assert_string_equal(c.argv[1], "-l");
    assert_string_equal(c.argv[2], "a b");
    assert_string_equal(c.argv[3], "");
    assert_null(c.argv[4]);
    assert_string_equal(c.arg, "[\"ls\", \"-l\", \"a b\", \"\"]");
    ctl_cmd_free(&c);

    c = ok("execv   [\"/bin/echo\",\"caf\\u00e9\\n\"]  \r", CTL_EXECV);
    assert_int_equal(c.argc, 2);
    assert_string_equal(c.argv[1], "caf\xc3\xa9\n");
    ctl_cmd_free(&c);

    c = ok("execv [\"true\"]", CTL_EXECV);
    assert_int_equal(c.argc, 1);
    ctl_cmd_free(&c);
}

static void test_execv_errors(void **state)
{
    bad("execv", "execv: missing argument (a JSON array of strings)");
    bad("execv []", "execv: \"[]\" is not a JSON array of at least one string");
    bad("execv {\"a\":1}", "execv: \"{\\\"a\\\":1}\" is not a JSON array of at least one string");
    bad("execv [\"ls\", 1]",
        "execv: \"[\\\"ls\\\", 1]\" is not a JSON array of strings (element 1)");
    bad("execv [[\"ls\"]]", "execv: \"[[\\\"ls\\\"]]\" is not a JSON array of strings (element 0)");
    bad("execv [\"\", \"x\"]", "execv: \"[\\\"\\\", \\\"x\\\"]\" has an empty program name");
    bad("execv [\"a\\u0000b\"]",
        "execv: \"[\\\"a\\\\u0000b\\\"]\" has a NUL character in a string");
    /* anything after the array, or a broken array, is refused with jansson's reason */
    assert_int_equal(parse("execv [\"ls\"] x", &(struct ctl_cmd){0}), -EINVAL);
    assert_non_null(strstr(err, "execv: \"[\\\"ls\\\"] x\" is not a JSON array of strings ("));
    assert_int_equal(parse("execv [\"ls\"][\"x\"]", &(struct ctl_cmd){0}), -EINVAL);
    assert_non_null(strstr(err, "is not a JSON array of strings ("));
    assert_int_equal(parse("execv [\"ls\"", &(struct ctl_cmd){0}), -EINVAL);
    assert_non_null(strstr(err, "execv: \"[\\\"ls\\\"\" is not a JSON array of strings ("));
    assert_int_equal(parse("execv ls -l", &(struct ctl_cmd){0}), -EINVAL);
    assert_non_null(strstr(err, "execv: \"ls -l\" is not a JSON array of strings ("));
    assert_int_equal(parse("execv \"ls\"", &(struct ctl_cmd){0}), -EINVAL);
}

static void test_no_arg_commands(void **state)
{
    struct ctl_cmd c;
    c = ok("start", CTL_START);
    assert_null(c.argv);
    assert_null(c.arg);
    ctl_cmd_free(&c);
    c = ok("  wait \t\r", CTL_WAIT);
    ctl_cmd_free(&c);
    c = ok("snapshot", CTL_SNAPSHOT);
    ctl_cmd_free(&c);
    bad("start now", "start: unexpected argument \"now\"");
    bad("wait 5 ", "wait: unexpected argument \"5\"");
    bad("snapshot  a b", "snapshot: unexpected argument \"a b\"");
    bad("Start", "unknown command \"Start\"");
}

static void test_stop(void **state)
{
    struct ctl_cmd c;
    c = ok("stop", CTL_STOP);
    assert_int_equal(c.num, -1);
    ctl_cmd_free(&c);
    c = ok("stop  \r", CTL_STOP);
    assert_int_equal(c.num, -1);
    ctl_cmd_free(&c);
    c = ok("stop 0", CTL_STOP);
    assert_int_equal(c.num, 0);
    ctl_cmd_free(&c);
    c = ok("stop\t30 ", CTL_STOP);
    assert_int_equal(c.num, 30);
    ctl_cmd_free(&c);
    c = ok("stop 2147483647", CTL_STOP);
    assert_int_equal(c.num, 2147483647);
    ctl_cmd_free(&c);
    bad("stop 2147483648", "stop: \"2147483648\" is not a number of seconds between 0 and "
                           "2147483647");
    bad("stop -1", "stop: \"-1\" is not a number of seconds between 0 and 2147483647");
    bad("stop 1 2", "stop: \"1 2\" is not a number of seconds between 0 and 2147483647");
    bad("stop 1s", "stop: \"1s\" is not a number of seconds between 0 and 2147483647");
    bad("stop 99999999999999999999999",
        "stop: \"99999999999999999999999\" is not a number of seconds between 0 and "
        "2147483647");
}

static void test_image(void **state)
{
    struct ctl_cmd c;
    c = ok("image ghcr.io/org/img:1.2@sha256:abc", CTL_IMAGE);
    assert_string_equal(c.arg, "ghcr.io/org/img:1.2@sha256:abc");
    ctl_cmd_free(&c);
    c = ok("image   python:3.12-slim  \r", CTL_IMAGE);
    assert_string_equal(c.arg, "python:3.12-slim");
    ctl_cmd_free(&c);
    bad("image", "image: missing argument (an image reference)");
    bad("image a b", "image: \"a b\" is not an image reference (blank or control character)");
    bad("image a\tb", "image: \"a\\tb\" is not an image reference (blank or control character)");
    bad("image a\x01", "image: \"a\\x01\" is not an image reference (blank or control "
                       "character)");
}

static void test_command(void **state)
{
    struct ctl_cmd c;
    c = ok("command sleep  infinity ", CTL_COMMAND);
    assert_int_equal(c.argc, 3);
    assert_string_equal(c.argv[0], "/bin/sh");
    assert_string_equal(c.argv[1], "-c");
    assert_string_equal(c.argv[2], "sleep  infinity ");
    assert_string_equal(c.arg, "sleep  infinity ");
    ctl_cmd_free(&c);
    bad("command", "command: missing argument (a command line)");
    bad("command  ", "command: missing argument (a command line)");
}

static void test_env(void **state)
{
    struct ctl_cmd c;
    c = ok("env FOO=bar", CTL_ENV);
    assert_string_equal(c.key, "FOO");
    assert_string_equal(c.arg, "bar");
    assert_null(c.argv);
    ctl_cmd_free(&c);
    c = ok("env  A=b=c ", CTL_ENV);
    assert_string_equal(c.key, "A");
    assert_string_equal(c.arg, "b=c ");
    ctl_cmd_free(&c);
    c = ok("env EMPTY=", CTL_ENV);
    assert_string_equal(c.key, "EMPTY");
    assert_string_equal(c.arg, "");
    ctl_cmd_free(&c);
    c = ok("env PS1=$ \\w \r", CTL_ENV);
    assert_string_equal(c.arg, "$ \\w ");
    ctl_cmd_free(&c);
    bad("env", "env: missing argument (KEY=VALUE)");
    bad("env FOO", "env: \"FOO\" is not KEY=VALUE");
    bad("env =x", "env: \"=x\" has an empty variable name");
#define ENVNAME                                                                                    \
    " has a bad variable name (letters, digits, '_', '-', '.', not starting with a digit)"
    bad("env 1A=x", "env: \"1A=x\"" ENVNAME);
    bad("env A B=1", "env: \"A B=1\"" ENVNAME);
    bad("env A/B=1", "env: \"A/B=1\"" ENVNAME);
}

static void test_tag(void **state)
{
    struct ctl_cmd c;
    char line[80];
    c = ok("tag my-run.v2_x9", CTL_TAG);
    assert_string_equal(c.arg, "my-run.v2_x9");
    ctl_cmd_free(&c);
    c = ok("tag a", CTL_TAG);
    ctl_cmd_free(&c);
    c = ok("tag 7", CTL_TAG);
    ctl_cmd_free(&c);
    c = ok("tag -lead.ok", CTL_TAG);
    ctl_cmd_free(&c);
    snprintf(line, sizeof(line), "tag %.59s",
             "aaaaaaaaaabbbbbbbbbbccccccccccddddddddddeeeeeeeeeefffffffff");
    c = ok(line, CTL_TAG);
    assert_int_equal(strlen(c.arg), 59);
    ctl_cmd_free(&c);
#define TAGMSG                                                                                     \
    " is not a tag (letters, digits, '.', '_', '-', ending with a letter or digit, at most "       \
    "59 characters)"
    snprintf(line, sizeof(line), "tag %.60s",
             "aaaaaaaaaabbbbbbbbbbccccccccccddddddddddeeeeeeeeeeffffffffff");
    bad(line, "tag: \"aaaaaaaaaabbbbbbbbbbccccccccccddddddddddeeeeeeeeeeffffffffff\"" TAGMSG);
    bad("tag x-", "tag: \"x-\"" TAGMSG);
    bad("tag x.", "tag: \"x.\"" TAGMSG);
    bad("tag x_", "tag: \"x_\"" TAGMSG);
    bad("tag a/b", "tag: \"a/b\"" TAGMSG);
    bad("tag a b", "tag: \"a b\"" TAGMSG);
    bad("tag caf\xc3\xa9", "tag: \"caf\xc3\xa9\"" TAGMSG);
    bad("tag a=b", "tag: \"a=b\"" TAGMSG);
    bad("tag", "tag: missing argument (a tag)");
}

static void test_cpu(void **state)
{
    const char *good[] = {"2", "0.5", "500m", "2.0m", ".5", "1.", "0.001", "100", "1.2500"};
    char line[64];
    struct ctl_cmd c;
    size_t i;
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(line, sizeof(line), "cpu %s", good[i]);
        c = ok(line, CTL_CPU);
        assert_string_equal(c.arg, good[i]);
        ctl_cmd_free(&c);
    }
#define CPUMSG " is not a cpu quantity (like 2, 0.5 or 500m)"
    bad("cpu m", "cpu: \"m\"" CPUMSG);
    bad("cpu .", "cpu: \".\"" CPUMSG);
    bad("cpu -1", "cpu: \"-1\"" CPUMSG);
    bad("cpu +1", "cpu: \"+1\"" CPUMSG);
    bad("cpu 1k", "cpu: \"1k\"" CPUMSG);
    bad("cpu 1Gi", "cpu: \"1Gi\"" CPUMSG);
    bad("cpu 500M", "cpu: \"500M\"" CPUMSG);
    bad("cpu 1mm", "cpu: \"1mm\"" CPUMSG);
    bad("cpu 1.2.3", "cpu: \"1.2.3\"" CPUMSG);
    bad("cpu 1e3", "cpu: \"1e3\"" CPUMSG);
    bad("cpu 2 cores", "cpu: \"2 cores\"" CPUMSG);
    bad("cpu", "cpu: missing argument (a cpu quantity)");
#define CPUSTEP " is not a cpu quantity of at least 1m in whole millicores"
    bad("cpu 0", "cpu: \"0\"" CPUSTEP);
    bad("cpu 0m", "cpu: \"0m\"" CPUSTEP);
    bad("cpu .000", "cpu: \".000\"" CPUSTEP);
    bad("cpu 1.5m", "cpu: \"1.5m\"" CPUSTEP);
    bad("cpu 0.0005", "cpu: \"0.0005\"" CPUSTEP);
}

static void test_memory(void **state)
{
    const char *good[] = {"512Mi", "2Gi", "1G",  "1000000", "1k",  "1.5Gi", "3T",  "1P",
                          "1E",    "1Ki", "1Ti", "1Pi",     "1Ei", "0.001", ".5Gi"};
    char line[64];
    struct ctl_cmd c;
    size_t i;
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(line, sizeof(line), "memory %s", good[i]);
        c = ok(line, CTL_MEMORY);
        assert_string_equal(c.arg, good[i]);
        ctl_cmd_free(&c);
    }
#define MEMMSG " is not a memory quantity (like 512Mi, 2Gi, 1G or 1000000)"
    bad("memory 1m", "memory: \"1m\"" MEMMSG);
    bad("memory 1K", "memory: \"1K\"" MEMMSG);
    bad("memory 1ki", "memory: \"1ki\"" MEMMSG);
    bad("memory 1MB", "memory: \"1MB\"" MEMMSG);
    bad("memory 1Gib", "memory: \"1Gib\"" MEMMSG);
    bad("memory Gi", "memory: \"Gi\"" MEMMSG);
    bad("memory -1Gi", "memory: \"-1Gi\"" MEMMSG);
    bad("memory 1 Gi", "memory: \"1 Gi\"" MEMMSG);
    bad("memory 1e9", "memory: \"1e9\"" MEMMSG);
    bad("memory", "memory: missing argument (a memory quantity)");
    bad("memory 0", "memory: \"0\" is not a memory quantity of more than 0");
    bad("memory 0.0Gi", "memory: \"0.0Gi\" is not a memory quantity of more than 0");
}

static void test_gpu(void **state)
{
    struct ctl_cmd c;
    c = ok("gpu 0", CTL_GPU);
    assert_int_equal(c.num, 0);
    ctl_cmd_free(&c);
    c = ok("gpu 8", CTL_GPU);
    assert_int_equal(c.num, 8);
    ctl_cmd_free(&c);
    c = ok("gpu 2147483647", CTL_GPU);
    assert_int_equal(c.num, 2147483647);
    ctl_cmd_free(&c);
    bad("gpu x", "gpu: \"x\" is not a count");
    bad("gpu -1", "gpu: \"-1\" is not a count");
    bad("gpu 1.0", "gpu: \"1.0\" is not a count");
    bad("gpu 2147483648", "gpu: \"2147483648\" is not a count");
    bad("gpu", "gpu: missing argument (a count)");
}

static void test_lifetime(void **state)
{
    struct ctl_cmd c;
    c = ok("lifetime 1", CTL_LIFETIME);
    assert_int_equal(c.num, 1);
    ctl_cmd_free(&c);
    c = ok("lifetime 3600", CTL_LIFETIME);
    assert_int_equal(c.num, 3600);
    ctl_cmd_free(&c);
    c = ok("lifetime 2147483647", CTL_LIFETIME);
    assert_int_equal(c.num, 2147483647);
    ctl_cmd_free(&c);
#define LIFEMSG " is not a number of seconds between 1 and 2147483647"
    bad("lifetime 0", "lifetime: \"0\"" LIFEMSG);
    bad("lifetime 000", "lifetime: \"000\"" LIFEMSG);
    bad("lifetime -5", "lifetime: \"-5\"" LIFEMSG);
    bad("lifetime 2147483648", "lifetime: \"2147483648\"" LIFEMSG);
    bad("lifetime 1h", "lifetime: \"1h\"" LIFEMSG);
    bad("lifetime", "lifetime: missing argument (a number of seconds)");
}

static void test_workdir(void **state)
{
    struct ctl_cmd c;
    char *line;
    c = ok("workdir /work", CTL_WORKDIR);
    assert_string_equal(c.arg, "/work");
    ctl_cmd_free(&c);
    c = ok("workdir /my dir/x \r", CTL_WORKDIR);
    assert_string_equal(c.arg, "/my dir/x");
    ctl_cmd_free(&c);
    c = ok("workdir /", CTL_WORKDIR);
    ctl_cmd_free(&c);
    bad("workdir work", "workdir: \"work\" is not an absolute path");
    bad("workdir ./x", "workdir: \"./x\" is not an absolute path");
    bad("workdir", "workdir: missing argument (an absolute path)");
    line = malloc(8 + 4096 + 1);
    assert_non_null(line);
    memcpy(line, "workdir ", 8);
    memset(line + 8, 'a', 4096);
    line[8] = '/';
    line[8 + 4096] = 0;
    assert_int_equal(parse(line, &(struct ctl_cmd){0}), -EINVAL);
    assert_non_null(strstr(err, "is longer than 4095 bytes"));
    free(line);
}

static void test_spec_change(void **state)
{
    assert_false(ctl_is_spec_change(CTL_EXEC));
    assert_false(ctl_is_spec_change(CTL_EXECV));
    assert_false(ctl_is_spec_change(CTL_START));
    assert_false(ctl_is_spec_change(CTL_WAIT));
    assert_false(ctl_is_spec_change(CTL_STOP));
    assert_false(ctl_is_spec_change(CTL_SNAPSHOT));
    assert_true(ctl_is_spec_change(CTL_IMAGE));
    assert_true(ctl_is_spec_change(CTL_COMMAND));
    assert_true(ctl_is_spec_change(CTL_ENV));
    assert_true(ctl_is_spec_change(CTL_TAG));
    assert_true(ctl_is_spec_change(CTL_CPU));
    assert_true(ctl_is_spec_change(CTL_MEMORY));
    assert_true(ctl_is_spec_change(CTL_GPU));
    assert_true(ctl_is_spec_change(CTL_LIFETIME));
    assert_true(ctl_is_spec_change(CTL_WORKDIR));
}

/* ---- the line splitter ---- */

/* Collects the lines it sees, '|'-separated; fails (returns fail_rc) on a line equal to
 * fail_on. */
struct sink {
    char seen[4096];
    size_t calls;
    const char *fail_on;
    int fail_rc;
    size_t maxlen; /* longest line seen */
};

static int collect(const char *line, size_t len, void *ud)
{
    struct sink *s = ud;
    size_t o = strlen(s->seen), n = len < 64 ? len : 64;

    s->calls++;
    if (len > s->maxlen)
        s->maxlen = len;
    assert_true(o + n + 2 < sizeof(s->seen));
    memcpy(s->seen + o, line, n);
    s->seen[o + n] = '|';
    s->seen[o + n + 1] = 0;
    if (s->fail_on && len == strlen(s->fail_on) && memcmp(line, s->fail_on, len) == 0)
        return s->fail_rc;
    return 0;
}

static int feed(struct ctl_lines *cl, struct sink *s, const char *data)
{
    return ctl_lines_feed(cl, data, strlen(data), collect, s);
}

static void test_lines_basic(void **state)
{
    struct ctl_lines cl = {0};
    struct sink s = {0};
    assert_int_equal(feed(&cl, &s, "exec a\nexec b\n"), 0);
    assert_string_equal(s.seen, "exec a|exec b|");
    assert_int_equal(feed(&cl, &s, "exec c"), 0);
    assert_string_equal(s.seen, "exec a|exec b|");
    assert_int_equal(feed(&cl, &s, " d\nsta"), 0);
    assert_string_equal(s.seen, "exec a|exec b|exec c d|");
    assert_int_equal(feed(&cl, &s, "rt"), 0);
    assert_int_equal(feed(&cl, &s, ""), 0);
    assert_int_equal(feed(&cl, &s, "\n"), 0);
    assert_string_equal(s.seen, "exec a|exec b|exec c d|start|");
    /* empty lines are passed on (ctl_parse calls them blank) */
    assert_int_equal(feed(&cl, &s, "\n\n"), 0);
    assert_string_equal(s.seen, "exec a|exec b|exec c d|start|||");
    /* nothing pending: finish does nothing */
    assert_int_equal(ctl_lines_finish(&cl, collect, &s), 0);
    assert_int_equal(s.calls, 6);
    ctl_lines_free(&cl);
    assert_null(cl.buf);
}

static void test_lines_bytewise(void **state)
{
    const char *text = "exec echo 'a  b'\r\nwait\r\n\nstop 5";
    struct ctl_lines cl = {0};
    struct sink s = {0};
    size_t i;
    for (i = 0; text[i]; i++)
        assert_int_equal(ctl_lines_feed(&cl, text + i, 1, collect, &s), 0);
    assert_string_equal(s.seen, "exec echo 'a  b'\r|wait\r||");
    assert_int_equal(ctl_lines_finish(&cl, collect, &s), 0);
    assert_string_equal(s.seen, "exec echo 'a  b'\r|wait\r||stop 5|");
    assert_int_equal(cl.len, 0);
    /* reusable after finish */
    assert_int_equal(feed(&cl, &s, "start\n"), 0);
    assert_string_equal(s.seen, "exec echo 'a  b'\r|wait\r||stop 5|start|");
    ctl_lines_free(&cl);
}

/* Lines from the splitter parse as their commands, CRLF included. */
static int parse_line(const char *line, size_t len, void *ud)
{
    struct sink *s = ud;
    struct ctl_cmd c;
    char e[256];
    int rc = ctl_parse(line, len, &c, e, sizeof(e));

    s->calls++;
    if (rc == 0) {
        char one[64];
        snprintf(one, sizeof(one), "%d:%s|", (int)c.op, c.arg ? c.arg : "");
        strcat(s->seen, one);
        ctl_cmd_free(&c);
    }
    return rc < 0 ? rc : 0;
}

static void test_lines_crlf_parse(void **state)
{
    struct ctl_lines cl = {0};
    struct sink s = {0};
    const char *text = "image alpine\r\nexec ls  -a\r\n# note\r\nbogus\r\nstart\r\n";
    assert_int_equal(ctl_lines_feed(&cl, text, strlen(text), parse_line, &s), -EINVAL);
    /* the lines before the bad one ran; the rest of that write is dropped */
    assert_int_equal(s.calls, 4);
    assert_string_equal(s.seen, "6:alpine|0:ls  -a|");
    ctl_lines_free(&cl);
}

static void test_lines_error_stops(void **state)
{
    struct ctl_lines cl = {0};
    struct sink s = {.fail_on = "bad", .fail_rc = -EINVAL};
    assert_int_equal(feed(&cl, &s, "a\nbad\nb\n"), -EINVAL);
    assert_string_equal(s.seen, "a|bad|");
    assert_int_equal(feed(&cl, &s, "c\n"), 0);
    assert_string_equal(s.seen, "a|bad|c|");
    /* the error's write ended mid-line: that line's continuation is dropped */
    assert_int_equal(feed(&cl, &s, "bad\nexe"), -EINVAL);
    assert_int_equal(feed(&cl, &s, "c ls\nd\n"), 0);
    assert_string_equal(s.seen, "a|bad|c|bad|d|");
    /* and at close */
    assert_int_equal(feed(&cl, &s, "bad\npartial"), -EINVAL);
    assert_int_equal(ctl_lines_finish(&cl, collect, &s), 0);
    assert_string_equal(s.seen, "a|bad|c|bad|d|bad|");
    /* a failing buffered line */
    assert_int_equal(feed(&cl, &s, "b"), 0);
    assert_int_equal(feed(&cl, &s, "ad\n"), -EINVAL);
    assert_int_equal(feed(&cl, &s, "e\n"), 0);
    assert_string_equal(s.seen, "a|bad|c|bad|d|bad|bad|e|");
    /* a positive return also stops and is returned */
    s.fail_rc = 7;
    assert_int_equal(feed(&cl, &s, "bad\nf\n"), 7);
    assert_string_equal(s.seen, "a|bad|c|bad|d|bad|bad|e|bad|");
    /* finish returns the callback's verdict */
    assert_int_equal(feed(&cl, &s, "bad"), 0);
    assert_int_equal(ctl_lines_finish(&cl, collect, &s), 7);
    assert_int_equal(cl.len, 0);
    ctl_lines_free(&cl);
}

static void test_lines_overlong(void **state)
{
    struct ctl_lines cl = {0};
    struct sink s = {0};
    size_t big = CTL_MAX_LINE + 10;
    char *data = malloc(big + 16);
    assert_non_null(data);
    /* exactly CTL_MAX_LINE is fine, in one write and across writes */
    memset(data, 'x', CTL_MAX_LINE);
    data[CTL_MAX_LINE] = '\n';
    assert_int_equal(ctl_lines_feed(&cl, data, CTL_MAX_LINE + 1, collect, &s), 0);
    assert_int_equal(s.maxlen, CTL_MAX_LINE);
    assert_int_equal(ctl_lines_feed(&cl, data, 1000, collect, &s), 0);
    assert_int_equal(ctl_lines_feed(&cl, data, CTL_MAX_LINE - 1000, collect, &s), 0);
    assert_int_equal(ctl_lines_feed(&cl, "\n", 1, collect, &s), 0);
    assert_int_equal(s.calls, 2);
    assert_true(cl.cap <= CTL_MAX_LINE + 1);

    /* one byte more, in one write with the newline: refused, nothing runs */
    memset(data, 'y', CTL_MAX_LINE + 1);
    memcpy(data + CTL_MAX_LINE + 1, "\nok\n", 4);
    s = (struct sink){0};
    assert_int_equal(ctl_lines_feed(&cl, data, CTL_MAX_LINE + 5, collect, &s), -E2BIG);
    assert_int_equal(s.calls, 0);
    assert_int_equal(feed(&cl, &s, "next\n"), 0);
    assert_string_equal(s.seen, "next|");

    /* growing across writes: the write that crosses the limit fails, and the rest of
     * the line, through its newline, is dropped however it arrives */
    s = (struct sink){0};
    assert_int_equal(feed(&cl, &s, "first\nexec "), 0);
    assert_int_equal(ctl_lines_feed(&cl, data, CTL_MAX_LINE - 10, collect, &s), 0);
    assert_int_equal(ctl_lines_feed(&cl, data, 100, collect, &s), -E2BIG);
    assert_int_equal(cl.len, 0);
    /* each later write carrying the refused line fails as well (a writer retrying
     * after a short write must hear it); the lines after its newline still run */
    assert_int_equal(ctl_lines_feed(&cl, data, 100, collect, &s), -E2BIG);
    assert_int_equal(feed(&cl, &s, "tail of long line"), -E2BIG);
    assert_int_equal(feed(&cl, &s, "\nafter\n"), 0);
    assert_string_equal(s.seen, "first|after|");
    /* a dropped unterminated line does not run at close */
    assert_int_equal(ctl_lines_feed(&cl, data, CTL_MAX_LINE + 1, collect, &s), -E2BIG);
    assert_int_equal(ctl_lines_finish(&cl, collect, &s), 0);
    assert_string_equal(s.seen, "first|after|");
    /* and the splitter works again after close */
    assert_int_equal(feed(&cl, &s, "again\n"), 0);
    assert_string_equal(s.seen, "first|after|again|");
    ctl_lines_free(&cl);
    free(data);
}

static void test_lines_final_unterminated(void **state)
{
    struct ctl_lines cl = {0};
    struct sink s = {0};
    assert_int_equal(feed(&cl, &s, "start\nexec echo done"), 0);
    assert_string_equal(s.seen, "start|");
    assert_int_equal(ctl_lines_finish(&cl, collect, &s), 0);
    assert_string_equal(s.seen, "start|exec echo done|");
    assert_int_equal(ctl_lines_finish(&cl, collect, &s), 0);
    assert_int_equal(s.calls, 2);
    ctl_lines_free(&cl);
    ctl_lines_free(&cl); /* idempotent */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blank_and_comment),
        cmocka_unit_test(test_exec),
        cmocka_unit_test(test_exec_errors),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_not_utf8),
        cmocka_unit_test(test_quoting),
        cmocka_unit_test(test_execv),
        cmocka_unit_test(test_execv_errors),
        cmocka_unit_test(test_no_arg_commands),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_image),
        cmocka_unit_test(test_command),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_tag),
        cmocka_unit_test(test_cpu),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_gpu),
        cmocka_unit_test(test_lifetime),
        cmocka_unit_test(test_workdir),
        cmocka_unit_test(test_spec_change),
        cmocka_unit_test(test_lines_basic),
        cmocka_unit_test(test_lines_bytewise),
        cmocka_unit_test(test_lines_crlf_parse),
        cmocka_unit_test(test_lines_error_stops),
        cmocka_unit_test(test_lines_overlong),
        cmocka_unit_test(test_lines_final_unterminated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
