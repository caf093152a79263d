/*
 * Foreman's settings files are Ruby YAML with symbol keys (":enabled: true").
 * This reads one file into JSON the way Psych would see it: ":key:" keys lose
 * their colon, plain scalars become booleans, null, integers or floats when
 * they look like them, everything else a string.
 */
#ifndef SP_YAML_H
#define SP_YAML_H

#include <jansson.h>

#include "proxy/error.h"

/* New reference in *out: the document's top-level mapping ({} for an empty
 * file).  Errors name the file, the line and libyaml's reason. */
int sp_yaml_load(const char *path, json_t **out, struct sp_error *err);

#endif
