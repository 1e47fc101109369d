/* bench.h - what the benchmark's files share: options, one measured configuration, timing. */
#ifndef LH_BENCH_H
#define LH_BENCH_H

#include <stdint.h>
#include <stdio.h>

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
    int startup_only;          /* --startup-only 1: the start-up table alone */
    const char *startup_cache; /* --startup-cache DIR: start from this cache, not an empty one
                                  (one filled ahead of time by lighthouse-compile --device) */
    int startup_gap_ms;        /* --startup-gap-ms M: the cold plan M ms after its context, as
                                  a training script builds its model in between */
    int lighthouse_only;       /* --lighthouse-only 1: only the Lighthouse plan's runs (profiling) */
    int recompute;             /* --recompute 1: LH_PARAM_RECOMPUTE_SUBSEQ (smaller `saved`) */
    int stage_timing;          /* LH_PARAM_STAGE_TIMING of the plans bench_plan makes */
    int shape_table;           /* --shape-table 1: the shapes of real models (bench_shapes.c) */
    int64_t batches[4];        /* the shape table's batch sizes (--batches 1,2) */
    int num_batches;
    int64_t dilation;          /* --dilated D: also time the dilated scorer (bench_scorer.c) */
    int dilated_plans;         /* bench_plan makes plans of the dilated scorer (dilation) */
    int alternate_pairs;       /* --pair-order alternate: every other repeat of a timed pair runs
                                  its second call first (fixed, the default: always in order) */
} bench_options;

/* One stage of the Lighthouse forward or backward, timed inside the pipeline (CUDA events around
 * the stage, LH_PARAM_STAGE_TIMING), and the bytes it moves (0: compute-bound, no bandwidth). */
typedef struct stage_result {
    const char *name;
    double ms;
    double bytes;
} stage_result;

#define BENCH_STAGES LH_STAGE_COUNT

/* Plan start-up (bench_startup.c): a Lighthouse plan finalized cold (new context, empty kernel
 * cache), from disk (new context, kernels cached) and from memory (second plan of a context). */
enum { STARTUP_COLD = 0, STARTUP_DISK, STARTUP_MEMORY, STARTUP_CASES };
#define BENCH_SETUP_PHASES (LH_QUERY_SETUP_CUDNN_PLAN_US - LH_QUERY_SETUP_KERNELS_US + 1)
typedef struct startup_result {
    double total_ms;                        /* the whole lh_plan_create .. finalize; < 0 = failed */
    double phase_ms[BENCH_SETUP_PHASES];    /* LH_QUERY_SETUP_KERNELS_US .. _CUDNN_PLAN_US */
    int64_t reused;                         /* LH_QUERY_SETUP_CUDNN_REUSED */
} startup_result;

/* The most repeats a timing keeps (--repeats beyond it are capped). */
enum { BENCH_MAX_REPEATS = 64 };

typedef struct bench_row {
    int64_t seq, s_sel;
    double lh_fwd, lh_fwdbwd;           /* ms, median; < 0 = not run */
    double dense_fwd, dense_fwdbwd;
    double floor_fwd, floor_fwdbwd;     /* cuDNN (dense mode) on a sequence of length S_sel */
    double fwd_over_floor, fwdbwd_over_floor;   /* median of per-pair ratios; < 0 = not run */
    /* every pair behind those ratios, in run order: pair_ms[backward][0 = Lighthouse, 1 = floor]
     * [repeat], `pairs` of them; the spread of the ratios shows how far a median can be trusted */
    int pairs;
    double pair_ms[2][2][BENCH_MAX_REPEATS];
    startup_result startup[STARTUP_CASES];
    int64_t saved_bytes;
    stage_result stages[BENCH_STAGES];
    const char *lh_error;               /* why Lighthouse did not run, or NULL */
    /* --dilated: the norm and the dilated scorer's Lighthouse, timed in pairs; < 0 = not run */
    double norm_fwd, dilated_fwd, norm_fwdbwd, dilated_fwdbwd;
    double dilated_scores_ms, norm_scores_ms; /* their scores stage (stage timing) */
} bench_row;

