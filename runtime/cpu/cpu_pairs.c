/*
 * cpu_pairs.c - block pairs of chunk-major sub-sequences: the queries of one chunk against the
 * keys and values of one chunk, causal (the same chunk) or full (an earlier one), forward with
 * an optional log-sum-exp merge into accumulators, and backward. The attention step without a
 * ring is one causal pair; the ring (cpu_ring.c) walks all pairs of a rank.
 */
#include <math.h>
#include <string.h>

#include "cpu_attention.h"

typedef struct pair_job {
    const lh_cpu_plan *plan;
    const lh_cpu_pair *pair;
    const float *o_in, *dout, *lse_in;   /* backward */
    float *o, *lse, *acc_o, *acc_lse;    /* forward */
    float *dvec, *dq, *dk, *dv;          /* backward */
    int accumulate;
    int64_t blocks;
    char *scratch;
} pair_job;

static float *scratch_of(const pair_job *job, int tid) {
    return (float *)(job->scratch + (size_t)tid * job->plan->scratch_bytes);
}

static lh_cpu_head head_of(const pair_job *job, int64_t bh) {
    const lh_config *cfg = &job->plan->cfg;
    int64_t S = cfg->s_chunk, D = cfg->head_dim, base = bh * S * D;
    const lh_cpu_pair *p = job->pair;
    return (lh_cpu_head){p->q + base, p->k + base, p->v + base, D, D, S, p->full};
}

/* Merges rows [r0, r1) of a partial result (o, lse) into the accumulators: both are softmax-
 * normalised over disjoint key sets, so the union is their mix weighted by exp(lse - lse_new). */
static void merge_rows(int64_t D, int64_t r0, int64_t r1, const float *o, const float *lse,
                       float *acc_o, float *acc_lse) {
    for (int64_t i = r0; i < r1; i++) {
        float b = lse[i], a = acc_lse[i];
        if (b == -INFINITY)
            continue;
        float *ao = acc_o + i * D;
        const float *bo = o + i * D;
        if (a == -INFINITY) {
            memcpy(ao, bo, (size_t)D * sizeof(float));
            acc_lse[i] = b;
            continue;
        }
        float m = a > b ? a : b;
        float lse_new = m + log1pf(expf(-fabsf(a - b)));
        float wa = expf(a - lse_new), wb = expf(b - lse_new);
        for (int64_t d = 0; d < D; d++)
            ao[d] = wa * ao[d] + wb * bo[d];
        acc_lse[i] = lse_new;
    }
}

/* The rows [r0, r1) and head of a task over (row block, head): in causal pairs the last row
 * blocks see the most keys, so they go first. Returns the head b*H + h. */
static int64_t rows_of_task(const pair_job *job, int64_t task, int64_t *r0, int64_t *r1) {
    const lh_config *cfg = &job->plan->cfg;
    int64_t BH = cfg->batch * cfg->heads, S = cfg->s_chunk;
    int64_t rb = job->blocks - 1 - task / BH;
    *r0 = rb * LH_CPU_BLOCK;
    *r1 = *r0 + LH_CPU_BLOCK < S ? *r0 + LH_CPU_BLOCK : S;
    return task % BH;
}

static void forward_task(void *arg, int64_t task, int tid) {
    const pair_job *job = arg;
    const lh_config *cfg = &job->plan->cfg;
    int64_t S = cfg->s_chunk, D = cfg->head_dim, r0, r1;
    int64_t bh = rows_of_task(job, task, &r0, &r1);
    lh_cpu_head hd = head_of(job, bh);
    float *o = job->o + bh * S * D, *lse = job->lse + bh * S;
    lh_cpu_attention_rows(&hd, D, (float)cfg->scale, r0, r1, o, D, lse, scratch_of(job, tid));
    if (job->acc_o)
        merge_rows(D, r0, r1, o, lse, job->acc_o + bh * S * D, job->acc_lse + bh * S);
}

void lh_cpu_pair_forward(const lh_cpu_plan *plan, const lh_cpu_pair *pair, float *o, float *lse,
                         float *acc_o, float *acc_lse, char *scratch) {
    const lh_config *cfg = &plan->cfg;
    pair_job job = {.plan = plan, .pair = pair, .o = o, .lse = lse, .acc_o = acc_o,
                    .acc_lse = acc_lse, .scratch = scratch};
    job.blocks = (cfg->s_chunk + LH_CPU_BLOCK - 1) / LH_CPU_BLOCK;
    lh_cpu_parallel_for(plan->nthreads, job.blocks * cfg->batch * cfg->heads, forward_task, &job);
}

static void rows_task(void *arg, int64_t task, int tid) {
    const pair_job *job = arg;
    const lh_config *cfg = &job->plan->cfg;
    int64_t S = cfg->s_chunk, D = cfg->head_dim, r0, r1;
    int64_t bh = rows_of_task(job, task, &r0, &r1);
    lh_cpu_head hd = head_of(job, bh);
    int64_t base = bh * S * D;
    lh_cpu_attention_bwd_rows(&hd, D, (float)cfg->scale, r0, r1, job->o_in + base, D,
                              job->dout + base, D, job->lse_in + bh * S, job->dvec + bh * S,
                              job->dq + base, D, job->accumulate, scratch_of(job, tid));
}

/* Key blocks: early ones see the most query rows of a causal pair, so they go first. */
static void cols_task(void *arg, int64_t task, int tid) {
    const pair_job *job = arg;
    const lh_config *cfg = &job->plan->cfg;
    int64_t BH = cfg->batch * cfg->heads, S = cfg->s_chunk, D = cfg->head_dim;
    int64_t cb = task / BH, bh = task % BH;
    int64_t c0 = cb * LH_CPU_BLOCK, c1 = c0 + LH_CPU_BLOCK < S ? c0 + LH_CPU_BLOCK : S;
    lh_cpu_head hd = head_of(job, bh);
    int64_t base = bh * S * D;
    lh_cpu_qgrad qg = {hd.q, D, job->dout + base, D, job->lse_in + bh * S, job->dvec + bh * S};
    lh_cpu_attention_bwd_cols(hd.k, hd.v, D, S, hd.full, D, (float)cfg->scale, &qg, 1, c0, c1,
                              job->dk + base, job->dv + base, D, job->accumulate,
                              scratch_of(job, tid));
}

void lh_cpu_pair_backward(const lh_cpu_plan *plan, const lh_cpu_pair *pair, const float *o,
                          const float *dout, const float *lse, float *dvec, float *dq, float *dk,
                          float *dv, int accumulate, char *scratch) {
    const lh_config *cfg = &plan->cfg;
    pair_job job = {.plan = plan, .pair = pair, .o_in = o, .dout = dout, .lse_in = lse,
                    .dvec = dvec, .dq = dq, .dk = dk, .dv = dv, .accumulate = accumulate,
                    .scratch = scratch};
    job.blocks = (cfg->s_chunk + LH_CPU_BLOCK - 1) / LH_CPU_BLOCK;
    int64_t tasks = job.blocks * cfg->batch * cfg->heads;
    /* The key side reads dvec, which the query side writes. */
    lh_cpu_parallel_for(plan->nthreads, tasks, rows_task, &job);
    lh_cpu_parallel_for(plan->nthreads, tasks, cols_task, &job);
}
