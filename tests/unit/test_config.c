/* test_config.c - config.c: the netrc reader and how endpoint and credentials are
 * chosen from mount options, the environment and netrc. The environment is set with
 * setenv per test; HOME and NETRC point into a private temporary directory so the
 * machine's own ~/.netrc never leaks in. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static char tmpdir[64];

static const char *const config_vars[] = {
    "CWSANDBOX_BASE_URL",
    "CWSANDBOX_API_KEY",
    "WANDB_SANDBOX_BASE_URL",
    "WANDB_API_KEY",
    "WANDB_ENTITY",
    "WANDB_PROJECT",
    "NETRC",
};

static void write_file(const char *name, const char *text)
{
    char path[PATH_MAX];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *tmp_path(const char *name)
{
    static char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    return path;
}

/* Each test starts from an environment with none of the variables config reads and
 * a HOME without .netrc. */
static int setup(void **state)
{
    size_t i;

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_config-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    for (i = 0; i < sizeof(config_vars) / sizeof(config_vars[0]); i++)
        unsetenv(config_vars[i]);
    setenv("HOME", tmpdir, 1);
    return 0;
}

static int teardown(void **state)
{
    const char *names[] = {".netrc", "netrc", "key", "emptykey"};
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        unlink(tmp_path(names[i]));
    rmdir(tmpdir);
    return 0;
}

static int resolve(const char *endpoint, const char *auth, const char *key_file, struct config *cfg,
                   char *err, size_t errlen)
{
    struct config_overrides ov = {endpoint, auth, key_file};

    return config_resolve(&ov, cfg, err, errlen);
}

/* ---- netrc ---------------------------------------------------------------------- */

