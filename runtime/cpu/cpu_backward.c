/*
 * cpu_backward.c - the backward call (docs/spec.md section 6).
 *
 * Lighthouse mode: re-gather q, k, v of the saved indices (cheaper than saving them), gather-sum
 * dout per entry, attention backward on the sub-sequence from the saved O and LSE, then the pool
 * backward writes dq, dk, dv. Dense mode runs the attention backward on the caller's tensors.
 *
 * Backward workspace, Lighthouse mode (each region 64-byte aligned):
 *   q_sel, k_sel, v_sel, dO_sel, g_q, g_k, g_v [B,H,S_sel,D] | dvec [B,H,S_sel] | scratch
 * Dense mode: dvec [B,H,N] | scratch.
 * Plans on a ring or with attention hooks run cpu_cp.c instead (its own layouts).
 */
#include "cpu_ring.h"

static size_t floats(int64_t n) { return lh_cpu_round64((size_t)n * sizeof(float)); }

size_t lh_cpu_backward_workspace_bytes(const lh_cpu_plan *plan) {
    const lh_config *c = &plan->cfg;
    size_t scratch = (size_t)plan->nthreads * plan->scratch_bytes;
    if (lh_cpu_uses_attention_step(c))
        return lh_cpu_cp_backward_workspace_bytes(plan);
    if (c->mode == LH_MODE_DENSE)
        return floats(c->batch * c->heads * c->seq_len) + scratch;
    return 7 * floats(c->batch * c->heads * c->s_sel * c->head_dim) +
           floats(c->batch * c->heads * c->s_sel) + scratch;
}

typedef struct backward_job {
    const lh_cpu_plan *plan;
    int selected;                 /* 1: sub-sequence buffers [B,H,S_sel,D]; 0: caller tensors */
    const float *q, *k, *v, *o, *dout, *lse;
    float *dvec, *dq, *dk, *dv;
    int64_t len, blocks;
    char *scratch;
} backward_job;

/* Rows of query head h (batch b) of a q-side tensor x, and their stride. */
static const float *q_rows(const backward_job *job, const float *x, int64_t b, int64_t h,
                           int64_t *stride) {
    const lh_config *cfg = &job->plan->cfg;
    if (job->selected) {
        *stride = cfg->head_dim;
        return x + (b * cfg->heads + h) * job->len * cfg->head_dim;
    }
    *stride = lh_cpu_token_stride(cfg, cfg->heads);
    return x + lh_tensor_offset(cfg, cfg->heads, b, 0, h, 0);
}

/* Rows of the keys/values seen by kv head hk, (the sub-sequence of query head hk when selected:
 * there every query head has its own gathered keys). */
static const float *kv_rows(const backward_job *job, const float *x, int64_t b, int64_t hk,
                            int64_t *stride) {
    const lh_config *cfg = &job->plan->cfg;
    if (job->selected)
        return q_rows(job, x, b, hk, stride);
    *stride = lh_cpu_token_stride(cfg, cfg->kv_heads);
    return x + lh_tensor_offset(cfg, cfg->kv_heads, b, 0, hk, 0);
}

static float *scratch_of(const backward_job *job, int tid) {
    return (float *)(job->scratch + (size_t)tid * job->plan->scratch_bytes);
}

/* Task = (row block, b*H + h), costly (late) row blocks first. */
static void rows_task(void *arg, int64_t task, int tid) {
    const backward_job *job = arg;
    const lh_config *cfg = &job->plan->cfg;
    int64_t BH = cfg->batch * cfg->heads;
    int64_t rb = job->blocks - 1 - task / BH, bh = task % BH;
    int64_t b = bh / cfg->heads, h = bh % cfg->heads;
    int64_t hk = job->selected ? h : h / lh_cpu_group(cfg);
    int64_t qs, kvs, os, ds, dqs;
    lh_cpu_head hd;
    hd.q = q_rows(job, job->q, b, h, &qs);
    hd.k = kv_rows(job, job->k, b, hk, &kvs);
    hd.v = kv_rows(job, job->v, b, hk, &kvs);
    hd.q_stride = qs;
    hd.kv_stride = kvs;
    hd.len = job->len;
    hd.full = 0;
    const float *o = q_rows(job, job->o, b, h, &os);
    const float *dout = q_rows(job, job->dout, b, h, &ds);
    float *dq = (float *)q_rows(job, job->dq, b, h, &dqs);
    int64_t r0 = rb * LH_CPU_BLOCK, r1 = r0 + LH_CPU_BLOCK < job->len ? r0 + LH_CPU_BLOCK : job->len;
    lh_cpu_attention_bwd_rows(&hd, cfg->head_dim, (float)cfg->scale, r0, r1, o, os, dout, ds,
                              job->lse + bh * job->len, job->dvec + bh * job->len, dq, dqs, 0,
                              scratch_of(job, tid));
}

