/* cuda_ring.c - the attention step: causal SDPA without a ring, ring attention on one (see
 * cuda_ring.h for the algorithm). */
#include "cuda_ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algorithm.h"
#include "compiler.h"
#include "cuda_layout.h"

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static char *at(void *base, int64_t off) { return (char *)base + off; }
static const char *cat(const void *base, int64_t off) { return (const char *)base + off; }

/* ---- plan ------------------------------------------------------------------------------------ */

static void chip_of(int sm, char *out, size_t cap) {
    if (sm == 100 || sm == 103) snprintf(out, cap, "sm_%da", sm);
    else snprintf(out, cap, "sm_%d", sm);
}

static lh_status load_kernels(cuda_ring *r, int sm, const lh_context_options *options) {
    lhc_kernel_request req;
    const char *dtype = r->cfg.dtype == LH_DTYPE_FLOAT16 ? "f16" : "bf16";
    lh_status st = lhc_ring_kernel(dtype, (int)r->cfg.head_dim, &req);
    if (st != LH_OK) return st;
    lhc_cache *cache = NULL;
    st = lhc_cache_create(&cache);
    if (st != LH_OK) return st;
    if (options) {
        lhc_cache_set_disk_enabled(cache, options->cache_enabled);
        st = lhc_cache_set_dir(cache, options->cache_dir);
    }
    char chip[16];
    chip_of(sm, chip, sizeof chip);
    const lhc_kernel *k = NULL;
    if (st == LH_OK) st = lhc_compile(cache, req.kernel, req.constants, chip, &k);
    if (st == LH_OK) st = lh_cu_module_load(r->cu, k->ptx, &r->module);
    lhc_cache_destroy(cache);
    if (st != LH_OK) return lh_fail_context(st, "ring");
    st = lh_cu_module_function(r->cu, &r->module, "lh_ring_merge", &r->merge);
    if (st == LH_OK) st = lh_cu_module_function(r->cu, &r->module, "lh_ring_add", &r->add);
    if (st == LH_OK) st = lh_cu_module_function(r->cu, &r->module, "lh_ring_convert", &r->convert);
    if (st == LH_OK) st = lh_cu_module_function(r->cu, &r->module, "lh_ring_pack", &r->pack);
    r->threads = (unsigned int)req.block_threads;
    r->rows_per_block = (unsigned int)req.tokens_per_block;
    return st;
}

static lh_status build_sdpa(cuda_ring *r, const lh_cudnn_api *dnn, cudnnHandle_t handle,
                            bool full, lh_sdpa_plan **out) {
    const lh_config *c = &r->cfg;
    int64_t s = c->s_chunk;
    lh_sdpa_shape shape = {.b = c->batch, .h = c->heads, .hkv = c->heads, .s = s,
                           .d = c->head_dim, .dtype = c->dtype, .scale = c->scale, .full = full};
    lh_sdpa_layout_strides(false, c->heads, s, c->head_dim, shape.q_strides);
    lh_sdpa_layout_strides(false, c->heads, s, c->head_dim, shape.kv_strides);
    lh_status st = cuda_sdpa_plan_create(dnn, handle, &shape, out);
    return st == LH_OK ? st
                       : lh_fail_context(st, full ? "building the ring's full-block SDPA plan"
                                                  : "building the causal SDPA plan of a chunk");
}

static void layout(cuda_ring *r) {
    const lh_config *c = &r->cfg;
    int64_t rows = c->batch * c->heads * c->s_chunk;
    r->cb = rows * c->head_dim * (int64_t)lh_dtype_size(c->dtype);
    r->cb32 = rows * c->head_dim * 4;
    r->lb = rows * 4;
    if (!r->has_ring) {
        r->workspace_bytes = max64(cuda_sdpa_fwd_workspace_bytes(r->causal),
                                   cuda_sdpa_bwd_workspace_bytes(r->causal));
        return;
    }
    int64_t fws = max64(cuda_sdpa_fwd_workspace_bytes(r->causal), cuda_sdpa_fwd_workspace_bytes(r->full));
    int64_t bws = max64(cuda_sdpa_bwd_workspace_bytes(r->causal), cuda_sdpa_bwd_workspace_bytes(r->full));
    int64_t end = 0;
    /* forward: two K/V blocks (K of both chunks, then V of both), one block's partial result, the
     * fp32 accumulators of both chunks and two lse buffers per chunk (the merge alternates) */
    r->f_kv[0] = lh_region(&end, 4 * r->cb);
    r->f_kv[1] = lh_region(&end, 4 * r->cb);
    r->f_opart = lh_region(&end, r->cb);
    r->f_lpart = lh_region(&end, r->lb);
    r->f_acc = lh_region(&end, 2 * r->cb32);
    r->f_lse = lh_region(&end, 4 * r->lb);
    r->f_sdpa = lh_region(&end, fws);
    r->fwd_bytes = end;
    /* backward: K/V blocks, dK/dV accumulators of a travelling block (dK of both chunks, then dV),
     * dQ accumulators, the partial dq, dk, dv of one block */
    end = 0;
    r->b_kv[0] = lh_region(&end, 4 * r->cb);
    r->b_kv[1] = lh_region(&end, 4 * r->cb);
    r->b_dkv[0] = lh_region(&end, 4 * r->cb32);
    r->b_dkv[1] = lh_region(&end, 4 * r->cb32);
    r->b_dq = lh_region(&end, 2 * r->cb32);
    r->b_part = lh_region(&end, 3 * r->cb);
    r->b_sdpa = lh_region(&end, bws);
    r->bwd_bytes = end;
    r->workspace_bytes = max64(r->fwd_bytes, r->bwd_bytes);
}

