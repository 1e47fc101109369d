/*
 * kernels.h - one descriptor for every GPU kernel: the template it lives in, its arguments as a
 * typed struct, and its grid. The runtime (runtime/cuda) and tests/compiler/test_compiler_gpu.c
 * launch every kernel through these descriptors (cuda_kernels_launch), so no launch site builds
 * a positional argument array, and no kernel name is written twice. A template's compile-time
 * constants and launch geometry for a configuration come from lhc_plan_kernels and
 * lhc_ring_kernel (compiler.h), the same for the runtime and lighthouse-compile.
 *
 * Each argument list below is the kernel's gpu.func signature, in order: IN(x) a device pointer
 * the kernel reads, OUT(x) one it writes (both !llvm.ptr<1>), I64(x) an i64. The list makes the
 * kernel's argument struct (lhk_<kernel>_args: 8 bytes per argument, in order, so the launcher
 * passes a pointer to each field) and the signature text that test_compiler checks against the
 * template. Plain C types only: no CUDA header is needed.
 */
#ifndef LH_KERNELS_H
#define LH_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the templates (kernels_mlir/<name>.mlir, named by pipeline stage) --------------------- */

typedef enum lhk_template {
    LHK_TEMPLATE_SCORES,    /* scores.mlir */
    LHK_TEMPLATE_SELECT,    /* select.mlir */
    LHK_TEMPLATE_GATHER,    /* gather.mlir */
    LHK_TEMPLATE_SCATTER,   /* scatter.mlir */
    LHK_TEMPLATE_POOL_GRAD, /* pool_grad.mlir */
    LHK_TEMPLATE_RING,      /* ring.mlir: the attention step's merge, sums and packing */
    LHK_TEMPLATE_COUNT
} lhk_template;

/* The template's name (its file name without .mlir); lhk_template_find: the reverse, or -1. */
extern const char *const lhk_template_names[LHK_TEMPLATE_COUNT];
int lhk_template_find(const char *name);

/* ---- the kernels and their arguments --------------------------------------------------------- */

typedef enum lhk_kernel {
    LHK_PYRAMID_SCORES, /* scores:    norms, max-pooled per level; the coarsest pooled q, k rows */
    LHK_SELECT_ORDER,   /* select:    the A/B cascade and depth-first order of one tile */
    LHK_INVERT_INDICES, /* select:    position -> slot map of an index list */
    LHK_GATHER,         /* gather:    q_sel, k_sel, v_sel of the selected entries */
    LHK_GATHER_DOUT,    /* gather:    per entry, the sum of dout over its scatter window */
    LHK_SCATTER,        /* scatter:   O_sel back to full length */
    LHK_POOL_GRAD,      /* pool_grad: dq, dk, dv of every token */
    LHK_RING_MERGE,     /* ring:      log-sum-exp merge of a partial attention result */
    LHK_RING_ADD,       /* ring:      fp32 accumulator += a DTYPE block */
    LHK_RING_CONVERT,   /* ring:      fp32 accumulator -> DTYPE */
    LHK_RING_PACK,      /* ring:      tokens between a shard and chunk-major sub-sequences */
    LHK_KERNEL_COUNT
} lhk_kernel;

#define LHK_PYRAMID_SCORES_ARGS(IN, OUT, I64)                                                      \
    IN(q) IN(k) OUT(sq) OUT(sk) OUT(pq) OUT(pk) I64(n) I64(heads) I64(kv_heads) I64(s_total)       \
    I64(write_pooled) I64(q_sb) I64(q_st) I64(q_sh) I64(k_sb) I64(k_st) I64(k_sh)
#define LHK_SELECT_ORDER_ARGS(IN, OUT, I64)                                                        \
    IN(sq) IN(sk) OUT(indices) OUT(inv) I64(n) I64(heads) I64(kv_heads) I64(s_total) I64(s_sel)    \
    I64(tile_len)
#define LHK_INVERT_INDICES_ARGS(IN, OUT, I64)                                                      \
    IN(indices) OUT(inv) I64(heads) I64(s_total) I64(s_sel)
#define LHK_GATHER_ARGS(IN, OUT, I64)                                                              \
    IN(q) IN(k) IN(v) IN(indices) OUT(q_sel) OUT(k_sel) OUT(v_sel) IN(pq) IN(pk) I64(n) I64(heads) \
    I64(kv_heads) I64(s_sel) I64(use_pooled) I64(q_sb) I64(q_st) I64(q_sh) I64(kv_sb) I64(kv_st)  \
    I64(kv_sh)