/* Task = (column block, key owner): the owner is b*H + h when selected (each query head has its
 * own keys), b*Hkv + hk in dense mode (the kv head sums its G query heads). Early column blocks
 * see the most query rows: hand them out first. */
static void cols_task(void *arg, int64_t task, int tid) {
    const backward_job *job = arg;
    const lh_config *cfg = &job->plan->cfg;
    int64_t kv_heads = job->selected ? cfg->heads : cfg->kv_heads;
    int64_t owners = cfg->batch * kv_heads;
    int64_t cb = task / owners, owner = task % owners;
    int64_t b = owner / kv_heads, hk = owner % kv_heads;
    int64_t G = job->selected ? 1 : lh_cpu_group(cfg);
    int64_t h0 = job->selected ? hk : hk * G;
    lh_cpu_qgrad qs[64];
    int64_t kvs, dkvs, done = 0;
    const float *k = kv_rows(job, job->k, b, hk, &kvs);
    const float *v = kv_rows(job, job->v, b, hk, &kvs);
    float *dk = (float *)kv_rows(job, job->dk, b, hk, &dkvs);
    float *dv = (float *)kv_rows(job, job->dv, b, hk, &dkvs);
    int64_t c0 = cb * LH_CPU_BLOCK, c1 = c0 + LH_CPU_BLOCK < job->len ? c0 + LH_CPU_BLOCK : job->len;
    /* The query heads of a kv head go in groups of up to 64 (GQA groups are rarely larger);
     * the first group writes dk, dv and later groups add to them. */
    while (done < G) {
        int64_t n = G - done < 64 ? G - done : 64;
        for (int64_t g = 0; g < n; g++) {
            int64_t h = h0 + done + g, bh = b * cfg->heads + h;
            qs[g].q = q_rows(job, job->q, b, h, &qs[g].q_stride);
            qs[g].dout = q_rows(job, job->dout, b, h, &qs[g].dout_stride);
            qs[g].lse = job->lse + bh * job->len;
            qs[g].dvec = job->dvec + bh * job->len;
        }
        lh_cpu_attention_bwd_cols(k, v, kvs, job->len, 0, cfg->head_dim, (float)cfg->scale, qs, n,
                                  c0, c1, dk, dv, dkvs, done > 0, scratch_of(job, tid));
        done += n;
    }
}

static void run_backward_attention(backward_job *job) {
    const lh_config *cfg = &job->plan->cfg;
    int64_t owners = cfg->batch * (job->selected ? cfg->heads : cfg->kv_heads);
    job->blocks = (job->len + LH_CPU_BLOCK - 1) / LH_CPU_BLOCK;
    lh_cpu_parallel_for(job->plan->nthreads, job->blocks * cfg->batch * cfg->heads, rows_task, job);
    lh_cpu_parallel_for(job->plan->nthreads, job->blocks * owners, cols_task, job);
}

lh_status lh_cpu_backward(void *plan_state, const void *q, const void *k, const void *v,
                          const void *out, const void *dout, const void *saved, void *dq,
                          void *dk, void *dv, void *workspace, void *stream) {
    (void)stream;
    const lh_cpu_plan *plan = plan_state;
    const lh_config *c = &plan->cfg;
    char *ws = workspace;
    const char *sv = saved;
    const float *lse = (const float *)(sv + plan->saved_lse_off);
    if (lh_cpu_uses_attention_step(c))
        return lh_cpu_cp_backward(plan, q, k, v, out, dout, sv, dq, dk, dv, ws);
    lh_status st = lh_cpu_saved_check(plan, sv);
    if (st != LH_OK)
        return st;

    if (c->mode == LH_MODE_DENSE) {
        float *dvec = (float *)ws;
        backward_job job = {plan, 0, q, k, v, out, dout, lse, dvec, dq, dk, dv, c->seq_len, 0,
                            ws + floats(c->batch * c->heads * c->seq_len)};
        run_backward_attention(&job);
        return LH_OK;
    }

    int64_t sel = c->batch * c->heads * c->s_sel * c->head_dim;
    float *buf[7];
    for (int i = 0; i < 7; i++)
        buf[i] = (float *)(ws + (size_t)i * floats(sel));
    float *dvec = (float *)(ws + 7 * floats(sel));
    char *scratch = (char *)dvec + floats(c->batch * c->heads * c->s_sel);
    const int32_t *indices = (const int32_t *)(sv + plan->saved_idx_off);
    const float *o_sel = (const float *)(sv + plan->saved_o_off);

    lh_cpu_gather(plan, q, k, v, indices, buf[0], buf[1], buf[2]);
    lh_cpu_gather_dout(plan, indices, dout, buf[3]);
    backward_job job = {plan, 1, buf[0], buf[1], buf[2], o_sel, buf[3], lse, dvec,
                        buf[4], buf[5], buf[6], c->s_sel, 0, scratch};
    run_backward_attention(&job);
    lh_cpu_unpool_grads(plan, indices, buf[4], buf[5], buf[6], dq, dk, dv);
    return LH_OK;
}
