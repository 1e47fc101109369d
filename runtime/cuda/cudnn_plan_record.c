/* cudnn_plan_record.c - the text of a stored cuDNN execution plan and its identity (see the
 * header). */
#include "cudnn_plan_record.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECORD_MAGIC "LHCP1"
#define RECORD_NAME "cudnn-plan" /* the files' prefix in the cache directory */

bool lh_plan_record_identity(const lh_plan_record_id *id, char *out, size_t cap) {
    /* The GPU's name as a token: no spaces or control characters inside the line. */
    char device[128];
    size_t n = 0;
    for (const char *c = id->device ? id->device : ""; *c && n + 1 < sizeof device; c++)
        device[n++] = (*c > ' ' && *c < 127) ? *c : '_';
    device[n] = '\0';
    int used = snprintf(out, cap, "lighthouse %d.%d.%d cudnn %zu sm_%d %s graphs %d %s shape",
                        LH_VERSION_MAJOR, LH_VERSION_MINOR, LH_VERSION_PATCH, id->cudnn_version,
                        id->sm, n ? device : "-", id->graph_version, id->role);
    for (int i = 0; i < LH_PLAN_KEY_WORDS && used >= 0 && (size_t)used < cap; i++)
        used += snprintf(out + used, cap - (size_t)used, " %" PRId64, id->shape->w[i]);
    return used >= 0 && (size_t)used < cap;
}

char *lh_plan_record_encode(const char *identity, const lh_plan_record_meta *meta,
                            const char *json, size_t *size) {
    if (!json || !*json) return NULL;
    char head[LH_PLAN_RECORD_IDENTITY_CAP + 160];
    int n = snprintf(head, sizeof head,
                     RECORD_MAGIC "\n%s\nengine %" PRId64 " workspace %" PRId64
                                  " deterministic %d bwd %d\n",
                     identity, meta->engine_id, meta->workspace_bytes, meta->deterministic ? 1 : 0,
                     meta->bwd_kind);
    if (n < 0 || (size_t)n >= sizeof head) return NULL;
    size_t json_len = strlen(json);
    char *text = malloc((size_t)n + json_len + 1);
    if (!text) return NULL;
    memcpy(text, head, (size_t)n);
    memcpy(text + n, json, json_len + 1);
    *size = (size_t)n + json_len;
    return text;
}

/* The line that starts at *at, compared with or parsed from; *at moves past its newline. */
static const char *next_line(const char **at, size_t *len) {
    const char *start = *at, *end = strchr(start, '\n');
    if (!end) return NULL;
    *len = (size_t)(end - start);
    *at = end + 1;
    return start;
}

bool lh_plan_record_decode(const char *text, const char *identity, lh_plan_record_meta *meta,
                           const char **json) {
    const char *at = text;
    size_t len;
    const char *line = next_line(&at, &len);
    if (!line || len != strlen(RECORD_MAGIC) || memcmp(line, RECORD_MAGIC, len) != 0) return false;
    line = next_line(&at, &len);
    if (!line || len != strlen(identity) || memcmp(line, identity, len) != 0) return false;
    line = next_line(&at, &len);
    if (!line || len >= 160) return false;
    char fields[160];
    memcpy(fields, line, len);
    fields[len] = '\0';
    int64_t engine, workspace;
    int det, bwd, consumed = 0;
    if (sscanf(fields, "engine %" SCNd64 " workspace %" SCNd64 " deterministic %d bwd %d%n",
               &engine, &workspace, &det, &bwd, &consumed) != 4 ||
        (size_t)consumed != len || workspace < 0 || (det != 0 && det != 1) || bwd < 0 || bwd > 1)
        return false;
    if (!*at) return false; /* no plan */
    meta->engine_id = engine;
    meta->workspace_bytes = workspace;
    meta->deterministic = det == 1;
    meta->bwd_kind = bwd;
    *json = at;
    return true;
}

bool lh_plan_record_load(lhc_cache *cache, const char *identity, lh_plan_record_meta *meta,
                         char **json) {
    char *text = NULL;
    size_t size = 0;
    if (lhc_cache_record_read(cache, RECORD_NAME, identity, &text, &size) != 1) return false;
    const char *body;
    bool ok = lh_plan_record_decode(text, identity, meta, &body);
    if (ok) memmove(text, body, strlen(body) + 1); /* the JSON keeps the allocation */
    if (!ok) free(text);
    else *json = text;
    return ok;
}

bool lh_plan_record_save(lhc_cache *cache, const char *identity, const lh_plan_record_meta *meta,
                         const char *json) {
    size_t size = 0;
    char *text = lh_plan_record_encode(identity, meta, json, &size);
    if (!text) return false;
    bool ok = lhc_cache_record_write(cache, RECORD_NAME, identity, text, size) == 0;
    free(text);
    return ok;
}
