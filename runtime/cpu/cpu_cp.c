/*
 * cpu_cp.c - lh_forward / lh_backward of plans that run the attention as a step of its own: plans
 * bound to a ring (docs/spec.md section 8) and plans with attention hooks.
 *
 * Per local chunk j (C = 2 on a ring, else 1; chunk j's tokens start at token j * N/(2W) of the
 * shard) the stages run with the chunk's plan (plan->chunk) into chunk-major sub-sequences
 * [C, B, H, S_c, D]; then the attention step runs over all of them at once, by the hook when one
 * is set, else the built-in one (the ring on a ring); then each chunk scatters its part. Dense
 * mode: a chunk's sub-sequence is its tokens (copied in, kv heads expanded to query heads).
 *
 * Forward workspace (each region 64-aligned):
 *   Lighthouse: scores_q [B,H,S_total_c] | scores_k [B,Hkv,S_total_c] | indices i32 [C,B,H,S_c] |
 *               q_sel, k_sel, v_sel [C,B,H,S_c,D] | attention workspace
 *   dense:      q_sel, k_sel, v_sel, o_sel [C,B,H,S_c,D] | attention workspace
 * Backward: q_sel, k_sel, v_sel, dO_sel, dq_sel, dk_sel, dv_sel (dense: and o_sel) | attention
 * workspace. The attention workspace holds at least the per-thread scratch, which the selection
 * borrows (from its start) before the attention runs.
 * `saved` (chunk-major): Lighthouse: indices | O_sel | LSE | tag; dense: LSE | tag (the tag of
 * cpu_saved.c is written last; lh_backward checks it, and the indices, before anything else).
 *
 * Indices are staged in the workspace and copied to `saved` only after the attention step has
 * succeeded, so a failing ring leaves the caller's saved and out untouched (a failing hook may
 * have written O_sel and LSE, which it was given).
 */
#include <string.h>

#include "cpu_ring.h"

static size_t floats(int64_t n) { return lh_cpu_round64((size_t)n * sizeof(float)); }

static int64_t sel_floats(const lh_config *c) {
    return c->chunks * c->batch * c->heads * c->s_chunk * c->head_dim;
}

static int64_t chunk_rows(const lh_config *c) { return c->batch * c->heads * c->s_chunk; }

size_t lh_cpu_cp_forward_workspace_bytes(const lh_cpu_plan *plan) {
    const lh_config *c = &plan->cfg;
    size_t attn = lh_cpu_attention_workspace_bytes(plan), sel = floats(sel_floats(c));
    if (c->mode == LH_MODE_DENSE)
        return 4 * sel + attn;
    return floats(c->batch * c->heads * c->s_total) + floats(c->batch * c->kv_heads * c->s_total) +
           floats(c->chunks * chunk_rows(c)) + 3 * sel + attn;
}

size_t lh_cpu_cp_backward_workspace_bytes(const lh_cpu_plan *plan) {
    const lh_config *c = &plan->cfg;
    size_t sel = floats(sel_floats(c));
    return (c->mode == LH_MODE_DENSE ? 8 : 7) * sel + lh_cpu_attention_workspace_bytes(plan);
}

/* Element offset of chunk j's first token in a tensor of `heads` heads of the shard. */
static int64_t chunk_offset(const lh_config *c, int64_t heads, int64_t j) {
    return lh_tensor_offset(c, heads, 0, j * c->chunk_len, 0, 0);
}

/* Dense: sub-sequence rows [C,B,H,S_c,D] <-> the shard's tokens. x has `heads` heads; query
 * head h reads (to_sub) head h / (H / heads). from_sub writes x's heads, summing the query heads
 * of a group (kv gradients under GQA). */
static void to_sub(const lh_config *c, const float *x, int64_t heads, float *sub) {
    int64_t D = c->head_dim, S = c->s_chunk, G = c->heads / heads;
    int64_t stride = lh_cpu_token_stride(c, heads);
    for (int64_t j = 0; j < c->chunks; j++)
        for (int64_t b = 0; b < c->batch; b++)
            for (int64_t h = 0; h < c->heads; h++) {
                const float *row = x + chunk_offset(c, heads, j) +
                                   lh_tensor_offset(c, heads, b, 0, h / G, 0);
                float *dst = sub + ((j * c->batch + b) * c->heads + h) * S * D;
                for (int64_t t = 0; t < S; t++, row += stride)
                    memcpy(dst + t * D, row, (size_t)D * sizeof(float));
            }
}

