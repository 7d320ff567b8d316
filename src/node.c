/* node.c - the inode table: inode numbers the kernel holds, and what they stand for.
 *
 * Two hash tables over the same nodes: by inode number (every FUSE callback starts
 * there) and by key (a lookup of the same name must give the same inode). The key
 * spells out kind, sandbox serial, exec number and path, which is all that
 * identifies a node. Protected by fs_lock. */
#include "node.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct node *nodes_by_ino;
static struct node *nodes_by_key;
static fuse_ino_t next_ino = FUSE_ROOT_ID + 1;
static struct node root_node = {.ino = FUSE_ROOT_ID, .kind = N_MOUNT, .nlookup = 1};

static char *node_key(enum node_kind kind, enum pseudo file, const struct sandbox *sb,
                      unsigned exec_no, const char *path)
{
    char *key = NULL;
    if (asprintf(&key, "%d/%d/%llu/%u/%s", (int)kind, (int)file,
                 sb ? (unsigned long long)sb->serial : 0ull, exec_no, path ? path : "") < 0)
        return NULL;
    return key;
}

void node_init(void)
{
    root_node.key = strdup("root");
    HASH_ADD(hh_ino, nodes_by_ino, ino, sizeof(fuse_ino_t), &root_node);
}

struct node *node_get(enum node_kind kind, enum pseudo file, struct sandbox *sb, unsigned exec_no,
                      const char *path)
{
    if (kind == N_MOUNT)
        return &root_node;
    char *key = node_key(kind, file, sb, exec_no, path);
    if (!key)
        return NULL;
    struct node *n = NULL;
    HASH_FIND(hh_key, nodes_by_key, key, strlen(key), n);
    if (n) {
        free(key);
        return n;
    }
    n = calloc(1, sizeof(*n));
    if (!n || (path && !(n->path = strdup(path)))) {
        free(n);
        free(key);
        return NULL;
    }
    n->ino = next_ino++;
    n->kind = kind;
    n->file = file;
    n->sb = sb;
    n->exec_no = exec_no;
    n->key = key;
    if (sb)
        sandbox_ref(sb);
    HASH_ADD(hh_ino, nodes_by_ino, ino, sizeof(fuse_ino_t), n);
    HASH_ADD_KEYPTR(hh_key, nodes_by_key, n->key, strlen(n->key), n);
    return n;
}

struct node *node_by_ino(fuse_ino_t ino)
{
    struct node *n = NULL;
    HASH_FIND(hh_ino, nodes_by_ino, &ino, sizeof(fuse_ino_t), n);
    return n;
}

void node_looked_up(struct node *n)
{
    n->nlookup++;
}

static void node_free(struct node *n)
{
    HASH_DELETE(hh_ino, nodes_by_ino, n);
    if (n->key)
        HASH_DELETE(hh_key, nodes_by_key, n);
    if (n->sb)
        sandbox_unref(n->sb);
    free(n->path);
    free(n->key);
    free(n);
}

void node_forget(struct node *n, uint64_t count)
{
    if (n == &root_node)
        return;
    n->nlookup = count >= n->nlookup ? 0 : n->nlookup - count;
    if (n->nlookup == 0)
        node_free(n);
}

/* A rename moves a subtree: every node at or below `from` now names a path under
 * `to`; rekey them so a later lookup of the new name finds the same inode. */
void node_renamed(struct sandbox *sb, const char *from, const char *to)
{
    size_t flen = strlen(from);
    struct node *n, *tmp;
    struct node *moved = NULL;
    HASH_ITER(hh_key, nodes_by_key, n, tmp) {
        if (n->kind != N_ROOTFS || n->sb != sb || strncmp(n->path, from, flen) != 0 ||
            (n->path[flen] != '\0' && n->path[flen] != '/'))
            continue;
        char *path = NULL;
        if (asprintf(&path, "%s%s", to, n->path + flen) < 0)
            continue;
        char *key = node_key(n->kind, n->file, sb, n->exec_no, path);
        if (!key) {
            free(path);
            continue;
        }
        HASH_DELETE(hh_key, nodes_by_key, n);
        free(n->path);
        free(n->key);
        n->path = path;
        n->key = key;
        /* Re-add after the walk: adding while iterating could visit n again. */
        n->hh_key.next = moved;
        moved = n;
    }
    while (moved) {
        n = moved;
        moved = n->hh_key.next;
        struct node *clash = NULL;
        HASH_FIND(hh_key, nodes_by_key, n->key, strlen(n->key), clash);
        if (clash) {
            /* The target existed and was replaced: its old inode lives on until
             * forgotten, under a key no lookup can produce. */
            HASH_DELETE(hh_key, nodes_by_key, clash);
            free(clash->key);
            clash->key = NULL;
            if (asprintf(&clash->key, "#%llu", (unsigned long long)clash->ino) < 0)
                clash->key = NULL;
            if (clash->key)
                HASH_ADD_KEYPTR(hh_key, nodes_by_key, clash->key, strlen(clash->key), clash);
        }
        HASH_ADD_KEYPTR(hh_key, nodes_by_key, n->key, strlen(n->key), n);
    }
}

void node_destroy_all(void)
{
    struct node *n, *tmp;
    HASH_ITER(hh_ino, nodes_by_ino, n, tmp) {
        if (n == &root_node)
            continue;
        node_free(n);
    }
    HASH_CLEAR(hh_ino, nodes_by_ino);
    HASH_CLEAR(hh_key, nodes_by_key);
    free(root_node.key);
    root_node.key = NULL;
}
