/*
 * test_cp_nccl.c - context parallelism over NCCL with one process per GPU: W processes (W = the
 * number of GPUs, or --world=W), each rank of one W-rank NCCL ring from a unique id that rank 0
 * makes and shares through memory (a fresh one per case). Each process then runs the same W-rank
 * ring in-process on its own GPU (W threads) and checks that its rank's out, dq, dk, dv from NCCL
 * equal those (1e-3). Cases, sized with W so that every chunk keeps the same shape: Lighthouse
 * bf16 with grouped-query heads ([B,N,H,D]); Lighthouse fp16 in [B,H,N,D] with B = 2 and the
 * recompute switch, on a communicator the test makes itself (lh_ring_create_nccl, as a framework
 * passes its own); dense bf16 with grouped-query heads in [B,H,N,D]. The other two rings come from
 * lh_ring_create_nccl_from_id. Last, ranks whose plans differ in the softmax scale alone: every
 * rank's first forward fails with LH_ERROR_COMMUNICATION naming it, before anything is written.
 * NCCL_NVLS_ENABLE=0 (no NVLink multicast).
 *
 *   test_cp_nccl [--world=W]   (exit 77 with fewer than two GPUs, fewer than W, or no NCCL)
 */
#define LH_CP_TEST_NO_MAIN
#include "test_cp_gpu.c"

#include "cp_procs.h"

typedef struct nccl_run {
    int world;
    cp_idbox box;
} nccl_run;

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
    char full[160];
    snprintf(full, sizeof full, "%s W=%d", name, W);
    check(ok, full, "rank %d: out %.2e dq %.2e dk %.2e dv %.2e", r, e[0], e[1], e[2], e[3]);
}

/* Ranks whose plans differ only in the softmax scale (rank 1's is 0.5): every rank's first
 * forward returns LH_ERROR_COMMUNICATION naming SOFTMAX_SCALE, with out still poisoned. */
static void test_plans_differ(nccl_run *run, int rank, int round) {
    const int W = run->world;
    char id[128];
    lh_ring *ring = NULL;
    lh_status st = cp_share_id(gpu_ctx, &run->box, rank, round, 300, id);
    if (st == LH_OK) st = lh_ring_create_nccl_from_id(gpu_ctx, id, rank, W, &ring);
    if (st != LH_OK) {
        check(false, "nccl plans differ", "rank %d: no ring: %s", rank, lh_last_error());
        return;
    }
    const rcfg c = {"nccl plans differ", LH_MODE_LIGHTHOUSE, LH_DTYPE_BFLOAT16, LH_LAYOUT_BNHD,
                    1, 8192 * W, 2, 2, 64, 3, 4, 512 * W, 0};
    lh_plan *p = make_plan(gpu_ctx, &c, c.dtype, ring, rank);
    if (rank == 1) LH_MUST(lh_plan_set_f64(p, LH_PARAM_SOFTMAX_SCALE, 0.5));
    LH_MUST(lh_plan_finalize(p));
    size_t nq = (size_t)(c.B * (c.N / W) * c.H * c.D) * 2;
    void *q = gpu_alloc(&env, nq), *k = gpu_alloc(&env, nq), *v = gpu_alloc(&env, nq);
    void *out = gpu_alloc(&env, nq);
    void *saved = gpu_alloc(&env, (size_t)plan_query(p, LH_QUERY_SAVED_BYTES));
    void *fws = gpu_alloc(&env, (size_t)plan_query(p, LH_QUERY_FWD_WORKSPACE_BYTES));
    gpu_poison(&env, q, nq), gpu_poison(&env, k, nq), gpu_poison(&env, v, nq);
    gpu_poison(&env, out, nq);
    st = lh_forward(p, q, k, v, out, saved, fws, NULL);
    char msg[600];
    snprintf(msg, sizeof msg, "%s", lh_last_error());
    gpu_sync(&env);
    unsigned char *h = malloc(nq);
    gpu_download(&env, h, out, nq);
    size_t wrote = 0;
    for (size_t i = 0; i < nq; i++) wrote += h[i] != 0xFF;
    free(h);
    check(st == LH_ERROR_COMMUNICATION && strstr(msg, "SOFTMAX_SCALE") && wrote == 0,
          "nccl plans differ", "rank %d: %s: %s; %zu bytes of out written", rank,
          lh_status_string(st), msg, wrote);
    void *bufs[] = {q, k, v, out, saved, fws};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu_free(&env, bufs[i]);
    LH_MUST(lh_plan_destroy(p));
    LH_MUST(lh_ring_destroy(ring));
}

