/*
 * cpu_scores.c - the scores stage: per-token L2 norms of q and k, max-pooled per level of the
 * pyramid (docs/spec.md section 1), fp32 [B, H, S_total] and [B, Hkv, S_total].
 */
#include <math.h>

#include "cpu_internal.h"

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
__attribute__((optimize("fp-contract=off"))) float lh_cpu_row_norm(const float *row, int64_t D) {
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

void lh_cpu_max_pool_scores(const lh_config *cfg, int64_t t0, int64_t t1, float *s) {
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

/* Level-0 norms of tokens [t0, t1) of one head, then the max-pooled levels of their windows. */
static void score_range(const lh_config *cfg, const float *x, int64_t heads, int64_t b, int64_t h,
                        int64_t t0, int64_t t1, float *s) {
    int64_t D = cfg->head_dim, stride = lh_cpu_token_stride(cfg, heads);
    const float *row = x + lh_tensor_offset(cfg, heads, b, t0, h, 0);
    for (int64_t t = t0; t < t1; t++, row += stride)
        s[t] = lh_cpu_row_norm(row, D);
    lh_cpu_max_pool_scores(cfg, t0, t1, s);
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

lh_status lh_cpu_scores_stage(void *plan, const lh_chunk *ch, void *stream) {
    (void)stream;
    lh_cpu_scores(((const lh_cpu_plan *)plan)->chunk, ch->q, ch->k, ch->scores_q, ch->scores_k);
    return LH_OK;
}

lh_status lh_cpu_scores_entry(void *plan_state, const void *q, const void *k, const void *v,
                              float *scores_q, float *scores_k, void *workspace, void *stream) {
    (void)stream;
    const lh_cpu_plan *plan = plan_state;
    if (plan->cfg.scorer == LH_SCORER_DILATED)
        lh_cpu_scores_dilated(plan, q, k, v, scores_q, scores_k,
                              lh_buffer_at(&plan->pipeline.buffers, LH_BUF_STAGE, LH_REGION_SCORER,
                                           workspace));
    else
        lh_cpu_scores(plan, q, k, scores_q, scores_k);
    return LH_OK;
}
