/*
 * cuda_transport.h - how ring attention moves device buffers between ranks: one operation,
 * "send these buffers to the next rank and receive the same sizes from the previous one",
 * enqueued on the plan's communication stream. Two implementations:
 *  - local: the ranks are threads of one process (runtime/ring_local.c rendezvous); the receiver
 *    copies from the sender's buffer (cuMemcpyAsync, any two devices), ordered by events.
 *  - NCCL: grouped ncclSend/ncclRecv on the ring's communicator.
 * Every rank of a ring calls exchange the same number of times in the same order.
 */
#ifndef LH_CUDA_TRANSPORT_H
#define LH_CUDA_TRANSPORT_H

#include <cuda.h>

#include "cuda_driver.h"
#include "nccl_api.h"
#include "runtime.h"

#define LH_TRANSPORT_MAX_XFERS 4

typedef struct cuda_xfer {
    const void *send; /* sent to rank + 1 */
    void *recv;       /* received from rank - 1 */
    size_t bytes;
} cuda_xfer;

typedef struct cuda_transport {
    lh_ring_kind kind;
    int world, rank;
    const lh_cu_api *cu;
    lh_ring_info *ring;
    /* local */
    CUevent ready, done;
    /* NCCL */
    const lh_nccl_api *nccl;
    lh_nccl_comm comm;
    CUdeviceptr ids;  /* every rank's lh_config_id (cuda_transport_confirm) */
} cuda_transport;

/* Creates the transport of a plan bound to `ring` as `rank` (the plan's context current). */
lh_status cuda_transport_init(cuda_transport *t, const lh_cu_api *cu, lh_ring_info *ring, int rank);
void cuda_transport_destroy(cuda_transport *t);

/* Enqueues the exchange of `n` buffers on `comm`: when work queued later on `comm` runs, every
 * recv buffer holds the previous rank's send buffer and the next rank has finished reading this
 * rank's send buffers. On a failure after the ranks met, the ring is aborted so that no peer
 * waits forever. */
lh_status cuda_transport_exchange(cuda_transport *t, const cuda_xfer *x, int n, CUstream comm);

/* NCCL rings: every rank's configuration `id` gathered on `comm` (grouped send/recv of 96 bytes
 * to and from every peer), `comm` synchronised, and compared on the host: LH_OK when all equal,
 * else LH_ERROR_COMMUNICATION naming the first difference. Every rank calls it at its plan's
 * first call, so the collective matches. Not while the caller's stream is being captured. */
lh_status cuda_transport_confirm(cuda_transport *t, const lh_config_id *id, CUstream comm);

/* Marks the ring failed (local rings: every waiting rank returns an error). */
void cuda_transport_abort(cuda_transport *t);

/* NCCL ring set-up for the backend's nccl_unique_id / nccl_ring_init ops. */
lh_status cuda_nccl_unique_id(void *unique_id);
lh_status cuda_nccl_ring_init(lh_ring_info *ring, void *comm, const void *unique_id, int rank,
                              int world);

#endif /* LH_CUDA_TRANSPORT_H */
