/*
 * cuda_ring.c - ring attention on the GPU (docs/spec.md section 8), the attention step of a ring
 * plan on chunk-major sub-sequences [2, B, H, S_c, D] (lse [2, B, H, S_c] fp32).
 *
 * Forward: rank r holds chunks g0 = r and g1 = 2W-1-r. In W steps the K/V of every rank's two
 * chunks pass by (step s holds rank (r - s) mod W's); while step s computes, the next block is
 * already moving on the communication stream. Query chunk c meets key chunk c' < c fully and its
 * own chunk causally; each block's partial output and log-sum-exp are merged into an fp32
 * accumulator (kernels_mlir/ring.mlir). Backward: the same walk with the final O and lse, dQ
 * summed locally in fp32, and the fp32 dK/dV accumulators of each block travelling with it, back
 * home after W hops. Workspace layout: cuda_attention.c.
 */
#include "cuda_internal.h"

static char *at(void *base, int64_t off) { return (char *)base + off; }
static const char *cat(const void *base, int64_t off) { return (const char *)base + off; }

/* ---- kernels --------------------------------------------------------------------------------- */

static lh_status run_merge(cuda_attention *r, const void *o_part, const void *lse_part, void *acc,
                           const void *lse_in, void *lse_out, CUstream s) {
    lhk_ring_merge_args a = {.o_part = o_part, .lse_part = lse_part, .acc = acc, .lse_in = lse_in,
                             .lse_out = lse_out, .rows = r->lb / 4};
    return cuda_kernels_launch(r->kernels, LHK_RING_MERGE, &a, &(lhk_shape){0}, s);
}

/* acc (fp32) += part (DTYPE), one chunk */
static lh_status run_add(cuda_attention *r, const void *part, void *acc, CUstream s) {
    lhk_ring_add_args a = {.part = part, .acc = acc, .vecs = r->cb32 / 4 / 8};
    return cuda_kernels_launch(r->kernels, LHK_RING_ADD, &a, &(lhk_shape){0}, s);
}

/* out (DTYPE) = acc (fp32), `chunks` chunks */
static lh_status run_convert(cuda_attention *r, const void *acc, void *out, int64_t chunks, CUstream s) {
    lhk_ring_convert_args a = {.acc = acc, .out = out, .vecs = chunks * r->cb32 / 4 / 8};
    return cuda_kernels_launch(r->kernels, LHK_RING_CONVERT, &a, &(lhk_shape){0}, s);
}

/* ---- the ring -------------------------------------------------------------------------------- */

/* The built-in ring of a local ring cannot be captured into a CUDA graph: its ranks meet at a
 * host rendezvous during the call (and copy from each other's buffers with events of that call),
 * which a replay of the graph would not repeat. Refused before anything is enqueued. */
static lh_status refuse_local_capture(const cuda_attention *r, CUstream stream) {
    if (r->transport.kind != LH_RING_LOCAL) return LH_OK;
    CUstreamCaptureStatus cs = CU_STREAM_CAPTURE_STATUS_NONE;
    lh_status st = lh_cu_check(r->cu->StreamIsCapturing(stream, &cs),
                               "asking whether the stream is being captured (cuStreamIsCapturing)");
    if (st != LH_OK || cs == CU_STREAM_CAPTURE_STATUS_NONE) return st;
    return lh_fail(LH_ERROR_UNSUPPORTED,
                   "the stream is being captured into a CUDA graph, but the ring attention of a "
                   "local ring cannot be captured: its ranks meet on the host during the call, "
                   "which a replay would not repeat (run it outside capture, or capture a ring "
                   "over NCCL)");
}

