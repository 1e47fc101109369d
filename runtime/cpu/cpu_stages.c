/*
 * cpu_stages.c - the stage entry points of the CPU backend (lh_scores, lh_select, lh_gather,
 * lh_scatter). Their workspace is the per-thread scratch only.
 *
 * Indices given to gather and scatter come from the caller, so they are checked here, all of
 * them, before anything is written: a position outside the pyramid would read or write outside
 * the caller's tensors.
 */
#include <inttypes.h>

#include "cpu_internal.h"

static lh_status check_indices(const lh_config *cfg, const int32_t *indices) {
    int64_t n = cfg->batch * cfg->heads * cfg->s_sel;
    for (int64_t i = 0; i < n; i++)
        if (indices[i] < 0 || indices[i] >= cfg->s_total)
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "indices[%" PRId64 "] = %" PRId32 " is not a pyramid position "
                           "(0 <= position < S_total = %" PRId64 ")",
                           i, indices[i], cfg->s_total);
    return LH_OK;
}

lh_status lh_cpu_stage_scores(void *plan_state, const void *q, const void *k, float *scores_q,
                               float *scores_k, void *workspace, void *stream) {
    (void)workspace;
    (void)stream;
    lh_cpu_scores(plan_state, q, k, scores_q, scores_k);
    return LH_OK;
}

lh_status lh_cpu_stage_select(void *plan_state, const float *scores_q, const float *scores_k,
                            int32_t *indices, void *workspace, void *stream) {
    (void)stream;
    lh_cpu_select(plan_state, scores_q, scores_k, indices, workspace);
    return LH_OK;
}

lh_status lh_cpu_stage_gather(void *plan_state, const void *q, const void *k, const void *v,
                            const int32_t *indices, void *q_sel, void *k_sel, void *v_sel,
                            void *workspace, void *stream) {
    (void)workspace;
    (void)stream;
    const lh_cpu_plan *plan = plan_state;
    lh_status st = check_indices(&plan->cfg, indices);
    if (st != LH_OK)
        return st;
    lh_cpu_gather(plan, q, k, v, indices, q_sel, k_sel, v_sel);
    return LH_OK;
}

lh_status lh_cpu_stage_scatter(void *plan_state, const int32_t *indices, const void *o_sel,
                             void *out, void *workspace, void *stream) {
    (void)workspace;
    (void)stream;
    const lh_cpu_plan *plan = plan_state;
    lh_status st = check_indices(&plan->cfg, indices);
    if (st != LH_OK)
        return st;
    lh_cpu_scatter(plan, indices, o_sel, out);
    return LH_OK;
}
