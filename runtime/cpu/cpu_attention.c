/*
 * cpu_attention.c - the attention the pipeline runs: the attention step on chunk-major
 * sub-sequences (lh_attention_forward / _backward, and the step of lh_forward / lh_backward),
 * which is one causal block pair without a ring and the built-in ring on one; and dense
 * attention on the caller's tensors (dense plans without ring or hooks).
 *
 * Workspace without a ring: one scratch slice per thread (which the selection borrows before the
 * attention runs), then dvec [B,H,S] for the backward. On a ring: cpu_ring.c's layout, which
 * also starts with the scratch.
 */
#include "cpu_attention.h"

static size_t floats(int64_t n) { return lh_cpu_round64((size_t)n * sizeof(float)); }

static size_t scratch_total(const lh_cpu_plan *plan) {
    return (size_t)plan->nthreads * plan->scratch_bytes;
}

size_t lh_cpu_attention_fwd_bytes(const lh_cpu_plan *plan) { return scratch_total(plan); }

size_t lh_cpu_attention_bwd_bytes(const lh_cpu_plan *plan) {
    const lh_config *c = &plan->cfg;
    return scratch_total(plan) + floats(c->batch * c->heads * c->s_chunk);
}

size_t lh_cpu_attention_step_bytes(const lh_cpu_plan *plan) {
    return plan->cfg.ring ? lh_cpu_ring_workspace_bytes(plan) : lh_cpu_attention_bwd_bytes(plan);
}

/* ---- the step -------------------------------------------------------------------------------- */

/* The transport of the plan's (local) ring. */
static lh_cpu_transport transport_of(const lh_config *c) {
    lh_cpu_transport t;
    lh_cpu_transport_local(c->ring, (int)c->cp_rank, &t);
    return t;
}

lh_status lh_cpu_attention_forward(void *plan_state, const void *q_sel, const void *k_sel,
                                   const void *v_sel, void *o_sel, float *lse, void *workspace,
                                   void *stream) {
    (void)stream;
    const lh_cpu_plan *plan = plan_state;
    const lh_config *c = &plan->cfg;
    if (c->ring) {
        lh_cpu_transport t = transport_of(c);
        return lh_cpu_ring_forward(plan, &t, q_sel, k_sel, v_sel, o_sel, lse, workspace);
    }
    lh_cpu_pair pair = {q_sel, k_sel, v_sel, 0};
    lh_cpu_pair_forward(plan, &pair, o_sel, lse, NULL, NULL, workspace);
    return LH_OK;
}

lh_status lh_cpu_attention_backward(void *plan_state, const void *q_sel, const void *k_sel,
                                    const void *v_sel, const void *o_sel, const float *lse,
                                    const void *do_sel, void *dq_sel, void *dk_sel, void *dv_sel,
                                    void *workspace, void *stream) {
    (void)stream;
    const lh_cpu_plan *plan = plan_state;
    const lh_config *c = &plan->cfg;
    if (c->ring) {
        lh_cpu_transport t = transport_of(c);
        return lh_cpu_ring_backward(plan, &t, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel,
                                    dk_sel, dv_sel, workspace);
    }
    lh_cpu_pair pair = {q_sel, k_sel, v_sel, 0};
    float *dvec = (float *)((char *)workspace + scratch_total(plan));
    lh_cpu_pair_backward(plan, &pair, o_sel, do_sel, lse, dvec, dq_sel, dk_sel, dv_sel, 0,
                         workspace);
    return LH_OK;
}

/* ---- dense attention on the caller's tensors ------------------------------------------------- */

typedef struct dense_job {
    const lh_cpu_plan *plan;
    const float *q, *k, *v, *o, *dout, *lse;
    float *out, *lse_out, *dvec, *dq, *dk, *dv;
    int64_t blocks;
    char *scratch;
} dense_job;

static float *scratch_of(const dense_job *job, int tid) {
    return (float *)(job->scratch + (size_t)tid * job->plan->scratch_bytes);
}

/* Rows of head h (batch b) of a tensor x with `heads` heads, and their stride. */
static const float *rows_of(const lh_config *cfg, const float *x, int64_t heads, int64_t b,
                            int64_t h, int64_t *stride) {
    *stride = lh_cpu_token_stride(cfg, heads);
    return x + lh_tensor_offset(cfg, heads, b, 0, h, 0);
}

/* Query head bh = b*H + h with its kv head's keys and values. */
static lh_cpu_head head_of(const dense_job *job, int64_t bh) {
    const lh_config *cfg = &job->plan->cfg;
    int64_t b = bh / cfg->heads, h = bh % cfg->heads, hk = h / lh_cpu_group(cfg);
    lh_cpu_head hd = {.len = cfg->seq_len, .full = 0};
    hd.q = rows_of(cfg, job->q, cfg->heads, b, h, &hd.q_stride);
    hd.k = rows_of(cfg, job->k, cfg->kv_heads, b, hk, &hd.kv_stride);
    hd.v = rows_of(cfg, job->v, cfg->kv_heads, b, hk, &hd.kv_stride);
    return hd;
}

/* Task = (row block, b*H + h): the last row blocks see the most keys, so they go first. */
static void forward_task(void *arg, int64_t task, int tid) {
    const dense_job *job = arg;
    const lh_config *cfg = &job->plan->cfg;
    int64_t BH = cfg->batch * cfg->heads, len = cfg->seq_len;
    int64_t rb = job->blocks - 1 - task / BH, bh = task % BH;
    lh_cpu_head hd = head_of(job, bh);
    int64_t os;
    float *o = (float *)rows_of(cfg, job->out, cfg->heads, bh / cfg->heads, bh % cfg->heads, &os);
    int64_t r0 = rb * LH_CPU_BLOCK, r1 = r0 + LH_CPU_BLOCK < len ? r0 + LH_CPU_BLOCK : len;
    lh_cpu_attention_rows(&hd, cfg->head_dim, (float)cfg->scale, r0, r1, o, os,
                          job->lse_out + bh * len, scratch_of(job, tid));
}