lh_status cuda_ring_check(void *plan, bool first, void *stream) {
    cuda_plan *p = plan;
    cuda_attention *a = p->attn;
    if (!a || !a->has_ring) return LH_OK;
    /* Hooks run the caller's step: only a hook that calls lh_attention_* meets the built-in
     * ring, and cuda_ring_forward / _backward refuse capture there. */
    if (a->transport.kind == LH_RING_LOCAL)
        return p->cfg.forward_hook ? LH_OK : refuse_local_capture(a, stream);
    if (!first) return LH_OK;
    CUstreamCaptureStatus cs = CU_STREAM_CAPTURE_STATUS_NONE;
    lh_status st = lh_cu_check(a->cu->StreamIsCapturing(stream, &cs),
                               "asking whether the stream is being captured (cuStreamIsCapturing)");
    if (st != LH_OK) return st;
    if (cs != CU_STREAM_CAPTURE_STATUS_NONE)
        return lh_fail(LH_ERROR_BAD_STATE,
                       "the first call of a plan on an NCCL ring compares the configurations of "
                       "all ranks and waits for that on the host, which a stream being captured "
                       "into a CUDA graph does not allow: run one lh_forward of this plan outside "
                       "capture first");
    lh_config_id id;
    lh_config_id_of(&p->cfg, &id);
    return cuda_transport_confirm(&a->transport, &id, a->comm);
}

/* A driver call of the ring (the plan is named for symmetry with the other helpers). */
static lh_status cu(const cuda_attention *r, CUresult res, const char *what) {
    (void)r;
    return lh_cu_check(res, what);
}

/* Ends a ring call: the caller's stream waits for everything on the communication stream. */
static lh_status join_streams(cuda_attention *r, CUstream stream) {
    lh_status st = cu(r, r->cu->EventRecord(r->ev_end, r->comm), "recording the ring's end event");
    if (st == LH_OK)
        st = cu(r, r->cu->StreamWaitEvent(stream, r->ev_end, 0), "joining the communication stream");
    return st;
}

/* Step s of a ring walk: moves the K/V block in hand (kcur, vcur) to the next rank, landing in
 * `knext` (K, then V), on the communication stream while this step computes, and records its
 * arrival in ev_kv. `knext` was step s-1's buffer, so the communication stream first waits for
 * that step's compute. */
static lh_status send_kv(cuda_attention *r, int s, const char *kcur, const char *vcur, char *knext) {
    cuda_xfer x[2] = {{kcur, knext, (size_t)(2 * r->cb)},
                      {vcur, knext + 2 * r->cb, (size_t)(2 * r->cb)}};
    lh_status st = LH_OK;
    if (s > 0)
        st = cu(r, r->cu->StreamWaitEvent(r->comm, r->ev_compute, 0), "ordering the ring's streams");
    if (st == LH_OK) st = cuda_transport_exchange(&r->transport, x, 2, r->comm);
    if (st == LH_OK)
        st = cu(r, r->cu->EventRecord(r->ev_kv, r->comm), "recording the ring's K/V arrival");
    return st;
}

/* A walk begins: the communication stream waits for what the caller's stream has queued. */
static lh_status begin_walk(cuda_attention *r, CUstream stream) {
    lh_status st = cu(r, r->cu->EventRecord(r->ev_start, stream), "recording the ring's start");
    if (st == LH_OK)
        st = cu(r, r->cu->StreamWaitEvent(r->comm, r->ev_start, 0), "ordering the ring's streams");
    return st;
}

/* The K/V block in hand at step s: the caller's at step 0, else what step s-1 received into
 * kv[(s - 1) % 2] (K, then V); before the last step it also starts moving on (send_kv). */
static lh_status hold_kv(cuda_attention *r, int s, const void *k_sel, const void *v_sel, void *ws,
                         const int64_t kv[2], const char **kcur, const char **vcur) {
    *kcur = s == 0 ? (const char *)k_sel : at(ws, kv[(s - 1) % 2]);
    *vcur = s == 0 ? (const char *)v_sel : at(ws, kv[(s - 1) % 2]) + 2 * r->cb;
    return s < r->world - 1 ? send_kv(r, s, *kcur, *vcur, at(ws, kv[s % 2])) : LH_OK;
}

