/*
 * bench_cp.h - what bench_cp_scaling.c (the driver: which runs, the table, the JSON) and
 * bench_cp_rank.c (one rank's measurement) share. Every measurement runs in processes forked for
 * it (cp_procs.h) and reports through a bench_shared block in shared memory.
 */
#ifndef LH_BENCH_CP_H
#define LH_BENCH_CP_H

#include <limits.h>

#include "cp_procs.h"

/* The problem: one sequence of n tokens, forward + backward. */
typedef struct bench_cfg {
    lh_backend backend; /* LH_BACKEND_CUDA, or LH_BACKEND_CPU (fp32, one worker thread per rank) */
    lh_mode mode;
    lh_dtype dtype;     /* bf16 on CUDA, fp32 on the CPU */
    int64_t n, batch, heads, kv_heads, dim, levels, pooling, topk;
    int iters;          /* timed runs after one warm-up run; medians are reported */
} bench_cfg;

/* What one measurement runs. */
typedef enum bench_kind {
    BENCH_SINGLE,     /* one plan without a ring over all n tokens, on device 0 (or the CPU) */
    BENCH_RING_NCCL,  /* rank r in process r on device r, one NCCL ring; then the transfers alone */
    BENCH_RING_NULL,  /* the same ring with every transfer skipped (libnccl_null.so): computation */
    BENCH_RING_LOCAL, /* all ranks as threads of one process on device 0 (or the CPU) */
} bench_kind;

typedef enum rank_status {
    RANK_OK = 0,
    RANK_FAILED,      /* an lh_* call or the driver failed during the run */
    RANK_REFUSED,     /* the library refused the configuration (finalize) */
    RANK_NO_MEMORY,   /* the buffers do not fit on the GPU */
} rank_status;

typedef struct rank_result {
    int status;                 /* rank_status; a rank that never reported stays RANK_OK with ms 0 */
    double ms, fwd_ms, bwd_ms;  /* medians: wall clock of forward + backward; GPU time of each */
    double xfer_ms;             /* BENCH_RING_NCCL: the ring's transfers alone (median), else 0 */
    int64_t chunk_entries;      /* S_c: sub-sequence entries per chunk (without a ring: of all) */
    int64_t block_bytes;        /* one chunk's K (or V) block as the ring moves it, in bytes */
    char msg[320];              /* why, when status is not RANK_OK */
} rank_result;

typedef struct bench_shared {
    bench_cfg cfg;
    bench_kind kind;
    int world;            /* ring ranks (1 for BENCH_SINGLE) */
    int processes;        /* processes forked; BENCH_RING_NULL may run fewer than world */
    char null_lib[PATH_MAX]; /* BENCH_RING_NULL: path of libnccl_null.so */
    cp_idbox box;         /* BENCH_RING_NCCL: the communicator's unique id */
    rank_result r[CP_MAX_RANKS];
} bench_shared;

/* The body of process `index` of a measurement (a cp_rank_fn; arg is the bench_shared). */
int bench_rank_main(int index, void *arg);

#endif /* LH_BENCH_CP_H */
