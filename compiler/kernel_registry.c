/*
 * kernel_registry.c - the kernel templates the library carries, the descriptor of every kernel
 * in them (kernels.h), and which templates a plan needs with which constants.
 *
 * The block sizes are chosen here, in one place, so that the runtime and lighthouse-compile ask
 * for identical constants and therefore hit the same cache entries.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "algorithm.h"
#include "compiler_internal.h"
#include "kernels.h"
#include "runtime.h"

/* ---- the descriptors ------------------------------------------------------------------------- */

const char *const lhk_template_names[LHK_TEMPLATE_COUNT] = {
    [LHK_TEMPLATE_SCORES] = "scores",       [LHK_TEMPLATE_SELECT] = "select",
    [LHK_TEMPLATE_GATHER] = "gather",       [LHK_TEMPLATE_SCATTER] = "scatter",
    [LHK_TEMPLATE_POOL_GRAD] = "pool_grad", [LHK_TEMPLATE_RING] = "ring",
};

int lhk_template_find(const char *name) {
    for (int t = 0; name && t < LHK_TEMPLATE_COUNT; t++)
        if (strcmp(lhk_template_names[t], name) == 0) return t;
    return -1;
}

static unsigned int blocks_of(int64_t items, int per_block) {
    return (unsigned int)((items + per_block - 1) / per_block);
}

/* Each kernel's grid as three expressions over its arguments `a`, its geometry `g` and the
 * shape `s`: x covers the kernel's tokens, rows or tiles, y its heads, z the batch. */
#define LHK_GRID(kernel, x, y, z)                                                                  \
    static void grid_##kernel(const void *args, const lhk_geometry *g, const lhk_shape *s,         \
                              unsigned int grid[3]) {                                              \
        const lhk_##kernel##_args *a = args;                                                       \
        (void)a, (void)g, (void)s;                                                                 \
        grid[0] = (unsigned int)(x), grid[1] = (unsigned int)(y), grid[2] = (unsigned int)(z);     \
    }
LHK_GRID(pyramid_scores, blocks_of(a->n, g->tokens_per_block), a->heads + a->kv_heads, s->batch)
LHK_GRID(select_order, s->tiles, a->heads, s->batch)
LHK_GRID(invert_indices, blocks_of(a->s_sel, g->block_threads), a->heads, s->batch)
LHK_GRID(gather, blocks_of(a->s_sel, g->tokens_per_block), a->heads, s->batch)
LHK_GRID(gather_dout, blocks_of(a->s_sel, g->tokens_per_block), a->heads, s->batch)
LHK_GRID(scatter, blocks_of(a->n, g->tokens_per_block), a->heads, s->batch)
/* one component per block: dq of each query head, then dk, then dv of each kv head */
LHK_GRID(pool_grad, blocks_of(a->n, g->tokens_per_block), a->heads + 2 * a->kv_heads, s->batch)
LHK_GRID(ring_merge, blocks_of(a->rows, g->tokens_per_block), 1, 1)
/* one thread per vector of 8 elements */
LHK_GRID(ring_add, blocks_of(a->vecs, g->block_threads), 1, 1)
LHK_GRID(ring_convert, blocks_of(a->vecs, g->block_threads), 1, 1)
LHK_GRID(ring_pack, blocks_of(a->tokens, g->tokens_per_block), s->heads, s->batch)

#define LHK_ONE(x) +1
#define LHK_SIG_PTR(x) "%" #x ": !llvm.ptr<1>, "
#define LHK_SIG_I64(x) "%" #x ": i64, "
#define LHK_NARGS(list) (0 list(LHK_ONE, LHK_ONE, LHK_ONE))
#define LHK_DESC(list, entry, template_id, grid)                                                   \
    {entry, template_id, LHK_NARGS(list), list(LHK_SIG_PTR, LHK_SIG_PTR, LHK_SIG_I64), grid}
