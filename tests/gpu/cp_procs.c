/* cp_procs.c - one process per GPU for the multi-GPU context-parallel programs (cp_procs.h). */
#include "cp_procs.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

void *cp_shared_alloc(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap of the ranks' shared memory");
        exit(1);
    }
    memset(p, 0, bytes);
    return p;
}

cp_gpus cp_probe_gpus(const char *program) {
    cp_gpus *shared = cp_shared_alloc(sizeof *shared);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        gpu_env env;
        if (gpu_env_init(&env, program) == 0) {
            shared->count = env.device_count;
            env.cu->DeviceGetName(shared->name, sizeof shared->name - 1, env.device);
        }
        fflush(stdout);
        _exit(0);
    }
    cp_gpus found = {0};
    int status = 0;
    if (child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status)) found = *shared;
    munmap(shared, sizeof *shared);
    return found;
}

static int exit_code(int status) {
    if (!WIFEXITED(status)) return 1; /* killed: a crash, or the grace period ran out */
    int c = WEXITSTATUS(status);
    return c == 0 || c == GPU_SKIP ? c : 1;
}

static int worse(int a, int b) {
    if (a == 1 || b == 1) return 1;
    return a == GPU_SKIP || b == GPU_SKIP ? GPU_SKIP : 0;
}

int cp_run_ranks(int world, cp_rank_fn fn, void *arg, int grace_s) {
    pid_t pids[CP_MAX_RANKS];
    int alive = 0, worst = 0;
    if (world < 1 || world > CP_MAX_RANKS) return 1;
    pid_t parent = getpid();
    fflush(stdout);
    fflush(stderr);
    for (int r = 0; r < world; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            /* die with the parent, even if it died before prctl took effect */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) _exit(1);
            int rc = fn(r, arg);
            fflush(stdout);
            fflush(stderr);
            _exit(rc);
        }
        if (pids[r] < 0) {
            perror("fork of a rank");
            worst = 1;
            break;
        }
        alive++;
    }
    int started = alive;
    double failed_at = worst ? now_seconds() : -1.0;
    while (alive > 0) {
        for (int r = 0; r < started; r++) {
            int status = 0;
            if (pids[r] <= 0 || waitpid(pids[r], &status, WNOHANG) != pids[r]) continue;
            pids[r] = 0;
            alive--;
            int c = exit_code(status);
            worst = worse(worst, c);
            if (c == 1 && failed_at < 0) failed_at = now_seconds();
        }
        if (alive > 0 && failed_at >= 0 && now_seconds() - failed_at > grace_s) {
            for (int r = 0; r < started; r++)
                if (pids[r] > 0) {
                    fprintf(stderr, "rank %d still running %d s after a rank failed: killed\n", r,
                            grace_s);
                    kill(pids[r], SIGKILL);
                }
            failed_at = now_seconds() + 1e9; /* killed once; now reap them */
        }
        if (alive > 0) usleep(20000);
    }
    return worst;
}

lh_status cp_share_id(lh_context *ctx, cp_idbox *box, int rank, int round, int timeout_s,
                      char id[128]) {
    if (rank == 0) {
        lh_status st = lh_nccl_get_unique_id(ctx, id);
        if (st != LH_OK) snprintf(box->why, sizeof box->why, "%s", lh_last_error());
        else memcpy(box->id, id, sizeof box->id);
        __sync_synchronize();
        box->round = st == LH_OK ? round : -1;
        return st;
    }
    double start = now_seconds();
    while (box->round >= 0 && box->round < round) {
        if (now_seconds() - start > timeout_s) return LH_ERROR_COMMUNICATION;
        usleep(1000);
    }
    __sync_synchronize();
    if (box->round < 0) return LH_ERROR_BACKEND_UNAVAILABLE;
    memcpy(id, box->id, sizeof box->id);
    return LH_OK;
}

lh_nccl_comm cp_nccl_comm(const lh_nccl_api **nc, const char id[128], int world, int rank) {
    lh_nccl_unique_id uid;
    memcpy(&uid, id, sizeof uid);
    lh_nccl_comm comm = NULL;
    lh_status st = lh_nccl_load(nc);
    if (st == LH_OK)
        st = lh_nccl_check(*nc, (*nc)->CommInitRank(&comm, world, uid, rank), "ncclCommInitRank");
    return st == LH_OK ? comm : NULL;
}
