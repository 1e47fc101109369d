/*
 * algorithm.h - the numbers of the Lighthouse algorithm (docs/spec.md), in one place.
 *
 * The plan's validation (ffi/api_plan.c), the derived sizes (runtime/config.c), the CPU
 * reference (runtime/cpu/) and the GPU kernels use these; the kernel registry
 * (compiler/kernel_registry.c) passes them to the templates as constants, so no kernel source
 * spells them.
 */
#ifndef LH_ALGORITHM_H
#define LH_ALGORITHM_H

#include <stdint.h>

#include "lighthouse.h" /* LH_MAX_LEVELS, part of the ABI */

/* Section 2: at every level of a tile, A = the LH_SET_SIZE candidates with the highest sq and
 * B = the LH_SET_SIZE others with the highest sk (the kernels' constant SET). */
#define LH_SET_SIZE 64
/* A and B together: the entries a tile refines at every level (the kernels' constant REFINED).
 * TOPK is a multiple of it: the coarsest level splits into T = TOPK / LH_TILE_REFINED tiles,
 * each of which must hold at least LH_TILE_REFINED entries. */
#define LH_TILE_REFINED (2 * LH_SET_SIZE)

/* LEVELS: LH_MIN_LEVELS .. LH_MAX_LEVELS. */
#define LH_MIN_LEVELS 2
/* POOLING: a power of two in LH_MIN_POOLING .. LH_MAX_POOLING. */
#define LH_MIN_POOLING 2
#define LH_MAX_POOLING 64

/* Section 10: the dilated scorer's stride d where none is set. */
#define LH_DEFAULT_DILATION 4

/* "Inputs and parameters": the softmax scale where none is set, 1 / sqrt(D). */
static inline double lh_default_softmax_scale(int64_t head_dim) {
    return 1.0 / __builtin_sqrt((double)head_dim);
}

#endif /* LH_ALGORITHM_H */
