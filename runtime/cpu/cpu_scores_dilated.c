/*
 * cpu_scores_dilated.c - the scores stage of the dilated scorer (docs/spec.md section 10), fp32.
 *
 * Each head's tokens split into the d strided sequences t = j, j+d, j+2d, ... (j = t mod d); on
 * each, causal attention with scale 1/sqrt(D) runs twice: o_qk (queries q, keys k, values v) and
 * o_kq (queries k, keys q, values v). Then sq[t] = ||o_qk[t]||, sk[t] = ||o_kq[t]||, max-pooled
 * per level as the norm scorer does. A strided sequence is the caller's tensor read with d
 * times the token stride: nothing is copied. Only the norms are kept: a task computes one block
 * of output rows into its scratch, takes their norms and drops them, so the scorer needs one
 * block of rows per thread besides the attention kernel's own scratch, never an [N, D] output.
 */
#include "cpu_attention.h"

/* One thread's scratch: the attention kernel's, then a block of output rows and their lse. */
static size_t kernel_bytes(const lh_config *cfg) { return lh_cpu_attention_scratch_bytes(cfg); }
static size_t rows_bytes(const lh_config *cfg) {
    return lh_cpu_round64((size_t)(LH_CPU_BLOCK * cfg->head_dim) * sizeof(float));
}

size_t lh_cpu_dilated_thread_bytes(const lh_config *cfg) {
    return kernel_bytes(cfg) + rows_bytes(cfg) + lh_cpu_round64(LH_CPU_BLOCK * sizeof(float));
}

typedef struct dilated_job {
    const lh_config *cfg;
    const float *q, *k, *v;
    float *scores_q, *scores_k;
    int64_t d, len, blocks; /* dilation, rows of a strided sequence, row blocks of one */
    char *scratch;
    size_t thread_bytes;
    float scale;
} dilated_job;

/* Task = (row block, pass, b, h, j): pass 0 is o_qk, pass 1 o_kq. Late row blocks attend to
 * the most keys, so they are handed out first. */
static void dilated_task(void *arg, int64_t task, int tid) {
    const dilated_job *job = arg;
    const lh_config *cfg = job->cfg;
    int64_t H = cfg->heads, D = cfg->head_dim, d = job->d;
    int64_t per_block = 2 * cfg->batch * H * d;
    int64_t rb = job->blocks - 1 - task / per_block, rest = task % per_block;
    int64_t pass = rest / (cfg->batch * H * d);
    rest %= cfg->batch * H * d;
    int64_t b = rest / (H * d), h = rest / d % H, j = rest % d;

    const float *x = pass == 0 ? job->q : job->k, *y = pass == 0 ? job->k : job->q;
    int64_t stride = d * lh_cpu_token_stride(cfg, H); /* H == Hkv: q, k, v share strides */
    lh_cpu_head hd = {.q = x + lh_tensor_offset(cfg, H, b, j, h, 0),
                      .k = y + lh_tensor_offset(cfg, H, b, j, h, 0),
                      .v = job->v + lh_tensor_offset(cfg, H, b, j, h, 0),
                      .q_stride = stride, .kv_stride = stride, .len = job->len, .full = 0};
    char *scratch = job->scratch + (size_t)tid * job->thread_bytes;
    float *rows = (float *)(scratch + kernel_bytes(cfg));
    float *lse = (float *)(scratch + kernel_bytes(cfg) + rows_bytes(cfg));
    int64_t r0 = rb * LH_CPU_BLOCK, r1 = r0 + LH_CPU_BLOCK < job->len ? r0 + LH_CPU_BLOCK : job->len;
    /* The kernel writes row r at o + r * stride and lse[r]: shift both to the block's start. */
    lh_cpu_attention_rows(&hd, D, job->scale, r0, r1, rows - r0 * D, D, lse - r0,
                          (float *)scratch);
    float *s = (pass == 0 ? job->scores_q : job->scores_k) + (b * H + h) * cfg->s_total;
    for (int64_t r = r0; r < r1; r++)
        s[j + r * d] = lh_cpu_row_norm(rows + (r - r0) * D, D);
}

typedef struct pool_job {
    const lh_config *cfg;
    float *scores_q, *scores_k;
} pool_job;

static void pool_task(void *arg, int64_t task, int tid) {
    (void)tid;
    const pool_job *job = arg;
    const lh_config *cfg = job->cfg;
    int64_t heads = cfg->batch * cfg->heads;
    float *s = task < heads ? job->scores_q + task * cfg->s_total
                            : job->scores_k + (task - heads) * cfg->s_total;
    lh_cpu_max_pool_scores(cfg, 0, cfg->seq_len, s);
}

void lh_cpu_scores_dilated(const lh_cpu_plan *plan, const float *q, const float *k,
                           const float *v, float *scores_q, float *scores_k, void *scratch) {
    const lh_config *cfg = &plan->cfg;
    int64_t d = cfg->dilation, len = cfg->seq_len / d;
    dilated_job job = {.cfg = cfg, .q = q, .k = k, .v = v, .scores_q = scores_q,
                       .scores_k = scores_k, .d = d, .len = len,
                       .blocks = (len + LH_CPU_BLOCK - 1) / LH_CPU_BLOCK, .scratch = scratch,
                       .thread_bytes = lh_cpu_dilated_thread_bytes(cfg),
                       .scale = (float)lh_default_softmax_scale(cfg->head_dim)};
    /* Level 0 of every head first; the coarser levels read all of it. */
    lh_cpu_parallel_for(plan->nthreads, job.blocks * 2 * cfg->batch * cfg->heads * d,
                        dilated_task, &job);
    pool_job pool = {cfg, scores_q, scores_k};
    lh_cpu_parallel_for(plan->nthreads, cfg->batch * (cfg->heads + cfg->kv_heads), pool_task,
                        &pool);
}

lh_status lh_cpu_scores_dilated_stage(void *plan, const lh_chunk *ch, void *stream) {
    (void)stream;
    lh_cpu_scores_dilated(((const lh_cpu_plan *)plan)->chunk, ch->q, ch->k, ch->v, ch->scores_q,
                          ch->scores_k, ch->scorer);
    return LH_OK;
}