static void from_sub(const lh_config *c, const float *sub, float *x, int64_t heads) {
    int64_t D = c->head_dim, S = c->s_chunk, G = c->heads / heads;
    int64_t stride = lh_cpu_token_stride(c, heads);
    for (int64_t j = 0; j < c->chunks; j++)
        for (int64_t b = 0; b < c->batch; b++)
            for (int64_t hx = 0; hx < heads; hx++) {
                float *row =
                    x + chunk_offset(c, heads, j) + lh_tensor_offset(c, heads, b, 0, hx, 0);
                for (int64_t t = 0; t < S; t++, row += stride)
                    for (int64_t g = 0; g < G; g++) {
                        const float *src =
                            sub + (((j * c->batch + b) * c->heads + hx * G + g) * S + t) * D;
                        if (g == 0)
                            memcpy(row, src, (size_t)D * sizeof(float));
                        else
                            for (int64_t d = 0; d < D; d++)
                                row[d] += src[d];
                    }
            }
}

/* Runs the attention step: the hook if the plan has one, else the built-in step. A local ring
 * is aborted on failure so that peers waiting in a rendezvous return instead of timing out. */
static lh_status step_forward(const lh_cpu_plan *plan, const float *q, const float *k,
                              const float *v, float *o, float *lse, char *attn_ws) {
    const lh_config *c = &plan->cfg;
    lh_status st;
    if (c->forward_hook) {
        st = c->forward_hook(c->hook_user_data, c->handle, q, k, v, o, lse, NULL);
        if (st != LH_OK && !*lh_error_message())
            lh_fail(st, "the forward attention hook returned %s", lh_status_string(st));
    } else {
        st = lh_cpu_attention_forward((void *)plan, q, k, v, o, lse, attn_ws, NULL);
    }
    if (st != LH_OK && c->ring && c->ring->kind == LH_RING_LOCAL)
        lh_ring_local_abort(c->ring);
    return st;
}

static lh_status step_backward(const lh_cpu_plan *plan, const float *q, const float *k,
                               const float *v, const float *o, const float *lse, const float *dout,
                               float *dq, float *dk, float *dv, char *attn_ws) {
    const lh_config *c = &plan->cfg;
    lh_status st;
    if (c->backward_hook) {
        st = c->backward_hook(c->hook_user_data, c->handle, q, k, v, o, lse, dout, dq, dk, dv,
                              NULL);
        if (st != LH_OK && !*lh_error_message())
            lh_fail(st, "the backward attention hook returned %s", lh_status_string(st));
    } else {
        st = lh_cpu_attention_backward((void *)plan, q, k, v, o, lse, dout, dq, dk, dv, attn_ws,
                                       NULL);
    }
    if (st != LH_OK && c->ring && c->ring->kind == LH_RING_LOCAL)
        lh_ring_local_abort(c->ring);
    return st;
}

lh_status lh_cpu_cp_forward(const lh_cpu_plan *plan, const float *q, const float *k,
                            const float *v, float *out, char *saved, char *ws) {
    const lh_config *c = &plan->cfg;
    const lh_cpu_plan *cp = plan->chunk;
    int64_t H = c->heads, Hkv = c->kv_heads, rows = chunk_rows(c), D = c->head_dim;
    size_t sel = floats(sel_floats(c));
    float *lse = (float *)(saved + plan->saved_lse_off);

    if (c->mode == LH_MODE_DENSE) {
        float *q_sel = (float *)ws, *k_sel = (float *)(ws + sel), *v_sel = (float *)(ws + 2 * sel);
        float *o_sel = (float *)(ws + 3 * sel);
        to_sub(c, q, H, q_sel);
        to_sub(c, k, Hkv, k_sel);
        to_sub(c, v, Hkv, v_sel);
        lh_status st = step_forward(plan, q_sel, k_sel, v_sel, o_sel, lse, ws + 4 * sel);
        if (st != LH_OK)
            return st;
        from_sub(c, o_sel, out, H);
        lh_cpu_saved_seal(plan, saved);
        return LH_OK;
    }

    float *scores_q = (float *)ws;
    float *scores_k = (float *)(ws + floats(c->batch * H * c->s_total));
    int32_t *idx = (int32_t *)((char *)scores_k + floats(c->batch * Hkv * c->s_total));
    float *q_sel = (float *)((char *)idx + floats(c->chunks * rows));
    float *k_sel = (float *)((char *)q_sel + sel), *v_sel = (float *)((char *)k_sel + sel);
    char *attn_ws = (char *)v_sel + sel;   /* at least the per-thread scratch */
    for (int64_t j = 0; j < c->chunks; j++) {
        const float *qj = q + chunk_offset(c, H, j);
        const float *kj = k + chunk_offset(c, Hkv, j), *vj = v + chunk_offset(c, Hkv, j);
        lh_cpu_scores(cp, qj, kj, scores_q, scores_k);
        lh_cpu_select(cp, scores_q, scores_k, idx + j * rows, attn_ws);
        lh_cpu_gather(cp, qj, kj, vj, idx + j * rows, q_sel + j * rows * D, k_sel + j * rows * D,
                      v_sel + j * rows * D);
    }
    float *o_sel = (float *)(saved + plan->saved_o_off);
    lh_status st = step_forward(plan, q_sel, k_sel, v_sel, o_sel, lse, attn_ws);
    if (st != LH_OK)
        return st;
    int32_t *saved_idx = (int32_t *)(saved + plan->saved_idx_off);
    memcpy(saved_idx, idx, (size_t)(c->chunks * rows) * sizeof(int32_t));
    for (int64_t j = 0; j < c->chunks; j++)
        lh_cpu_scatter(cp, saved_idx + j * rows, o_sel + j * rows * D, out + chunk_offset(c, H, j));
    lh_cpu_saved_seal(plan, saved);
    return LH_OK;
}

