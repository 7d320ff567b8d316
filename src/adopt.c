/* adopt.c - the sandboxes of the session that this mount did not make: ListSandboxes
 * filtered by the session's tags (paged), each new one entered under the name in its
 * annotation (or its id when that name is unusable or taken). Sandboxes this mount
 * removed stay out while they are still listed as terminating. Refreshed at most once
 * a second, when a lookup or a listing of the mount needs it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uthash.h>
#include <utlist.h>

#include "api.h"
#include "log.h"
#include "pbjson.h"
#include "sandbox.h"

#define LIST_PAGE_SIZE 100
#define LIST_MAX_PAGES 50

/* Whoever waits for the listing in flight; one ListSandboxes serves them all. */
struct list_cont {
    struct list_cont *next;
    sandbox_ready_fn fn;
    void *ud;
};

struct list_ctx {
    struct list_cont *conts;
    int pages;
};

static struct list_ctx *list_inflight; /* fs_lock */

static int name_usable(const char *name, const char *id)
{
    if (!name || !*name || name[0] == '.' || strchr(name, '/') || strlen(name) > 200)
        return 0;
    struct sandbox *other = sandbox_find(name);
    return !other || (other->id && strcmp(other->id, id) == 0);
}

static void adopt(json_t *msg)
{
    const char *id = pbjson_get_string(msg, "sandboxId", NULL);
    if (!id || !*id || sandbox_was_removed(id))
        return;
    struct sandbox *sb, *tmp;
    HASH_ITER(hh, session.by_name, sb, tmp) {
        if (sb->id && strcmp(sb->id, id) == 0) {
            sandbox_update_from(sb, msg);
            return;
        }
    }
    json_t *spec = json_object_get(msg, "spec");
    json_t *ann = json_object_get(spec, "annotations");
    const char *name = pbjson_get_string(ann, SANDBOX_NAME_ANNOTATION, NULL);
    if (!name_usable(name, id))
        name = id;
    if (sandbox_find(name))
        return;
    sb = sandbox_adopt_new(name, id);
    if (!sb)
        return;
    sandbox_update_from(sb, msg);
    log_info("adopted sandbox %s as %s", id, name);
}

static void list_page(struct list_ctx *lc, const char *token);

static void on_listed(uint64_t call, const struct api_result *res, void *ud)
{
    struct list_ctx *lc = ud;
    pthread_mutex_lock(&fs_lock);
    if (res->err) {
        log_warn("ListSandboxes: %s: %s", res->error.code,
                 res->error.message ? res->error.message : "");
    } else {
        json_t *arr = json_object_get(res->response, "sandboxes");
        size_t i;
        json_t *item;
        json_array_foreach(arr, i, item)
            adopt(item);
        const char *next = pbjson_get_string(res->response, "nextPageToken", NULL);
        if (next && *next && ++lc->pages < LIST_MAX_PAGES) {
            list_page(lc, next);
            pthread_mutex_unlock(&fs_lock);
            return;
        }
    }
    list_inflight = NULL;
    clock_gettime(CLOCK_MONOTONIC, &session.list_fetched);
    struct list_cont *c, *tmp;
    LL_FOREACH_SAFE(lc->conts, c, tmp) {
        c->fn(NULL, res->err, c->ud);
        free(c);
    }
    free(lc);
    pthread_mutex_unlock(&fs_lock);
}

static void list_page(struct list_ctx *lc, const char *token)
{
    json_t *tags = json_array();
    for (size_t i = 0; i < session.ntags; i++)
        json_array_append_new(tags, json_string(session.tags[i]));
    json_t *req = json_pack("{s:i, s:o}", "pageSize", LIST_PAGE_SIZE, "tags", tags);
    if (token)
        json_object_set_new(req, "pageToken", json_string(token));
    api_unary("ListSandboxes", req, API_IDEMPOTENT, on_listed, lc);
}

static void primed(struct sandbox *sb, int err, void *ud)
{
}

void sandbox_list_prime(void)
{
    pthread_mutex_lock(&fs_lock);
    sandbox_list_refresh(primed, NULL);
    pthread_mutex_unlock(&fs_lock);
}

void sandbox_list_refresh(sandbox_ready_fn fn, void *ud)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long age_ms = (now.tv_sec - session.list_fetched.tv_sec) * 1000 +
                  (now.tv_nsec - session.list_fetched.tv_nsec) / 1000000;
    if (session.list_fetched.tv_sec && age_ms < 1000) {
        fn(NULL, 0, ud);
        return;
    }
    struct list_cont *c = calloc(1, sizeof(*c));
    struct list_ctx *lc = list_inflight ? list_inflight : calloc(1, sizeof(*lc));
    if (!c || !lc) {
        free(c);
        fn(NULL, -ENOMEM, ud);
        return;
    }
    c->fn = fn;
    c->ud = ud;
    LL_APPEND(lc->conts, c);
    if (list_inflight)
        return; /* joins the listing in flight */
    list_inflight = lc;
    list_page(lc, NULL);
}
