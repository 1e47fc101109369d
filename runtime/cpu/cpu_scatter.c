/*
 * cpu_scatter.c - moving rows between the sub-sequence and full length (docs/spec.md sections 5-6):
 * the shifted scatter of the forward, its adjoint (the gather-sum of dout), and the pool
 * backward that spreads each entry's gradient evenly over its window.
 *
 * Writers to full-length tensors run one task per (batch, head) for q-side tensors and one per
 * (batch, kv head) for k/v-side tensors: the windows of one head's entries overlap (a refined
 * entry covers its kept descendants), and a kv head sums over its query heads, so finer splits
 * would need atomics. Readers (the gather-sum) split further, by rows.
 */
#include <string.h>

#include "cpu_internal.h"

/* Sets every token of head h of batch b of x (which has `heads` heads) to zero. */
static void zero_head(const lh_config *cfg, float *x, int64_t heads, int64_t b, int64_t h) {
    int64_t D = cfg->head_dim, stride = lh_cpu_token_stride(cfg, heads);
    float *row = x + lh_tensor_offset(cfg, heads, b, 0, h, 0);
    if (stride == D) {
        memset(row, 0, (size_t)(cfg->seq_len * D) * sizeof(float));
        return;
    }
    for (int64_t t = 0; t < cfg->seq_len; t++, row += stride)
        memset(row, 0, (size_t)D * sizeof(float));
}

/* Adds w * g[0..D) to tokens [t0, t1) (clipped to N) of head h of x. */
static void add_window(const lh_config *cfg, float *x, int64_t heads, int64_t b, int64_t h,
                       int64_t t0, int64_t t1, const float *g, float w) {
    int64_t D = cfg->head_dim, stride = lh_cpu_token_stride(cfg, heads);
    if (t1 > cfg->seq_len)
        t1 = cfg->seq_len;
    float *row = x + lh_tensor_offset(cfg, heads, b, t0, h, 0);
    for (int64_t t = t0; t < t1; t++, row += stride)
        for (int64_t d = 0; d < D; d++)
            row[d] += w * g[d];
}

/* ---- forward scatter ------------------------------------------------------------------- */

typedef struct scatter_job {
    const lh_config *cfg;
    const int32_t *indices;
    const float *o_sel;
    float *out;
} scatter_job;

static void scatter_task(void *arg, int64_t bh, int tid) {
    (void)tid;
    const scatter_job *job = arg;
    const lh_config *cfg = job->cfg;
    int64_t b = bh / cfg->heads, h = bh % cfg->heads, S = cfg->s_sel, D = cfg->head_dim;
    zero_head(cfg, job->out, cfg->heads, b, h);
    for (int64_t s = 0; s < S; s++) {
        int64_t l, i;
        lh_cpu_locate(cfg, job->indices[bh * S + s], &l, &i);
        int64_t f = cfg->level_width[l], start = i * f + f - 1;
        add_window(cfg, job->out, cfg->heads, b, h, start, start + f, job->o_sel + (bh * S + s) * D,
                   1.0f);
    }
}

void lh_cpu_scatter(const lh_cpu_plan *plan, const int32_t *indices, const float *o_sel,
                    float *out) {
    scatter_job job = {&plan->cfg, indices, o_sel, out};
    lh_cpu_parallel_for(plan->nthreads, plan->cfg.batch * plan->cfg.heads, scatter_task, &job);
}

/* ---- gather-sum of dout ---------------------------------------------------------------- */

#define DOUT_TASK_ROWS 256

typedef struct dout_job {
    const lh_config *cfg;
    const int32_t *indices;
    const float *dout;
    float *d_sel;
    int64_t tasks_per_head;
} dout_job;