lh_status cuda_ring_forward(cuda_attention *r, const void *q_sel, const void *k_sel,
                            const void *v_sel, void *o_sel, float *lse, void *ws, CUstream stream) {
    const lh_cu_api *api = r->cu;
    const int W = r->world, me = r->rank; /* this rank */
    char *acc = at(ws, r->f_acc);
    char *lse_buf = at(ws, r->f_lse); /* [chunk j][parity] */
    int parity[2] = {0, 0};
    lh_status st = refuse_local_capture(r, stream);
    if (st != LH_OK) goto fail;
    st = cu(r, api->MemsetD32Async((CUdeviceptr)(uintptr_t)acc, 0, (size_t)(2 * r->cb32 / 4), stream),
                      "clearing the ring's accumulators");
    if (st == LH_OK)
        st = cu(r, api->MemsetD32Async((CUdeviceptr)(uintptr_t)lse_buf, 0xFF800000u,
                                       (size_t)(4 * r->lb / 4), stream),
                "setting the ring's log-sum-exp to -inf");
    if (st == LH_OK) st = begin_walk(r, stream);
    if (st != LH_OK) goto fail; /* the peers are (or will be) waiting at the rendezvous */
    for (int s = 0; s < W; s++) {
        int src = (me - s + W) % W;
        const char *kcur, *vcur;
        if ((st = hold_kv(r, s, k_sel, v_sel, ws, r->f_kv, &kcur, &vcur)) != LH_OK) goto fail;
        lh_ring_block blocks[4];
        int nblocks = lh_ring_blocks(W, me, src, blocks);
        for (int b = 0; b < nblocks && st == LH_OK; b++) {
            int j = blocks[b].q, i = blocks[b].kv;
            st = cuda_sdpa_forward(blocks[b].full ? r->full : r->causal, cat(q_sel, j * r->cb),
                                   kcur + i * r->cb, vcur + i * r->cb, at(ws, r->f_opart),
                                   (float *)at(ws, r->f_lpart), at(ws, r->f_sdpa), stream);
            char *lj = lse_buf + 2 * j * r->lb;
            if (st == LH_OK)
                st = run_merge(r, at(ws, r->f_opart), at(ws, r->f_lpart), acc + j * r->cb32,
                               lj + parity[j] * r->lb, lj + (1 - parity[j]) * r->lb, stream);
            parity[j] ^= 1;
        }
        if (st == LH_OK) st = cu(r, api->EventRecord(r->ev_compute, stream), "recording a ring step");
        if (st == LH_OK && s < W - 1)
            st = cu(r, api->StreamWaitEvent(stream, r->ev_kv, 0), "waiting for the next K/V block");
        if (st != LH_OK) goto fail;
    }
    st = run_convert(r, acc, o_sel, 2, stream);
    for (int j = 0; j < 2 && st == LH_OK; j++)
        st = cu(r, api->MemcpyAsync((CUdeviceptr)(uintptr_t)((char *)lse + j * r->lb),
                                    (CUdeviceptr)(uintptr_t)(lse_buf + (2 * j + parity[j]) * r->lb),
                                    (size_t)r->lb, stream),
                "copying the log-sum-exp out");
    if (st == LH_OK) st = join_streams(r, stream);
    if (st == LH_OK) return st;
fail:
    cuda_transport_abort(&r->transport);
    return st;
}

