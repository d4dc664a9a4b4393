/* targets.h — parse a view's target spec into engine ids.
 *
 * A spec is "all", an engine id ("3"), a comma list of ids ("0,2,5"), or a
 * Python slice over the ordered list of live ids ("0:4", "1::2", "::-1", "-1").
 * As in ipyparallel's Client: a non-negative integer is an engine id; a
 * negative one indexes the id list from the end; a slice indexes the id list.
 *
 * Errors: a spec that does not parse -> ERR_BAD_TARGETS; a spec that names no
 * live engine, or an id that is not live -> ERR_NO_ENGINES.
 * Thread-safety: pure.
 */
#ifndef IPPC_TARGETS_H
#define IPPC_TARGETS_H

#include <stddef.h>

#include "error.h"

#define TARGETS_MAX_SPEC 1024

/* live_ids: the live engine ids in ascending order (n_live of them).  On success
 * returns 0 and *out (malloc'd, caller frees) holds *n_out >= 1 ids in the order
 * the spec names them (duplicates removed, first occurrence kept). */
int targets_parse(const char *spec, const int *live_ids, size_t n_live, int **out, size_t *n_out,
                  ippc_error *err);

#endif
