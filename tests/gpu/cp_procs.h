/*
 * cp_procs.h - one process per GPU for the multi-GPU context-parallel programs (test_cp_nccl,
 * bench_cp_scaling): shared memory made before the fork, a probe of the GPUs that leaves the
 * parent without CUDA (a process must not fork after initialising CUDA), the ranks forked and
 * waited for, and the hand-over of one NCCL unique id per communicator from rank 0 to the others.
 *
 * A rank dies with its parent (PR_SET_PDEATHSIG), so a run cut off by a timeout leaves no process
 * holding a GPU; when one rank fails, the others (which may be blocked in NCCL waiting for it)
 * get a grace period, then SIGKILL.
 */
#ifndef LH_CP_PROCS_H
#define LH_CP_PROCS_H

#include "gpu_common.h"
#include "nccl_api.h"

#define CP_MAX_RANKS 64

/* Zeroed memory shared by the parent and every process it forks afterwards (exits on failure). */
void *cp_shared_alloc(size_t bytes);

/* What a probe child found: device count (0 without a usable driver or GPU) and device 0's name. */
typedef struct cp_gpus {
    int count;
    char name[128];
} cp_gpus;
cp_gpus cp_probe_gpus(const char *program);

/* Forks `world` processes; process r runs fn(r, arg) and exits with its result. Returns the worst
 * exit code: 1 (a failure, a crash or a kill) over 77 (skipped) over 0. A rank that outlives a
 * failed one by `grace_s` seconds is killed. A rank takes its GPU with gpu_env_init_on. */
typedef int (*cp_rank_fn)(int rank, void *arg);
int cp_run_ranks(int world, cp_rank_fn fn, void *arg, int grace_s);

/* One unique id per communicator, made by rank 0 and read by the others. `round` counts the
 * communicators of a run from 1; all ranks must call with the same rounds in the same order. Rank
 * 0 cannot overwrite an id still unread: its next round follows a communicator that every rank
 * joined, after reading the id. */
typedef struct cp_idbox {
    volatile int round; /* the round whose id `id` holds; -1: rank 0 could not make one */
    char id[128];
    char why[256];      /* rank 0's lh_last_error() when round is -1 */
} cp_idbox;
/* LH_OK with the id in `id`; LH_ERROR_BACKEND_UNAVAILABLE when rank 0 could not make one (its
 * sentence in box->why), LH_ERROR_COMMUNICATION when rank 0 did not publish within timeout_s. */
lh_status cp_share_id(lh_context *ctx, cp_idbox *box, int rank, int round, int timeout_s,
                      char id[128]);

/* A communicator of this program's own from a shared id, as a framework passes its own to
 * lh_ring_create_nccl: NCCL through the library's loader (runtime/cuda/nccl_api.c, linked into
 * the program), so its errors are in this program's copy of the error channel,
 * lh_error_message(). NULL on failure; *nc is the API to destroy it with. */
lh_nccl_comm cp_nccl_comm(const lh_nccl_api **nc, const char id[128], int world, int rank);

#endif /* LH_CP_PROCS_H */