#define LHK_GATHER_DOUT_ARGS(IN, OUT, I64)                                                         \
    IN(dout) IN(indices) OUT(d_sel) I64(n) I64(heads) I64(s_sel) I64(d_sb) I64(d_st) I64(d_sh)
#define LHK_SCATTER_ARGS(IN, OUT, I64)                                                             \
    IN(o_sel) IN(inv) OUT(out) I64(n) I64(heads) I64(s_total) I64(o_sb) I64(o_sh) I64(o_ss)       \
    I64(out_sb) I64(out_st) I64(out_sh)
#define LHK_POOL_GRAD_ARGS(IN, OUT, I64)                                                           \
    IN(g_q) IN(g_k) IN(g_v) IN(inv) OUT(dq) OUT(dk) OUT(dv) I64(n) I64(heads) I64(kv_heads)       \
    I64(s_total) I64(s_sel) I64(q_sb) I64(q_st) I64(q_sh) I64(kv_sb) I64(kv_st) I64(kv_sh)
#define LHK_RING_MERGE_ARGS(IN, OUT, I64)                                                          \
    IN(o_part) IN(lse_part) OUT(acc) IN(lse_in) OUT(lse_out) I64(rows)
#define LHK_RING_ADD_ARGS(IN, OUT, I64) IN(part) OUT(acc) I64(vecs)
#define LHK_RING_CONVERT_ARGS(IN, OUT, I64) IN(acc) OUT(out) I64(vecs)
#define LHK_RING_PACK_ARGS(IN, OUT, I64)                                                           \
    IN(src) OUT(dst) I64(tokens) I64(expand) I64(group) I64(s_sb) I64(s_st) I64(s_sh) I64(d_sb)    \
    I64(d_st) I64(d_sh)

#define LHK_FIELD_IN(x) const void *x;
#define LHK_FIELD_OUT(x) void *x;
#define LHK_FIELD_I64(x) int64_t x;
#define LHK_ARGS_STRUCT(list) struct { list(LHK_FIELD_IN, LHK_FIELD_OUT, LHK_FIELD_I64) }

typedef LHK_ARGS_STRUCT(LHK_PYRAMID_SCORES_ARGS) lhk_pyramid_scores_args;
typedef LHK_ARGS_STRUCT(LHK_SELECT_ORDER_ARGS) lhk_select_order_args;
typedef LHK_ARGS_STRUCT(LHK_INVERT_INDICES_ARGS) lhk_invert_indices_args;
typedef LHK_ARGS_STRUCT(LHK_GATHER_ARGS) lhk_gather_args;
typedef LHK_ARGS_STRUCT(LHK_GATHER_DOUT_ARGS) lhk_gather_dout_args;
typedef LHK_ARGS_STRUCT(LHK_SCATTER_ARGS) lhk_scatter_args;
typedef LHK_ARGS_STRUCT(LHK_POOL_GRAD_ARGS) lhk_pool_grad_args;
typedef LHK_ARGS_STRUCT(LHK_RING_MERGE_ARGS) lhk_ring_merge_args;
typedef LHK_ARGS_STRUCT(LHK_RING_ADD_ARGS) lhk_ring_add_args;
typedef LHK_ARGS_STRUCT(LHK_RING_CONVERT_ARGS) lhk_ring_convert_args;
typedef LHK_ARGS_STRUCT(LHK_RING_PACK_ARGS) lhk_ring_pack_args;

/* ---- launch geometry and grid ---------------------------------------------------------------- */

/* What the template's request fixed for a configuration (lhc_kernel_request). */
typedef struct lhk_geometry {
    int block_threads;    /* blockDim.x */
    int tokens_per_block; /* tokens (rows, entries) one block covers, where the grid uses it */
} lhk_geometry;

/* What a grid needs beyond the kernel's arguments. */
typedef struct lhk_shape {
    int64_t batch; /* grid.z of the per-head kernels */
    int64_t tiles; /* lh_select_order: tiles per head (grid.x) */
    int64_t heads; /* lh_ring_pack: heads of the destination (grid.y) */
} lhk_shape;

typedef struct lhk_desc {
    const char *entry;       /* the gpu.func name */
    lhk_template template_id;
    int nargs;               /* the struct's size / 8 */
    const char *signature;   /* "%q: !llvm.ptr<1>, %n: i64, ..." as the template spells it */
    void (*grid)(const void *args, const lhk_geometry *geometry, const lhk_shape *shape,
                 unsigned int grid[3]);
} lhk_desc;

extern const lhk_desc lhk_kernels[LHK_KERNEL_COUNT];

#define LHK_MAX_ARGS 24

#ifdef __cplusplus
}
#endif

#endif /* LH_KERNELS_H */
