/* execmsg.c - StreamExec request envelopes and response messages.
 *
 * With Debian 12's libcurl the request body must be complete before any response
 * flows (api/README.md), so most bodies are built whole here: init, then close. The
 * response oneof arrives as its one set member ({"output":{...}}), per the protobuf
 * JSON mapping; anything else is reported as EXECMSG_OTHER and ignored by callers. */
#include "execmsg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "connect.h"
#include "pbjson.h"

static const char *const stream_names[] = {"STREAM_UNSPECIFIED", "STREAM_STDOUT", "STREAM_STDERR"};

int execmsg_parse(const json_t *msg, struct execmsg *m)
{
    json_t *v;
    memset(m, 0, sizeof(*m));
    if ((v = json_object_get(msg, "output")) && json_is_object(v)) {
        int which = 0;
        /* A stream name from a newer service counts as stdout, as an unknown number does
         * (proto3 enums are open): its output is kept, not refused. */
        if ((pbjson_get_enum(v, "stream", stream_names, 3, &which) < 0 &&
             !json_is_string(json_object_get(v, "stream"))) ||
            pbjson_get_bytes(v, "data", &m->data, &m->len) < 0)
            return -EINVAL;
        m->kind = EXECMSG_OUTPUT;
        m->is_stderr = which == 2;
    } else if ((v = json_object_get(msg, "exit")) && json_is_object(v)) {
        int64_t code = 0;
        if (pbjson_get_int64(v, "exitCode", 0, &code) < 0)
            return -EINVAL;
        m->kind = EXECMSG_EXIT;
        m->exit_code = (int)code;
    } else if ((v = json_object_get(msg, "error")) && json_is_object(v)) {
        m->kind = EXECMSG_ERROR;
        m->error = pbjson_get_string(v, "message", "the command failed");
    } else if (json_object_get(msg, "ready")) {
        m->kind = EXECMSG_READY;
    }
    return 0;
}

void execmsg_clear(struct execmsg *m)
{
    free(m->data);
    memset(m, 0, sizeof(*m));
}

static int envelope(json_t *msg, char **out, size_t *len)
{
    int rc = msg ? connect_envelope_json(msg, 0, out, len) : -ENOMEM;
    json_decref(msg);
    return rc;
}

int execmsg_init(const char *sandbox_id, const char *const *argv, char **out, size_t *len)
{
    size_t bad;
    json_t *cmd = pbjson_string_array(argv, &bad);
    if (!cmd)
        return -EILSEQ;
    return envelope(json_pack("{s:{s:s, s:o}}", "init", "sandboxId", sandbox_id, "command", cmd),
                    out, len);
}

int execmsg_stdin(const void *data, size_t n, char **out, size_t *len)
{
    return envelope(json_pack("{s:o}", "stdin", pbjson_bytes(data, n)), out, len);
}

int execmsg_close(char **out, size_t *len)
{
    return envelope(json_pack("{s:{}}", "close"), out, len);
}

int execbody_init(struct execbody *b, const char *sandbox_id, const char *const *argv)
{
    char *head = NULL, *tail = NULL;
    size_t hlen = 0, tlen = 0;
    int rc = -ENOMEM;
    memset(b, 0, sizeof(*b));
    if (execmsg_init(sandbox_id, argv, &head, &hlen) < 0 || execmsg_close(&tail, &tlen) < 0 ||
        !(b->data = malloc(hlen + tlen)))
        goto out;
    memcpy(b->data, head, hlen);
    memcpy(b->data + hlen, tail, tlen);
    b->len = hlen + tlen;
    rc = 0;
out:
    free(head);
    free(tail);
    return rc;
}

long execbody_read(struct execbody *b, char *buf, size_t cap)
{
    size_t n = b->len - b->pos;
    if (n > cap)
        n = cap;
    memcpy(buf, b->data + b->pos, n);
    b->pos += n;
    return (long)n;
}

void execbody_free(struct execbody *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}
