/* test_interrupt.c - which signals stop an interrupted request: the /proc status
 * parser on a real thread's text and on broken ones, and the decision for the signals
 * shells and users send (SIGCHLD of a background job goes on; Ctrl-C, kill, SIGKILL
 * and uncaught fatal signals stop), plus a live read of this thread's own masks. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cmocka.h>

#include "interrupt.h"

#define BIT(sig) ((uint64_t)1 << ((sig)-1))

static const char status_text[] = "Name:\tbash\n"
                                  "State:\tS (sleeping)\n"
                                  "SigQ:\t1/63448\n"
                                  "SigPnd:\t0000000000000000\n"
                                  "ShdPnd:\t0000000000010000\n"
                                  "SigBlk:\t0000000000000000\n"
                                  "SigIgn:\t0000000000380004\n"
                                  "SigCgt:\t000000004b813efb\n"
                                  "CapInh:\t0000000000000000\n";

static void parses_proc_status(void **state)
{
    struct interrupt_sigs s;
    assert_int_equal(interrupt_parse_status(status_text, &s), 0);
    assert_true(s.pending == BIT(SIGCHLD));
    assert_true(s.blocked == 0);
    assert_true(s.ignored == 0x380004);
    assert_true(s.caught == 0x4b813efb);
    assert_true(s.caught & BIT(SIGCHLD));
}

static void refuses_broken_status(void **state)
{
    struct interrupt_sigs s;
    assert_int_equal(interrupt_parse_status("", &s), -EINVAL);
    assert_int_equal(interrupt_parse_status("SigPnd:\t0\nShdPnd:\t0\n", &s), -EINVAL);
    assert_int_equal(interrupt_parse_status("SigPnd:\tzz\nShdPnd:\t0\nSigBlk:\t0\nSigIgn:\t0\n"
                                            "SigCgt:\t0\n",
                                            &s),
                     -EINVAL);
    /* a key that only starts like one is not it */
    assert_int_equal(interrupt_parse_status("SigPndX:\t0\nShdPnd:\t0\nSigBlk:\t0\nSigIgn:\t0\n"
                                            "SigCgt:\t0\n",
                                            &s),
                     -EINVAL);
}

/* pending sig; caught says whether a handler is installed for it */
static int stops(int sig, int caught, int *signo)
{
    struct interrupt_sigs s = {BIT(sig), 0, 0, caught ? BIT(sig) : 0};
    return interrupt_stops(&s, signo);
}

static void bookkeeping_signals_go_on(void **state)
{
    const int caught[] = {SIGCHLD, SIGWINCH, SIGURG,    SIGCONT, SIGPROF, SIGALRM,
                          SIGUSR1, SIGPIPE,  SIGVTALRM, SIGIO,   SIGRTMIN};
    int signo;
    for (size_t i = 0; i < sizeof(caught) / sizeof(caught[0]); i++) {
        assert_int_equal(stops(caught[i], 1, &signo), 0);
        assert_int_equal(signo, caught[i]);
    }
    /* default action ignore, continue or stop: nothing ends */
    static const int harmless[] = {SIGCHLD, SIGWINCH, SIGURG, SIGCONT, SIGTSTP, SIGTTIN, SIGSTOP};
    for (size_t i = 0; i < sizeof(harmless) / sizeof(harmless[0]); i++)
        assert_int_equal(stops(harmless[i], 0, &signo), 0);
}

static void stop_signals_stop(void **state)
{
    int signo;
    /* asked to stop: even when a handler takes them (bash traps INT to clean up) */
    static const int asked[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    for (size_t i = 0; i < sizeof(asked) / sizeof(asked[0]); i++) {
        assert_int_equal(stops(asked[i], 1, &signo), 1);
        assert_int_equal(signo, asked[i]);
        assert_int_equal(stops(asked[i], 0, &signo), 1);
    }
    assert_int_equal(stops(SIGKILL, 0, &signo), 1);
    /* default action ends the process */
    const int fatal[] = {SIGALRM, SIGUSR1, SIGPIPE, SIGPROF, SIGSEGV, SIGRTMIN, 64};
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++) {
        assert_int_equal(stops(fatal[i], 0, &signo), 1);
        assert_int_equal(signo, fatal[i]);
    }
}

static void mixed_and_blocked(void **state)
{
    int signo;
    /* SIGCHLD caught and SIGINT pending: SIGINT decides */
    struct interrupt_sigs s = {BIT(SIGCHLD) | BIT(SIGINT), 0, 0, BIT(SIGCHLD) | BIT(SIGINT)};
    assert_int_equal(interrupt_stops(&s, &signo), 1);
    assert_int_equal(signo, SIGINT);
    /* a blocked SIGTERM is not what woke the thread */
    s = (struct interrupt_sigs){BIT(SIGCHLD) | BIT(SIGTERM), BIT(SIGTERM), 0, BIT(SIGCHLD)};
    assert_int_equal(interrupt_stops(&s, &signo), 0);
    assert_int_equal(signo, SIGCHLD);
    /* SIGKILL cannot be blocked, whatever the mask says */
    s = (struct interrupt_sigs){BIT(SIGKILL), ~(uint64_t)0, 0, 0};
    assert_int_equal(interrupt_stops(&s, &signo), 1);
    assert_int_equal(signo, SIGKILL);
    /* ignored ones do not count */
    s = (struct interrupt_sigs){BIT(SIGUSR1), 0, BIT(SIGUSR1), 0};
    assert_int_equal(interrupt_stops(&s, &signo), 0);
    assert_int_equal(signo, 0);
    /* nothing pending (a freezer's wake-up): go on */
    s = (struct interrupt_sigs){0, 0, 0, 0};
    assert_int_equal(interrupt_stops(&s, &signo), 0);
    assert_int_equal(signo, 0);
}

static void noop(int sig)
{
}

/* This thread's own masks through /proc: a caught, blocked, pending SIGUSR1. */
static void reads_own_thread(void **state)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = noop;
    assert_int_equal(sigaction(SIGUSR1, &sa, NULL), 0);
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    assert_int_equal(pthread_sigmask(SIG_BLOCK, &set, &old), 0);
    pid_t tid = (pid_t)syscall(SYS_gettid);
    assert_int_equal(syscall(SYS_tgkill, getpid(), tid, SIGUSR1), 0);
    struct interrupt_sigs s;
    assert_int_equal(interrupt_read(tid, &s), 0);
    assert_true(s.pending & BIT(SIGUSR1));
    assert_true(s.blocked & BIT(SIGUSR1));
    assert_true(s.caught & BIT(SIGUSR1));
    int signo;
    assert_int_equal(interrupt_stops(&s, &signo), 0);
    assert_int_equal(pthread_sigmask(SIG_SETMASK, &old, NULL), 0); /* delivered to noop */
    assert_true(interrupt_read(-1, &s) < 0);
    /* a thread we cannot see: stop, as before */
    assert_int_equal(interrupt_should_stop(-1, &signo), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_proc_status),        cmocka_unit_test(refuses_broken_status),
        cmocka_unit_test(bookkeeping_signals_go_on), cmocka_unit_test(stop_signals_stop),
        cmocka_unit_test(mixed_and_blocked),         cmocka_unit_test(reads_own_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
