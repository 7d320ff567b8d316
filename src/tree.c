/* tree.c - the pseudo tree: MNT/, NAME/, exec/N/, .root, .metrics.
 *
 * One static table per directory kind names its files (as acme's fsys.c does), so
 * lookup, readdir and attributes agree by construction. Snapshot files are rendered
 * here from the sandbox's state; streams only report their size and time. */
#include "tree.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "park.h"
#include "sandbox.h"

static const struct {
    const char *name;
    enum pseudo file;
    enum node_kind kind;
} sandbox_entries[] =
    {
        {"ctl", P_CTL, N_FILE},
        {"status", P_STATUS, N_FILE},
        {"events", P_EVENTS, N_FILE},
        {"id", P_ID, N_FILE},
        {"snapshots", P_SNAPSHOTS, N_FILE},
        {"spec", P_SPEC, N_FILE},
        {"error", P_ERROR, N_FILE},
        {"logs", P_LOGS, N_FILE},
        {"stdout", P_STDOUT, N_LINK},
        {"stderr", P_STDERR, N_LINK},
        {"exit", P_EXIT, N_LINK},
        {"exec", P_CTL, N_EXECS},
        {"root", P_ROOT, N_LINK},
},
  exec_entries[] = {
      {"cmd", P_CMD, N_FILE},   {"stdout", P_STDOUT, N_FILE},  {"stderr", P_STDERR, N_FILE},
      {"exit", P_EXIT, N_FILE}, {"status", P_XSTATUS, N_FILE},
};
#define NELEM(a) (sizeof(a) / sizeof(*(a)))

/* ---- rendering pseudo-files ---- */

/* Latency, failures and what is in flight, by rpc: a stalled service shows as calls
 * in flight whose bytes stop moving and whose durations pile up in the last buckets. */
/* One series' sent and received samples for an rpc. */
static void bytes_pair(FILE *f, const char *name, const char *rpc, uint64_t sent, uint64_t received)
{
    fprintf(f, "%s{rpc=\"%s\",direction=\"sent\"} %llu\n", name, rpc, (unsigned long long)sent);
    fprintf(f, "%s{rpc=\"%s\",direction=\"received\"} %llu\n", name, rpc,
            (unsigned long long)received);
}

static void render_rpc_stats(FILE *f)
{
    struct api_rpc_stats *st = calloc(32, sizeof(*st));
    size_t n = st ? api_rpc_stats(st, 32) : 0;
    size_t i, b, e;

    if (n > 32)
        n = 32;
    fprintf(f, "# HELP cwsfs_rpc_duration_seconds API call durations, retries and streams "
               "included, by rpc.\n"
               "# TYPE cwsfs_rpc_duration_seconds histogram\n");
    for (i = 0; i < n; i++) {
        for (b = 0; b < API_DURATION_BUCKETS; b++)
            fprintf(f, "cwsfs_rpc_duration_seconds_bucket{rpc=\"%s\",le=\"%g\"} %llu\n", st[i].rpc,
                    api_duration_bounds_ms[b] / 1000.0, (unsigned long long)st[i].le[b]);
        fprintf(f,
                "cwsfs_rpc_duration_seconds_bucket{rpc=\"%s\",le=\"+Inf\"} %llu\n"
                "cwsfs_rpc_duration_seconds_sum{rpc=\"%s\"} %.3f\n"
                "cwsfs_rpc_duration_seconds_count{rpc=\"%s\"} %llu\n",
                st[i].rpc, (unsigned long long)st[i].finished, st[i].rpc,
                st[i].duration_ms_sum / 1000.0, st[i].rpc, (unsigned long long)st[i].finished);
    }
    fprintf(f, "# HELP cwsfs_rpc_errors_total API calls that failed, by rpc and Connect code.\n"
               "# TYPE cwsfs_rpc_errors_total counter\n");
    for (i = 0; i < n; i++)
        for (e = 0; e < st[i].nerrors; e++)
            fprintf(f, "cwsfs_rpc_errors_total{rpc=\"%s\",code=\"%s\"} %llu\n", st[i].rpc,
                    st[i].errors[e].code, (unsigned long long)st[i].errors[e].count);
    fprintf(f, "# HELP cwsfs_rpc_in_flight API calls started and not yet finished, by rpc.\n"
               "# TYPE cwsfs_rpc_in_flight gauge\n");
    for (i = 0; i < n; i++)
        fprintf(f, "cwsfs_rpc_in_flight{rpc=\"%s\"} %llu\n", st[i].rpc,
                (unsigned long long)st[i].in_flight);
    fprintf(f, "# HELP cwsfs_rpc_in_flight_bytes Bytes moved so far by API calls not yet "
               "finished, by rpc and direction.\n"
               "# TYPE cwsfs_rpc_in_flight_bytes gauge\n");
    for (i = 0; i < n; i++)
        bytes_pair(f, "cwsfs_rpc_in_flight_bytes", st[i].rpc, st[i].in_flight_sent,
                   st[i].in_flight_received);
    fprintf(f, "# HELP cwsfs_rpc_bytes_total Bytes of API requests sent and responses "
               "received, by rpc and direction.\n"
               "# TYPE cwsfs_rpc_bytes_total counter\n");
    for (i = 0; i < n; i++)
        bytes_pair(f, "cwsfs_rpc_bytes_total", st[i].rpc, st[i].sent, st[i].received);
    free(st);
}

