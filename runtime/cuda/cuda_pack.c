/* cuda_pack.c - the stages of a dense chunk on the GPU (dense mode on a ring or with attention
 * hooks): the chunk's sub-sequence is its tokens, packed into [B, H, S_c, D] by lh_ring_pack
 * (kernels_mlir/ring.mlir; a query head reads its kv head) and out again (the gradients of a kv
 * head summed over its query heads under GQA). */
#include "cuda_internal.h"

/* Strides (b, t, h) of the shard's tensors with `heads` heads, and of a chunk's sub-sequence. */
static void shard_strides(const cuda_plan *p, int64_t heads, int64_t s[3]) {
    const lh_config *c = &p->cfg;
    int64_t T = c->tensor_seq_len, d = c->head_dim;
    if (c->layout == LH_LAYOUT_BNHD) s[0] = T * heads * d, s[1] = heads * d, s[2] = d;
    else s[0] = heads * T * d, s[1] = d, s[2] = T * d;
}

static void sel_strides(const cuda_plan *p, int64_t s[3]) {
    const lh_config *c = &p->chunk;
    s[0] = c->heads * c->s_chunk * c->head_dim, s[1] = c->head_dim, s[2] = c->s_chunk * c->head_dim;
}

/* dst[b, t, h] = sum over g < group of src[b, t, (h * group + g) / expand], t < the chunk's
 * tokens, h < dst_heads. */
static lh_status launch_pack(const cuda_plan *p, const void *src, void *dst, int64_t dst_heads,
                             int64_t expand, int64_t group, const int64_t ss[3],
                             const int64_t ds[3], CUstream stream) {
    lhk_ring_pack_args a = {.src = src, .dst = dst, .tokens = p->chunk.chunk_len,
                            .expand = expand, .group = group, .s_sb = ss[0], .s_st = ss[1],
                            .s_sh = ss[2], .d_sb = ds[0], .d_st = ds[1], .d_sh = ds[2]};
    lhk_shape shape = {.batch = p->cfg.batch, .heads = dst_heads};
    return cuda_kernels_launch(&p->kernels, LHK_RING_PACK, &a, &shape, stream);
}

/* A chunk of the shard (q-like, or kv-like: its heads repeated per query head) -> its
 * sub-sequence. */
static lh_status pack_in(const cuda_plan *p, const void *src, void *dst, bool kv, CUstream s) {
    const lh_config *c = &p->cfg;
    int64_t ss[3], ds[3];
    shard_strides(p, kv ? c->kv_heads : c->heads, ss);
    sel_strides(p, ds);
    return launch_pack(p, src, dst, c->heads, kv ? c->heads / c->kv_heads : 1, 1, ss, ds, s);
}

/* A chunk's sub-sequence -> the shard; kv sums each kv head's group of query heads. */
static lh_status pack_out(const cuda_plan *p, const void *src, void *dst, bool kv, CUstream s) {
    const lh_config *c = &p->cfg;
    int64_t ss[3], ds[3];
    sel_strides(p, ss);
    shard_strides(p, kv ? c->kv_heads : c->heads, ds);
    return launch_pack(p, src, dst, kv ? c->kv_heads : c->heads, 1,
                       kv ? c->heads / c->kv_heads : 1, ss, ds, s);
}

/* gather and regather */
static lh_status pack_qkv(void *plan, const lh_chunk *ch, void *stream) {
    lh_status st = pack_in(plan, ch->q, ch->q_sel, false, stream);
    if (st == LH_OK) st = pack_in(plan, ch->k, ch->k_sel, true, stream);
    if (st == LH_OK) st = pack_in(plan, ch->v, ch->v_sel, true, stream);
    return st;
}

static lh_status unpack_out(void *plan, const lh_chunk *ch, void *stream) {
    return pack_out(plan, ch->o_sel, ch->out, false, stream);
}

static lh_status pack_dout(void *plan, const lh_chunk *ch, void *stream) {
    return pack_in(plan, ch->dout, ch->do_sel, false, stream);
}

static lh_status unpack_grads(void *plan, const lh_chunk *ch, void *stream) {
    lh_status st = pack_out(plan, ch->dq_sel, ch->dq, false, stream);
    if (st == LH_OK) st = pack_out(plan, ch->dk_sel, ch->dk, true, stream);
    if (st == LH_OK) st = pack_out(plan, ch->dv_sel, ch->dv, true, stream);
    return st;
}

const lh_stage_ops cuda_dense_stages = {
    .gather = pack_qkv,
    .scatter = unpack_out,
    .regather = pack_qkv,
    .gather_dout = pack_dout,
    .pool_grad = unpack_grads,
};
