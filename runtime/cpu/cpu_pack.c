/*
 * cpu_pack.c - the stages of a dense chunk (dense mode on a ring or with attention hooks): the
 * chunk's sub-sequence is its tokens, so gather packs them into [B, H, S_c, D] (a query head
 * reads its kv head: kv heads are expanded) and scatter and pool_grad unpack the results (the
 * gradients of a kv head summed over its query heads under GQA).
 */
#include <string.h>

#include "cpu_internal.h"

/* sub [B,H,S,D] = the chunk's tokens of x (which has `heads` heads); query head h reads head
 * h / (H / heads). */
static void pack(const lh_config *c, const float *x, int64_t heads, float *sub) {
    int64_t D = c->head_dim, S = c->s_chunk, G = c->heads / heads;
    int64_t stride = lh_cpu_token_stride(c, heads);
    for (int64_t b = 0; b < c->batch; b++)
        for (int64_t h = 0; h < c->heads; h++) {
            const float *row = x + lh_tensor_offset(c, heads, b, 0, h / G, 0);
            float *dst = sub + (b * c->heads + h) * S * D;
            for (int64_t t = 0; t < S; t++, row += stride)
                memcpy(dst + t * D, row, (size_t)D * sizeof(float));
        }
}

/* The chunk's tokens of x (`heads` heads) = sub [B,H,S,D], each head of x the sum of the query
 * heads of its group. */
static void unpack(const lh_config *c, const float *sub, float *x, int64_t heads) {
    int64_t D = c->head_dim, S = c->s_chunk, G = c->heads / heads;
    int64_t stride = lh_cpu_token_stride(c, heads);
    for (int64_t b = 0; b < c->batch; b++)
        for (int64_t hx = 0; hx < heads; hx++) {
            float *row = x + lh_tensor_offset(c, heads, b, 0, hx, 0);
            for (int64_t t = 0; t < S; t++, row += stride)
                for (int64_t g = 0; g < G; g++) {
                    const float *src = sub + ((b * c->heads + hx * G + g) * S + t) * D;
                    if (g == 0)
                        memcpy(row, src, (size_t)D * sizeof(float));
                    else
                        for (int64_t d = 0; d < D; d++)
                            row[d] += src[d];
                }
        }
}

static const lh_config *cfg_of(void *plan) { return &((const lh_cpu_plan *)plan)->cfg; }

/* gather and regather */
static lh_status pack_qkv(void *plan, const lh_chunk *ch, void *stream) {
    (void)stream;
    const lh_config *c = cfg_of(plan);
    pack(c, ch->q, c->heads, ch->q_sel);
    pack(c, ch->k, c->kv_heads, ch->k_sel);
    pack(c, ch->v, c->kv_heads, ch->v_sel);
    return LH_OK;
}

static lh_status unpack_out(void *plan, const lh_chunk *ch, void *stream) {
    (void)stream;
    const lh_config *c = cfg_of(plan);
    unpack(c, ch->o_sel, ch->out, c->heads);
    return LH_OK;
}

static lh_status pack_dout(void *plan, const lh_chunk *ch, void *stream) {
    (void)stream;
    const lh_config *c = cfg_of(plan);
    pack(c, ch->dout, c->heads, ch->do_sel);
    return LH_OK;
}

static lh_status unpack_grads(void *plan, const lh_chunk *ch, void *stream) {
    (void)stream;
    const lh_config *c = cfg_of(plan);
    unpack(c, ch->dq_sel, ch->dq, c->heads);
    unpack(c, ch->dk_sel, ch->dk, c->kv_heads);
    unpack(c, ch->dv_sel, ch->dv, c->kv_heads);
    return LH_OK;
}

const lh_stage_ops lh_cpu_dense_stages = {
    .gather = pack_qkv,
    .scatter = unpack_out,
    .regather = pack_qkv,
    .gather_dout = pack_dout,
    .pool_grad = unpack_grads,
};
