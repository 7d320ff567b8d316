/* interrupt.c - telling a signal that means "stop" from a program's bookkeeping one
 * (see interrupt.h). The decision is a pure function of the masks, so it is unit
 * tested without processes; reading /proc is kept apart and small. */
#include "interrupt.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BIT(sig) ((uint64_t)1 << ((sig)-1))

/* Signals a person or the system sends to end a program: they stop the call even if
 * the program catches them. */
static const uint64_t asked_to_stop = BIT(SIGINT) | BIT(SIGTERM) | BIT(SIGHUP) | BIT(SIGQUIT);
/* Signals whose default action is not to end the process (signal(7)). */
static const uint64_t default_harmless = BIT(SIGCHLD) | BIT(SIGURG) | BIT(SIGWINCH) | BIT(SIGCONT) |
                                         BIT(SIGSTOP) | BIT(SIGTSTP) | BIT(SIGTTIN) | BIT(SIGTTOU);

static int parse_mask(const char *text, const char *key, uint64_t *out)
{
    const char *p = text;
    size_t klen = strlen(key);
    while (p && *p) {
        if (strncmp(p, key, klen) == 0 && p[klen] == ':') {
            char *end;
            p += klen + 1;
            while (*p == ' ' || *p == '\t')
                p++;
            errno = 0;
            unsigned long long v = strtoull(p, &end, 16);
            if (end == p || errno || (*end != '\n' && *end != '\0'))
                return -EINVAL;
            *out = (uint64_t)v;
            return 0;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return -EINVAL;
}

int interrupt_parse_status(const char *text, struct interrupt_sigs *s)
{
    uint64_t pnd, shd;
    if (parse_mask(text, "SigPnd", &pnd) < 0 || parse_mask(text, "ShdPnd", &shd) < 0 ||
        parse_mask(text, "SigBlk", &s->blocked) < 0 ||
        parse_mask(text, "SigIgn", &s->ignored) < 0 || parse_mask(text, "SigCgt", &s->caught) < 0)
        return -EINVAL;
    s->pending = pnd | shd;
    return 0;
}

int interrupt_read(pid_t tid, struct interrupt_sigs *s)
{
    char path[64], buf[4096];
    if (tid <= 0)
        return -ESRCH;
    /* The thread's own directory: /proc/TID/status would do for the main thread only. */
    snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)tid, (int)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = -errno;
            close(fd);
            return err;
        }
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return interrupt_parse_status(buf, s);
}

int interrupt_stops(const struct interrupt_sigs *s, int *signo)
{
    /* SIGKILL cannot be blocked or caught; the rest count only when they can be
     * delivered now (a blocked one is not what woke this thread). */
    uint64_t live = s->pending & (~s->blocked | BIT(SIGKILL)) & ~s->ignored;
    int first = 0;
    for (int sig = 1; sig <= 64; sig++) {
        uint64_t b = BIT(sig);
        if (!(live & b))
            continue;
        if (!first)
            first = sig;
        if (sig == SIGKILL || (b & asked_to_stop) ||
            (!(s->caught & b) && !(b & default_harmless))) {
            *signo = sig;
            return 1;
        }
    }
    *signo = first;
    return 0;
}

int interrupt_should_stop(pid_t tid, int *signo)
{
    struct interrupt_sigs s;
    if (interrupt_read(tid, &s) < 0) {
        *signo = 0;
        return 1;
    }
    return interrupt_stops(&s, signo);
}
