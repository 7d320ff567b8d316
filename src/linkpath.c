/* linkpath.c - symbolic link targets confined to their sandbox (see linkpath.h).
 *
 * Why ".." only at the start: the ".."s that lead from the link's directory up are
 * taken by the host kernel along the directories it walked down through the mount, so
 * they end inside the sandbox. A ".." after a name is not: the name may itself be a
 * link (to "/", say), and its ".." then climbs from wherever that leads. Normalising
 * lexically removes such ".."s; every name left descends, and a link met on the way is
 * confined by this same rule. */
#include "linkpath.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct comp {
    const char *s;
    size_t len;
};

static int is_dots(const struct comp *c, size_t n)
{
    return c->len == n && strncmp(c->s, "..", n) == 0;
}

/* Split path into its names, resolving "." and ".." lexically onto the n names
 * already in v (".." at the root stays at the root). Returns the new count. */
static size_t push_path(struct comp *v, size_t n, const char *path)
{
    const char *p = path;
    while (*p) {
        const char *slash = strchr(p, '/');
        struct comp c = {p, slash ? (size_t)(slash - p) : strlen(p)};
        p += c.len + (slash ? 1 : 0);
        if (c.len == 0 || is_dots(&c, 1))
            continue;
        if (is_dots(&c, 2)) {
            if (n > 0)
                n--;
            continue;
        }
        v[n++] = c;
    }
    return n;
}

/* A relative target whose ".."s all come first and do not outnumber dir's names. */
static int stays_inside_as_written(const char *target, size_t depth)
{
    size_t ups = 0;
    int named = 0;
    const char *p = target;
    if (*p == '/')
        return 0;
    while (*p) {
        const char *slash = strchr(p, '/');
        struct comp c = {p, slash ? (size_t)(slash - p) : strlen(p)};
        p += c.len + (slash ? 1 : 0);
        if (is_dots(&c, 2)) {
            if (named || ++ups > depth)
                return 0;
        } else if (c.len > 0 && !is_dots(&c, 1)) {
            named = 1;
        }
    }
    return 1;
}

int linkpath_confine(const char *dir, const char *target, char **out)
{
    size_t max = strlen(dir) + strlen(target) + 2; /* names never outnumber bytes */
    struct comp *d = calloc(max, sizeof(*d)), *t = calloc(max, sizeof(*t));
    char *res = NULL;
    int rc = -ENOMEM;
    if (!d || !t)
        goto out;
    size_t nd = push_path(d, 0, dir);
    if (*target == '\0' || stays_inside_as_written(target, nd)) {
        res = strdup(target);
        rc = res ? 0 : -ENOMEM;
        goto out;
    }
    size_t nt = 0;
    if (*target != '/') {
        memcpy(t, d, nd * sizeof(*d));
        nt = nd;
    }
    nt = push_path(t, nt, target);
    size_t common = 0;
    while (common < nd && common < nt && d[common].len == t[common].len &&
           memcmp(d[common].s, t[common].s, d[common].len) == 0)
        common++;
    size_t len = 3 * (nd - common) + 2;
    for (size_t i = common; i < nt; i++)
        len += t[i].len + 1;
    res = malloc(len);
    if (!res)
        goto out;
    char *w = res;
    for (size_t i = common; i < nd; i++) {
        memcpy(w, "../", 3);
        w += 3;
    }
    for (size_t i = common; i < nt; i++) {
        memcpy(w, t[i].s, t[i].len);
        w += t[i].len;
        *w++ = '/';
    }
    if (w == res) /* the link's own directory */
        *w++ = '.';
    else
        w--; /* no trailing slash */
    *w = '\0';
    rc = 0;
out:
    free(d);
    free(t);
    *out = rc == 0 ? res : NULL;
    return rc;
}
