/*
 * nccl_api.h - NCCL, loaded at run time with dlopen("libnccl.so.2") the first time a ring needs
 * it, so the library neither links against NCCL nor needs it for anything else. Only the calls a
 * ring uses: unique ids, communicators, point-to-point send/recv in groups. The types are
 * declared here (ABI-stable since NCCL 2.0) so that no NCCL header is needed to build.
 */
#ifndef LH_NCCL_API_H
#define LH_NCCL_API_H

#include <cuda.h>

#include "runtime.h"

#define LH_NCCL_UNIQUE_ID_BYTES 128
typedef struct lh_nccl_unique_id { char internal[LH_NCCL_UNIQUE_ID_BYTES]; } lh_nccl_unique_id;
typedef void *lh_nccl_comm;  /* ncclComm_t */
typedef int lh_nccl_result;  /* ncclResult_t; 0 = ncclSuccess */
#define LH_NCCL_UINT8 1      /* ncclUint8 */

typedef struct lh_nccl_api {
    int version;  /* ncclGetVersion: major * 10000 + minor * 100 + patch (2.28.x -> 22800 + x) */
    lh_nccl_result (*GetVersion)(int *version);
    lh_nccl_result (*GetUniqueId)(lh_nccl_unique_id *id);
    lh_nccl_result (*CommInitRank)(lh_nccl_comm *comm, int nranks, lh_nccl_unique_id id, int rank);
    lh_nccl_result (*CommDestroy)(lh_nccl_comm comm);
    lh_nccl_result (*CommAbort)(lh_nccl_comm comm);
    lh_nccl_result (*CommCount)(lh_nccl_comm comm, int *count);
    lh_nccl_result (*CommUserRank)(lh_nccl_comm comm, int *rank);
    lh_nccl_result (*Send)(const void *buf, size_t count, int type, int peer, lh_nccl_comm comm,
                           CUstream stream);
    lh_nccl_result (*Recv)(void *buf, size_t count, int type, int peer, lh_nccl_comm comm,
                           CUstream stream);
    lh_nccl_result (*GroupStart)(void);
    lh_nccl_result (*GroupEnd)(void);
    const char *(*GetErrorString)(lh_nccl_result result);
} lh_nccl_api;

/* Loads NCCL once per process and checks its version (2.12 or newer). On failure
 * LH_ERROR_BACKEND_UNAVAILABLE with a sentence naming what is missing. Thread-safe. */
lh_status lh_nccl_load(const lh_nccl_api **out);

/* An NCCL result as an lh_status (LH_ERROR_COMMUNICATION) naming `what` and NCCL's words. */
lh_status lh_nccl_check(const lh_nccl_api *nccl, lh_nccl_result result, const char *what);

#endif /* LH_NCCL_API_H */
