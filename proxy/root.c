#include "proxy/root.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/http.h"

static bool running(const struct sp_running_module *m)
{
    return strcmp(m->state_name, "running") == 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

int sp_root_add_feature(struct sp_root *root, const struct sp_running_module *owner,
                        const char *name, const char *version, const json_t *capabilities)
{
    struct sp_feature *f = realloc(root->features, (root->n_features + 1) * sizeof(*f));

    if (f == NULL)
        return -ENOMEM;
    root->features = f;
    f[root->n_features++] =
        (struct sp_feature){strdup(name), version ? strdup(version) : NULL,
                            capabilities ? json_deep_copy(capabilities) : json_array(), owner};
    return 0;
}

int sp_root_add_mount(struct sp_root *root, const struct sp_running_module *owner,
                      const char *prefix, const struct sp_route *routes, void *state)
{
    struct sp_extra_mount *m = realloc(root->mounts, (root->n_mounts + 1) * sizeof(*m));

    if (m == NULL)
        return -ENOMEM;
    if (prefix[0] != '/' || strlen(prefix) >= sizeof(m->prefix) || routes == NULL)
        return -EINVAL;
    root->mounts = m;
    m = &root->mounts[root->n_mounts++];
    *m = (struct sp_extra_mount){.routes = routes, .state = state, .owner = owner};
    snprintf(m->prefix, sizeof(m->prefix), "%s", prefix);
    return 0;
}

void sp_root_free_features(struct sp_root *root)
{
    for (size_t i = 0; i < root->n_features; i++) {
        free(root->features[i].name);
        free(root->features[i].version);
        json_decref(root->features[i].capabilities);
    }
    free(root->features);
    root->features = NULL;
    root->n_features = 0;
    free(root->mounts);
    root->mounts = NULL;
    root->n_mounts = 0;
}

/* New reference: what a running module says it has besides itself (ABI 1.2), or NULL. */
static json_t *module_features(const struct sp_running_module *m)
{
    json_t *f;

    if (!running(m) || m->lm.m->abi_minor < 2 || m->lm.m->features == NULL)
        return NULL;
    f = m->lm.m->features(m->state);
    if (json_is_object(f))
        return f;
    json_decref(f);
    return NULL;
}

/* GET /features: the running modules and the features they added, sorted, each once. */
static int features(void *state, const struct sp_request *req, struct sp_response *res)
{
    const struct sp_root *root = state;
    json_t *seen = json_object(), *out = json_array(), *v, **names;
    const char *name;
    size_t n = 0;

    (void)req;
    for (size_t i = 0; i < root->n_modules; i++) {
        json_t *more = module_features(&root->modules[i]);
        if (running(&root->modules[i]))
            json_object_set_new(seen, root->modules[i].lm.m->name, json_true());
        json_object_update(seen, more);
        json_decref(more);
    }
    for (size_t i = 0; i < root->n_features; i++)
        if (running(root->features[i].owner))
            json_object_set_new(seen, root->features[i].name, json_true());
    names = calloc(json_object_size(seen) + 1, sizeof(*names));
    json_object_foreach(seen, name, v) names[n++] = json_string(name);
    qsort(names, n, sizeof(*names), cmp_names);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(out, names[i]);
    free(names);
    json_decref(seen);
    sp_response_json(res, 200, out);
    return 0;
}

/* GET /version: the proxy's version, the running modules' and those of the features they added
 * with one (a dynflow plugin's: {"dynflow": "…", "script": "…"} with the SSH plugin). */
static int version(void *state, const struct sp_request *req, struct sp_response *res)
{
    const struct sp_root *root = state;
    json_t *modules = json_object();

    (void)req;
    for (size_t i = 0; i < root->n_modules; i++)
        if (running(&root->modules[i]))
            json_object_set_new(modules, root->modules[i].lm.m->name,
                                json_string(root->modules[i].lm.m->version));
    for (size_t i = 0; i < root->n_features; i++)
        if (root->features[i].version != NULL && running(root->features[i].owner))
            json_object_set_new(modules, root->features[i].name,
                                json_string(root->features[i].version));
    sp_response_json(res, 200,
                     json_pack("{s:s, s:o}", "version", PACKAGE_VERSION, "modules", modules));
    return 0;
}

static json_t *feature_v2(const struct sp_running_module *m, json_t *caps)
{
    return json_pack("{s:b, s:b, s:{}, s:s, s:o}", "http_enabled", (m->listeners & SP_HTTP) != 0,
                     "https_enabled", (m->listeners & SP_HTTPS) != 0, "settings", "state",
                     m->state_name, "capabilities", caps);
}

/* GET /v2/features: every module and added feature with its listeners, state and capabilities. */
static int features_v2(void *state, const struct sp_request *req, struct sp_response *res)
{
    const struct sp_root *root = state;
    json_t *out = json_object();

    (void)req;
    for (size_t i = 0; i < root->n_modules; i++) {
        const struct sp_running_module *m = &root->modules[i];
        json_t *caps =
            running(m) && m->lm.m->capabilities ? m->lm.m->capabilities(m->state) : json_array();
        json_object_set_new(out, m->lm.m->name, feature_v2(m, caps));
    }
    for (size_t i = 0; i < root->n_features; i++) {
        const struct sp_feature *f = &root->features[i];
        json_object_set_new(out, f->name, feature_v2(f->owner, json_copy(f->capabilities)));
    }
    for (size_t i = 0; i < root->n_modules; i++) {
        json_t *more = module_features(&root->modules[i]), *caps;
        const char *name;
        json_object_foreach(more, name, caps)
        {
            if (json_object_get(out, name) == NULL)
                json_object_set_new(out, name,
                                    feature_v2(&root->modules[i], json_is_array(caps)
                                                                      ? json_copy(caps)
                                                                      : json_array()));
        }
        json_decref(more);
    }
    sp_response_json(res, 200, out);
    return 0;
}

const struct sp_route *sp_root_routes(void)
{
    static const struct sp_route routes[] = {
        {"GET", "/features", features, SP_AUTH_NONE},
        {"GET", "/version", version, SP_AUTH_NONE},
        {"GET", "/v2/features", features_v2, SP_AUTH_ANY},
        {NULL, NULL, NULL, 0},
    };

    return routes;
}