static char *render_metrics(void)
{
    unsigned by_state[SB_PAUSED + 1] = {0};
    struct sandbox *sb, *tmp;
    HASH_ITER(hh, session.by_name, sb, tmp)
        by_state[sb->state]++;
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    fprintf(f, "# HELP cwsfs_sandboxes Sandboxes in this mount, by lifecycle state.\n"
               "# TYPE cwsfs_sandboxes gauge\n");
    for (int s = 0; s <= SB_PAUSED; s++)
        fprintf(f, "cwsfs_sandboxes{state=\"%s\"} %u\n", sandbox_state_name(s), by_state[s]);
    fprintf(f,
            "# HELP cwsfs_execs_total Commands started through ctl.\n"
            "# TYPE cwsfs_execs_total counter\ncwsfs_execs_total %llu\n"
            "# HELP cwsfs_output_bytes_total Bytes of command and log output received.\n"
            "# TYPE cwsfs_output_bytes_total counter\ncwsfs_output_bytes_total %llu\n"
            "# HELP cwsfs_file_read_bytes_total Bytes of sandbox files fetched.\n"
            "# TYPE cwsfs_file_read_bytes_total counter\ncwsfs_file_read_bytes_total %llu\n"
            "# HELP cwsfs_file_written_bytes_total Bytes of files sent to sandboxes.\n"
            "# TYPE cwsfs_file_written_bytes_total counter\ncwsfs_file_written_bytes_total %llu\n"
            "# HELP cwsfs_parked_requests Reads and writes waiting for something to happen.\n"
            "# TYPE cwsfs_parked_requests gauge\ncwsfs_parked_requests %u\n"
            "# HELP cwsfs_rpc_calls_total API calls started, by rpc.\n"
            "# TYPE cwsfs_rpc_calls_total counter\n",
            (unsigned long long)session.execs_started, (unsigned long long)session.bytes_out,
            (unsigned long long)session.bytes_read, (unsigned long long)session.bytes_written,
            park_count());
    const char *names[32];
    uint64_t counts[32];
    size_t n = api_call_counts(names, counts, 32);
    for (size_t i = 0; i < n && i < 32; i++)
        fprintf(f, "cwsfs_rpc_calls_total{rpc=\"%s\"} %llu\n", names[i],
                (unsigned long long)counts[i]);
    render_rpc_stats(f);
    fclose(f);
    return out;
}

