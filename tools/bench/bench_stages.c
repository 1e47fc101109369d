/* bench_stages.c - the Lighthouse forward stage by stage through the public stage entry points
 * (scores, select, gather, scatter), each with the bytes it moves, so the table can set each
 * stage's bandwidth against the device copy. Attention itself is the "floor" column. */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

typedef struct stage_buffers {
    lh_plan *plan;
    void *q, *k, *v, *out, *q_sel, *k_sel, *v_sel, *ws;
    float *scores_q, *scores_k;
    int32_t *indices;
    int which;
} stage_buffers;

static int run_stage(void *arg, int it) {
    (void)it;
    stage_buffers *b = arg;
    switch (b->which) {
    case 0: return lh_scores(b->plan, b->q, b->k, b->scores_q, b->scores_k, b->ws, NULL) != LH_OK;
    case 1: return lh_select(b->plan, b->scores_q, b->scores_k, b->indices, b->ws, NULL) != LH_OK;
    case 2:
        return lh_gather(b->plan, b->q, b->k, b->v, b->indices, b->q_sel, b->k_sel, b->v_sel, b->ws, NULL) != LH_OK;
    default: return lh_scatter(b->plan, b->indices, b->q_sel, b->out, b->ws, NULL) != LH_OK;
    }
}

void bench_stages(const bench_options *o, lh_context *ctx, int64_t seq, bench_row *row) {
    static const char *names[BENCH_STAGES] = {"scores", "select", "gather", "scatter"};
    for (int s = 0; s < BENCH_STAGES; s++) {
        row->stages[s].name = names[s];
        row->stages[s].ms = -1.0;
    }
    lh_plan *plan = bench_plan(ctx, o, seq, LH_MODE_LIGHTHOUSE);
    if (!plan) return;
    const double es = 2.0, B = (double)o->batch, H = (double)o->heads, Hkv = (double)o->kv_heads;
    const double D = (double)o->dim, N = (double)seq;
    const double s_total = (double)bench_query(plan, LH_QUERY_PYRAMID_LEN);
    const double s_sel = (double)bench_query(plan, LH_QUERY_SUBSEQ_LEN);
    /* Rows a gather reads per head: the coarsest level covers all N tokens once; every finer
     * level keeps topk * p entries of width p^l. */
    double rows = N, width = 1.0;
    for (int64_t l = 0; l + 1 < o->levels; l++, width *= (double)o->pooling)
        rows += (double)o->topk * (double)o->pooling * width;
    row->stages[0].bytes = (B * N * (H + Hkv) * D) * es + B * (H + Hkv) * s_total * 4.0;
    row->stages[1].bytes = 2.0 * B * H * s_total * 4.0 + B * H * s_sel * 4.0;
    row->stages[2].bytes = 3.0 * B * H * rows * D * es + 3.0 * B * H * s_sel * D * es;
    row->stages[3].bytes = B * H * s_sel * D * es + B * N * H * D * es;

    stage_buffers b = {0};
    b.plan = plan;
    size_t qb = (size_t)(B * N * H * D * es), kb = (size_t)(B * N * Hkv * D * es);
    size_t selb = (size_t)(B * H * s_sel * D * es);
    int64_t ws = bench_query(plan, LH_QUERY_STAGE_WORKSPACE_BYTES);
    b.q = hd_alloc(LH_BACKEND_CUDA, qb);
    b.k = hd_alloc(LH_BACKEND_CUDA, kb);
    b.v = hd_alloc(LH_BACKEND_CUDA, kb);
    b.out = hd_alloc(LH_BACKEND_CUDA, qb);
    b.q_sel = hd_alloc(LH_BACKEND_CUDA, selb);
    b.k_sel = hd_alloc(LH_BACKEND_CUDA, selb);
    b.v_sel = hd_alloc(LH_BACKEND_CUDA, selb);
    b.scores_q = hd_alloc(LH_BACKEND_CUDA, (size_t)(B * H * s_total * 4));
    b.scores_k = hd_alloc(LH_BACKEND_CUDA, (size_t)(B * Hkv * s_total * 4));
    b.indices = hd_alloc(LH_BACKEND_CUDA, (size_t)(B * H * s_sel * 4));
    b.ws = ws > 0 ? hd_alloc(LH_BACKEND_CUDA, (size_t)ws) : NULL;
    if (b.q && b.k && b.v && b.out && b.q_sel && b.k_sel && b.v_sel && b.scores_q && b.scores_k &&
        b.indices && (ws == 0 || b.ws)) {
        /* Inputs: any bytes that are finite numbers; 0x3c bytes are bf16 0.0115 / fp16 1.06. */
        hd_memset(LH_BACKEND_CUDA, b.q, 0x3c, qb);
        hd_memset(LH_BACKEND_CUDA, b.k, 0x3c, kb);
        hd_memset(LH_BACKEND_CUDA, b.v, 0x3c, kb);
        for (int s = 0; s < BENCH_STAGES; s++) {
            b.which = s;
            row->stages[s].ms = bench_median_ms(o, run_stage, &b);
            if (row->stages[s].ms < 0) fprintf(stderr, "  stage %s: %s\n", names[s], lh_last_error());
        }
    }
    void *all[] = {b.q, b.k, b.v, b.out, b.q_sel, b.k_sel, b.v_sel, b.scores_q, b.scores_k, b.indices, b.ws};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) hd_free(LH_BACKEND_CUDA, all[i]);
    lh_plan_destroy(plan);
}