lh_status cuda_ring_backward(cuda_attention *r, const void *q_sel, const void *k_sel,
                             const void *v_sel, const void *o_sel, const float *lse,
                             const void *do_sel, void *dq_sel, void *dk_sel, void *dv_sel,
                             void *ws, CUstream stream) {
    const lh_cu_api *api = r->cu;
    const int W = r->world, me = r->rank; /* this rank */
    char *dq_acc = at(ws, r->b_dq);
    char *dq_part = at(ws, r->b_part), *dk_part = dq_part + r->cb, *dv_part = dq_part + 2 * r->cb;
    lh_status st = refuse_local_capture(r, stream);
    if (st != LH_OK) goto fail;
    st = cu(r, api->MemsetD32Async((CUdeviceptr)(uintptr_t)dq_acc, 0, (size_t)(2 * r->cb32 / 4), stream),
                      "clearing the dQ accumulators");
    if (st == LH_OK)
        st = cu(r, api->MemsetD32Async((CUdeviceptr)(uintptr_t)at(ws, r->b_dkv[0]), 0,
                                       (size_t)(4 * r->cb32 / 4), stream),
                "clearing the dK/dV accumulators");
    if (st == LH_OK) st = begin_walk(r, stream);
    if (st != LH_OK) goto fail; /* the peers are (or will be) waiting at the rendezvous */
    for (int s = 0; s < W; s++) {
        int src = (me - s + W) % W;
        char *dk_acc = at(ws, r->b_dkv[s % 2]), *dv_acc = dk_acc + 2 * r->cb32;
        const char *kcur, *vcur;
        if ((st = hold_kv(r, s, k_sel, v_sel, ws, r->b_kv, &kcur, &vcur)) != LH_OK) goto fail;
        bool waited = s == 0; /* step 0's accumulators are this rank's own, already cleared */
        lh_ring_block blocks[4];
        int nblocks = lh_ring_blocks(W, me, src, blocks);
        for (int b = 0; b < nblocks && st == LH_OK; b++) {
            int j = blocks[b].q, i = blocks[b].kv;
            st = cuda_sdpa_backward(blocks[b].full ? r->full : r->causal, cat(q_sel, j * r->cb),
                                    kcur + i * r->cb, vcur + i * r->cb, cat(o_sel, j * r->cb),
                                    cat(do_sel, j * r->cb), (const float *)cat(lse, j * r->lb),
                                    dq_part, dk_part, dv_part, at(ws, r->b_sdpa), stream);
            if (st == LH_OK) st = run_add(r, dq_part, dq_acc + j * r->cb32, stream);
            if (st == LH_OK && !waited) {
                /* the block's accumulators arrive while the first block computes */
                st = cu(r, api->StreamWaitEvent(stream, r->ev_acc, 0), "waiting for dK/dV accumulators");
                waited = true;
            }
            if (st == LH_OK) st = run_add(r, dk_part, dk_acc + i * r->cb32, stream);
            if (st == LH_OK) st = run_add(r, dv_part, dv_acc + i * r->cb32, stream);
        }
        if (st == LH_OK && !waited)
            st = cu(r, api->StreamWaitEvent(stream, r->ev_acc, 0), "waiting for dK/dV accumulators");
        if (st == LH_OK) st = cu(r, api->EventRecord(r->ev_compute, stream), "recording a ring step");
        if (st != LH_OK) goto fail;
        /* The block's accumulators move on (after the last step: home to their owner). */
        cuda_xfer x = {dk_acc, at(ws, r->b_dkv[(s + 1) % 2]), (size_t)(4 * r->cb32)};
        st = cu(r, api->StreamWaitEvent(r->comm, r->ev_compute, 0), "ordering the ring's streams");
        if (st == LH_OK) st = cuda_transport_exchange(&r->transport, &x, 1, r->comm);
        if (st != LH_OK) goto fail;
        st = cu(r, api->EventRecord(r->ev_acc, r->comm), "recording the accumulators' arrival");
        if (st == LH_OK && s < W - 1)
            st = cu(r, api->StreamWaitEvent(stream, r->ev_kv, 0), "waiting for the next K/V block");
        if (st != LH_OK) goto fail;
    }
    st = cu(r, api->StreamWaitEvent(stream, r->ev_acc, 0), "waiting for this rank's dK/dV");
    char *home = at(ws, r->b_dkv[W % 2]);
    if (st == LH_OK) st = run_convert(r, dq_acc, dq_sel, 2, stream);
    if (st == LH_OK) st = run_convert(r, home, dk_sel, 2, stream);
    if (st == LH_OK) st = run_convert(r, home + 2 * r->cb32, dv_sel, 2, stream);
    if (st == LH_OK) st = join_streams(r, stream);
    if (st == LH_OK) return st;
fail:
    cuda_transport_abort(&r->transport);
    return st;
}