/* Backward, query side: task = (row block, b*H + h), costly (late) row blocks first. */
static void rows_task(void *arg, int64_t task, int tid) {
    const dense_job *job = arg;
    const lh_config *cfg = &job->plan->cfg;
    int64_t BH = cfg->batch * cfg->heads, len = cfg->seq_len;
    int64_t rb = job->blocks - 1 - task / BH, bh = task % BH;
    int64_t b = bh / cfg->heads, h = bh % cfg->heads, os, ds, dqs;
    lh_cpu_head hd = head_of(job, bh);
    const float *o = rows_of(cfg, job->o, cfg->heads, b, h, &os);
    const float *dout = rows_of(cfg, job->dout, cfg->heads, b, h, &ds);
    float *dq = (float *)rows_of(cfg, job->dq, cfg->heads, b, h, &dqs);
    int64_t r0 = rb * LH_CPU_BLOCK, r1 = r0 + LH_CPU_BLOCK < len ? r0 + LH_CPU_BLOCK : len;
    lh_cpu_attention_bwd_rows(&hd, cfg->head_dim, (float)cfg->scale, r0, r1, o, os, dout, ds,
                              job->lse + bh * len, job->dvec + bh * len, dq, dqs, 0,
                              scratch_of(job, tid));
}

/* Backward, key side: task = (column block, b*Hkv + hk); the kv head sums its G query heads.
 * Early column blocks see the most query rows: hand them out first. */
static void cols_task(void *arg, int64_t task, int tid) {
    const dense_job *job = arg;
    const lh_config *cfg = &job->plan->cfg;
    int64_t owners = cfg->batch * cfg->kv_heads, len = cfg->seq_len;
    int64_t cb = task / owners, owner = task % owners;
    int64_t b = owner / cfg->kv_heads, hk = owner % cfg->kv_heads;
    int64_t G = lh_cpu_group(cfg), h0 = hk * G;
    lh_cpu_qgrad qs[64];
    int64_t kvs, dkvs, done = 0;
    const float *k = rows_of(cfg, job->k, cfg->kv_heads, b, hk, &kvs);
    const float *v = rows_of(cfg, job->v, cfg->kv_heads, b, hk, &kvs);
    float *dk = (float *)rows_of(cfg, job->dk, cfg->kv_heads, b, hk, &dkvs);
    float *dv = (float *)rows_of(cfg, job->dv, cfg->kv_heads, b, hk, &dkvs);
    int64_t c0 = cb * LH_CPU_BLOCK, c1 = c0 + LH_CPU_BLOCK < len ? c0 + LH_CPU_BLOCK : len;
    /* The query heads of a kv head go in groups of up to 64 (GQA groups are rarely larger);
     * the first group writes dk, dv and later groups add to them. */
    while (done < G) {
        int64_t n = G - done < 64 ? G - done : 64;
        for (int64_t g = 0; g < n; g++) {
            int64_t h = h0 + done + g, bh = b * cfg->heads + h;
            qs[g].q = rows_of(cfg, job->q, cfg->heads, b, h, &qs[g].q_stride);
            qs[g].dout = rows_of(cfg, job->dout, cfg->heads, b, h, &qs[g].dout_stride);
            qs[g].lse = job->lse + bh * len;
            qs[g].dvec = job->dvec + bh * len;
        }
        lh_cpu_attention_bwd_cols(k, v, kvs, len, 0, cfg->head_dim, (float)cfg->scale, qs, n, c0,
                                  c1, dk, dv, dkvs, done > 0, scratch_of(job, tid));
        done += n;
    }
}

lh_status lh_cpu_dense_forward(void *plan_state, const void *q, const void *k, const void *v,
                               void *out, float *lse, void *workspace, void *stream) {
    (void)stream;
    const lh_cpu_plan *plan = plan_state;
    const lh_config *c = &plan->cfg;
    dense_job job = {.plan = plan, .q = q, .k = k, .v = v, .out = out, .lse_out = lse,
                     .scratch = workspace};
    job.blocks = (c->seq_len + LH_CPU_BLOCK - 1) / LH_CPU_BLOCK;
    lh_cpu_parallel_for(plan->nthreads, job.blocks * c->batch * c->heads, forward_task, &job);
    return LH_OK;
}

lh_status lh_cpu_dense_backward(void *plan_state, const void *q, const void *k, const void *v,
                                const void *out, const void *dout, const float *lse, void *dq,
                                void *dk, void *dv, void *workspace, void *stream) {
    (void)stream;
    const lh_cpu_plan *plan = plan_state;
    const lh_config *c = &plan->cfg;
    dense_job job = {.plan = plan, .q = q, .k = k, .v = v, .o = out, .dout = dout, .lse = lse,
                     .dq = dq, .dk = dk, .dv = dv, .scratch = workspace,
                     .dvec = (float *)((char *)workspace + scratch_total(plan))};
    job.blocks = (c->seq_len + LH_CPU_BLOCK - 1) / LH_CPU_BLOCK;
    /* The key side reads dvec, which the query side writes. */
    lh_cpu_parallel_for(plan->nthreads, job.blocks * c->batch * c->heads, rows_task, &job);
    lh_cpu_parallel_for(plan->nthreads, job.blocks * c->batch * c->kv_heads, cols_task, &job);
    return LH_OK;
}
