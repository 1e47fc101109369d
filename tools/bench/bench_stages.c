/* bench_stages.c - the Lighthouse forward and backward stage by stage, timed where they run: a
 * plan with LH_PARAM_STAGE_TIMING records CUDA events around each stage inside lh_forward and
 * lh_backward, so every stage sees the same inputs, caches and neighbours as in training. Each
 * memory-bound stage comes with the bytes it moves, for its bandwidth against the device copy. */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

/* Bytes each stage reads and writes once, counted from the algorithm (what a perfect cache would
 * move; ncu's DRAM counts are within ~10%: some rows are read twice, some hit L2). Per (batch,
 * head): `rows` token rows are read to build the sub-sequence (the coarsest level covers all N
 * tokens once, each finer level keeps topk * p entries of width p^l), F = p^(L-1). Attention
 * stages are compute-bound: 0. */
static void stage_bytes(const bench_options *o, int64_t seq, double s_total, double s_sel,
                        double out[BENCH_STAGES]) {
    const double es = 2.0, B = (double)o->batch, H = (double)o->heads, Hkv = (double)o->kv_heads;
    const double D = (double)o->dim, N = (double)seq, row = D * es;
    double rows = N, width = 1.0, F = 1.0;
    for (int64_t l = 0; l + 1 < o->levels; l++, width *= (double)o->pooling) {
        rows += (double)o->topk * (double)o->pooling * width;
        F *= (double)o->pooling;
    }
    const double sub = B * H * s_sel * row;  /* one [B, H, S_sel, D] tensor */
    const double inv = B * H * s_total * 4.0; /* the inverse map */
    for (int s = 0; s < BENCH_STAGES; s++) out[s] = 0.0;
    /* q and k read; scores and the coarsest pooled q, k rows written */
    out[LH_STAGE_SCORES] = B * N * (H + Hkv) * row + B * (H + Hkv) * s_total * 4.0 +
                           B * (H + Hkv) * (N / F) * row;
    /* both score sets read per query head; indices written; the inverse map cleared and set */
    out[LH_STAGE_SELECT] = 2.0 * B * H * s_total * 4.0 + B * H * s_sel * 4.0 + inv;
    /* v rows averaged; q and k rows of the finer levels, the pooled coarsest rows copied */
    out[LH_STAGE_GATHER] = B * H * row * (rows + 2.0 * (rows - N + N / F)) + 3.0 * sub;
    out[LH_STAGE_SCATTER] = sub + inv + B * N * H * row;
    out[LH_STAGE_REGATHER] = B * H * row * 3.0 * rows + 3.0 * sub + inv;
    out[LH_STAGE_GATHER_DOUT] = B * H * rows * row + sub;
    /* dq_sel, dk_sel, dv_sel and the map read; dq, dk, dv written whole */
    out[LH_STAGE_POOL_GRAD] = 3.0 * sub + B * (H + 2.0 * Hkv) * s_total * 4.0 +
                              B * N * (H + 2.0 * Hkv) * row;
}

void bench_stages(const bench_options *o, lh_context *ctx, int64_t seq, bench_row *row) {
    static const char *names[BENCH_STAGES] = {
        "scores", "select", "gather", "attention_fwd", "scatter", "regather", "gather_dout",
        "attention_bwd", "pool_grad"};
    for (int s = 0; s < BENCH_STAGES; s++) {
        row->stages[s].name = names[s];
        row->stages[s].ms = -1.0;
        row->stages[s].bytes = 0.0;
    }
    bench_options so = *o;
    so.stage_timing = 1;
    lh_plan *plan = bench_plan(ctx, &so, seq, LH_MODE_LIGHTHOUSE);
    if (!plan) return;
    double bytes[BENCH_STAGES];
    stage_bytes(o, seq, (double)bench_query(plan, LH_QUERY_PYRAMID_LEN),
                (double)bench_query(plan, LH_QUERY_SUBSEQ_LEN), bytes);
    int n = bench_repeats(o), got[BENCH_STAGES] = {0};
    double (*times)[BENCH_MAX_REPEATS] = calloc(BENCH_STAGES, sizeof *times);
    run_buffers r = {0};
    if (times && buffers_alloc(o, plan, seq, &r) == 0) {
        r.backward = 1;
        int ok = 1;
        for (int i = 0; ok && i < o->warmup; i++) ok = run_once(&r, i) == 0;
        for (int i = 0; ok && i < n; i++) {
            ok = run_once(&r, o->warmup + i) == 0;
            /* a stage this configuration does not run (regather without recomputation) has no
             * time: lh_plan_get_stage_ms refuses it and it is left out */
            for (int s = 0; ok && s < BENCH_STAGES; s++) {
                double ms;
                if (lh_plan_get_stage_ms(plan, (lh_stage)s, &ms) == LH_OK) times[s][got[s]++] = ms;
            }
        }
        if (!ok) fprintf(stderr, "  stages (N=%lld): %s\n", (long long)seq, lh_last_error());
        for (int s = 0; ok && s < BENCH_STAGES; s++) {
            if (got[s] == 0) continue;
            row->stages[s].ms = bench_median(times[s], got[s]);
            row->stages[s].bytes = bytes[s];
        }
    }
    buffers_free(&r);
    free(times);
    lh_plan_destroy(plan);
}
