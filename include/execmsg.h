/* execmsg.h - StreamExec's messages, both ways (schema: ExecStreamRequest and
 * ExecStreamResponse). Pure: no I/O, no locks; the exec, file fetch and file upload
 * paths all build their request bodies and read their responses through here. */
#ifndef CWSFS_EXECMSG_H
#define CWSFS_EXECMSG_H

#include <stddef.h>
#include <jansson.h>

enum execmsg_kind {
    EXECMSG_OTHER, /* a message this client does not use (a future oneof member) */
    EXECMSG_READY,
    EXECMSG_OUTPUT,
    EXECMSG_EXIT,
    EXECMSG_ERROR,
};

struct execmsg {
    enum execmsg_kind kind;
    int is_stderr; /* OUTPUT: STREAM_STDERR (else stdout) */
    char *data;    /* OUTPUT: decoded bytes, malloc'ed (execmsg_clear frees) */
    size_t len;
    int exit_code;     /* EXIT */
    const char *error; /* ERROR: the message, borrowed from the JSON */
};

/* Read one response message. -EINVAL for bad base64 or a malformed member. */
int execmsg_parse(const json_t *msg, struct execmsg *m);
void execmsg_clear(struct execmsg *m);

/* One envelope of the request: {"init":{sandboxId, command}} (argv NULL-terminated),
 * {"stdin": data}, or {"close":{}}. *out is malloc'ed. */
int execmsg_init(const char *sandbox_id, const char *const *argv, char **out, size_t *len);
int execmsg_stdin(const void *data, size_t n, char **out, size_t *len);
int execmsg_close(char **out, size_t *len);

/* A whole request body known up front (init then close: no stdin), handed to curl
 * piecewise by execbody_read (the api_body_fn shape). */
struct execbody {
    char *data;
    size_t len, pos;
};
int execbody_init(struct execbody *b, const char *sandbox_id, const char *const *argv);
long execbody_read(struct execbody *b, char *buf, size_t cap);
void execbody_free(struct execbody *b);

#endif
