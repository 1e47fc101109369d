/*
 * kernel_registry.c - the kernel templates the library carries, and which of them a plan needs
 * with which constants.
 *
 * The block sizes are chosen here, in one place, so that the runtime and lighthouse-compile ask
 * for identical constants and therefore hit the same cache entries.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "algorithm.h"
#include "compiler_internal.h"
#include "runtime.h"

int lhc_template_count(void) { return lhc_template_total; }

const char *lhc_template_name(int index) {
    return (index >= 0 && index < lhc_template_total) ? lhc_templates[index].name : NULL;
}

const char *lhc_template_source(const char *name) {
    for (int i = 0; name && i < lhc_template_total; i++)
        if (strcmp(lhc_templates[i].name, name) == 0) return lhc_templates[i].source;
    return NULL;
}

static int is_pow2(long long v) { return v > 0 && (v & (v - 1)) == 0; }

static lh_status add_request(lhc_kernel_request *out, int *count, const char *kernel, int threads,
                             int tokens, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static lh_status add_request(lhc_kernel_request *out, int *count, const char *kernel, int threads,
                             int tokens, const char *fmt, ...) {
    if (*count >= LHC_MAX_PLAN_KERNELS)
        return lh_fail(LH_ERROR_INTERNAL, "a plan needs more than %d kernels", LHC_MAX_PLAN_KERNELS);
    lhc_kernel_request *r = &out[(*count)++];
    memset(r, 0, sizeof *r);
    r->kernel = kernel;
    r->block_threads = threads;
    r->tokens_per_block = tokens;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->constants, sizeof r->constants, fmt, ap);
    va_end(ap);
    return LH_OK;
}

lh_status lhc_plan_kernels(const lhc_plan_params *pp, lhc_kernel_request out[LHC_MAX_PLAN_KERNELS],
                           int *count) {
    if (!pp || !out || !count) return lh_fail(LH_ERROR_NULL_POINTER, "lhc_plan_kernels: NULL argument");
    *count = 0;
    const int p = pp->pooling, levels = pp->levels, d = pp->head_dim;
    if (!is_pow2(p) || p < LH_MIN_POOLING || p > LH_MAX_POOLING)
        return lh_fail(LH_ERROR_UNSUPPORTED, "GPU kernels need POOLING a power of two in %d..%d (got %d)",
                       LH_MIN_POOLING, LH_MAX_POOLING, p);
    if (levels < LH_MIN_LEVELS || levels > LH_MAX_LEVELS)
        return lh_fail(LH_ERROR_UNSUPPORTED, "GPU kernels need LEVELS in %d..%d (got %d)", LH_MIN_LEVELS,
                       LH_MAX_LEVELS, levels);
    if (d % 8 != 0 || !is_pow2(d / 8) || d / 8 > 32)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "GPU kernels need HEAD_DIM in {8, 16, 32, 64, 128, 256}: 8 * a power of two "
                       "(16-byte vectors, one row per group of lanes inside a warp) (got %d)", d);
    if (!pp->dtype || (strcmp(pp->dtype, "bf16") != 0 && strcmp(pp->dtype, "f16") != 0))
        return lh_fail(LH_ERROR_UNSUPPORTED, "GPU kernels need dtype bf16 or f16 (got %s)",
                       pp->dtype ? pp->dtype : "NULL");
    if (pp->group < 0)
        return lh_fail(LH_ERROR_INVALID_VALUE, "the kv group size must be >= 0 (got %d)", pp->group);

    const int threads = 256;
    const int tokens_per_pass = threads / (d / 8);
    /* Pyramid: a slice of 512 tokens is 128 KB of bf16 q at D = 128: enough bytes in flight
     * per block, 4 KB of shared memory. A block spans the widest pooling window. */
    long long widest = 1;
    for (int l = 1; l < levels; l++) widest *= p;
    const int slice = 512;
    long long chunk = widest > slice ? widest : slice;
    if (chunk > (1 << 30))
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "POOLING^(LEVELS-1) = %lld is wider than the pyramid kernel's 2^30 tokens per block",
                       widest);
    /* Pooled rows: the passes staged per barrier (KPASS). Two halve the barriers and let two
     * chain groups sum their windows at once (0.2 ms less at 512K on an H200: docs/perf-log.md).
     * Only where a window fits in one pass (no sum carried across passes), at most one chain
     * group per window row (KPASS <= F), and dividing the slice's passes. */
    int kpass = 2;
    while (kpass > 1 && (widest > tokens_per_pass || kpass > widest ||
                         (slice / tokens_per_pass) % kpass != 0))
        kpass /= 2;
    lh_status st = add_request(out, count, "pyramid_scores", threads, (int)chunk,
                               "DTYPE=%s D=%d P=%d L=%d THREADS=%d SLICE=%d CHUNK=%lld KPASS=%d",
                               pp->dtype, d, p, levels, threads, slice, chunk, kpass);
    if (st != LH_OK) return st;

    /* Scatter and pool backward: each group of D/8 lanes takes a run of RUN = 4 consecutive
     * tokens, so the coarse levels' slots and rows are loaded once per run instead of once per
     * token (a power of two, like P: the kernels rely on it). 4 keeps a run's fp32 sums and rows
     * in registers; one run per group and block (64 tokens at D = 128): a second round in a loop
     * costs ~14 more registers per thread. */
    const int run = 4;
    const int tokens = tokens_per_pass * run;
    /* Selection and order: one block per (tile, head, batch); THREADS >= REFINED (one thread per
     * refined entry of a level) and shared memory fixed by L alone, whatever the tile length. */
    st = add_request(out, count, "select_order", threads, 0, "P=%d L=%d THREADS=%d SET=%d REFINED=%d", p,
                     levels, threads, LH_SET_SIZE, LH_TILE_REFINED);
    if (st != LH_OK) return st;
    /* Gather (and the backward's dout sums): 64 sub-sequence rows per block. */
    const int rows = tokens_per_pass > 64 ? tokens_per_pass : 64;
    st = add_request(out, count, "gather", threads, rows, "DTYPE=%s D=%d P=%d L=%d THREADS=%d ROWS=%d",
                     pp->dtype, d, p, levels, threads, rows);
    if (st != LH_OK) return st;
    /* pool_grad is bound by its two dependent load steps, so by blocks per SM: at G = 1 one
     * component per block fits 64 registers (half the SM's threads resident, like the gather);
     * a fixed G > 1 carries a run's sums across the head loop: two blocks (at most 128). */
    const int pg_blocks = pp->group == 1 ? 2048 / threads / 2 : 2048 / threads / 4;
    st = add_request(out, count, "pool_grad", threads, tokens,
                     "DTYPE=%s D=%d P=%d L=%d THREADS=%d RUN=%d TOKENS=%d GROUP=%d MINCTA=%d", pp->dtype,
                     d, p, levels, threads, run, tokens, pp->group, pg_blocks);
    if (st != LH_OK) return st;
    return add_request(out, count, "scatter", threads, tokens,
                       "DTYPE=%s D=%d P=%d L=%d THREADS=%d RUN=%d TOKENS=%d", pp->dtype, d, p, levels,
                       threads, run, tokens);
}

lh_status lhc_ring_kernel(const char *dtype, int head_dim, lhc_kernel_request *out) {
    if (!dtype || !out) return lh_fail(LH_ERROR_NULL_POINTER, "lhc_ring_kernel: NULL argument");
    if (head_dim % 8 != 0 || !is_pow2(head_dim / 8) || head_dim / 8 > 32)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "GPU kernels need HEAD_DIM in {8, 16, 32, 64, 128, 256} (got %d)", head_dim);
    if (strcmp(dtype, "bf16") != 0 && strcmp(dtype, "f16") != 0)
        return lh_fail(LH_ERROR_UNSUPPORTED, "GPU kernels need dtype bf16 or f16 (got %s)", dtype);
    int count = 0;
    const int threads = 256;
    return add_request(out, &count, "ring", threads, threads / (head_dim / 8),
                       "DTYPE=%s D=%d THREADS=%d", dtype, head_dim, threads);
}