/* The median of v[0 .. n) (n >= 1; sorts v). */
double bench_median(double *v, int n);

/* The repeats a timing takes: --repeats, capped at BENCH_MAX_REPEATS. */
int bench_repeats(const bench_options *o);

/* Runs `fn(arg)` warmup + repeats times between events; returns the median in ms (< 0 on error). */
typedef int (*bench_fn)(void *arg, int iteration);
double bench_median_ms(const bench_options *o, bench_fn fn, void *arg);
/* Runs fns[0] and fns[1] back to back, warmup + repeats times: their medians in ms[0], ms[1].
 * 0 on success. */
int bench_pair_ms(const bench_options *o, const bench_fn fns[2], void *const args[2], double ms[2]);

/* Device buffers for forward and backward runs of one plan: input sets rotated so that small N
 * does not run from L2, random inputs. */
typedef struct run_buffers {
    lh_plan *plan;
    int sets;
    void *q[4], *k[4], *v[4];
    void *out, *dout, *dq, *dk, *dv, *saved, *ws;
    int backward;                   /* run_once: forward only (0) or forward + backward (1) */
} run_buffers;

/* 0 when every buffer of `plan` on `seq` tokens was allocated and filled. */
int buffers_alloc(const bench_options *o, lh_plan *plan, int64_t seq, run_buffers *r);
void buffers_free(run_buffers *r);
/* One forward (and backward) with input set `it % sets`: a bench_fn. */
int run_once(void *arg, int it);

/* Forward and forward+backward of `plan` alone (medians to *fwd, *fwdbwd; < 0 where not run). */
void time_plan(const bench_options *o, lh_plan *plan, int64_t seq, double *fwd, double *fwdbwd);
/* Lighthouse against its floor, forward and forward+backward, each pair of calls back to back:
 * the ratios the targets are about come from calls made under the same clocks and heat, not
 * from two medians taken minutes apart. Fills the row's LH, floor and ratio fields. */
void time_against_floor(const bench_options *o, lh_plan *lh, int64_t seq, lh_plan *floor_plan,
                        int64_t s_sel, bench_row *row);
/* Device-to-device copy rate, GB/s counted as read + write. */
double copy_bandwidth_gbs(const bench_options *o);

/* Plan start-up at `seq` tokens, the three cases (bench_startup.c), and its table and JSON. */
void bench_startup(const bench_options *o, int64_t seq, startup_result out[STARTUP_CASES]);
void print_startup_header(void);
void print_startup_rows(int64_t seq, const startup_result r[STARTUP_CASES]);
void json_startup(FILE *f, const startup_result r[STARTUP_CASES]);

/* The shape table (bench_shapes.c): the shapes of real models, B = 1 and 2, o->seqs, in one run;
 * prints the table, writes o->json_path. 0 on success. */
int bench_shape_table(const bench_options *o, lh_context *ctx, double copy_gbs);
/* The dilated scorer's cost at one N against the norm scorer's (bench_scorer.c), its table
 * and its JSON keys. */
void bench_scorer(const bench_options *o, lh_context *ctx, int64_t seq, bench_row *row);
void bench_scorer_table(const bench_options *o, const bench_row *rows, int n);
void bench_scorer_json(FILE *f, const bench_row *row);

/* The per-stage measurement of one N (bench_stages.c). */
void bench_stages(const bench_options *o, lh_context *ctx, int64_t seq, bench_row *row);

/* A plan for `seq` tokens in `mode` on `ctx`; NULL (with the reason printed) on failure. */
lh_plan *bench_plan(lh_context *ctx, const bench_options *o, int64_t seq, lh_mode mode);
int64_t bench_query(lh_plan *plan, lh_query q);

#endif
