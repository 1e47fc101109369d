/* config.c - what follows from a validated plan configuration: its sizes (docs/spec.md sections
 * 1-2) and the schedule of its ring attention (section 8). */
#include "algorithm.h"
#include "runtime.h"

void lh_config_derive(lh_config *cfg) {
    if (cfg->cp_world < 1) cfg->cp_world = 1;
    cfg->chunks = cfg->ring ? 2 : 1;
    cfg->chunk_len = cfg->seq_len / (cfg->ring ? 2 * cfg->cp_world : 1);
    if (!cfg->tensor_seq_len) cfg->tensor_seq_len = cfg->seq_len / cfg->cp_world;
    if (cfg->mode == LH_MODE_DENSE) {
        cfg->s_total = cfg->chunk_len;
        cfg->s_chunk = cfg->chunk_len;
        cfg->s_sel = cfg->chunks * cfg->s_chunk;
        cfg->tiles = 0;
        cfg->tile_len = 0;
        return;
    }
    int64_t topk_chunk = cfg->topk / (cfg->ring ? 2 * cfg->cp_world : 1);
    int64_t width = 1, off = 0;
    for (int64_t l = 0; l < cfg->levels; l++) {
        cfg->level_width[l] = width;
        cfg->level_len[l] = cfg->chunk_len / width;
        cfg->level_off[l] = off;
        off += cfg->level_len[l];
        width *= cfg->pooling;
    }
    cfg->s_total = off;
    cfg->tiles = topk_chunk / LH_TILE_REFINED;
    int64_t coarse = cfg->level_len[cfg->levels - 1];
    cfg->tile_len = coarse / cfg->tiles;
    cfg->s_chunk = coarse + (cfg->levels - 1) * topk_chunk * cfg->pooling;
    cfg->s_sel = cfg->chunks * cfg->s_chunk;
}

void lh_config_chunk(const lh_config *cfg, lh_config *chunk) {
    *chunk = *cfg;
    if (!cfg->ring) return;
    chunk->seq_len = cfg->chunk_len;
    chunk->topk = cfg->topk / (2 * cfg->cp_world);
    chunk->tensor_seq_len = cfg->tensor_seq_len;
    chunk->ring = NULL;
    chunk->cp_world = 1;
    chunk->cp_rank = 0;
    chunk->forward_hook = NULL;
    chunk->backward_hook = NULL;
    lh_config_derive(chunk);
}

/* The global index of local chunk j of rank `rank`: chunk `rank`, then chunk 2W-1-rank. */
static int64_t global_chunk(int64_t world, int64_t rank, int j) {
    return j == 0 ? rank : 2 * world - 1 - rank;
}

int lh_ring_blocks(int64_t world, int64_t rank, int64_t owner, lh_ring_block out[4]) {
    int n = 0;
    for (int q = 0; q < 2; q++)
        for (int kv = 0; kv < 2; kv++) {
            int64_t cq = global_chunk(world, rank, q), ckv = global_chunk(world, owner, kv);
            if (ckv <= cq) out[n++] = (lh_ring_block){q, kv, ckv < cq};
        }
    return n;
}

size_t lh_dtype_size(lh_dtype dtype) {
    return dtype == LH_DTYPE_FLOAT32 ? 4 : 2;
}
