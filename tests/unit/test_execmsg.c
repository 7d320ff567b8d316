/* test_execmsg.c - StreamExec request envelopes and response messages. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "execmsg.h"

static struct execmsg parse(const char *text, int *rc)
{
    struct execmsg m;
    json_t *msg = json_loads(text, 0, NULL);
    assert_non_null(msg);
    *rc = execmsg_parse(msg, &m);
    json_decref(msg);
    return m;
}

static void test_output_streams(void **state)
{
    int rc;
    struct execmsg m = parse("{\"output\":{\"stream\":\"STREAM_STDOUT\",\"data\":\"aGk=\"}}", &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(m.kind, EXECMSG_OUTPUT);
    assert_false(m.is_stderr);
    assert_int_equal(m.len, 2);
    assert_memory_equal(m.data, "hi", 2);
    execmsg_clear(&m);
    m = parse("{\"output\":{\"stream\":2,\"data\":\"AP8\"}}", &rc); /* number, unpadded */
    assert_int_equal(rc, 0);
    assert_true(m.is_stderr);
    assert_int_equal(m.len, 2);
    assert_int_equal((unsigned char)m.data[1], 0xff);
    execmsg_clear(&m);
    m = parse("{\"output\":{\"stream\":\"STREAM_STDOUT\"}}", &rc); /* data at its default */
    assert_int_equal(rc, 0);
    assert_int_equal(m.len, 0);
    execmsg_clear(&m);
    /* a stream this client does not know yet: kept, as stdout */
    m = parse("{\"output\":{\"stream\":\"STREAM_NEWER\",\"data\":\"aGk=\"}}", &rc);
    assert_int_equal(rc, 0);
    assert_false(m.is_stderr);
    assert_int_equal(m.len, 2);
    execmsg_clear(&m);
    m = parse("{\"output\":{\"stream\":7,\"data\":\"aGk=\"}}", &rc);
    assert_int_equal(rc, 0);
    assert_false(m.is_stderr);
    execmsg_clear(&m);
}

static void test_exit_error_ready_other(void **state)
{
    int rc;
    struct execmsg m =
        parse("{\"exit\":{\"exitCode\":3,\"completedTime\":\"2026-11-22T02:48:08Z\"}}", &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(m.kind, EXECMSG_EXIT);
    assert_int_equal(m.exit_code, 3);
    m = parse("{\"exit\":{}}", &rc); /* exit code 0 is omitted on the wire */
    assert_int_equal(m.kind, EXECMSG_EXIT);
    assert_int_equal(m.exit_code, 0);
    m = parse("{\"ready\":{}}", &rc);
    assert_int_equal(m.kind, EXECMSG_READY);
    m = parse("{\"somethingNew\":{}}", &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(m.kind, EXECMSG_OTHER);
    json_t *msg =
        json_loads("{\"error\":{\"message\":\"no such sandbox\",\"code\":\"not_found\"}}", 0, NULL);
    assert_int_equal(execmsg_parse(msg, &m), 0);
    assert_int_equal(m.kind, EXECMSG_ERROR);
    assert_string_equal(m.error, "no such sandbox");
    json_decref(msg);
}

static void test_malformed(void **state)
{
    int rc;
    struct execmsg m = parse("{\"output\":{\"stream\":\"STREAM_STDOUT\",\"data\":\"@@@\"}}", &rc);
    assert_int_equal(rc, -EINVAL);
    execmsg_clear(&m);
    m = parse("{\"output\":{\"stream\":{},\"data\":\"aGk=\"}}", &rc);
    assert_int_equal(rc, -EINVAL);
    execmsg_clear(&m);
    m = parse("{\"exit\":{\"exitCode\":\"three\"}}", &rc);
    assert_int_equal(rc, -EINVAL);
}

/* Split a body into its envelopes' JSON objects. */
static size_t envelopes(const char *data, size_t len, json_t **out, size_t max)
{
    size_t n = 0, pos = 0;
    while (pos + 5 <= len && n < max) {
        assert_int_equal((unsigned char)data[pos], 0);
        uint32_t l = (uint32_t)(unsigned char)data[pos + 1] << 24 |
                     (uint32_t)(unsigned char)data[pos + 2] << 16 |
                     (uint32_t)(unsigned char)data[pos + 3] << 8 | (unsigned char)data[pos + 4];
        assert_true(pos + 5 + l <= len);
        out[n] = json_loadb(data + pos + 5, l, 0, NULL);
        assert_non_null(out[n]);
        n++;
        pos += 5 + l;
    }
    assert_int_equal(pos, len);
    return n;
}

static void test_body_init_then_close(void **state)
{
    const char *argv[] = {"sh", "-c", "cat > \"$1\"", "sh", "/a b/$(x)", NULL};
    struct execbody b;
    assert_int_equal(execbody_init(&b, "sb-1", argv), 0);
    /* Read it in small pieces, as curl may ask. */
    char *all = malloc(b.len);
    size_t got = 0;
    long n;
    while ((n = execbody_read(&b, all + got, 7)) > 0)
        got += (size_t)n;
    assert_int_equal(got, b.len);
    json_t *msgs[4];
    assert_int_equal(envelopes(all, got, msgs, 4), 2);
    json_t *init = json_object_get(msgs[0], "init");
    assert_string_equal(json_string_value(json_object_get(init, "sandboxId")), "sb-1");
    json_t *cmd = json_object_get(init, "command");
    assert_int_equal(json_array_size(cmd), 5);
    assert_string_equal(json_string_value(json_array_get(cmd, 4)), "/a b/$(x)");
    assert_int_equal(json_object_size(msgs[0]), 1); /* nothing the schema lacks */
    assert_true(json_is_object(json_object_get(msgs[1], "close")));
    json_decref(msgs[0]);
    json_decref(msgs[1]);
    free(all);
    execbody_free(&b);
}

static void test_stdin_envelope(void **state)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(execmsg_stdin("\0\1hi", 4, &out, &len), 0);
    json_t *msgs[1];
    assert_int_equal(envelopes(out, len, msgs, 1), 1);
    assert_string_equal(json_string_value(json_object_get(msgs[0], "stdin")), "AAFoaQ==");
    json_decref(msgs[0]);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output_streams), cmocka_unit_test(test_exit_error_ready_other),
        cmocka_unit_test(test_malformed),      cmocka_unit_test(test_body_init_then_close),
        cmocka_unit_test(test_stdin_envelope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