/* The text of a snapshot file, malloc'ed; NULL for streams. */
char *tree_render(struct node *n)
{
    struct sandbox *sb = n->sb;
    char *out = NULL;
    char line[512];
    struct exec *ex = sb ? exec_get(sb, n->exec_no) : NULL;
    if (n->kind == N_METRICS)
        return render_metrics();
    if (n->kind != N_FILE)
        return NULL;
    switch (n->file) {
    case P_CTL:
        if (asprintf(&out, "%s %u\n", sb->id ? sb->id : "-", sb->nexecs) < 0)
            out = NULL;
        break;
    case P_STATUS:
        sandbox_status_line(sb, line, sizeof(line));
        if (asprintf(&out, "%s\n", line) < 0)
            out = NULL;
        break;
    case P_ID:
        if (asprintf(&out, "%s%s", sb->id ? sb->id : "", sb->id ? "\n" : "") < 0)
            out = NULL;
        break;
    case P_SNAPSHOTS:
        out = strdup(sb->snapshots ? sb->snapshots : "");
        break;
    case P_SPEC: {
        json_t *view = sb->remote ? sb->remote : sb->spec;
        char *dump = view ? json_dumps(view, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
        if (asprintf(&out, "%s\n", dump ? dump : "{}") < 0)
            out = NULL;
        free(dump);
        break;
    }
    case P_ERROR:
        if (asprintf(&out, "%s%s", sb->error ? sb->error : "", sb->error ? "\n" : "") < 0)
            out = NULL;
        break;
    case P_CMD:
        if (ex && asprintf(&out, "%s\n", ex->cmdline) < 0)
            out = NULL;
        break;
    case P_XSTATUS:
        if (ex) {
            exec_status_line(ex, line, sizeof(line));
            if (asprintf(&out, "%s\n", line) < 0)
                out = NULL;
        }
        break;
    default:
        break;
    }
    return out;
}

char *tree_link_target(const struct node *n)
{
    char *target = NULL;
    int rc;
    if (n->file == P_ROOT)
        rc = asprintf(&target, "../.root/%s", n->sb->name);
    else
        rc = asprintf(&target, "exec/%u/%s", n->sb->nexecs,
                      n->file == P_STDOUT   ? "stdout"
                      : n->file == P_STDERR ? "stderr"
                                            : "exit");
    return rc < 0 ? NULL : target;
}

int tree_is_stream(const struct node *n)
{
    if (n->kind != N_FILE)
        return 0;
    return n->file == P_EVENTS || n->file == P_LOGS || n->file == P_STDOUT || n->file == P_STDERR ||
           n->file == P_EXIT;
}

struct stream *tree_stream(struct node *n)
{
    struct sandbox *sb = n->sb;
    struct exec *ex = exec_get(sb, n->exec_no);
    switch (n->file) {
    case P_EVENTS:
        return &sb->events;
    case P_LOGS:
        return &sb->logs;
    case P_STDOUT:
        return ex ? &ex->out : NULL;
    case P_STDERR:
        return ex ? &ex->err : NULL;
    default:
        return NULL;
    }
}

int tree_gone(const struct sandbox *sb)
{
    return sb && sb->removed;
}

int tree_attr(struct node *n, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = n->ino;
    st->st_uid = getuid();
    st->st_gid = getgid();
    st->st_nlink = 1;
    struct sandbox *sb = n->sb;
    struct timespec t = sb ? sb->mtime : (struct timespec){0};
    if (!sb)
        clock_gettime(CLOCK_REALTIME, &t);
    if (tree_gone(sb))
        return -ENOENT;
    switch (n->kind) {
    case N_ROOTFS:
        if (strcmp(n->path, "/") != 0)
            return -EINVAL; /* rootfs.c answers for what is inside */
        /* the sandbox's "/" is a directory like the others */
        __attribute__((fallthrough));
    case N_MOUNT:
    case N_DOTROOT:
    case N_SBDIR:
    case N_EXECS:
    case N_EXECDIR:
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
        break;
    case N_LINK: {
        char *target = tree_link_target(n);
        st->st_mode = S_IFLNK | 0777;
        st->st_size = target ? (off_t)strlen(target) : 0;
        free(target);
        break;
    }
    case N_METRICS:
        st->st_mode = S_IFREG | 0444;
        break;
    case N_FILE:
        st->st_mode = S_IFREG | (n->file == P_CTL ? 0644 : 0444);
        if (n->exec_no && !exec_get(sb, n->exec_no))
            return -ENOENT;
        if (tree_is_stream(n)) {
            struct stream *s = tree_stream(n);
            if (s) {
                st->st_size = (off_t)s->ob.produced;
                if (s->ob.produced)
                    t = s->ob.mtime;
            } else if (n->file == P_EXIT) {
                struct exec *ex = exec_get(sb, n->exec_no);
                st->st_size = ex && ex->ended && !ex->failure ? 2 : 0;
            }
        } else {
            char *text = tree_render(n);
            st->st_size = text ? (off_t)strlen(text) : 0;
            free(text);
        }
        break;
    }
    st->st_mtim = st->st_ctim = st->st_atim = t;
    st->st_blksize = 4096;
    return 0;
}

double tree_attr_timeout(const struct node *n)
{
    return n->kind == N_FILE || n->kind == N_METRICS ? 0.0 : TREE_DIR_TIMEOUT;
}

/* The child `name` of a pseudo-directory, or NULL (-ENOENT). Never for N_ROOTFS. */
struct node *tree_child(struct node *parent, const char *name)
{
    struct sandbox *sb = parent->sb;
    char *end;
    switch (parent->kind) {
    case N_MOUNT:
        if (strcmp(name, ".root") == 0)
            return node_get(N_DOTROOT, 0, NULL, 0, NULL);
        if (strcmp(name, ".metrics") == 0)
            return node_get(N_METRICS, 0, NULL, 0, NULL);
        sb = sandbox_find(name);
        return sb ? node_get(N_SBDIR, 0, sb, 0, NULL) : NULL;
    case N_DOTROOT:
        sb = sandbox_find(name);
        return sb ? node_get(N_ROOTFS, 0, sb, 0, "/") : NULL;
    case N_SBDIR:
        for (size_t i = 0; i < NELEM(sandbox_entries); i++) {
            if (strcmp(name, sandbox_entries[i].name))
                continue;
            enum node_kind k = sandbox_entries[i].kind;
            enum pseudo f = sandbox_entries[i].file;
            if (k == N_LINK && f != P_ROOT && sb->nexecs == 0)
                return NULL;
            return node_get(k, k == N_EXECS ? 0 : f, sb, 0, NULL);
        }
        return NULL;
    case N_EXECS: {
        unsigned long no = strtoul(name, &end, 10);
        if (*end || !exec_get(sb, (unsigned)no) || name[0] == '0')
            return NULL;
        return node_get(N_EXECDIR, 0, sb, (unsigned)no, NULL);
    }
    case N_EXECDIR:
        for (size_t i = 0; i < NELEM(exec_entries); i++)
            if (strcmp(name, exec_entries[i].name) == 0)
                return node_get(N_FILE, exec_entries[i].file, sb, parent->exec_no, NULL);
        return NULL;
    default:
        return NULL;
    }
}

void tree_list(struct node *dir, tree_entry_fn add, void *h)
{
    struct sandbox *sb = dir->sb, *s, *tmp;
    char num[16];
    add(h, ".", NULL);
    add(h, "..", NULL);
    switch (dir->kind) {
    case N_MOUNT:
        add(h, ".root", node_get(N_DOTROOT, 0, NULL, 0, NULL));
        add(h, ".metrics", node_get(N_METRICS, 0, NULL, 0, NULL));
        HASH_ITER(hh, session.by_name, s, tmp)
            add(h, s->name, node_get(N_SBDIR, 0, s, 0, NULL));
        break;
    case N_DOTROOT:
        HASH_ITER(hh, session.by_name, s, tmp)
            add(h, s->name, NULL);
        break;
    case N_SBDIR:
        for (size_t i = 0; i < NELEM(sandbox_entries); i++) {
            struct node *c = tree_child(dir, sandbox_entries[i].name);
            if (c)
                add(h, sandbox_entries[i].name, c);
        }
        break;
    case N_EXECS:
        for (unsigned i = 1; i <= sb->nexecs; i++) {
            snprintf(num, sizeof(num), "%u", i);
            add(h, num, node_get(N_EXECDIR, 0, sb, i, NULL));
        }
        break;
    case N_EXECDIR:
        for (size_t i = 0; i < NELEM(exec_entries); i++)
            add(h, exec_entries[i].name, tree_child(dir, exec_entries[i].name));
        break;
    default:
        break;
    }
}