static void dout_task(void *arg, int64_t task, int tid) {
    (void)tid;
    const dout_job *job = arg;
    const lh_config *cfg = job->cfg;
    int64_t bh = task / job->tasks_per_head, part = task % job->tasks_per_head;
    int64_t b = bh / cfg->heads, h = bh % cfg->heads, S = cfg->s_sel, D = cfg->head_dim, N = cfg->seq_len;
    int64_t stride = lh_cpu_token_stride(cfg, cfg->heads);
    int64_t s0 = part * DOUT_TASK_ROWS, s1 = s0 + DOUT_TASK_ROWS < S ? s0 + DOUT_TASK_ROWS : S;
    for (int64_t s = s0; s < s1; s++) {
        int64_t l, i;
        lh_cpu_locate(cfg, job->indices[bh * S + s], &l, &i);
        int64_t f = cfg->level_width[l], t0 = i * f + f - 1, t1 = t0 + f < N ? t0 + f : N;
        float *acc = job->d_sel + (bh * S + s) * D;
        memset(acc, 0, (size_t)D * sizeof(float));
        if (t0 >= t1)
            continue;
        const float *row = job->dout + lh_tensor_offset(cfg, cfg->heads, b, t0, h, 0);
        for (int64_t t = t0; t < t1; t++, row += stride)
            for (int64_t d = 0; d < D; d++)
                acc[d] += row[d];
    }
}

void lh_cpu_gather_dout(const lh_cpu_plan *plan, const int32_t *indices, const float *dout,
                        float *d_sel) {
    const lh_config *cfg = &plan->cfg;
    dout_job job = {cfg, indices, dout, d_sel, (cfg->s_sel + DOUT_TASK_ROWS - 1) / DOUT_TASK_ROWS};
    lh_cpu_parallel_for(plan->nthreads, cfg->batch * cfg->heads * job.tasks_per_head, dout_task,
                        &job);
}

/* ---- pool backward --------------------------------------------------------------------- */

typedef struct unpool_job {
    const lh_config *cfg;
    const int32_t *indices;
    const float *g_q, *g_k, *g_v;
    float *dq, *dk, *dv;
} unpool_job;

/* Adds each entry's gradient of query head h, divided by its width, to its window of x. */
static void unpool_head(const lh_config *cfg, const int32_t *indices, const float *g, float *x,
                        int64_t heads, int64_t b, int64_t h, int64_t xh) {
    int64_t S = cfg->s_sel, D = cfg->head_dim, bh = b * cfg->heads + h;
    for (int64_t s = 0; s < S; s++) {
        int64_t l, i;
        lh_cpu_locate(cfg, indices[bh * S + s], &l, &i);
        int64_t f = cfg->level_width[l];
        /* f is a power of two: 1/f is exact. */
        add_window(cfg, x, heads, b, xh, i * f, (i + 1) * f, g + (bh * S + s) * D, 1.0f / (float)f);
    }
}

/* Tasks [0, B*Hkv) write dk and dv of one kv head, summing its query heads (G times the work
 * of a q task, so they go first); tasks [B*Hkv, B*Hkv + B*H) write dq of one query head. */
static void unpool_task(void *arg, int64_t task, int tid) {
    (void)tid;
    const unpool_job *job = arg;
    const lh_config *cfg = job->cfg;
    int64_t H = cfg->heads, Hkv = cfg->kv_heads, G = lh_cpu_group(cfg);
    if (task < cfg->batch * Hkv) {
        int64_t b = task / Hkv, hk = task % Hkv;
        zero_head(cfg, job->dk, Hkv, b, hk);
        zero_head(cfg, job->dv, Hkv, b, hk);
        for (int64_t h = hk * G; h < (hk + 1) * G; h++) {
            unpool_head(cfg, job->indices, job->g_k, job->dk, Hkv, b, h, hk);
            unpool_head(cfg, job->indices, job->g_v, job->dv, Hkv, b, h, hk);
        }
        return;
    }
    task -= cfg->batch * Hkv;
    int64_t b = task / H, h = task % H;
    zero_head(cfg, job->dq, H, b, h);
    unpool_head(cfg, job->indices, job->g_q, job->dq, H, b, h, h);
}

void lh_cpu_unpool_grads(const lh_cpu_plan *plan, const int32_t *indices, const float *g_q,
                         const float *g_k, const float *g_v, float *dq, float *dk, float *dv) {
    const lh_config *cfg = &plan->cfg;
    unpool_job job = {cfg, indices, g_q, g_k, g_v, dq, dk, dv};
    lh_cpu_parallel_for(plan->nthreads, cfg->batch * (cfg->heads + cfg->kv_heads), unpool_task, &job);
}