static int rank_main(int rank, void *arg) {
    nccl_run *run = arg;
    const int W = run->world;
    char program[64];
    snprintf(program, sizeof program, "test_cp_nccl rank %d", rank);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rc = gpu_env_init_on(&env, program, rank);
    if (rc) return rc;
    LH_MUST(lh_context_create(LH_BACKEND_CUDA, rank, &gpu_ctx));
    g_nccl_rank = rank;
    /* Every chunk (N/(2W) tokens, TOPK/(2W)) has the same shape at any W: Lighthouse chunks of
     * 4096 tokens with 256 selected per chunk (two tiles of 128 coarsest entries) and of 2048
     * tokens with 128 (one tile of 512), dense chunks of 2048. */
    const rcfg cfgs[] = {
        {"nccl lighthouse bf16 D=128 BNHD GQA", LH_MODE_LIGHTHOUSE, LH_DTYPE_BFLOAT16,
         LH_LAYOUT_BNHD, 1, 8192 * W, 4, 2, 128, 3, 4, 512 * W, 0},
        {"nccl lighthouse fp16 D=64 BHND B=2 recompute, caller's comm", LH_MODE_LIGHTHOUSE,
         LH_DTYPE_FLOAT16, LH_LAYOUT_BHND, 2, 4096 * W, 2, 2, 64, 3, 2, 256 * W, 1},
        {"nccl dense bf16 D=128 BHND GQA", LH_MODE_DENSE, LH_DTYPE_BFLOAT16, LH_LAYOUT_BHND, 1,
         4096 * W, 4, 2, 128, 3, 4, 2048, 0},
    };
    size_t i = 0;
    for (; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        /* A unique id serves one communicator (NCCL's bootstrap root exits once all ranks have
         * joined): a fresh one per case. */
        char id[128];
        lh_status st = cp_share_id(gpu_ctx, &run->box, rank, (int)i + 1, 300, id);
        if (st == LH_ERROR_BACKEND_UNAVAILABLE) {
            printf("SKIP: %s: no NCCL unique id: %s\n", program,
                   rank == 0 ? lh_last_error() : run->box.why);
            return GPU_SKIP;
        }
        if (st != LH_OK) {
            check(false, cfgs[i].name, "rank %d: %s", rank,
                  rank == 0 ? lh_last_error() : "rank 0 published no unique id within 300 s");
            break;
        }
        g_nccl_id = id;
        const lh_nccl_api *nc = NULL;
        if (i == 1 && !(g_nccl_comm = cp_nccl_comm(&nc, id, W, rank))) {
            check(false, cfgs[i].name, "rank %d: %s", rank, lh_error_message());
            break;
        }
        rng_state = 0x5eed1234abcdULL + i; /* every process draws the same inputs */
        inputs in;
        make_inputs(&cfgs[i], &in);
        results net = {0}, local = {0};
        bool a = run_ranks(gpu_ctx, true, &cfgs[i], W, RING_NCCL, false, &in, &net);
        bool b = a && run_ranks(gpu_ctx, true, &cfgs[i], W, RING_LOCAL, false, &in, &local);
        if (a && b) compare_shard(cfgs[i].name, &cfgs[i], W, rank, &net, &local);
        else check(false, cfgs[i].name, "rank %d: a run failed", rank);
        free_results(&net), free_results(&local);
        free_inputs(&in);
        if (g_nccl_comm) nc->CommDestroy(g_nccl_comm);
        g_nccl_id = NULL, g_nccl_comm = NULL;
        if (!a) break; /* the peers' communicator may be broken too: stop rather than hang */
    }
    if (i == sizeof cfgs / sizeof cfgs[0]) test_plans_differ(run, rank, (int)i + 1);
    lh_context_destroy(gpu_ctx);
    return finish(program);
}

int main(int argc, char **argv) {
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int asked = 0;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        if (strncmp(argv[i], "--world=", 8) == 0) asked = (int)strtol(argv[i] + 8, &end, 10);
        if (!end || *end || asked < 2) {
            fprintf(stderr, "usage: test_cp_nccl [--world=W]\n");
            return 2;
        }
    }
    /* The GPUs are counted in a child: this process never initialises CUDA before forking. */
    cp_gpus gpus = cp_probe_gpus("test_cp_nccl");
    if (gpus.count == 0) return GPU_SKIP; /* the probe printed why */
    int W = asked ? asked : gpus.count;
    if (gpus.count < 2 || W < 2 || W > gpus.count || W > CP_MAX_RANKS) {
        printf("SKIP: test_cp_nccl: a ring of W = %d processes needs 2 <= W <= GPUs (%d here)\n",
               W, gpus.count);
        return GPU_SKIP;
    }
    printf("INFO: test_cp_nccl: W = %d ranks, one process per GPU (%s)\n", W, gpus.name);
    nccl_run *run = cp_shared_alloc(sizeof *run);
    run->world = W;
    /* a rank whose peers died fails within a minute instead of waiting in NCCL for ever */
    int worst = cp_run_ranks(W, rank_main, run, 60);
    printf("SUMMARY test_cp_nccl: W = %d: %s\n", W,
           worst == 0 ? "every rank passed" : worst == GPU_SKIP ? "skipped" : "FAILED");
    return worst;
}
