/* config.c - sizes derived from a validated plan configuration (SPEC.md sections 1-2). */
#include "runtime.h"

void lh_config_derive(lh_config *cfg) {
    if (cfg->mode == LH_MODE_DENSE) {
        cfg->s_total = cfg->seq_len;
        cfg->s_sel = cfg->seq_len;
        cfg->tiles = 0;
        cfg->tile_len = 0;
        return;
    }
    int64_t width = 1, off = 0;
    for (int64_t l = 0; l < cfg->levels; l++) {
        cfg->level_width[l] = width;
        cfg->level_len[l] = cfg->seq_len / width;
        cfg->level_off[l] = off;
        off += cfg->level_len[l];
        width *= cfg->pooling;
    }
    cfg->s_total = off;
    cfg->tiles = cfg->topk / 128;
    int64_t coarse = cfg->level_len[cfg->levels - 1];
    cfg->tile_len = coarse / cfg->tiles;
    cfg->s_sel = coarse + (cfg->levels - 1) * cfg->topk * cfg->pooling;
}

size_t lh_dtype_size(lh_dtype dtype) {
    return dtype == LH_DTYPE_FLOAT32 ? 4 : 2;
}
