/*
 * nccl_null.c - libnccl_null.so: the NCCL calls a ring makes, with every transfer skipped. For
 * bench_cp_scaling's compute-only runs: pointed at by LIGHTHOUSE_NCCL_LIBRARY, it lets one
 * process run one rank of a W-rank ring with no peer at all. The ring then launches exactly the
 * kernels, stream waits and events of a real run, but ncclSend / ncclRecv enqueue nothing, so the
 * rank's time is its computation alone; the received K/V blocks and dK/dV accumulators are
 * whatever the workspace held (the benchmark zeroes it once). Results are meaningless; timing
 * only. Never a transport for real use.
 *
 * The types follow nccl.h by their ABI: ncclUniqueId is 128 bytes passed by value, a
 * communicator is a pointer, results are int (0 = ncclSuccess).
 */
#include <stdlib.h>
#include <string.h>

#define NULL_NCCL_VERSION 22800 /* claims 2.28.0: the library asks for 2.12 or newer */

typedef struct null_unique_id { char internal[128]; } null_unique_id;
typedef struct null_comm { int nranks, rank; } null_comm;

#define EXPORT __attribute__((visibility("default")))

EXPORT int ncclGetVersion(int *version) {
    *version = NULL_NCCL_VERSION;
    return 0;
}

EXPORT int ncclGetUniqueId(null_unique_id *id) {
    memset(id, 0, sizeof *id);
    memcpy(id->internal, "nccl-null", 9);
    return 0;
}

EXPORT int ncclCommInitRank(null_comm **comm, int nranks, null_unique_id id, int rank) {
    (void)id;
    if (nranks < 1 || rank < 0 || rank >= nranks) return 4; /* ncclInvalidArgument */
    null_comm *c = malloc(sizeof *c);
    if (!c) return 2; /* ncclSystemError */
    c->nranks = nranks;
    c->rank = rank;
    *comm = c;
    return 0;
}

EXPORT int ncclCommDestroy(null_comm *comm) {
    free(comm);
    return 0;
}

EXPORT int ncclCommAbort(null_comm *comm) {
    free(comm);
    return 0;
}

EXPORT int ncclCommCount(const null_comm *comm, int *count) {
    *count = comm->nranks;
    return 0;
}

EXPORT int ncclCommUserRank(const null_comm *comm, int *rank) {
    *rank = comm->rank;
    return 0;
}

EXPORT int ncclSend(const void *buf, size_t count, int type, int peer, null_comm *comm,
                    void *stream) {
    (void)buf, (void)count, (void)type, (void)peer, (void)comm, (void)stream;
    return 0;
}

EXPORT int ncclRecv(void *buf, size_t count, int type, int peer, null_comm *comm, void *stream) {
    (void)buf, (void)count, (void)type, (void)peer, (void)comm, (void)stream;
    return 0;
}

EXPORT int ncclGroupStart(void) { return 0; }

EXPORT int ncclGroupEnd(void) { return 0; }

EXPORT const char *ncclGetErrorString(int result) {
    return result == 0 ? "no error (null transport)"
           : result == 4 ? "invalid argument (null transport)"
                         : "out of host memory (null transport)";
}
