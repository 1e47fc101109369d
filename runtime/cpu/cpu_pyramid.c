/*
 * cpu_pyramid.c - the pyramid (docs/spec.md section 1): pooled entries, norm scores, and the gather
 * of the selected entries.
 *
 * The pyramid itself is never stored: a pooled entry is the mean of its window, computed when
 * it is gathered. Only the selected entries are ever pooled, so this reads each token about once
 * per level instead of writing and re-reading an S_total x D copy.
 */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"

void lh_cpu_locate(const lh_config *cfg, int64_t pos, int64_t *level, int64_t *index) {
    int64_t l = cfg->levels - 1;
    while (l > 0 && pos < cfg->level_off[l])
        l--;
    *level = l;
    *index = pos - cfg->level_off[l];
}

void lh_cpu_pool_entry(const lh_config *cfg, const float *x, int64_t heads, int64_t b, int64_t h,
                       int64_t pos, float *out) {
    int64_t l, i, D = cfg->head_dim;
    lh_cpu_locate(cfg, pos, &l, &i);
    int64_t f = cfg->level_width[l];
    const float *row = x + lh_tensor_offset(cfg, heads, b, i * f, h, 0);
    int64_t stride = lh_cpu_token_stride(cfg, heads);
    memcpy(out, row, (size_t)D * sizeof(float));
    for (int64_t t = 1; t < f; t++) {
        const float *r = row + t * stride;
        for (int64_t d = 0; d < D; d++)
            out[d] += r[d];
    }
    if (f > 1) {
        /* f is a power of two, so scaling by 1/f is exact and equals division. */
        float inv = 1.0f / (float)f;
        for (int64_t d = 0; d < D; d++)
            out[d] *= inv;
    }
}

/* ---- scores ---------------------------------------------------------------------------- */

/* Tokens per score task: large enough to amortise the task, a whole number of coarsest windows
 * so that every level of a window is computed by the task that computed its tokens. */
#define SCORE_TASK_TOKENS 4096

typedef struct scores_job {
    const lh_config *cfg;
    const float *q, *k;
    float *scores_q, *scores_k;
    int64_t windows_per_task, tasks_per_head;
} scores_job;

/* The L2 norm of one row in fp32, in the order the GPU's pyramid_scores kernel uses, so that
 * both backends produce bit-identical scores and therefore identical selections even where two
 * candidates' scores differ in the last bit: lane j (of D/8) sums the squares of d = 8j..8j+7
 * left to right; then, for off = D/16, D/32, .., 1, every lane adds lane j^off (a warp xor
 * butterfly); then a correctly rounded sqrt. Head dims that are not 8 times a power of two (the
 * GPU does not take them) accumulate in double. No FMA contraction, as on the GPU. */
__attribute__((optimize("fp-contract=off"))) static float row_norm(const float *row, int64_t D) {
    int64_t lanes = D / 8;
    if (D % 8 != 0 || lanes > 32 || (lanes & (lanes - 1)) != 0) {
        double acc = 0.0;
        for (int64_t d = 0; d < D; d++)
            acc += (double)row[d] * (double)row[d];
        return (float)sqrt(acc);
    }
    float v[32], w[32];
    for (int64_t j = 0; j < lanes; j++) {
        float acc = 0.0f;
        for (int64_t e = 0; e < 8; e++) {
            float x = row[8 * j + e];
            float sq = x * x;
            acc = acc + sq;
        }
        v[j] = acc;
    }
    for (int64_t off = lanes / 2; off >= 1; off /= 2) {
        for (int64_t j = 0; j < lanes; j++)
            w[j] = v[j] + v[j ^ off];
        for (int64_t j = 0; j < lanes; j++)
            v[j] = w[j];
    }
    return sqrtf(v[0]);
}

/* Level-0 norms of tokens [t0, t1) of one head, then the max-pooled levels of their windows. */
static void score_range(const lh_config *cfg, const float *x, int64_t heads, int64_t b, int64_t h,
                        int64_t t0, int64_t t1, float *s) {
    int64_t D = cfg->head_dim, stride = lh_cpu_token_stride(cfg, heads);
    const float *row = x + lh_tensor_offset(cfg, heads, b, t0, h, 0);
    for (int64_t t = t0; t < t1; t++, row += stride)
        s[t] = row_norm(row, D);
    int64_t p = cfg->pooling;
    for (int64_t l = 1; l < cfg->levels; l++) {
        const float *fine = s + cfg->level_off[l - 1];
        float *coarse = s + cfg->level_off[l];
        int64_t f = cfg->level_width[l];
        int64_t i1 = t1 / f;
        if (i1 > cfg->level_len[l])
            i1 = cfg->level_len[l];
        for (int64_t i = t0 / f; i < i1; i++) {
            float m = fine[i * p];
            for (int64_t j = 1; j < p; j++)
                m = fine[i * p + j] > m ? fine[i * p + j] : m;
            coarse[i] = m;
        }
    }
}

