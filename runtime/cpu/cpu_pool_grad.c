/*
 * cpu_pool_grad.c - the pool_grad stage (docs/spec.md section 6): each entry's gradient spread
 * evenly over its window, dq of every query head, dk and dv of every kv head summed over its
 * query heads. One task per (batch, head) for dq and per (batch, kv head) for dk and dv: the
 * windows of one head's entries overlap, and a kv head sums over its query heads, so finer
 * splits would need atomics.
 */
#include "cpu_internal.h"

typedef struct pool_grad_job {
    const lh_config *cfg;
    const int32_t *indices;
    const float *g_q, *g_k, *g_v;
    float *dq, *dk, *dv;
} pool_grad_job;

/* Adds each entry's gradient of query head h, divided by its width, to its window of x. */
static void pool_grad_head(const lh_config *cfg, const int32_t *indices, const float *g, float *x,
                        int64_t heads, int64_t b, int64_t h, int64_t xh) {
    int64_t S = cfg->s_sel, D = cfg->head_dim, bh = b * cfg->heads + h;
    for (int64_t s = 0; s < S; s++) {
        int64_t l, i;
        lh_cpu_locate(cfg, indices[bh * S + s], &l, &i);
        int64_t f = cfg->level_width[l];
        /* f is a power of two: 1/f is exact. */
        lh_cpu_add_window(cfg, x, heads, b, xh, i * f, (i + 1) * f, g + (bh * S + s) * D, 1.0f / (float)f);
    }
}

/* Tasks [0, B*Hkv) write dk and dv of one kv head, summing its query heads (G times the work
 * of a q task, so they go first); tasks [B*Hkv, B*Hkv + B*H) write dq of one query head. */
static void pool_grad_task(void *arg, int64_t task, int tid) {
    (void)tid;
    const pool_grad_job *job = arg;
    const lh_config *cfg = job->cfg;
    int64_t H = cfg->heads, Hkv = cfg->kv_heads, G = lh_cpu_group(cfg);
    if (task < cfg->batch * Hkv) {
        int64_t b = task / Hkv, hk = task % Hkv;
        lh_cpu_zero_head(cfg, job->dk, Hkv, b, hk);
        lh_cpu_zero_head(cfg, job->dv, Hkv, b, hk);
        for (int64_t h = hk * G; h < (hk + 1) * G; h++) {
            pool_grad_head(cfg, job->indices, job->g_k, job->dk, Hkv, b, h, hk);
            pool_grad_head(cfg, job->indices, job->g_v, job->dv, Hkv, b, h, hk);
        }
        return;
    }
    task -= cfg->batch * Hkv;
    int64_t b = task / H, h = task % H;
    lh_cpu_zero_head(cfg, job->dq, H, b, h);
    pool_grad_head(cfg, job->indices, job->g_q, job->dq, H, b, h, h);
}

void lh_cpu_pool_grad(const lh_cpu_plan *plan, const int32_t *indices, const float *g_q,
                      const float *g_k, const float *g_v, float *dq, float *dk, float *dv) {
    const lh_config *cfg = &plan->cfg;
    pool_grad_job job = {cfg, indices, g_q, g_k, g_v, dq, dk, dv};
    lh_cpu_parallel_for(plan->nthreads, cfg->batch * (cfg->heads + cfg->kv_heads), pool_grad_task, &job);
}

lh_status lh_cpu_pool_grad_stage(void *plan, const lh_chunk *ch, void *stream) {
    (void)stream;
    lh_cpu_pool_grad(((const lh_cpu_plan *)plan)->chunk, ch->indices, ch->dq_sel, ch->dk_sel,
                     ch->dv_sel, ch->dq, ch->dk, ch->dv);
    return LH_OK;
}
