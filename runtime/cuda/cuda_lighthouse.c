/*
 * cuda_lighthouse.c - creating a Lighthouse plan on the GPU: the kernels (compiled through
 * compiler.h, loaded through cuda_module.h), the cuDNN SDPA plan of the sub-sequence, and the
 * layout of `saved` and the workspaces. Running it is cuda_lighthouse_run.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algorithm.h"
#include "cuda_layout.h"
#include "cuda_lighthouse.h"

/* The PTX target of a device: sm_90 for Hopper, the architecture-specific sm_100a / sm_103a for
 * Blackwell datacenter parts (the kernels use nothing specific, but that is what ptxas and the
 * driver expect for them), the plain sm_NN otherwise. */
static void chip_of(int sm, char *out, size_t cap) {
    if (sm == 100 || sm == 103) snprintf(out, cap, "sm_%da", sm);
    else snprintf(out, cap, "sm_%d", sm);
}

static const struct {
    const char *kernel, *entry;
    int module;
} kernel_table[LH_LK_COUNT] = {
    [LH_LK_SCORES] = {"pyramid_scores", "lh_pyramid_scores", 0},
    [LH_LK_SELECT] = {"select_order", "lh_select_order", 1},
    [LH_LK_INVERT] = {"select_order", "lh_invert_indices", 1},
    [LH_LK_GATHER] = {"gather", "lh_gather", 2},
    [LH_LK_GATHER_DOUT] = {"gather", "lh_gather_dout", 2},
    [LH_LK_SCATTER] = {"scatter", "lh_scatter", 3},
    [LH_LK_POOL_GRAD] = {"pool_grad", "lh_pool_grad", 4},
};

const char *cuda_lighthouse_entry(int kernel) { return kernel_table[kernel].entry; }

static lh_status open_cache(const cuda_lighthouse_env *env, lhc_cache **cache, int *owned) {
    *owned = 0;
    *cache = env->cache;
    if (*cache) return LH_OK;
    lh_status st = lhc_cache_create(cache);
    if (st != LH_OK) return st;
    *owned = 1;
    if (env->options) {
        lhc_cache_set_disk_enabled(*cache, env->options->cache_enabled);
        st = lhc_cache_set_dir(*cache, env->options->cache_dir);
        if (st != LH_OK) {
            lhc_cache_destroy(*cache);
            *cache = NULL;
        }
    }
    return st;
}

/* Compiles (or finds in the cache) every kernel the plan needs and loads each into the current
 * context. */
static lh_status load_kernels(cuda_lighthouse *lh, const cuda_lighthouse_env *env) {
    const lh_config *c = &lh->cfg;
    lhc_plan_params params = {.pooling = (int)c->pooling, .levels = (int)c->levels,
                              .head_dim = (int)c->head_dim,
                              .dtype = c->dtype == LH_DTYPE_FLOAT16 ? "f16" : "bf16",
                              .group = (int)(c->heads / c->kv_heads)};
    lhc_kernel_request req[LHC_MAX_PLAN_KERNELS];
    int count = 0;
    lh_status st = lhc_plan_kernels(&params, req, &count);
    if (st != LH_OK) return st;
    lhc_cache *cache;
    int owned;
    st = open_cache(env, &cache, &owned);
    if (st != LH_OK) return st;
    const char *module_names[LH_LH_MODULES] = {"pyramid_scores", "select_order", "gather", "scatter",
                                               "pool_grad"};
    for (int m = 0; m < LH_LH_MODULES && st == LH_OK; m++) {
        const lhc_kernel_request *r = NULL;
        for (int i = 0; i < count; i++)
            if (strcmp(req[i].kernel, module_names[m]) == 0) r = &req[i];
        if (!r) {
            st = lh_fail(LH_ERROR_INTERNAL, "the kernel registry has no request for kernel '%s'",
                         module_names[m]);
            break;
        }
        const lhc_kernel *k = NULL;
        st = lhc_compile(cache, r->kernel, r->constants, lh->chip, &k);
        if (st == LH_OK) st = lh_cu_module_load(lh->cu, k->ptx, &lh->modules[m]);
        if (st != LH_OK) {
            lh_fail_context(st, r->kernel);
            break;
        }
        for (int f = 0; f < LH_LK_COUNT && st == LH_OK; f++) {
            if (kernel_table[f].module != m) continue;
            st = lh_cu_module_function(lh->cu, &lh->modules[m], kernel_table[f].entry, &lh->fn[f]);
            lh->threads[f] = (unsigned int)r->block_threads;
            lh->per_block[f] = (unsigned int)r->tokens_per_block;
        }
    }
    if (owned) lhc_cache_destroy(cache);
    return st;
}

