/*
 * cpu_scatter.c - the scatter stage: the shifted scatter of O_sel back to full length
 * (docs/spec.md section 5). One task per (batch, head): the windows of one head's entries
 * overlap (a refined entry covers its kept descendants), so finer splits would need atomics.
 */
#include "cpu_internal.h"

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
    lh_cpu_zero_head(cfg, job->out, cfg->heads, b, h);
    for (int64_t s = 0; s < S; s++) {
        int64_t l, i;
        lh_cpu_locate(cfg, job->indices[bh * S + s], &l, &i);
        int64_t f = cfg->level_width[l], start = i * f + f - 1;
        lh_cpu_add_window(cfg, job->out, cfg->heads, b, h, start, start + f, job->o_sel + (bh * S + s) * D,
                   1.0f);
    }
}

void lh_cpu_scatter(const lh_cpu_plan *plan, const int32_t *indices, const float *o_sel,
                    float *out) {
    scatter_job job = {&plan->cfg, indices, o_sel, out};
    lh_cpu_parallel_for(plan->nthreads, plan->cfg.batch * plan->cfg.heads, scatter_task, &job);
}

lh_status lh_cpu_scatter_stage(void *plan, const lh_chunk *ch, void *stream) {
    (void)stream;
    lh_cpu_scatter(((const lh_cpu_plan *)plan)->chunk, ch->indices, ch->o_sel, ch->out);
    return LH_OK;
}

lh_status lh_cpu_scatter_entry(void *plan_state, const int32_t *indices, const void *o_sel,
                               void *out, void *workspace, void *stream) {
    (void)workspace;
    (void)stream;
    const lh_cpu_plan *plan = plan_state;
    lh_status st = lh_cpu_check_indices(&plan->cfg, indices);
    if (st == LH_OK)
        lh_cpu_scatter(plan, indices, o_sel, out);
    return st;
}
