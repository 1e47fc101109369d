/* bench.h - what the benchmark's files share: options, one measured configuration, timing. */
#ifndef LH_BENCH_H
#define LH_BENCH_H

#include <stdint.h>

#include "host_device.h"
#include "lighthouse.h"

#define BENCH_MAX_SEQS 16

typedef struct bench_options {
    int64_t seqs[BENCH_MAX_SEQS];
    int num_seqs;
    int64_t batch, heads, kv_heads, dim, levels, pooling, topk;
    lh_dtype dtype;
    int warmup, repeats;
    int64_t dense_max_seq;     /* dense attention only up to this N (it is quadratic) */
    const char *json_path;
    int lighthouse_only;       /* --lighthouse-only 1: only the Lighthouse plan's runs (profiling) */
    int recompute;             /* --recompute 1: LH_PARAM_RECOMPUTE_SUBSEQ (smaller `saved`) */
} bench_options;

/* Per-stage time of the Lighthouse forward through the stage entry points, and bytes moved. */
typedef struct stage_result {
    const char *name;
    double ms;
    double bytes;
} stage_result;

#define BENCH_STAGES 4

typedef struct bench_row {
    int64_t seq, s_sel;
    double lh_fwd, lh_fwdbwd;           /* ms, median; < 0 = not run */
    double dense_fwd, dense_fwdbwd;
    double floor_fwd, floor_fwdbwd;     /* cuDNN (dense mode) on a sequence of length S_sel */
    double fwd_over_floor, fwdbwd_over_floor;   /* median of per-pair ratios; < 0 = not run */
    double jit_cold_ms, jit_disk_ms, jit_memory_ms;
    int64_t saved_bytes;
    stage_result stages[BENCH_STAGES];
    const char *lh_error;               /* why Lighthouse did not run, or NULL */
} bench_row;

/* Runs `fn(arg)` warmup + repeats times between events; returns the median in ms (< 0 on error). */
typedef int (*bench_fn)(void *arg, int iteration);
double bench_median_ms(const bench_options *o, bench_fn fn, void *arg);

/* The per-stage measurement of one N (bench_stages.c). */
void bench_stages(const bench_options *o, lh_context *ctx, int64_t seq, bench_row *row);

/* A plan for `seq` tokens in `mode` on `ctx`; NULL (with the reason printed) on failure. */
lh_plan *bench_plan(lh_context *ctx, const bench_options *o, int64_t seq, lh_mode mode);
int64_t bench_query(lh_plan *plan, lh_query q);

#endif
