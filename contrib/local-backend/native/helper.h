/* helper.h - the modes of sbx-helper and what they share. */
#ifndef SBX_HELPER_H
#define SBX_HELPER_H

/* Status lines on fd 3, when the server gave one ("PID n", "READY", "ERROR text"). */
void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* report "ERROR text", say it on stderr, exit 127 */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
int write_all(int fd, const char *buf, long n);

int do_zygote(void);
int do_runc(int argc, char **argv);
int do_file(int argc, char **argv);

#endif
