/*
 * test_cp_nccl_2gpu.c - context parallelism over two GPUs through NCCL: two processes, one per GPU,
 * each rank of a W = 2 ring made with lh_ring_create_nccl_from_id from one unique id (made by
 * rank 0, handed to rank 1 through shared memory). Each process then runs the same W = 2 ring
 * in-process on its own GPU (two threads) and checks that its rank's out, dq, dk, dv from NCCL
 * equal those (1e-3), in Lighthouse and dense mode. NCCL_NVLS_ENABLE=0 (no NVLink multicast).
 *
 *   test_cp_nccl_2gpu        (forks its two ranks; exit 77 with fewer than two GPUs or no NCCL)
 */
#define LH_CP_TEST_NO_MAIN
#include "test_cp_gpu.c"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct shared_id {
    volatile int ready; /* i + 1: id holds rank 0's unique id for case i; -1: rank 0 could not make one */
    char id[128];
} shared_id;

/* Compares rank r's shard of two whole-sequence results (the rest of an NCCL result is unset). */
static void compare_shard(const char *name, const rcfg *c, int W, int r, const results *a,
                          const results *b) {
    int64_t T = c->N / W;
    size_t nq = (size_t)(c->B * T * c->H * c->D), nk = (size_t)(c->B * T * c->Hkv * c->D);
    const float *xa[4] = {a->out, a->dq, a->dk, a->dv}, *xb[4] = {b->out, b->dq, b->dk, b->dv};
    double e[4];
    bool ok = true;
    for (int o = 0; o < 4; o++) {
        size_t n = o < 2 ? nq : nk;
        float *sa = malloc(n * 4), *sb = malloc(n * 4);
        shard_copy(c, o < 2 ? c->H : c->Hkv, W, r, xa[o], sa, 4, 0);
        shard_copy(c, o < 2 ? c->H : c->Hkv, W, r, xb[o], sb, 4, 0);
        e[o] = rel_error(sa, sb, n);
        ok = ok && e[o] <= 1e-3;
        free(sa), free(sb);
    }
    check(ok, name, "rank %d: out %.2e dq %.2e dk %.2e dv %.2e", r, e[0], e[1], e[2], e[3]);
}

static int rank_main(int rank, shared_id *sh) {
    int rc = gpu_env_init(&env, "test_cp_nccl_2gpu");
    if (rc) return rc;
    /* This rank's GPU: device `rank`'s primary context instead of device 0's. */
    CUcontext ignored;
    env.cu->CtxPopCurrent(&ignored);
    CU_MUST(env.cu->DeviceGet(&env.device, rank), "cuDeviceGet");
    CU_MUST(env.cu->DevicePrimaryCtxRetain(&env.ctx, env.device), "cuDevicePrimaryCtxRetain");
    CU_MUST(env.cu->CtxPushCurrent(env.ctx), "cuCtxPushCurrent");
    LH_MUST(lh_context_create(LH_BACKEND_CUDA, rank, &gpu_ctx));
    g_nccl_id = sh->id;
    g_nccl_rank = rank;
    const rcfg cfgs[] = {
        {"nccl lighthouse bf16 D=128", LH_MODE_LIGHTHOUSE, LH_DTYPE_BFLOAT16, LH_LAYOUT_BNHD, 1,
         16384, 4, 2, 128, 3, 4, 1024, 0},
        {"nccl dense bf16 D=128 BHND", LH_MODE_DENSE, LH_DTYPE_BFLOAT16, LH_LAYOUT_BHND, 1, 8192,
         4, 2, 128, 3, 4, 2048, 0},
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        /* A unique id serves one communicator (NCCL's bootstrap root exits once all ranks have
         * joined), so rank 0 makes a fresh one per case; rank 1 waits for its generation. Rank 0
         * cannot overwrite it early: the previous case's communicator needed rank 1 to join. */
        if (rank == 0) {
            lh_status st = lh_nccl_get_unique_id(gpu_ctx, sh->id);
            __sync_synchronize();
            sh->ready = st == LH_OK ? (int)i + 1 : -1;
            if (st != LH_OK) {
                printf("SKIP: test_cp_nccl_2gpu: no NCCL: %s\n", lh_last_error());
                return GPU_SKIP;
            }
        } else {
            while (sh->ready >= 0 && sh->ready < (int)i + 1) usleep(1000);
            if (sh->ready < 0) return GPU_SKIP;
        }
        __sync_synchronize();
        rng_state = 0x5eed1234abcdULL + i; /* both processes draw the same inputs */
        inputs in;
        make_inputs(&cfgs[i], &in);
        results net = {0}, local = {0};
        bool a = run_ranks(gpu_ctx, true, &cfgs[i], 2, RING_NCCL, false, &in, &net);
        bool b = run_ranks(gpu_ctx, true, &cfgs[i], 2, RING_LOCAL, false, &in, &local);
        if (a && b) compare_shard(cfgs[i].name, &cfgs[i], 2, rank, &net, &local);
        else check(false, cfgs[i].name, "rank %d: a run failed", rank);
        free_results(&net), free_results(&local);
        free_inputs(&in);
    }
    lh_context_destroy(gpu_ctx);
    char program[64];
    snprintf(program, sizeof program, "test_cp_nccl_2gpu rank %d", rank);
    return finish(program);
}

int main(void) {
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    /* Count GPUs in a child, so that this process never initialises CUDA before forking. */
    shared_id *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) return 1;
    memset(sh, 0, sizeof *sh);
    pid_t probe = fork();
    if (probe == 0) {
        gpu_env e;
        int rc = gpu_env_init(&e, "test_cp_nccl_2gpu");
        fflush(stdout);
        _exit(rc ? GPU_SKIP : e.device_count >= 2 ? 0 : 3);
    }
    int status = 0;
    waitpid(probe, &status, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    if (code == 3) printf("SKIP: test_cp_nccl_2gpu: needs two GPUs\n");
    if (code) return code == 1 ? 1 : GPU_SKIP;
    pid_t pids[2];
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            int rc = rank_main(r, sh);
            fflush(stdout);
            _exit(rc);
        }
    }
    int worst = 0;
    for (int r = 0; r < 2; r++) {
        waitpid(pids[r], &status, 0);
        int c = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
        if (c == 1 || (c != 0 && worst == 0)) worst = c;
    }
    printf("SUMMARY test_cp_nccl_2gpu: %s\n", worst == 0 ? "both ranks passed" : worst == GPU_SKIP ? "skipped" : "FAILED");
    return worst;
}