static void scores_task(void *arg, int64_t task, int tid) {
    (void)tid;
    const scores_job *job = arg;
    const lh_config *cfg = job->cfg;
    int64_t head_task = task / job->tasks_per_head, part = task % job->tasks_per_head;
    int64_t b = head_task / (cfg->heads + cfg->kv_heads);
    int64_t h = head_task % (cfg->heads + cfg->kv_heads);
    int64_t fc = cfg->level_width[cfg->levels - 1];
    int64_t t0 = part * job->windows_per_task * fc;
    int64_t t1 = t0 + job->windows_per_task * fc;
    if (part == job->tasks_per_head - 1 || t1 > cfg->seq_len)
        t1 = cfg->seq_len;
    if (h < cfg->heads)
        score_range(cfg, job->q, cfg->heads, b, h, t0, t1,
                    job->scores_q + (b * cfg->heads + h) * cfg->s_total);
    else
        score_range(cfg, job->k, cfg->kv_heads, b, h - cfg->heads, t0, t1,
                    job->scores_k + (b * cfg->kv_heads + h - cfg->heads) * cfg->s_total);
}

void lh_cpu_scores(const lh_cpu_plan *plan, const float *q, const float *k, float *scores_q,
                   float *scores_k) {
    const lh_config *cfg = &plan->cfg;
    int64_t fc = cfg->level_width[cfg->levels - 1];
    int64_t windows = cfg->level_len[cfg->levels - 1];
    int64_t per = SCORE_TASK_TOKENS / fc;
    if (per < 1)
        per = 1;
    if (windows < 1)
        windows = 1;
    scores_job job = {cfg, q, k, scores_q, scores_k, per, (windows + per - 1) / per};
    lh_cpu_parallel_for(plan->nthreads, cfg->batch * (cfg->heads + cfg->kv_heads) * job.tasks_per_head,
                        scores_task, &job);
}

/* ---- gather ---------------------------------------------------------------------------- */

#define GATHER_TASK_ROWS 256

typedef struct gather_job {
    const lh_config *cfg;
    const float *q, *k, *v;
    const int32_t *indices;
    float *q_sel, *k_sel, *v_sel;
    int64_t tasks_per_head;
} gather_job;

static void gather_task(void *arg, int64_t task, int tid) {
    (void)tid;
    const gather_job *job = arg;
    const lh_config *cfg = job->cfg;
    int64_t bh = task / job->tasks_per_head, part = task % job->tasks_per_head;
    int64_t b = bh / cfg->heads, h = bh % cfg->heads, hk = h / lh_cpu_group(cfg);
    int64_t S = cfg->s_sel, D = cfg->head_dim;
    int64_t s0 = part * GATHER_TASK_ROWS, s1 = s0 + GATHER_TASK_ROWS < S ? s0 + GATHER_TASK_ROWS : S;
    for (int64_t s = s0; s < s1; s++) {
        int64_t row = bh * S + s, pos = job->indices[row];
        lh_cpu_pool_entry(cfg, job->q, cfg->heads, b, h, pos, job->q_sel + row * D);
        lh_cpu_pool_entry(cfg, job->k, cfg->kv_heads, b, hk, pos, job->k_sel + row * D);
        lh_cpu_pool_entry(cfg, job->v, cfg->kv_heads, b, hk, pos, job->v_sel + row * D);
    }
}

void lh_cpu_gather(const lh_cpu_plan *plan, const float *q, const float *k, const float *v,
                   const int32_t *indices, float *q_sel, float *k_sel, float *v_sel) {
    const lh_config *cfg = &plan->cfg;
    gather_job job = {cfg, q, k, v, indices, q_sel, k_sel, v_sel,
                      (cfg->s_sel + GATHER_TASK_ROWS - 1) / GATHER_TASK_ROWS};
    lh_cpu_parallel_for(plan->nthreads, cfg->batch * cfg->heads * job.tasks_per_head, gather_task,
                        &job);
}