/* The launcher passes a pointer to each 8-byte field in turn. */
#define LHK_CHECK(list, type)                                                                      \
    _Static_assert(sizeof(type) == 8 * LHK_NARGS(list),                                            \
                   #type " must be its arguments, 8 bytes each, without padding");                 \
    _Static_assert(LHK_NARGS(list) <= LHK_MAX_ARGS, #type ": too many arguments");

LHK_CHECK(LHK_PYRAMID_SCORES_ARGS, lhk_pyramid_scores_args)
LHK_CHECK(LHK_SELECT_ORDER_ARGS, lhk_select_order_args)
LHK_CHECK(LHK_INVERT_INDICES_ARGS, lhk_invert_indices_args)
LHK_CHECK(LHK_GATHER_ARGS, lhk_gather_args)
LHK_CHECK(LHK_GATHER_DOUT_ARGS, lhk_gather_dout_args)
LHK_CHECK(LHK_SCATTER_ARGS, lhk_scatter_args)
LHK_CHECK(LHK_POOL_GRAD_ARGS, lhk_pool_grad_args)
LHK_CHECK(LHK_RING_MERGE_ARGS, lhk_ring_merge_args)
LHK_CHECK(LHK_RING_ADD_ARGS, lhk_ring_add_args)
LHK_CHECK(LHK_RING_CONVERT_ARGS, lhk_ring_convert_args)
LHK_CHECK(LHK_RING_PACK_ARGS, lhk_ring_pack_args)

const lhk_desc lhk_kernels[LHK_KERNEL_COUNT] = {
    [LHK_PYRAMID_SCORES] = LHK_DESC(LHK_PYRAMID_SCORES_ARGS, "lh_pyramid_scores",
                                    LHK_TEMPLATE_SCORES, grid_pyramid_scores),
    [LHK_SELECT_ORDER] = LHK_DESC(LHK_SELECT_ORDER_ARGS, "lh_select_order", LHK_TEMPLATE_SELECT,
                                  grid_select_order),
    [LHK_INVERT_INDICES] = LHK_DESC(LHK_INVERT_INDICES_ARGS, "lh_invert_indices",
                                    LHK_TEMPLATE_SELECT, grid_invert_indices),
    [LHK_GATHER] = LHK_DESC(LHK_GATHER_ARGS, "lh_gather", LHK_TEMPLATE_GATHER, grid_gather),
    [LHK_GATHER_DOUT] = LHK_DESC(LHK_GATHER_DOUT_ARGS, "lh_gather_dout", LHK_TEMPLATE_GATHER,
                                 grid_gather_dout),
    [LHK_SCATTER] = LHK_DESC(LHK_SCATTER_ARGS, "lh_scatter", LHK_TEMPLATE_SCATTER, grid_scatter),
    [LHK_POOL_GRAD] = LHK_DESC(LHK_POOL_GRAD_ARGS, "lh_pool_grad", LHK_TEMPLATE_POOL_GRAD,
                               grid_pool_grad),
    [LHK_RING_MERGE] = LHK_DESC(LHK_RING_MERGE_ARGS, "lh_ring_merge", LHK_TEMPLATE_RING,
                                grid_ring_merge),
    [LHK_RING_ADD] = LHK_DESC(LHK_RING_ADD_ARGS, "lh_ring_add", LHK_TEMPLATE_RING, grid_ring_add),
    [LHK_RING_CONVERT] = LHK_DESC(LHK_RING_CONVERT_ARGS, "lh_ring_convert", LHK_TEMPLATE_RING,
                                  grid_ring_convert),
    [LHK_RING_PACK] = LHK_DESC(LHK_RING_PACK_ARGS, "lh_ring_pack", LHK_TEMPLATE_RING,
                               grid_ring_pack),
};

/* ---- the templates' sources and the requests of a plan --------------------------------------- */

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

static lh_status add_request(lhc_kernel_request *out, int *count, lhk_template kernel,
                             int threads, int tokens, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static lh_status add_request(lhc_kernel_request *out, int *count, lhk_template kernel,
                             int threads, int tokens, const char *fmt, ...) {
    if (*count >= LHC_MAX_PLAN_KERNELS)
        return lh_fail(LH_ERROR_INTERNAL, "a plan needs more than %d kernels", LHC_MAX_PLAN_KERNELS);
    lhc_kernel_request *r = &out[(*count)++];
    memset(r, 0, sizeof *r);
    r->kernel = lhk_template_names[kernel];
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
    lh_status st = add_request(out, count, LHK_TEMPLATE_SCORES, threads, (int)chunk,
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
     * refined entry of a level) and >= 256, a multiple of 32 (one thread per digit of the radix
     * histogram in its block scans); shared memory fixed by L alone, whatever the tile length. */
    st = add_request(out, count, LHK_TEMPLATE_SELECT, threads, 0, "P=%d L=%d THREADS=%d SET=%d REFINED=%d",
                     p, levels, threads, LH_SET_SIZE, LH_TILE_REFINED);
    if (st != LH_OK) return st;
    /* Gather (and the backward's dout sums): 64 sub-sequence rows per block. */
    const int rows = tokens_per_pass > 64 ? tokens_per_pass : 64;
    st = add_request(out, count, LHK_TEMPLATE_GATHER, threads, rows,
                     "DTYPE=%s D=%d P=%d L=%d THREADS=%d ROWS=%d", pp->dtype, d, p, levels, threads,
                     rows);
    if (st != LH_OK) return st;
    /* pool_grad is bound by its two dependent load steps, so by blocks per SM: at G = 1 one
     * component per block fits 64 registers (half the SM's threads resident, like the gather);
     * a fixed G > 1 carries a run's sums across the head loop: two blocks (at most 128). */
    const int pg_blocks = pp->group == 1 ? 2048 / threads / 2 : 2048 / threads / 4;
    st = add_request(out, count, LHK_TEMPLATE_POOL_GRAD, threads, tokens,
                     "DTYPE=%s D=%d P=%d L=%d THREADS=%d RUN=%d TOKENS=%d GROUP=%d MINCTA=%d", pp->dtype,
                     d, p, levels, threads, run, tokens, pp->group, pg_blocks);
    if (st != LH_OK) return st;
    return add_request(out, count, LHK_TEMPLATE_SCATTER, threads, tokens,
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
    return add_request(out, &count, LHK_TEMPLATE_RING, threads, threads / (head_dim / 8),
                       "DTYPE=%s D=%d THREADS=%d", dtype, head_dim, threads);
}
