/*
 * cpu_gather.c - the gather stages: the selected entries of q, k and v (pooled entries are the
 * means of their windows, computed here: the pyramid is never stored), again in the backward
 * (regather), and the gather-sum of dout per entry (the adjoint of the scatter, docs/spec.md
 * section 6).
 */
#include <string.h>

#include "cpu_internal.h"

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

/* Gather, and regather in the backward: the CPU keeps no sub-sequence in `saved`. */
lh_status lh_cpu_gather_stage(void *plan, const lh_chunk *ch, void *stream) {
    (void)stream;
    lh_cpu_gather(((const lh_cpu_plan *)plan)->chunk, ch->q, ch->k, ch->v, ch->indices, ch->q_sel,
                  ch->k_sel, ch->v_sel);
    return LH_OK;
}

lh_status lh_cpu_gather_dout_stage(void *plan, const lh_chunk *ch, void *stream) {
    (void)stream;
    lh_cpu_gather_dout(((const lh_cpu_plan *)plan)->chunk, ch->indices, ch->dout, ch->do_sel);
    return LH_OK;
}

lh_status lh_cpu_gather_entry(void *plan_state, const void *q, const void *k, const void *v,
                              const int32_t *indices, void *q_sel, void *k_sel, void *v_sel,
                              void *workspace, void *stream) {
    (void)workspace;
    (void)stream;
    const lh_cpu_plan *plan = plan_state;
    lh_status st = lh_cpu_check_indices(&plan->cfg, indices);
    if (st == LH_OK)
        lh_cpu_gather(plan, q, k, v, indices, q_sel, k_sel, v_sel);
    return st;
}
