/*
 * cuda_sdpa_graph.h - the operation graphs of causal SDPA (cuda_sdpa.c builds plans of them):
 * matmul, scale, the causal mask from two index generators, softmax as max/sub/exp/sum and the
 * second matmul forward; the dO*O row sums, the recomputed probabilities and the three gradient
 * matmuls backward. Tensors the caller binds have the uids below; virtual ones take theirs from
 * a counter the caller keeps (starting at UID_VIRTUAL).
 */
#ifndef LH_CUDA_SDPA_GRAPH_H
#define LH_CUDA_SDPA_GRAPH_H

#include "cuda_sdpa.h"

/* The version of these graphs and of their tensor uids: part of the identity of a plan in the
 * disk store (cudnn_plan_store.h), whose text holds the graph. Raise it with any change to
 * cuda_sdpa_graph_forward, cuda_sdpa_graph_backward or the uids, or restored plans would compute
 * the old graphs. */
#define SDPA_GRAPH_VERSION 1

/* Tensor uids bound through the variant pack. Virtual tensors count up from UID_VIRTUAL. */
enum {
    UID_Q = 1, UID_K, UID_V, UID_O, UID_STATS, UID_DO, UID_DQ, UID_DK, UID_DV,
    UID_SOFTMAX_SUM, UID_DQ_ACCUM,
    /* every by-value scalar has a uid of its own */
    UID_SCALE_S, UID_SCALE_DS, UID_NEG_INF, UID_ONE,
    UID_VIRTUAL = 100
};

/* The forward graph's operations added to `gb`: q, k, v, out, the per-row lse (stats) and the
 * scalars SCALE_S and NEG_INF (causal) bound by uid. */
void cuda_sdpa_graph_forward(const lh_sdpa_shape *sh, lh_gb *gb, int64_t *next_uid);

/* The backward graph's: q, k, v, out, dout, stats, dq, dk, dv, the row sums and the scalars
 * SCALE_S, SCALE_DS, ONE and NEG_INF by uid; LH_SDPA_BWD_ACCUM adds the fp32 dQ accumulator. */
void cuda_sdpa_graph_backward(const lh_sdpa_shape *sh, lh_gb *gb, lh_sdpa_bwd_kind kind,
                              int64_t *next_uid);

#endif /* LH_CUDA_SDPA_GRAPH_H */
