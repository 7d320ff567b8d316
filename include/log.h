/* log.h - one line per event to stderr (or syslog once daemonized).
 * Thread-safe. Never log credentials: callers pass no secrets here. */
#ifndef CWSFS_LOG_H
#define CWSFS_LOG_H

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_set_level(enum log_level level);
/* The level named error, warn, info or debug: 0, or -EINVAL for another word. */
int log_level_parse(const char *name, enum log_level *level);
void log_use_syslog(int on);
/* 1 when syslog has a socket to take lines (/dev/log); without one they would vanish. */
int log_syslog_available(void);
/* Send every later line to PATH (appended; created 0600; a link or another user's file
 * is refused) instead of stderr or syslog. 0 or -errno. */
int log_open_file(const char *path);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