lh_status cuda_ring_create(const lh_cu_api *cu, int sm, const lh_cudnn_api *dnn,
                           cudnnHandle_t handle, const lh_context_options *options,
                           const lh_config *cfg, bool need_kernels, lh_sdpa_plan *causal,
                           cuda_ring **out) {
    cuda_ring *r = calloc(1, sizeof *r);
    if (!r) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "allocating the ring attention plan failed");
    r->cu = cu;
    r->cfg = *cfg;
    if (!(r->cfg.scale > 0.0)) r->cfg.scale = lh_default_softmax_scale(cfg->head_dim);
    r->has_ring = cfg->ring != NULL;
    r->world = r->has_ring ? (int)cfg->cp_world : 1;
    r->rank = r->has_ring ? (int)cfg->cp_rank : 0;
    r->causal = causal;
    r->borrowed_causal = causal != NULL;
    lh_status st = causal ? LH_OK : build_sdpa(r, dnn, handle, false, &r->causal);
    if (st == LH_OK && (need_kernels || r->has_ring)) st = load_kernels(r, sm, options);
    if (st == LH_OK && r->has_ring) st = build_sdpa(r, dnn, handle, true, &r->full);
    if (st == LH_OK && r->has_ring) {
        st = lh_cu_check(cu->StreamCreate(&r->comm, CU_STREAM_NON_BLOCKING),
                         "creating the ring's communication stream");
        CUevent *evs[] = {&r->ev_start, &r->ev_kv, &r->ev_acc, &r->ev_compute, &r->ev_end};
        for (int i = 0; i < 5 && st == LH_OK; i++)
            st = lh_cu_check(cu->EventCreate(evs[i], CU_EVENT_DISABLE_TIMING),
                             "creating the ring's events");
        if (st == LH_OK) st = cuda_transport_init(&r->transport, cu, cfg->ring, r->rank);
    }
    if (st != LH_OK) {
        cuda_ring_destroy(r);
        return st;
    }
    layout(r);
    *out = r;
    return LH_OK;
}

void cuda_ring_destroy(cuda_ring *r) {
    if (!r) return;
    cuda_transport_destroy(&r->transport);
    CUevent evs[] = {r->ev_start, r->ev_kv, r->ev_acc, r->ev_compute, r->ev_end};
    for (int i = 0; i < 5; i++)
        if (evs[i]) r->cu->EventDestroy(evs[i]);
    if (r->comm) r->cu->StreamDestroy(r->comm);
    if (!r->borrowed_causal) cuda_sdpa_plan_destroy(r->causal);
    cuda_sdpa_plan_destroy(r->full);
    lh_cu_module_unload(r->cu, &r->module);
    free(r);
}

/* ---- kernels --------------------------------------------------------------------------------- */

static unsigned int blocks(int64_t items, unsigned int per_block) {
    return (unsigned int)((items + per_block - 1) / per_block);
}

static lh_status run_merge(cuda_ring *r, const void *o_part, const void *lse_part, void *acc,
                           const void *lse_in, void *lse_out, CUstream s) {
    int64_t rows = r->lb / 4;
    void *params[] = {&o_part, &lse_part, &acc, &lse_in, &lse_out, &rows};
    lh_cu_launch l = {.grid = {blocks(rows, r->rows_per_block), 1, 1}, .block = {r->threads, 1, 1}};
    return lh_cu_launch_kernel(r->cu, r->merge, "lh_ring_merge", &l, s, params);
}

static lh_status run_flat(cuda_ring *r, CUfunction fn, const char *name, const void *a, void *b,
                          int64_t elems, CUstream s) {
    int64_t vecs = elems / 8;
    void *params[] = {&a, &b, &vecs};
    lh_cu_launch l = {.grid = {blocks(vecs, r->threads), 1, 1}, .block = {r->threads, 1, 1}};
    return lh_cu_launch_kernel(r->cu, fn, name, &l, s, params);
}

