/* helper.h - the modes of sbx-helper and what they share. */
#ifndef SBX_HELPER_H
#define SBX_HELPER_H

#include <stdarg.h>

/* Status lines on fd 3, when the server gave one ("PID n", "READY", "ERROR text"). */
void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* report "ERROR text", say it on stderr, exit 127 */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
int write_all(int fd, const char *buf, long n);
/* fmt and a newline to fd, whole */
int write_line(int fd, const char *fmt, va_list ap);

/*
 * A command for the exec agent (agent.c): a header, sent with the command's
 * stdin, stdout and stderr (or no descriptor for a terminal), then `length`
 * bytes of NUL-terminated strings: "tty" or "pipe", columns, rows, the working
 * directory, argc, the arguments, the number of environment entries, the entries.
 */
#include <stdint.h>
#include <stddef.h>
#define AGENT_MAGIC 0x62737763u
#define AGENT_MAX_REQUEST (4u << 20)
struct agent_header {
	uint32_t magic, length, nfds;
};
struct agent_request {
	int tty;
	unsigned cols, rows;
	char *cwd;
	char **argv, **env; /* NULL-terminated, pointing into the buffer */
};
int agent_request_parse(char *buf, size_t len, struct agent_request *rq);
void agent_request_free(struct agent_request *rq);

int do_agent(void);
int reap_server(long server);
int do_zygote(void);
int do_runc(int argc, char **argv);
int do_file(int argc, char **argv);

#endif
