/* config_id.c - what makes two plans "of the same configuration": the parameters that decide
 * what ranks of a ring exchange and what it means, compared field by field (for a sentence that
 * names the difference) and digested into 64 bits (for the tag that marks a `saved` buffer). */
#include <stdio.h>
#include <string.h>

#include "runtime.h"

#define PARAM_COUNT (LH_PARAM_DILATION + 1)

static const char *const param_names[PARAM_COUNT] = {
    "BATCH", "SEQ_LEN", "HEADS", "KV_HEADS", "HEAD_DIM", "DTYPE",
    "LAYOUT", "LEVELS", "POOLING", "TOPK", "MODE", "SOFTMAX_SCALE", "RECOMPUTE_SUBSEQ",
    "STAGE_TIMING", "SCORER", "DILATION"};

const char *lh_param_name(lh_param param) {
    return ((int)param >= 0 && param < PARAM_COUNT) ? param_names[param] : "UNKNOWN";
}

void lh_config_id_of(const lh_config *cfg, lh_config_id *id) {
    memset(id, 0, sizeof *id);
    int64_t *v = id->v;
    v[LH_PARAM_BATCH] = cfg->batch;
    v[LH_PARAM_SEQ_LEN] = cfg->seq_len;
    v[LH_PARAM_HEADS] = cfg->heads;
    v[LH_PARAM_KV_HEADS] = cfg->kv_heads;
    v[LH_PARAM_HEAD_DIM] = cfg->head_dim;
    v[LH_PARAM_DTYPE] = cfg->dtype;
    v[LH_PARAM_LAYOUT] = cfg->layout;
    v[LH_PARAM_MODE] = cfg->mode;
    if (cfg->mode == LH_MODE_LIGHTHOUSE) {   /* a dense plan does not use them */
        v[LH_PARAM_LEVELS] = cfg->levels;
        v[LH_PARAM_POOLING] = cfg->pooling;
        v[LH_PARAM_TOPK] = cfg->topk;
        v[LH_PARAM_SCORER] = cfg->scorer;
        if (cfg->scorer == LH_SCORER_DILATED) v[LH_PARAM_DILATION] = cfg->dilation;
    }
    id->scale = cfg->scale;
}

int lh_config_id_diff(const lh_config_id *a, int rank_a, const lh_config_id *b, int rank_b,
                      char *out, size_t cap) {
    /* MODE first: it decides which of the others matter. */
    static const lh_param order[] = {
        LH_PARAM_MODE, LH_PARAM_BATCH, LH_PARAM_SEQ_LEN, LH_PARAM_HEADS, LH_PARAM_KV_HEADS,
        LH_PARAM_HEAD_DIM, LH_PARAM_DTYPE, LH_PARAM_LAYOUT, LH_PARAM_LEVELS, LH_PARAM_POOLING,
        LH_PARAM_TOPK, LH_PARAM_SCORER, LH_PARAM_DILATION};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        lh_param p = order[i];
        if (a->v[p] != b->v[p]) {
            snprintf(out, cap, "%s is %lld on rank %d but %lld on rank %d", lh_param_name(p),
                     (long long)a->v[p], rank_a, (long long)b->v[p], rank_b);
            return 1;
        }
    }
    if (memcmp(&a->scale, &b->scale, sizeof a->scale) != 0) {
        snprintf(out, cap, "SOFTMAX_SCALE is %.17g on rank %d but %.17g on rank %d", a->scale,
                 rank_a, b->scale, rank_b);
        return 1;
    }
    return 0;
}

uint64_t lh_config_id_hash(const lh_config_id *id) {
    uint64_t h = 0xcbf29ce484222325ULL;
    unsigned char bytes[sizeof id->v + sizeof id->scale];
    memcpy(bytes, id->v, sizeof id->v);
    memcpy(bytes + sizeof id->v, &id->scale, sizeof id->scale);
    for (size_t i = 0; i < sizeof bytes; i++) {
        h ^= bytes[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
