/* cudnn_plan_store.c - cuDNN execution plans restored from and saved to the disk store (see the
 * header for why). */
#include "cudnn_plan_store.h"

#include <stdlib.h>
#include <string.h>

bool lh_plan_store_enabled(const lh_plan_store *s) {
    if (!s || !s->cache) return false;
    const char *env = getenv("LIGHTHOUSE_CUDNN_PLAN_STORE");
    return !(env && strcmp(env, "0") == 0);
}

/* The record's name in the store; false where the store is off or the name does not fit. */
static bool identity(const lh_plan_store *s, const lh_cudnn_api *dnn, const lh_plan_key *shape,
                     int graph_version, const char *role, char *out, size_t cap) {
    if (!lh_plan_store_enabled(s)) return false;
    lh_plan_record_id id = {.cudnn_version = dnn->version, .sm = s->sm, .device = s->device,
                            .graph_version = graph_version, .role = role, .shape = shape};
    return lh_plan_record_identity(&id, out, cap);
}

bool lh_plan_store_has(const lh_plan_store *s, const lh_cudnn_api *dnn, const lh_plan_key *shape,
                       int graph_version, const char *role) {
    char id[LH_PLAN_RECORD_IDENTITY_CAP];
    if (!identity(s, dnn, shape, graph_version, role, id, sizeof id)) return false;
    lh_plan_record_meta meta;
    char *json = NULL;
    bool ok = lh_plan_record_load(s->cache, id, &meta, &json);
    free(json);
    return ok;
}

bool lh_plan_store_restore(const lh_plan_store *s, const lh_plan_key *shape, int graph_version,
                           const char *role, lh_gb *gb, int *bwd_kind) {
    char id[LH_PLAN_RECORD_IDENTITY_CAP];
    if (!identity(s, gb->dnn, shape, graph_version, role, id, sizeof id)) return false;
    int64_t t0 = lh_clock_us();
    lh_plan_record_meta meta;
    char *json = NULL;
    bool ok = lh_plan_record_load(s->cache, id, &meta, &json);
    if (ok) {
        ok = lh_gb_restore_plan(gb, json);
        free(json);
        /* a plan that needs another workspace than the one recorded is not the same plan */
        if (ok && gb->workspace_bytes != meta.workspace_bytes) {
            lh_gb_destroy(gb);
            gb->workspace_bytes = 0;
            ok = false;
        }
    }
    if (ok) {
        gb->engine_id = meta.engine_id;
        gb->deterministic = meta.deterministic;
        if (bwd_kind) *bwd_kind = meta.bwd_kind;
    }
    gb->plan_us += lh_clock_us() - t0;
    return ok;
}

lh_plan_store_outcome lh_plan_store_save(const lh_plan_store *s, const lh_plan_key *shape,
                                         int graph_version, const char *role, lh_gb *gb,
                                         int bwd_kind) {
    char id[LH_PLAN_RECORD_IDENTITY_CAP];
    if (!identity(s, gb->dnn, shape, graph_version, role, id, sizeof id))
        return LH_PLAN_STORE_OFF;
    int64_t t0 = lh_clock_us();
    char *json = lh_gb_plan_json(gb);
    lh_plan_record_meta meta = {.engine_id = gb->engine_id,
                                .workspace_bytes = gb->workspace_bytes,
                                .deterministic = gb->deterministic,
                                .bwd_kind = bwd_kind};
    bool saved = json && lh_plan_record_save(s->cache, id, &meta, json);
    free(json);
    gb->plan_us += lh_clock_us() - t0;
    return saved ? LH_PLAN_STORE_SAVED : LH_PLAN_STORE_UNSERIALISED;
}
