/*
 * cpu_ring.c - the built-in ring attention (docs/spec.md section 8) over chunk-major
 * sub-sequences [2, B, H, S_c, D].
 *
 * Rank r holds the query chunks of global index r and 2W-1-r, and to start with the key/value
 * chunks of the same indices. In W steps the kv pairs travel around the ring (r sends to r+1):
 * at step s rank r holds the pair of rank (r - s) mod W, so every query chunk meets every kv
 * chunk once. A query chunk cq and a kv chunk ckv make a causal pair when ckv == cq, a full pair
 * when ckv < cq (every entry of an earlier chunk precedes every entry of a later one), and
 * nothing when ckv > cq. Forward partial results are merged by log-sum-exp in fp32.
 *
 * Backward is the same walk with the final lse: each rank recomputes the probabilities of its
 * pairs, its dq accumulates locally, and dk/dv accumulators travel with their kv pair; after the
 * last step one more shift (of the accumulators only) brings them home to the owner.
 *
 * Workspace: scratch per thread | two travelling buffers | the rest (each region 64-aligned):
 *   forward:  buffers [k | v] (2 * sel floats each) | o_part [B,H,S_c,D] | lse_part [B,H,S_c] |
 *             acc_o [2,B,H,S_c,D] | acc_lse [2,B,H,S_c]
 *   backward: buffers [k | v | dk | dv] (4 * sel floats each) | dvec [2,B,H,S_c] |
 *             dq [2,B,H,S_c,D]
 * with sel = 2 * B * H * S_c * D. The caller's outputs are written only after the last shift,
 * so a failing ring leaves them untouched.
 */
#include <math.h>
#include <string.h>

#include "cpu_attention.h"

static size_t floats(int64_t n) { return lh_cpu_round64((size_t)n * sizeof(float)); }

typedef struct ring_sizes {
    int64_t rows;      /* B * H * S_c: rows of one chunk */
    int64_t chunk;     /* rows * D: floats of one chunk's tensor */
    int64_t sel;       /* C * chunk */
    size_t scratch;
} ring_sizes;

static ring_sizes sizes_of(const lh_cpu_plan *plan) {
    const lh_config *c = &plan->cfg;
    ring_sizes s;
    s.rows = c->batch * c->heads * c->s_chunk;
    s.chunk = s.rows * c->head_dim;
    s.sel = c->chunks * s.chunk;
    s.scratch = (size_t)plan->nthreads * plan->scratch_bytes;
    return s;
}

/* The block pairs this rank computes while it holds the kv chunks kb, vb of rank `owner`
 * (lh_ring_blocks), with their chunks in `blocks`. */
static int step_pairs(const lh_config *c, const ring_sizes *s, int64_t owner, const float *q,
                      const float *kb, const float *vb, lh_ring_block blocks[4],
                      lh_cpu_pair pairs[4]) {
    int n = lh_ring_blocks(c->cp_world, c->cp_rank, owner, blocks);
    for (int i = 0; i < n; i++)
        pairs[i] = (lh_cpu_pair){q + blocks[i].q * s->chunk, kb + blocks[i].kv * s->chunk,
                                 vb + blocks[i].kv * s->chunk, blocks[i].full};
    return n;
}

size_t lh_cpu_ring_workspace_bytes(const lh_cpu_plan *plan) {
    ring_sizes s = sizes_of(plan);
    size_t fwd = 2 * floats(2 * s.sel) + floats(s.chunk) + floats(s.rows) + floats(s.sel) +
                 floats(2 * s.rows);
    size_t bwd = 2 * floats(4 * s.sel) + floats(2 * s.rows) + floats(s.sel);
    return s.scratch + (fwd > bwd ? fwd : bwd);
}

/* Fails the call: peers blocked in (or later entering) a shift return instead of waiting. */
static lh_status ring_failed(lh_cpu_transport *t, lh_status st) {
    t->abort(t);
    return lh_fail_context(st, "ring attention");
}

/* Sends the `floats` travelling in buf[*cur] to the next rank and receives the previous rank's
 * into the other buffer, which becomes the current one. */
static lh_status pass_on(lh_cpu_transport *t, float *buf[2], int *cur, int64_t floats_count) {
    lh_status st = t->shift(t, buf[*cur], buf[1 - *cur], (size_t)floats_count * sizeof(float));
    if (st != LH_OK)
        return ring_failed(t, st);
    *cur = 1 - *cur;
    return LH_OK;
}