static void layout(cuda_lighthouse *lh) {
    const lh_config *c = &lh->cfg;
    int64_t es = (int64_t)lh_dtype_size(c->dtype);
    int64_t rows = c->batch * c->heads * c->s_sel;
    int64_t sel = rows * c->head_dim * es;
    int64_t inv = c->batch * c->heads * c->s_total * 4;
    int64_t coarse = c->level_len[c->levels - 1]; /* the coarsest level's entries per head */
    lh->pooled_q_bytes = c->batch * c->heads * coarse * c->head_dim * es;
    lh->pooled_k_bytes = c->batch * c->kv_heads * coarse * c->head_dim * es;

    /* Kept (the default): the forward gathers q_sel/k_sel/v_sel and writes the inverse map
     * straight into `saved`, and the backward reads them there; nothing is gathered twice.
     * Recomputed: they live in the workspaces and the backward rebuilds them. */
    bool keep = !c->recompute_subseq;
    int64_t end = 0;
    lh->sv_idx = lh_region(&end, rows * 4);
    lh->sv_o = lh_region(&end, sel);
    lh->sv_lse = lh_region(&end, rows * 4);
    lh->sv_qs = keep ? lh_region(&end, sel) : -1;
    lh->sv_ks = keep ? lh_region(&end, sel) : -1;
    lh->sv_vs = keep ? lh_region(&end, sel) : -1;
    lh->sv_inv = keep ? lh_region(&end, inv) : -1;
    lh->saved_bytes = end;

    end = 0;
    lh->fw_sq = lh_region(&end, c->batch * c->heads * c->s_total * 4);
    lh->fw_sk = lh_region(&end, c->batch * c->kv_heads * c->s_total * 4);
    lh->fw_inv = keep ? -1 : lh_region(&end, inv);
    lh->fw_pq = lh_region(&end, lh->pooled_q_bytes);
    lh->fw_pk = lh_region(&end, lh->pooled_k_bytes);
    lh->fw_qs = keep ? -1 : lh_region(&end, sel);
    lh->fw_ks = keep ? -1 : lh_region(&end, sel);
    lh->fw_vs = keep ? -1 : lh_region(&end, sel);
    lh->fw_sdpa = lh_region(&end, lh->sdpa ? cuda_sdpa_fwd_workspace_bytes(lh->sdpa) : 0);
    lh->fwd_bytes = end;

    end = 0;
    lh->bw_inv = keep ? -1 : lh_region(&end, inv);
    lh->bw_qs = keep ? -1 : lh_region(&end, sel);
    lh->bw_ks = keep ? -1 : lh_region(&end, sel);
    lh->bw_vs = keep ? -1 : lh_region(&end, sel);
    lh->bw_do = lh_region(&end, sel);
    lh->bw_dqs = lh_region(&end, sel);
    lh->bw_dks = lh_region(&end, sel);
    lh->bw_dvs = lh_region(&end, sel);
    lh->bw_sdpa = lh_region(&end, lh->sdpa ? cuda_sdpa_bwd_workspace_bytes(lh->sdpa) : 0);
    lh->bwd_bytes = end;

    lh->stage_bytes = lh_region_size(inv);
}

