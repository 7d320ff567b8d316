/* log.c - one line per event, to stderr while in the foreground, to a file (logfile=)
 * or to syslog once daemonized (stderr is /dev/null then).
 *
 * Each line is formatted completely and then written with a single write(2) under a
 * lock, so lines from the FUSE threads and the API worker never interleave. Messages
 * often quote the server or a command, so control characters are flattened to spaces:
 * one event stays one line, and nothing the network sends can forge a log line or
 * drive the terminal. errno is preserved, so callers may log before returning -errno. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LOG_MSG_MAX 2048

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static enum log_level log_level = LOG_LVL_INFO; /* log_lock */
static int log_syslog;                          /* log_lock */
static int log_fd = STDERR_FILENO;              /* log_lock */

static const char *const level_name[] = {"ERROR", "WARN", "INFO", "DEBUG"};
static const int level_prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};

static enum log_level level_clamp(enum log_level level)
{
    if ((int)level < LOG_LVL_ERROR)
        return LOG_LVL_ERROR;
    if ((int)level > LOG_LVL_DEBUG)
        return LOG_LVL_DEBUG;
    return level;
}

void log_set_level(enum log_level level)
{
    pthread_mutex_lock(&log_lock);
    log_level = level_clamp(level);
    pthread_mutex_unlock(&log_lock);
}

int log_level_parse(const char *name, enum log_level *level)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};

    for (int i = LOG_LVL_ERROR; i <= LOG_LVL_DEBUG; i++)
        if (name && strcmp(name, names[i]) == 0) {
            *level = (enum log_level)i;
            return 0;
        }
    return -EINVAL;
}

void log_use_syslog(int on)
{
    pthread_mutex_lock(&log_lock);
    if (on && !log_syslog)
        openlog("cwsfs", LOG_PID, LOG_DAEMON);
    else if (!on && log_syslog)
        closelog();
    log_syslog = !!on;
    pthread_mutex_unlock(&log_lock);
}

int log_syslog_available(void)
{
    struct stat st;
    return stat("/dev/log", &st) == 0 && S_ISSOCK(st.st_mode);
}

int log_open_file(const char *path)
{
    struct stat st;
    /* Appended to, never followed through a link, and only a file of this user: the
     * default name is in a shared directory when there is no XDG_RUNTIME_DIR. */
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        close(fd);
        return -EPERM;
    }
    pthread_mutex_lock(&log_lock);
    if (log_syslog)
        closelog();
    log_syslog = 0;
    if (log_fd != STDERR_FILENO)
        close(log_fd);
    log_fd = fd;
    pthread_mutex_unlock(&log_lock);
    return 0;
}

static void flatten(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

/* "2026-11-22T02:48:08.878Z": UTC, so lines compare across machines and zones. */
static void timestamp(char *buf, size_t size)
{
    struct timespec now;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &now);
    if (!gmtime_r(&now.tv_sec, &tm)) {
        snprintf(buf, size, "-");
        return;
    }
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(now.tv_nsec / 1000000));
}

static void write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* nowhere left to report it */
        p += n;
        len -= (size_t)n;
    }
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char msg[LOG_MSG_MAX], line[LOG_MSG_MAX + 128], ts[96];
    int saved_errno = errno;
    va_list ap;
    int n;

    level = level_clamp(level);
    pthread_mutex_lock(&log_lock);
    if (level > log_level)
        goto out;

    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(msg, sizeof(msg), "(unformattable message: %s)", fmt);
    else if ((size_t)n >= sizeof(msg))
        memcpy(msg + sizeof(msg) - 4, "...", 4); /* say it was cut */
    flatten(msg);

    if (log_syslog) {
        syslog(level_prio[level], "%s", msg);
    } else {
        timestamp(ts, sizeof(ts));
        n = snprintf(line, sizeof(line), "%s %s %s\n", ts, level_name[level], msg);
        write_all(log_fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    }
out:
    pthread_mutex_unlock(&log_lock);
    errno = saved_errno;
}
