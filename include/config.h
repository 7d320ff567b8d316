/* config.h - where the service is and who we are, read as the official clients
 * read it (api/README.md "Endpoints and authentication"), then overridden by mount
 * options. Pure except for reading the environment and ~/.netrc. */
#ifndef CWSFS_CONFIG_H
#define CWSFS_CONFIG_H

#include "api.h"

#define CONFIG_DEFAULT_BASE_URL "https://api.cwsandbox.com"

/* Strings are malloc'ed and owned by the struct (config_free). */
struct config {
    char *base_url;
    char *unix_socket;
    enum api_auth auth;
    char *api_key;
    char *wandb_entity;
    char *wandb_project;
    int use_local_backend; /* no endpoint and no credentials anywhere */
};

/* Mount-option overrides (NULL = not given). auth is "cwsandbox", "wandb" or "none". */
struct config_overrides {
    const char *endpoint;
    const char *auth;
    const char *api_key_file; /* the key is read from a file, never a command line */
};

/* Resolve: overrides, then CWSANDBOX_BASE_URL/CWSANDBOX_API_KEY, then
 * WANDB_SANDBOX_BASE_URL/WANDB_API_KEY (or ~/.netrc machine api.wandb.ai), WANDB_ENTITY,
 * WANDB_PROJECT. Returns 0 or -errno with err set to a sentence for the user. */
int config_resolve(const struct config_overrides *ov, struct config *cfg, char *err, size_t errlen);
/* The password of machine `machine` in a netrc text; malloc'ed or NULL. */
char *config_netrc_password(const char *netrc_text, const char *machine);
void config_free(struct config *cfg);

#endif