static void set_strides(cuda_lighthouse *lh) {
    const lh_config *c = &lh->cfg;
    /* Strides follow the tensors the pointers point into: a chunk of a ring shard lives in a
     * tensor of tensor_seq_len tokens (equal to seq_len without a ring). */
    int64_t n = c->tensor_seq_len ? c->tensor_seq_len : c->seq_len, d = c->head_dim, h = c->heads,
            hk = c->kv_heads;
    if (c->layout == LH_LAYOUT_BNHD) {
        lh->q_sb = n * h * d, lh->q_st = h * d, lh->q_sh = d;
        lh->kv_sb = n * hk * d, lh->kv_st = hk * d, lh->kv_sh = d;
    } else {
        lh->q_sb = h * n * d, lh->q_st = d, lh->q_sh = n * d;
        lh->kv_sb = hk * n * d, lh->kv_st = d, lh->kv_sh = n * d;
    }
}

lh_status cuda_lighthouse_plan_create(const cuda_lighthouse_env *env, const lh_config *cfg,
                                      cuda_lighthouse **out, lh_plan_sizes *sizes) {
    if (cfg->dtype != LH_DTYPE_FLOAT16 && cfg->dtype != LH_DTYPE_BFLOAT16)
        return lh_fail(LH_ERROR_UNSUPPORTED_DTYPE,
                       "Lighthouse on the CUDA backend runs float16 and bfloat16 (got dtype %d)",
                       (int)cfg->dtype);
    /* Positions, slots and inv entries are int32 on the GPU. */
    if (cfg->s_total >= ((int64_t)1 << 31) || cfg->batch * cfg->heads * cfg->s_sel >= ((int64_t)1 << 31))
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "Lighthouse on the CUDA backend keeps positions in int32: S_total = %lld and "
                       "B * H * S_sel = %lld must stay below 2^31",
                       (long long)cfg->s_total, (long long)(cfg->batch * cfg->heads * cfg->s_sel));
    cuda_lighthouse *lh = calloc(1, sizeof *lh);
    if (!lh) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "allocating a Lighthouse CUDA plan failed");
    lh->cu = env->cu;
    lh->cfg = *cfg;
    if (!(lh->cfg.scale > 0.0)) lh->cfg.scale = lh_default_softmax_scale(cfg->head_dim);
    chip_of(env->sm, lh->chip, sizeof lh->chip);
    set_strides(lh);

    lh_status st = load_kernels(lh, env);
    if (st == LH_OK && !env->no_sdpa) {
        /* Sub-sequence tensors are contiguous [B, H, S_sel, D]; k_sel and v_sel carry one row per
         * query head (each head selects its own entries), so the SDPA sees H kv heads. */
        lh_sdpa_shape shape = {.b = cfg->batch, .h = cfg->heads, .hkv = cfg->heads,
                               .s = cfg->s_sel, .d = cfg->head_dim, .dtype = cfg->dtype,
                               .scale = lh->cfg.scale};
        lh_sdpa_layout_strides(false, cfg->heads, cfg->s_sel, cfg->head_dim, shape.q_strides);
        lh_sdpa_layout_strides(false, cfg->heads, cfg->s_sel, cfg->head_dim, shape.kv_strides);
        st = cuda_sdpa_plan_create(env->dnn, env->handle, &shape, &lh->sdpa);
        if (st != LH_OK) lh_fail_context(st, "building the cuDNN SDPA plan of the sub-sequence");
    }
    if (st != LH_OK) {
        cuda_lighthouse_plan_destroy(lh);
        return st;
    }
    layout(lh);
    sizes->saved_bytes = lh->saved_bytes;
    sizes->fwd_workspace_bytes = lh->fwd_bytes;
    sizes->bwd_workspace_bytes = lh->bwd_bytes;
    sizes->stage_workspace_bytes = lh->stage_bytes;
    *out = lh;
    return LH_OK;
}

void cuda_lighthouse_plan_destroy(cuda_lighthouse *lh) {
    if (!lh) return;
    cuda_sdpa_plan_destroy(lh->sdpa);
    for (int m = 0; m < LH_LH_MODULES; m++) lh_cu_module_unload(lh->cu, &lh->modules[m]);
    free(lh);
}

const char *cuda_lighthouse_describe(const cuda_lighthouse *lh) {
    return lh->sdpa ? cuda_sdpa_describe(lh->sdpa) : "";
}