/* acc (fp32) += part (DTYPE), one chunk */
static lh_status run_add(cuda_ring *r, const void *part, void *acc, CUstream s) {
    return run_flat(r, r->add, "lh_ring_add", part, acc, r->cb32 / 4, s);
}

/* out (DTYPE) = acc (fp32), `chunks` chunks */
static lh_status run_convert(cuda_ring *r, const void *acc, void *out, int64_t chunks, CUstream s) {
    return run_flat(r, r->convert, "lh_ring_convert", acc, out, chunks * r->cb32 / 4, s);
}

lh_status cuda_ring_pack(cuda_ring *r, const void *src, void *dst, int64_t tokens,
                         int64_t dst_heads, int64_t expand, int64_t group, const int64_t src_s[3],
                         const int64_t dst_s[3], CUstream stream) {
    int64_t a[8] = {tokens, expand, group, src_s[0], src_s[1], src_s[2], dst_s[0], dst_s[1]};
    int64_t dsh = dst_s[2];
    void *params[] = {&src, &dst, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6], &a[7], &dsh};
    lh_cu_launch l = {.grid = {blocks(tokens, r->rows_per_block), (unsigned int)dst_heads,
                               (unsigned int)r->cfg.batch},
                      .block = {r->threads, 1, 1}};
    return lh_cu_launch_kernel(r->cu, r->pack, "lh_ring_pack", &l, stream, params);
}

/* ---- the ring --------------------------------------------------------------------------------- */

/* Global position of local chunk j of rank `rank`: chunk `rank`, then chunk 2W-1-rank. */
static int global_chunk(const cuda_ring *r, int rank, int j) {
    return j == 0 ? rank : 2 * r->world - 1 - rank;
}

/* A driver call of the ring (the plan is named for symmetry with the other helpers). */
static lh_status cu(const cuda_ring *r, CUresult res, const char *what) {
    (void)r;
    return lh_cu_check(res, what);
}

/* Ends a ring call: the caller's stream waits for everything on the communication stream. */
static lh_status join_streams(cuda_ring *r, CUstream stream) {
    lh_status st = cu(r, r->cu->EventRecord(r->ev_end, r->comm), "recording the ring's end event");
    if (st == LH_OK)
        st = cu(r, r->cu->StreamWaitEvent(stream, r->ev_end, 0), "joining the communication stream");
    return st;
}

/* Step s of a ring walk: moves the K/V block in hand (kcur, vcur) to the next rank, landing in
 * `knext` (K, then V), on the communication stream while this step computes, and records its
 * arrival in ev_kv. `knext` was step s-1's buffer, so the communication stream first waits for
 * that step's compute. */
