#include "proxy/yaml.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

static bool is_one_of(const char *s, const char *const *words)
{
    for (; *words != NULL; words++)
        if (strcasecmp(s, *words) == 0)
            return true;
    return false;
}

/* YAML 1.1 plain scalars as Psych resolves them. */
static json_t *plain_scalar(const char *s)
{
    static const char *const yes[] = {"true", "yes", "on", NULL};
    static const char *const no[] = {"false", "no", "off", NULL};
    char *end;

    if (s[0] == '\0' || strcmp(s, "~") == 0 || strcasecmp(s, "null") == 0)
        return json_null();
    if (is_one_of(s, yes))
        return json_true();
    if (is_one_of(s, no))
        return json_false();
    if (s[0] == ':' && s[1] != '\0')
        return json_string(s + 1); /* a Ruby symbol: its name */
    errno = 0;
    long long i = strtoll(s, &end, strncasecmp(s, "0x", 2) == 0 ? 16 : 10);
    if (*end == '\0' && errno == 0)
        return json_integer(i);
    double d = strtod(s, &end);
    if (*end == '\0' && strchr("+-.0123456789", s[0]) != NULL)
        return json_real(d);
    return json_string(s);
}

static json_t *convert(yaml_document_t *doc, yaml_node_t *node, int depth);

static json_t *convert_mapping(yaml_document_t *doc, yaml_node_t *node, int depth)
{
    json_t *obj = json_object();

    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        const char *key;
        json_t *v;

        if (k == NULL || k->type != YAML_SCALAR_NODE)
            continue; /* complex keys mean nothing in settings */
        key = (const char *)k->data.scalar.value;
        if (key[0] == ':' && key[1] != '\0')
            key++;
        v = convert(doc, yaml_document_get_node(doc, p->value), depth + 1);
        json_object_set_new(obj, key, v != NULL ? v : json_null());
    }
    return obj;
}

static json_t *convert(yaml_document_t *doc, yaml_node_t *node, int depth)
{
    json_t *arr;

    if (node == NULL || depth > 64) /* aliases could otherwise loop */
        return json_null();
    switch (node->type) {
        case YAML_SCALAR_NODE:
            if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
                return plain_scalar((const char *)node->data.scalar.value);
            return json_stringn((const char *)node->data.scalar.value, node->data.scalar.length);
        case YAML_SEQUENCE_NODE:
            arr = json_array();
            for (yaml_node_item_t *i = node->data.sequence.items.start;
                 i < node->data.sequence.items.top; i++)
                json_array_append_new(arr,
                                      convert(doc, yaml_document_get_node(doc, *i), depth + 1));
            return arr;
        case YAML_MAPPING_NODE:
            return convert_mapping(doc, node, depth);
        default:
            return json_null();
    }
}

int sp_yaml_load(const char *path, json_t **out, struct sp_error *err)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_node_t *root;
    FILE *f = fopen(path, "rb");
    int rc = 0;

    *out = NULL;
    if (f == NULL)
        return sp_fail(err, -errno, "cannot read %s: %s", path, strerror(errno));
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        rc = sp_fail(err, -EINVAL, "%s: line %zu: %s", path, parser.problem_mark.line + 1,
                     parser.problem ? parser.problem : "invalid YAML");
    } else {
        root = yaml_document_get_root_node(&doc);
        if (root == NULL || (root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0))
            *out = json_object(); /* an empty file, or only "---" */
        else if (root->type == YAML_MAPPING_NODE)
            *out = convert(&doc, root, 0);
        else
            rc = sp_fail(err, -EINVAL, "%s: the top level must be a mapping of settings", path);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}
