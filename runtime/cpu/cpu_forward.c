/*
 * cpu_forward.c - the forward call: scores, selection, gather, attention, scatter (Lighthouse
 * mode) or attention over all tokens (dense mode).
 *
 * Forward workspace, Lighthouse mode (each region 64-byte aligned):
 *   scores_q [B,H,S_total] | scores_k [B,Hkv,S_total] | q_sel, k_sel, v_sel [B,H,S_sel,D] | scratch
 * Dense mode: scratch only. scratch = one slice of plan->scratch_bytes per thread.
 * Plans on a ring or with attention hooks run cpu_cp.c instead (its own layouts).
 * `saved`: Lighthouse: indices i32 [B,H,S_sel] | O_sel [B,H,S_sel,D] | LSE [B,H,S_sel] | tag;
 *          dense: LSE [B,H,N] | tag (offsets in the plan; the tag of cpu_saved.c is written
 *          last, once the forward has succeeded).
 */
#include "cpu_ring.h"

static size_t floats(int64_t n) { return lh_cpu_round64((size_t)n * sizeof(float)); }

size_t lh_cpu_forward_workspace_bytes(const lh_cpu_plan *plan) {
    const lh_config *c = &plan->cfg;
    size_t scratch = (size_t)plan->nthreads * plan->scratch_bytes;
    if (lh_cpu_uses_attention_step(c))
        return lh_cpu_cp_forward_workspace_bytes(plan);
    if (c->mode == LH_MODE_DENSE)
        return scratch;
    return floats(c->batch * c->heads * c->s_total) + floats(c->batch * c->kv_heads * c->s_total) +
           3 * floats(c->batch * c->heads * c->s_sel * c->head_dim) + scratch;
}

/* ---- attention over all heads ---------------------------------------------------------- */

typedef struct forward_job {
    const lh_cpu_plan *plan;
    /* Per head (b, h): the query rows are q + q_head_off(b,h), stride q_stride (likewise k, v
     * with kv heads); outputs o + o_head_off, lse + (b*H+h)*len. */
    const float *q, *k, *v;
    float *o, *lse;
    int selected;            /* 1: [B,H,S_sel,D] sub-sequence buffers; 0: the caller's tensors */
    int64_t len, row_blocks;
    char *scratch;
} forward_job;

static void forward_task(void *arg, int64_t task, int tid) {
    const forward_job *job = arg;
    const lh_config *cfg = &job->plan->cfg;
    int64_t BH = cfg->batch * cfg->heads, D = cfg->head_dim;
    /* Last row blocks see the most keys: hand them out first. */
    int64_t rb = job->row_blocks - 1 - task / BH, bh = task % BH;
    int64_t b = bh / cfg->heads, h = bh % cfg->heads, hk = h / lh_cpu_group(cfg);
    lh_cpu_head hd;
    float *o;
    int64_t o_stride;
    if (job->selected) {
        int64_t base = bh * job->len * D;
        hd = (lh_cpu_head){job->q + base, job->k + base, job->v + base, D, D, job->len, 0};
        o = job->o + base;
        o_stride = D;
    } else {
        hd = (lh_cpu_head){job->q + lh_tensor_offset(cfg, cfg->heads, b, 0, h, 0),
                           job->k + lh_tensor_offset(cfg, cfg->kv_heads, b, 0, hk, 0),
                           job->v + lh_tensor_offset(cfg, cfg->kv_heads, b, 0, hk, 0),
                           lh_cpu_token_stride(cfg, cfg->heads),
                           lh_cpu_token_stride(cfg, cfg->kv_heads), job->len, 0};
        o = job->o + lh_tensor_offset(cfg, cfg->heads, b, 0, h, 0);
        o_stride = lh_cpu_token_stride(cfg, cfg->heads);
    }
    int64_t r0 = rb * LH_CPU_BLOCK, r1 = r0 + LH_CPU_BLOCK < job->len ? r0 + LH_CPU_BLOCK : job->len;
    float *scratch = (float *)(job->scratch + (size_t)tid * job->plan->scratch_bytes);
    lh_cpu_attention_rows(&hd, D, (float)cfg->scale, r0, r1, o, o_stride, job->lse + bh * job->len,
                          scratch);
}

static void run_forward_attention(forward_job *job) {
    const lh_config *cfg = &job->plan->cfg;
    job->row_blocks = (job->len + LH_CPU_BLOCK - 1) / LH_CPU_BLOCK;
    lh_cpu_parallel_for(job->plan->nthreads, job->row_blocks * cfg->batch * cfg->heads,
                        forward_task, job);
}

lh_status lh_cpu_forward(void *plan_state, const void *q, const void *k, const void *v, void *out,
                         void *saved, void *workspace, void *stream) {
    (void)stream;
    const lh_cpu_plan *plan = plan_state;
    const lh_config *c = &plan->cfg;
    char *ws = workspace, *sv = saved;
    float *lse = (float *)(sv + plan->saved_lse_off);
    if (lh_cpu_uses_attention_step(c))
        return lh_cpu_cp_forward(plan, q, k, v, out, sv, ws);

    if (c->mode == LH_MODE_DENSE) {
        forward_job job = {plan, q, k, v, out, lse, 0, c->seq_len, 0, ws};
        run_forward_attention(&job);
        lh_cpu_saved_seal(plan, sv);
        return LH_OK;
    }

    int64_t BH = c->batch * c->heads, sel = BH * c->s_sel * c->head_dim;
    float *scores_q = (float *)ws;
    float *scores_k = (float *)(ws + floats(BH * c->s_total));
    float *q_sel = (float *)((char *)scores_k + floats(c->batch * c->kv_heads * c->s_total));
    float *k_sel = (float *)((char *)q_sel + floats(sel));
    float *v_sel = (float *)((char *)k_sel + floats(sel));
    char *scratch = (char *)v_sel + floats(sel);
    int32_t *indices = (int32_t *)(sv + plan->saved_idx_off);
    float *o_sel = (float *)(sv + plan->saved_o_off);

    lh_cpu_scores(plan, q, k, scores_q, scores_k);
    lh_cpu_select(plan, scores_q, scores_k, indices, scratch);
    lh_cpu_gather(plan, q, k, v, indices, q_sel, k_sel, v_sel);
    forward_job job = {plan, q_sel, k_sel, v_sel, o_sel, lse, 1, c->s_sel, 0, scratch};
    run_forward_attention(&job);
    lh_cpu_scatter(plan, indices, o_sel, out);
    lh_cpu_saved_seal(plan, sv);
    return LH_OK;
}