static lh_status send_kv(cuda_ring *r, int s, const char *kcur, const char *vcur, char *knext) {
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

static lh_status ring_forward(cuda_ring *r, const void *q_sel, const void *k_sel,
                              const void *v_sel, void *o_sel, float *lse, void *ws,
                              CUstream stream) {
    const lh_cu_api *api = r->cu;
    const int W = r->world, me = r->rank;
    char *acc = at(ws, r->f_acc);
    char *lse_buf = at(ws, r->f_lse); /* [chunk j][parity] */
    int parity[2] = {0, 0};
    lh_status st = cu(r, api->MemsetD32Async((CUdeviceptr)(uintptr_t)acc, 0, (size_t)(2 * r->cb32 / 4), stream),
                      "clearing the ring's accumulators");
    if (st == LH_OK)
        st = cu(r, api->MemsetD32Async((CUdeviceptr)(uintptr_t)lse_buf, 0xFF800000u,
                                       (size_t)(4 * r->lb / 4), stream),
                "setting the ring's log-sum-exp to -inf");
    if (st == LH_OK) st = cu(r, api->EventRecord(r->ev_start, stream), "recording the ring's start");
    if (st == LH_OK) st = cu(r, api->StreamWaitEvent(r->comm, r->ev_start, 0), "ordering the ring's streams");
    if (st != LH_OK) goto fail; /* the peers are (or will be) waiting at the rendezvous */
    for (int s = 0; s < W; s++) {
        int src = (me - s + W) % W;
        const char *kcur = s == 0 ? (const char *)k_sel : at(ws, r->f_kv[(s - 1) % 2]);
        const char *vcur = s == 0 ? (const char *)v_sel : at(ws, r->f_kv[(s - 1) % 2]) + 2 * r->cb;
        if (s < W - 1 && (st = send_kv(r, s, kcur, vcur, at(ws, r->f_kv[s % 2]))) != LH_OK)
            goto fail;
        for (int j = 0; j < 2 && st == LH_OK; j++) {
            int gq = global_chunk(r, me, j);
            for (int i = 0; i < 2 && st == LH_OK; i++) {
                int gk = global_chunk(r, src, i);
                if (gk > gq) continue;
                lh_sdpa_plan *plan = gk == gq ? r->causal : r->full;
                st = cuda_sdpa_forward(plan, cat(q_sel, j * r->cb), kcur + i * r->cb,
                                       vcur + i * r->cb, at(ws, r->f_opart),
                                       (float *)at(ws, r->f_lpart), at(ws, r->f_sdpa), stream);
                char *lj = lse_buf + 2 * j * r->lb;
                if (st == LH_OK)
                    st = run_merge(r, at(ws, r->f_opart), at(ws, r->f_lpart), acc + j * r->cb32,
                                   lj + parity[j] * r->lb, lj + (1 - parity[j]) * r->lb, stream);
                parity[j] ^= 1;
            }
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

static lh_status ring_backward(cuda_ring *r, const void *q_sel, const void *k_sel,
                               const void *v_sel, const void *o_sel, const float *lse,
                               const void *do_sel, void *dq_sel, void *dk_sel, void *dv_sel,
                               void *ws, CUstream stream) {
    const lh_cu_api *api = r->cu;
    const int W = r->world, me = r->rank;
    char *dq_acc = at(ws, r->b_dq);
    char *dq_part = at(ws, r->b_part), *dk_part = dq_part + r->cb, *dv_part = dq_part + 2 * r->cb;
    lh_status st = cu(r, api->MemsetD32Async((CUdeviceptr)(uintptr_t)dq_acc, 0, (size_t)(2 * r->cb32 / 4), stream),
                      "clearing the dQ accumulators");
    if (st == LH_OK)
        st = cu(r, api->MemsetD32Async((CUdeviceptr)(uintptr_t)at(ws, r->b_dkv[0]), 0,
                                       (size_t)(4 * r->cb32 / 4), stream),
                "clearing the dK/dV accumulators");
    if (st == LH_OK) st = cu(r, api->EventRecord(r->ev_start, stream), "recording the ring's start");
    if (st == LH_OK) st = cu(r, api->StreamWaitEvent(r->comm, r->ev_start, 0), "ordering the ring's streams");
    if (st != LH_OK) goto fail; /* the peers are (or will be) waiting at the rendezvous */
    for (int s = 0; s < W; s++) {
        int src = (me - s + W) % W;
        const char *kcur = s == 0 ? (const char *)k_sel : at(ws, r->b_kv[(s - 1) % 2]);
        const char *vcur = s == 0 ? (const char *)v_sel : at(ws, r->b_kv[(s - 1) % 2]) + 2 * r->cb;
        char *dk_acc = at(ws, r->b_dkv[s % 2]), *dv_acc = dk_acc + 2 * r->cb32;
        if (s < W - 1 && (st = send_kv(r, s, kcur, vcur, at(ws, r->b_kv[s % 2]))) != LH_OK)
            goto fail;
        bool waited = s == 0; /* step 0's accumulators are this rank's own, already cleared */
        for (int j = 0; j < 2 && st == LH_OK; j++) {
            int gq = global_chunk(r, me, j);
            for (int i = 0; i < 2 && st == LH_OK; i++) {
                int gk = global_chunk(r, src, i);
                if (gk > gq) continue;
                lh_sdpa_plan *plan = gk == gq ? r->causal : r->full;
                st = cuda_sdpa_backward(plan, cat(q_sel, j * r->cb), kcur + i * r->cb,
                                        vcur + i * r->cb, cat(o_sel, j * r->cb),
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

/* ---- entry points ----------------------------------------------------------------------------- */

void cuda_ring_abort(cuda_ring *r) {
    if (r->has_ring) cuda_transport_abort(&r->transport);
}

lh_status cuda_ring_forward(cuda_ring *r, const void *q_sel, const void *k_sel, const void *v_sel,
                            void *o_sel, float *lse, void *workspace, CUstream stream) {
    if (!r->has_ring)
        return cuda_sdpa_forward(r->causal, q_sel, k_sel, v_sel, o_sel, lse, workspace, stream);
    return ring_forward(r, q_sel, k_sel, v_sel, o_sel, lse, workspace, stream);
}

lh_status cuda_ring_backward(cuda_ring *r, const void *q_sel, const void *k_sel,
                             const void *v_sel, const void *o_sel, const float *lse,
                             const void *do_sel, void *dq_sel, void *dk_sel, void *dv_sel,
                             void *workspace, CUstream stream) {
    if (!r->has_ring)
        return cuda_sdpa_backward(r->causal, q_sel, k_sel, v_sel, o_sel, do_sel, lse, dq_sel,
                                  dk_sel, dv_sel, workspace, stream);
    return ring_backward(r, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel, dk_sel, dv_sel,
                         workspace, stream);
}