lh_status lh_cpu_ring_forward(const lh_cpu_plan *plan, lh_cpu_transport *t, const float *q,
                              const float *k, const float *v, float *o, float *lse,
                              char *workspace) {
    const lh_config *c = &plan->cfg;
    ring_sizes s = sizes_of(plan);
    int64_t W = c->cp_world, r = c->cp_rank, D = c->head_dim;
    char *scratch = workspace, *p = workspace + s.scratch;
    float *buf[2];
    buf[0] = (float *)p;
    buf[1] = (float *)(p + floats(2 * s.sel));
    float *o_part = (float *)(p + 2 * floats(2 * s.sel));
    float *lse_part = (float *)((char *)o_part + floats(s.chunk));
    float *acc_o = (float *)((char *)lse_part + floats(s.rows));
    float *acc_lse = (float *)((char *)acc_o + floats(s.sel));

    memcpy(buf[0], k, (size_t)s.sel * sizeof(float));
    memcpy(buf[0] + s.sel, v, (size_t)s.sel * sizeof(float));
    for (int64_t i = 0; i < 2 * s.rows; i++)
        acc_lse[i] = -INFINITY;
    int cur = 0;
    lh_status st = LH_OK;
    for (int64_t step = 0; step < W; step++) {
        int64_t owner = (r - step + W) % W;
        const float *kb = buf[cur], *vb = buf[cur] + s.sel;
        lh_ring_block blocks[4];
        lh_cpu_pair pairs[4];
        int n = step_pairs(c, &s, owner, q, kb, vb, blocks, pairs);
        for (int i = 0; i < n; i++)
            lh_cpu_pair_forward(plan, &pairs[i], o_part, lse_part, acc_o + blocks[i].q * s.chunk,
                                acc_lse + blocks[i].q * s.rows, scratch);
        if (step + 1 < W && (st = pass_on(t, buf, &cur, 2 * s.sel)) != LH_OK)
            return st;
    }
    /* Rows that see no key cannot occur (every entry sees itself); zero them all the same. */
    for (int64_t i = 0; i < 2 * s.rows; i++)
        if (acc_lse[i] == -INFINITY)
            memset(acc_o + i * D, 0, (size_t)D * sizeof(float));
    memcpy(o, acc_o, (size_t)s.sel * sizeof(float));
    memcpy(lse, acc_lse, (size_t)(2 * s.rows) * sizeof(float));
    return LH_OK;
}

lh_status lh_cpu_ring_backward(const lh_cpu_plan *plan, lh_cpu_transport *t, const float *q,
                               const float *k, const float *v, const float *o, const float *lse,
                               const float *dout, float *dq, float *dk, float *dv,
                               char *workspace) {
    const lh_config *c = &plan->cfg;
    ring_sizes s = sizes_of(plan);
    int64_t W = c->cp_world, r = c->cp_rank;
    char *scratch = workspace, *p = workspace + s.scratch;
    float *buf[2];
    buf[0] = (float *)p;
    buf[1] = (float *)(p + floats(4 * s.sel));
    float *dvec = (float *)(p + 2 * floats(4 * s.sel));
    float *dq_acc = (float *)((char *)dvec + floats(2 * s.rows));

    memcpy(buf[0], k, (size_t)s.sel * sizeof(float));
    memcpy(buf[0] + s.sel, v, (size_t)s.sel * sizeof(float));
    memset(buf[0] + 2 * s.sel, 0, (size_t)(2 * s.sel) * sizeof(float));
    memset(dq_acc, 0, (size_t)s.sel * sizeof(float));
    int cur = 0;
    lh_status st = LH_OK;
    for (int64_t step = 0; step < W; step++) {
        int64_t owner = (r - step + W) % W;
        float *kb = buf[cur], *vb = kb + s.sel, *dkb = kb + 2 * s.sel, *dvb = kb + 3 * s.sel;
        lh_ring_block blocks[4];
        lh_cpu_pair pairs[4];
        int n = step_pairs(c, &s, owner, q, kb, vb, blocks, pairs);
        for (int i = 0; i < n; i++) {
            int64_t jq = blocks[i].q, jkv = blocks[i].kv;
            lh_cpu_pair_backward(plan, &pairs[i], o + jq * s.chunk, dout + jq * s.chunk,
                                 lse + jq * s.rows, dvec + jq * s.rows, dq_acc + jq * s.chunk,
                                 dkb + jkv * s.chunk, dvb + jkv * s.chunk, 1, scratch);
        }
        if (step + 1 < W && (st = pass_on(t, buf, &cur, 4 * s.sel)) != LH_OK)
            return st;
    }
    /* Rank r now holds the accumulators of rank r+1's pair, complete: send them home. */
    if (W > 1) {
        st = t->shift(t, buf[cur] + 2 * s.sel, buf[1 - cur] + 2 * s.sel,
                      (size_t)(2 * s.sel) * sizeof(float));
        if (st != LH_OK)
            return ring_failed(t, st);
        cur = 1 - cur;
    }
    memcpy(dq, dq_acc, (size_t)s.sel * sizeof(float));
    memcpy(dk, buf[cur] + 2 * s.sel, (size_t)s.sel * sizeof(float));
    memcpy(dv, buf[cur] + 3 * s.sel, (size_t)s.sel * sizeof(float));
    return LH_OK;
}