static void check_netrc(const char *text, const char *machine, const char *want)
{
    char *got = config_netrc_password(text, machine);

    if (!want) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_netrc_single_line(void **state)
{
    check_netrc("machine api.wandb.ai login user password k1\n", "api.wandb.ai", "k1");
    check_netrc("machine api.wandb.ai login user password k1\n", "other.host", NULL);
    check_netrc("", "api.wandb.ai", NULL);
}

static void test_netrc_multiple_machines(void **state)
{
    const char *text = "machine a.example\n"
                       "  login alice\n"
                       "  password pa\n"
                       "machine api.wandb.ai\n"
                       "\tlogin user\n"
                       "\tpassword pw\n"
                       "machine c.example login carol password pc\n";

    check_netrc(text, "a.example", "pa");
    check_netrc(text, "api.wandb.ai", "pw");
    check_netrc(text, "c.example", "pc");
    check_netrc(text, "API.WANDB.AI", "pw"); /* host names ignore case */
    check_netrc(text, "b.example", NULL);
}

static void test_netrc_default(void **state)
{
    const char *text = "machine a.example login alice password pa\n"
                       "default login anon password pd\n";

    check_netrc(text, "a.example", "pa");
    check_netrc(text, "api.wandb.ai", "pd");
    /* An exact entry wins over default wherever default stands. */
    check_netrc("default password pd\nmachine api.wandb.ai password pw\n", "api.wandb.ai", "pw");
    /* The first matching entry wins. */
    check_netrc("machine h password one\nmachine h password two\n", "h", "one");
}

static void test_netrc_macdef(void **state)
{
    /* A macro body runs to the first blank line; what it holds is not netrc. */
    const char *text = "macdef init\n"
                       "machine api.wandb.ai password fake\n"
                       "cd /pub\n"
                       "\n"
                       "machine api.wandb.ai login u password real\n";

    check_netrc(text, "api.wandb.ai", "real");
    /* A macro up to the end of the text hides the rest. */
    check_netrc("machine x password px\nmacdef m\nmachine y password py\n", "y", NULL);
    check_netrc("machine x password px\nmacdef m\nmachine y password py\n", "x", "px");
    /* Blank line made of spaces also ends it. */
    check_netrc("macdef m\nquit\n   \nmachine y password py\n", "y", "py");
}

static void test_netrc_quoted_and_comments(void **state)
{
    check_netrc("machine h login u password \"two words\"\n", "h", "two words");
    check_netrc("machine h password \"say \\\"hi\\\"\"\n", "h", "say \"hi\"");
    check_netrc("machine h password a\\ b\n", "h", "a b");
    check_netrc("# machine h password commented\nmachine h password live\n", "h", "live");
    check_netrc("machine h password pw # trailing comment\n", "h", "pw");
    check_netrc("machine h password p#x\n", "h", "p#x");
    /* Values that look like keywords are values. */
    check_netrc("machine h login machine password p\n", "h", "p");
    check_netrc("machine h account default password p\n", "h", "p");
    /* An entry without a password leaves the default in charge. */
    check_netrc("machine h login u\ndefault password pd\n", "h", "pd");
    /* Unterminated things end quietly. */
    check_netrc("machine h password", "h", NULL);
    check_netrc("machine h password \"open", "h", "open");
    check_netrc(NULL, "h", NULL);
}

/* ---- resolution ------------------------------------------------------------------- */

static void test_nothing_set_uses_local_backend(void **state)
{
    struct config cfg;
    char err[256];

    assert_int_equal(resolve(NULL, NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_true(cfg.use_local_backend);
    assert_int_equal(cfg.auth, API_AUTH_NONE);
    assert_null(cfg.base_url);
    assert_null(cfg.api_key);
    config_free(&cfg);

    /* Set-but-empty variables count as unset. */
    setenv("CWSANDBOX_API_KEY", "", 1);
    setenv("WANDB_API_KEY", "", 1);
    assert_int_equal(config_resolve(NULL, &cfg, err, sizeof(err)), 0);
    assert_true(cfg.use_local_backend);
    config_free(&cfg);

    /* auth=none without an endpoint also means the local backend. */
    assert_int_equal(resolve(NULL, "none", NULL, &cfg, err, sizeof(err)), 0);
    assert_true(cfg.use_local_backend);
    config_free(&cfg);
}

static void test_cwsandbox_from_env(void **state)
{
    struct config cfg;
    char err[256];

    setenv("CWSANDBOX_API_KEY", "cw-secret", 1);
    assert_int_equal(resolve(NULL, NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_false(cfg.use_local_backend);
    assert_int_equal(cfg.auth, API_AUTH_BEARER);
    assert_string_equal(cfg.api_key, "cw-secret");
    assert_string_equal(cfg.base_url, CONFIG_DEFAULT_BASE_URL);
    assert_null(cfg.unix_socket);
    config_free(&cfg);

    setenv("CWSANDBOX_BASE_URL", "https://sandbox.example.com/", 1);
    assert_int_equal(resolve(NULL, NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.base_url, "https://sandbox.example.com");
    config_free(&cfg);
}

static void test_base_url_without_key_is_no_auth(void **state)
{
    struct config cfg;
    char err[256];

    setenv("CWSANDBOX_BASE_URL", "http://127.0.0.1:8080", 1);
    assert_int_equal(resolve(NULL, NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_false(cfg.use_local_backend);
    assert_int_equal(cfg.auth, API_AUTH_NONE);
    assert_string_equal(cfg.base_url, "http://127.0.0.1:8080");
    config_free(&cfg);

    /* An explicit auth=cwsandbox with no key is an error that says where keys go. */
    assert_int_equal(resolve(NULL, "cwsandbox", NULL, &cfg, err, sizeof(err)), -ENOKEY);
    assert_non_null(strstr(err, "CWSANDBOX_API_KEY"));
    assert_null(cfg.base_url);
}

static void test_wandb_from_env(void **state)
{
    struct config cfg;
    char err[256];

    setenv("WANDB_API_KEY", "wb-secret", 1);
    setenv("WANDB_ENTITY", "team", 1);
    setenv("WANDB_PROJECT", "proj", 1);
    assert_int_equal(resolve(NULL, NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.auth, API_AUTH_WANDB);
    assert_string_equal(cfg.api_key, "wb-secret");
    assert_string_equal(cfg.wandb_entity, "team");
    assert_string_equal(cfg.wandb_project, "proj");
    assert_string_equal(cfg.base_url, CONFIG_DEFAULT_BASE_URL);
    config_free(&cfg);

    setenv("WANDB_SANDBOX_BASE_URL", "https://wb.example.com", 1);
    setenv("CWSANDBOX_BASE_URL", "https://cw.example.com", 1);
    /* Any CWSANDBOX_ variable selects CoreWeave ... */
    assert_int_equal(resolve(NULL, NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.auth, API_AUTH_NONE);
    assert_string_equal(cfg.base_url, "https://cw.example.com");
    config_free(&cfg);
    /* ... unless auth=wandb says otherwise. */
    assert_int_equal(resolve(NULL, "wandb", NULL, &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.auth, API_AUTH_WANDB);
    assert_string_equal(cfg.base_url, "https://wb.example.com");
    config_free(&cfg);
}

static void test_coreweave_wins_over_wandb(void **state)
{
    struct config cfg;
    char err[256];

    setenv("WANDB_API_KEY", "wb-secret", 1);
    setenv("CWSANDBOX_API_KEY", "cw-secret", 1);
    assert_int_equal(resolve(NULL, NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.auth, API_AUTH_BEARER);
    assert_string_equal(cfg.api_key, "cw-secret");
    config_free(&cfg);
}

static void test_wandb_from_netrc(void **state)
{
    struct config cfg;
    char err[256];

    /* ~/.netrc through HOME */
    write_file(".netrc", "machine example.org password other\n"
                         "machine api.wandb.ai login user password from-home-netrc\n");
    assert_int_equal(resolve(NULL, NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_false(cfg.use_local_backend);
    assert_int_equal(cfg.auth, API_AUTH_WANDB);
    assert_string_equal(cfg.api_key, "from-home-netrc");
    config_free(&cfg);

    /* $NETRC names another file */
    write_file("netrc", "machine api.wandb.ai password from-NETRC\n");
    setenv("NETRC", tmp_path("netrc"), 1);
    assert_int_equal(resolve(NULL, NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.api_key, "from-NETRC");
    config_free(&cfg);

    /* WANDB_API_KEY beats netrc */
    setenv("WANDB_API_KEY", "from-env", 1);
    assert_int_equal(resolve(NULL, NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.api_key, "from-env");
    config_free(&cfg);

    /* A netrc entry for another machine is no credential. */
    unsetenv("WANDB_API_KEY");
    write_file("netrc", "machine example.org password other\n");
    assert_int_equal(resolve(NULL, NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_true(cfg.use_local_backend);
    config_free(&cfg);
}

static void test_overrides_beat_env(void **state)
{
    struct config cfg;
    char err[256];

    setenv("CWSANDBOX_API_KEY", "env-key", 1);
    setenv("CWSANDBOX_BASE_URL", "https://env.example.com", 1);
    write_file("key", "  file-key\n\n");
    assert_int_equal(
        resolve("http://127.0.0.1:9000/", NULL, tmp_path("key"), &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.auth, API_AUTH_BEARER);
    assert_string_equal(cfg.api_key, "file-key");
    assert_string_equal(cfg.base_url, "http://127.0.0.1:9000");
    config_free(&cfg);

    /* auth=none drops the key from the environment but keeps its base URL. */
    assert_int_equal(resolve(NULL, "none", NULL, &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.auth, API_AUTH_NONE);
    assert_null(cfg.api_key);
    assert_string_equal(cfg.base_url, "https://env.example.com");
    assert_false(cfg.use_local_backend);
    config_free(&cfg);

    /* A key file with only W&B hints in the environment feeds W&B. */
    unsetenv("CWSANDBOX_API_KEY");
    unsetenv("CWSANDBOX_BASE_URL");
    setenv("WANDB_SANDBOX_BASE_URL", "https://wb.example.com", 1);
    assert_int_equal(resolve(NULL, NULL, tmp_path("key"), &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.auth, API_AUTH_WANDB);
    assert_string_equal(cfg.api_key, "file-key");
    config_free(&cfg);

    /* With nothing in the environment a key file means CoreWeave. */
    unsetenv("WANDB_SANDBOX_BASE_URL");
    assert_int_equal(resolve(NULL, NULL, tmp_path("key"), &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.auth, API_AUTH_BEARER);
    assert_string_equal(cfg.base_url, CONFIG_DEFAULT_BASE_URL);
    config_free(&cfg);
}

static void test_endpoint_without_credentials(void **state)
{
    struct config cfg;
    char err[256], cwd[PATH_MAX], want[PATH_MAX + 16];

    assert_int_equal(resolve("https://h.example.com", NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_false(cfg.use_local_backend);
    assert_int_equal(cfg.auth, API_AUTH_NONE);
    assert_string_equal(cfg.base_url, "https://h.example.com");
    config_free(&cfg);

    assert_int_equal(resolve("unix:/run/sb.sock", NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.unix_socket, "/run/sb.sock");
    assert_string_equal(cfg.base_url, "http://localhost");
    config_free(&cfg);

    assert_int_equal(resolve("unix:///run/sb.sock", NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.unix_socket, "/run/sb.sock");
    config_free(&cfg);

    /* A relative socket path is made absolute now: the daemon runs in /. */
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    snprintf(want, sizeof(want), "%s/sb.sock", cwd);
    assert_int_equal(resolve("unix:sb.sock", NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.unix_socket, want);
    config_free(&cfg);
}

static void test_bad_values(void **state)
{
    struct config cfg;
    char err[256];

    assert_int_equal(resolve("ftp://x", NULL, NULL, &cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "endpoint="));
    assert_int_equal(resolve("http://", NULL, NULL, &cfg, err, sizeof(err)), -EINVAL);
    assert_int_equal(resolve("unix:", NULL, NULL, &cfg, err, sizeof(err)), -EINVAL);
    assert_int_equal(resolve("http://a b", NULL, NULL, &cfg, err, sizeof(err)), -EINVAL);
    assert_int_equal(resolve(NULL, "bearer", NULL, &cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "auth="));

    write_file("key", "k\n");
    assert_int_equal(resolve(NULL, "none", tmp_path("key"), &cfg, err, sizeof(err)), -EINVAL);

    assert_int_equal(resolve(NULL, NULL, tmp_path("missing"), &cfg, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "missing"));

    write_file("emptykey", " \n");
    assert_int_equal(resolve(NULL, NULL, tmp_path("emptykey"), &cfg, err, sizeof(err)), -EINVAL);

    setenv("WANDB_API_KEY", "bad\nkey-secret", 1);
    assert_int_equal(resolve(NULL, NULL, NULL, &cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "WANDB_API_KEY"));
    assert_null(strstr(err, "secret")); /* the key is never quoted */
    assert_null(cfg.api_key);
    unsetenv("WANDB_API_KEY");

    assert_int_equal(resolve(NULL, "wandb", NULL, &cfg, err, sizeof(err)), -ENOKEY);
    assert_non_null(strstr(err, "netrc"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_netrc_single_line),
        cmocka_unit_test(test_netrc_multiple_machines),
        cmocka_unit_test(test_netrc_default),
        cmocka_unit_test(test_netrc_macdef),
        cmocka_unit_test(test_netrc_quoted_and_comments),
        cmocka_unit_test_setup_teardown(test_nothing_set_uses_local_backend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cwsandbox_from_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_base_url_without_key_is_no_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wandb_from_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coreweave_wins_over_wandb, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wandb_from_netrc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overrides_beat_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_without_credentials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_values, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
