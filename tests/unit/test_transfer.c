/* test_transfer.c - when a StreamExec request body counts as stalled (the guard against
 * the HTTP/2 upload stalls of Debian 12's libcurl): each way of stalling, and the calls
 * that must be left alone however long they last. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "transfer.h"

#define LIMIT 20000

static int easy_stand_in;

/* A bidi call started at t=1000 whose body is still being sent. */
static struct call started_bidi(void)
{
    struct call c;
    memset(&c, 0, sizeof(c));
    c.kind = CALL_BIDI;
    c.easy = (CURL *)&easy_stand_in;
    c.body_moved_ms = 1000;
    return c;
}

static void test_body_not_taken(void **state)
{
    struct call c = started_bidi();
    assert_null(transfer_body_stall(&c, 1000 + LIMIT, LIMIT));
    assert_string_equal(transfer_body_stall(&c, 1001 + LIMIT, LIMIT), "stopped moving");
    /* An answer does not excuse a body curl stopped taking. */
    c.answer_moved_ms = 1000 + LIMIT;
    assert_string_equal(transfer_body_stall(&c, 1001 + LIMIT, LIMIT), "stopped moving");
    /* Bytes taken later restart the clock. */
    c.body_moved_ms = 5000;
    assert_null(transfer_body_stall(&c, 1001 + LIMIT, LIMIT));
}

static void test_body_sent_never_answered(void **state)
{
    struct call c = started_bidi();
    c.body_done_ms = c.body_moved_ms = 3000;
    assert_null(transfer_body_stall(&c, 3000 + LIMIT, LIMIT));
    assert_string_equal(transfer_body_stall(&c, 3001 + LIMIT, LIMIT), "was sent but not answered");
}

static void test_call_not_ended_after_its_body(void **state)
{
    struct call c = started_bidi();
    c.body_done_ms = c.body_moved_ms = 3000;
    c.answer_moved_ms = 2000; /* `ready`, before the body ended */
    /* An exec: a command may run silently for as long as it likes. */
    assert_null(transfer_body_stall(&c, 3000 + 10 * LIMIT, LIMIT));
    /* An upload: its `cat` ends at EOF, so a silent open call has lost its end. */
    c.ends_with_body = 1;
    assert_null(transfer_body_stall(&c, 3000 + LIMIT, LIMIT));
    assert_string_equal(transfer_body_stall(&c, 3001 + LIMIT, LIMIT),
                        "was sent but the call did not end");
    /* Output after the body restarts the clock; the end-of-stream ends the watch. */
    c.answer_moved_ms = 9000;
    assert_null(transfer_body_stall(&c, 3001 + LIMIT, LIMIT));
    c.ended = 1;
    assert_null(transfer_body_stall(&c, 9000 + 10 * LIMIT, LIMIT));
}

static void test_calls_left_alone(void **state)
{
    struct call c = started_bidi();
    c.paused = 1; /* its owner has nothing to send yet */
    assert_null(transfer_body_stall(&c, 1000 + 10 * LIMIT, LIMIT));
    c = started_bidi();
    c.easy = NULL; /* queued or backing off: no transfer to stall */
    assert_null(transfer_body_stall(&c, 1000 + 10 * LIMIT, LIMIT));
    c = started_bidi();
    c.kind = CALL_SERVER_STREAM; /* StreamLogs: its one message went with the request */
    assert_null(transfer_body_stall(&c, 1000 + 10 * LIMIT, LIMIT));
    c.kind = CALL_UNARY;
    assert_null(transfer_body_stall(&c, 1000 + 10 * LIMIT, LIMIT));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_not_taken),
        cmocka_unit_test(test_body_sent_never_answered),
        cmocka_unit_test(test_call_not_ended_after_its_body),
        cmocka_unit_test(test_calls_left_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
