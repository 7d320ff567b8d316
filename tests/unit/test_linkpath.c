/* test_linkpath.c - linkpath_confine: absolute targets made relative to the link's
 * directory, climbing targets clamped at the sandbox's root, harmless relative targets
 * kept as written, and the property that matters: no result holds a ".." after a
 * name, nor more leading ".."s than the link's directory is deep. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "linkpath.h"

static void expect(const char *dir, const char *target, const char *want)
{
    char *got = NULL;
    assert_int_equal(linkpath_confine(dir, target, &got), 0);
    assert_non_null(got);
    if (strcmp(got, want) != 0)
        fail_msg("dir %s target %s: expected %s, got %s", dir, target, want, got);
    free(got);
}

static void absolute_targets(void **state)
{
    expect("/work", "/etc/passwd", "../etc/passwd");
    expect("/", "/etc/passwd", "etc/passwd");
    expect("/a/b/c", "/etc", "../../../etc");
    expect("/work", "/work/b", "b");         /* a sibling */
    expect("/work", "/work/sub/b", "sub/b"); /* below */
    expect("/work/sub", "/work", "..");      /* an ancestor */
    expect("/work", "/", "..");              /* the root */
    expect("/", "/", ".");
    expect("/work", "/work", ".");
    expect("/work/x", "/work/y/z", "../y/z");
    expect("/work", "/workshop/f", "../workshop/f"); /* a prefix is not a common name */
}

static void absolute_targets_normalised(void **state)
{
    expect("/work", "/a/../../b/./c//d", "../b/c/d");
    expect("/work", "//etc///passwd/", "../etc/passwd");
    expect("/work", "/..", "..");
    expect("/work", "/../../../etc", "../etc");
}

static void climbing_targets_clamped(void **state)
{
    expect("/work", "../../../../etc", "../etc");
    expect("/", "../etc", "etc");
    expect("/", "..", ".");
    expect("/a/b", "../../../x", "../../x");
    /* a name followed by "..": the name may be a link, so it is resolved lexically */
    expect("/work", "top/../../../etc", "../etc");
    expect("/work", "sub/../x", "x");
    expect("/work", "sub/..", ".");
}

static void relative_targets_kept(void **state)
{
    expect("/work", "f1", "f1");
    expect("/work", "sub/x", "sub/x");
    expect("/work", "../etc/passwd", "../etc/passwd");
    expect("/a/b", "../../x", "../../x");
    expect("/work", "./f", "./f");
    expect("/work", "sub/", "sub/");
    expect("/work", "", "");
}

/* No result climbs above the root or climbs after a name, whatever the input. */
static void never_leaves(void **state)
{
    static const char *const dirs[] = {"/", "/a", "/a/b", "/a/b/c/d"};
    static const char *const parts[] = {"..", ".", "a", "", "x", "b"};
    char target[64];
    for (size_t di = 0; di < sizeof(dirs) / sizeof(dirs[0]); di++) {
        size_t depth = 0;
        for (const char *p = dirs[di]; *p; p++)
            depth += *p == '/' && p[1] != '\0';
        for (unsigned code = 0; code < 6 * 6 * 6 * 6 * 2; code++) {
            unsigned c = code;
            size_t len = 0;
            if (c % 2)
                target[len++] = '/';
            c /= 2;
            for (int k = 0; k < 4; k++, c /= 6) {
                size_t pl = strlen(parts[c % 6]);
                memcpy(target + len, parts[c % 6], pl);
                len += pl;
                if (k < 3)
                    target[len++] = '/';
            }
            target[len] = '\0';
            char *got = NULL;
            assert_int_equal(linkpath_confine(dirs[di], target, &got), 0);
            size_t ups = 0;
            int named = 0;
            char *save = NULL;
            assert_true(got[0] != '/');
            for (char *tok = strtok_r(got, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
                if (strcmp(tok, "..") == 0) {
                    if (named)
                        fail_msg("%s in %s: \"..\" after a name", target, dirs[di]);
                    ups++;
                } else if (strcmp(tok, ".") != 0) {
                    named = 1;
                }
            }
            if (ups > depth)
                fail_msg("%s in %s: climbs %zu from depth %zu", target, dirs[di], ups, depth);
            free(got);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(absolute_targets),
        cmocka_unit_test(absolute_targets_normalised),
        cmocka_unit_test(climbing_targets_clamped),
        cmocka_unit_test(relative_targets_kept),
        cmocka_unit_test(never_leaves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