lh_status lh_cpu_cp_backward(const lh_cpu_plan *plan, const float *q, const float *k,
                             const float *v, const float *out, const float *dout,
                             const char *saved, float *dq, float *dk, float *dv, char *ws) {
    const lh_config *c = &plan->cfg;
    const lh_cpu_plan *cp = plan->chunk;
    int64_t H = c->heads, Hkv = c->kv_heads, rows = chunk_rows(c), D = c->head_dim;
    size_t sel = floats(sel_floats(c));
    float *buf[8];
    for (int i = 0; i < 8; i++)
        buf[i] = (float *)(ws + (size_t)i * sel);
    float *q_sel = buf[0], *k_sel = buf[1], *v_sel = buf[2], *do_sel = buf[3];
    float *dq_sel = buf[4], *dk_sel = buf[5], *dv_sel = buf[6];
    const float *lse = (const float *)(saved + plan->saved_lse_off);
    lh_status checked = lh_cpu_saved_check(plan, saved);
    if (checked != LH_OK) {
        /* refused before any rendezvous: the peers must not wait for this rank */
        if (c->ring && c->ring->kind == LH_RING_LOCAL)
            lh_ring_local_abort(c->ring);
        return checked;
    }

    if (c->mode == LH_MODE_DENSE) {
        float *o_sel = buf[7];
        to_sub(c, q, H, q_sel);
        to_sub(c, k, Hkv, k_sel);
        to_sub(c, v, Hkv, v_sel);
        to_sub(c, out, H, o_sel);
        to_sub(c, dout, H, do_sel);
        lh_status st = step_backward(plan, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel, dk_sel,
                                     dv_sel, ws + 8 * sel);
        if (st != LH_OK)
            return st;
        from_sub(c, dq_sel, dq, H);
        from_sub(c, dk_sel, dk, Hkv);
        from_sub(c, dv_sel, dv, Hkv);
        return LH_OK;
    }

    const int32_t *idx = (const int32_t *)(saved + plan->saved_idx_off);
    const float *o_sel = (const float *)(saved + plan->saved_o_off);
    for (int64_t j = 0; j < c->chunks; j++) {
        int64_t oq = chunk_offset(c, H, j), okv = chunk_offset(c, Hkv, j);
        lh_cpu_gather(cp, q + oq, k + okv, v + okv, idx + j * rows, q_sel + j * rows * D,
                      k_sel + j * rows * D, v_sel + j * rows * D);
        lh_cpu_gather_dout(cp, idx + j * rows, dout + oq, do_sel + j * rows * D);
    }
    lh_status st = step_backward(plan, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel, dk_sel,
                                 dv_sel, ws + 7 * sel);
    if (st != LH_OK)
        return st;
    for (int64_t j = 0; j < c->chunks; j++) {
        int64_t oq = chunk_offset(c, H, j), okv = chunk_offset(c, Hkv, j);
        lh_cpu_unpool_grads(cp, idx + j * rows, dq_sel + j * rows * D, dk_sel + j * rows * D,
                            dv_sel + j * rows * D, dq + oq, dk + okv, dv + okv);
    }
    return LH_OK;
}
