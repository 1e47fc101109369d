/*
 * test_ring_safety_gpu.c - rings on the GPU that fail, that are captured into a CUDA graph, or
 * whose first call compares the ranks' configurations:
 *  (a) a forward whose attention step fails after its stages have run (a failing hook on a plan
 *      without a ring; a W = 2 in-process ring whose rank 1 hook fails while rank 0 runs the
 *      built-in ring) returns the error and leaves saved and out equal to their poison;
 *  (b) the built-in ring of an in-process ring refuses a stream being captured
 *      (LH_ERROR_UNSUPPORTED and a sentence) before it enqueues anything, forward and backward;
 *  (c) a one-rank NCCL ring: its first call refuses capture (LH_ERROR_BAD_STATE: it compares
 *      the ranks' configurations on the host), runs outside capture, and then forward + backward
 *      captured into a graph and replayed equal the direct calls (forward and saved bit-exact,
 *      backward within 1e-2). Noted and skipped where NCCL cannot be loaded.
 * Outputs and saved are poisoned (0xFF bytes) before every call. Exit 77 without a GPU.
 */
#define LH_CP_TEST_NO_MAIN
#include "test_cp_gpu.c"

/* One rank's buffers for one call. */
typedef struct lone {
    lh_plan *plan;
    void *q, *k, *v, *dout, *out, *dq, *dk, *dv, *saved, *fws, *bws;
    size_t nq, nk, saved_bytes; /* bytes of q-shaped and kv-shaped tensors, of saved */
    CUstream stream;
    lh_status st;
    char err[600];
} lone;

static void lone_poison(lone *l) {
    gpu_poison(&env, l->out, l->nq), gpu_poison(&env, l->saved, l->saved_bytes);
    gpu_poison(&env, l->dq, l->nq), gpu_poison(&env, l->dk, l->nk), gpu_poison(&env, l->dv, l->nk);
}

static void lone_init(lone *l, const rcfg *c, lh_plan *plan) {
    memset(l, 0, sizeof *l);
    l->plan = plan;
    int64_t T = plan_query(plan, LH_QUERY_LOCAL_SEQ_LEN);
    l->nq = (size_t)(c->B * T * c->H * c->D) * 2, l->nk = (size_t)(c->B * T * c->Hkv * c->D) * 2;
    l->saved_bytes = (size_t)plan_query(plan, LH_QUERY_SAVED_BYTES);
    void **q_like[] = {&l->q, &l->dout, &l->out, &l->dq}, **k_like[] = {&l->k, &l->v, &l->dk, &l->dv};
    for (int i = 0; i < 4; i++) *q_like[i] = gpu_alloc(&env, l->nq), *k_like[i] = gpu_alloc(&env, l->nk);
    l->saved = gpu_alloc(&env, l->saved_bytes);
    l->fws = gpu_alloc(&env, (size_t)plan_query(plan, LH_QUERY_FWD_WORKSPACE_BYTES));
    l->bws = gpu_alloc(&env, (size_t)plan_query(plan, LH_QUERY_BWD_WORKSPACE_BYTES));
    uint16_t *bits = malloc(l->nq);
    uint64_t s = rng_state++;
    void *ins[] = {l->q, l->k, l->v, l->dout};
    for (int i = 0; i < 4; i++) {
        size_t bytes = (i == 1 || i == 2) ? l->nk : l->nq;
        cheap_inputs(&s, c->dtype, bytes / 2, bits);
        gpu_upload(&env, ins[i], bits, bytes);
    }
    free(bits);
    lone_poison(l);
    CU_MUST(env.cu->StreamCreate(&l->stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
}

static void lone_free(lone *l) {
    void *bufs[] = {l->q, l->k, l->v, l->dout, l->out, l->dq, l->dk, l->dv, l->saved, l->fws, l->bws};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu_free(&env, bufs[i]);
    if (l->stream) env.cu->StreamDestroy(l->stream);
    if (l->plan) LH_MUST(lh_plan_destroy(l->plan));
}

static void lone_note(lone *l) {
    if (l->st != LH_OK) snprintf(l->err, sizeof l->err, "%s", lh_last_error());
}

/* One forward on this thread's stream (the plan's rank runs here). */
static void *lone_forward(void *arg) {
    lone *l = arg;
    env.cu->CtxPushCurrent(env.ctx);
    l->st = lh_forward(l->plan, l->q, l->k, l->v, l->out, l->saved, l->fws, l->stream);
    lone_note(l);
    env.cu->StreamSynchronize(l->stream);
    CUcontext ignored;
    env.cu->CtxPopCurrent(&ignored);
    return NULL;
}

/* Bytes of device memory that are no longer the poison. */
static size_t written(const void *dev, size_t bytes) {
    unsigned char *h = malloc(bytes);
    gpu_download(&env, h, dev, bytes);
    size_t n = 0;
    for (size_t i = 0; i < bytes; i++) n += h[i] != 0xFF;
    free(h);
    return n;
}

static void expect_untouched(const char *name, const lone *l, lh_status want) {
    size_t s = written(l->saved, l->saved_bytes), o = written(l->out, l->nq);
    check(l->st == want && s == 0 && o == 0, name,
          "-> %s (want %s): %s; %zu of %zu bytes of saved and %zu of %zu of out written",
          lh_status_string(l->st), lh_status_string(want), l->err, s, l->saved_bytes, o, l->nq);
}

static lh_status failing_fwd(void *u, lh_plan *plan, const void *q, const void *k, const void *v,
                             void *o, float *lse, void *stream) {
    (void)u, (void)plan, (void)q, (void)k, (void)v, (void)o, (void)lse, (void)stream;
    return LH_ERROR_INVALID_VALUE;
}

static lh_status failing_bwd(void *u, lh_plan *plan, const void *q, const void *k, const void *v,
                             const void *o, const float *lse, const void *dO, void *dq, void *dk,
                             void *dv, void *stream) {
    (void)u, (void)plan, (void)q, (void)k, (void)v, (void)o, (void)lse, (void)dO, (void)dq;
    (void)dk, (void)dv, (void)stream;
    return LH_ERROR_INVALID_VALUE;
}

static const rcfg small = {"ring safety lighthouse bf16 D=64", LH_MODE_LIGHTHOUSE,
                           LH_DTYPE_BFLOAT16, LH_LAYOUT_BNHD, 1, 8192, 2, 2, 64, 3, 4, 512, 0};

/* ---- (a) a failing attention step leaves saved as it was ------------------------------------- */

static void test_failing_step(void) {
    lone l;
    lh_plan *p = make_plan(gpu_ctx, &small, small.dtype, NULL, 0);
    LH_MUST(lh_plan_set_attention_hooks(p, failing_fwd, failing_bwd, NULL));
    LH_MUST(lh_plan_finalize(p));
    lone_init(&l, &small, p);
    lone_forward(&l);
    expect_untouched("failing_hook_keeps_saved", &l, LH_ERROR_INVALID_VALUE);
    lone_free(&l);

    /* Rank 0 runs the built-in ring, rank 1's hook fails: rank 0 fails mid-way, in the ring's
     * first exchange, after its selection and sub-sequence were computed. */
    lh_ring *ring;
    LH_MUST(lh_ring_create_local(2, &ring));
    lone r[2];
    for (int i = 0; i < 2; i++) {
        lh_plan *rp = make_plan(gpu_ctx, &small, small.dtype, ring, i);
        if (i == 1) LH_MUST(lh_plan_set_attention_hooks(rp, failing_fwd, failing_bwd, NULL));
        LH_MUST(lh_plan_finalize(rp));
        lone_init(&r[i], &small, rp);
    }
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, lone_forward, &r[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    expect_untouched("failing_ring_keeps_saved rank 0 (built-in ring)", &r[0],
                     LH_ERROR_COMMUNICATION);
    expect_untouched("failing_ring_keeps_saved rank 1 (failing hook)", &r[1],
                     LH_ERROR_INVALID_VALUE);
    for (int i = 0; i < 2; i++) lone_free(&r[i]);
    LH_MUST(lh_ring_destroy(ring));
}

/* ---- (b) an in-process ring refuses capture --------------------------------------------------- */

static void test_local_capture_refused(void) {
    lh_ring *ring;
    LH_MUST(lh_ring_create_local(2, &ring));
    lh_plan *p0 = make_plan(gpu_ctx, &small, small.dtype, ring, 0);
    lh_plan *p1 = make_plan(gpu_ctx, &small, small.dtype, ring, 1);
    LH_MUST(lh_plan_finalize(p0));
    LH_MUST(lh_plan_finalize(p1)); /* rank 1 never calls: the refusal comes before any rendezvous */
    lone l;
    lone_init(&l, &small, p0);
    CUgraph graph = NULL;
    CUresult r = env.cu->StreamBeginCapture(l.stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
    lh_status f = lh_forward(p0, l.q, l.k, l.v, l.out, l.saved, l.fws, l.stream);
    char ferr[600];
    snprintf(ferr, sizeof ferr, "%s", lh_last_error());
    lh_status b = lh_backward(p0, l.q, l.k, l.v, l.out, l.dout, l.saved, l.dq, l.dk, l.dv, l.bws,
                              l.stream);
    CUresult r2 = env.cu->StreamEndCapture(l.stream, &graph);
    gpu_sync(&env);
    size_t wrote = written(l.saved, l.saved_bytes) + written(l.out, l.nq) + written(l.dq, l.nq);
    check(r == CUDA_SUCCESS && r2 == CUDA_SUCCESS && f == LH_ERROR_UNSUPPORTED &&
              b == LH_ERROR_UNSUPPORTED && strstr(ferr, "captur") && wrote == 0,
          "local_ring_capture_refused",
          "begin %d end %d; forward %s (%s); backward %s; %zu bytes written", (int)r, (int)r2,
          lh_status_string(f), ferr, lh_status_string(b), wrote);
    if (graph) env.cu->GraphDestroy(graph);
    lone_free(&l);
    LH_MUST(lh_plan_destroy(p1));
    LH_MUST(lh_ring_destroy(ring));
}

/* ---- (c) a one-rank NCCL ring: first call outside capture, then capture and replay ----------- */

static lh_status fwd_bwd(lone *l) {
    lh_status st = lh_forward(l->plan, l->q, l->k, l->v, l->out, l->saved, l->fws, l->stream);
    if (st == LH_OK)
        st = lh_backward(l->plan, l->q, l->k, l->v, l->out, l->dout, l->saved, l->dq, l->dk,
                         l->dv, l->bws, l->stream);
    return st;
}

/* out and saved (bytes), then dq, dk, dv decoded. */
static void snapshot(const lone *l, unsigned char *fwd, float *bwd) {
    gpu_download(&env, fwd, l->out, l->nq);
    gpu_download(&env, fwd + l->nq, l->saved, l->saved_bytes);
    const void *g[3] = {l->dq, l->dk, l->dv};
    size_t n[3] = {l->nq, l->nk, l->nk}, at = 0;
    for (int i = 0; i < 3; i++) {
        uint16_t *bits = malloc(n[i]);
        gpu_download(&env, bits, g[i], n[i]);
        for (size_t e = 0; e < n[i] / 2; e++) bwd[at++] = half_bits_to_f32(bits[e], small.dtype);
        free(bits);
    }
}

static void test_nccl_capture(void) {
    char id[128];
    lh_ring *ring = NULL;
    lh_status st = lh_nccl_get_unique_id(gpu_ctx, id);
    if (st == LH_OK) st = lh_ring_create_nccl_from_id(gpu_ctx, id, 0, 1, &ring);
    if (st != LH_OK) {
        printf("NOTE nccl_capture: NCCL ring unavailable here (%s: %s); not checked\n",
               lh_status_string(st), lh_last_error());
        return;
    }
    lh_plan *p = make_plan(gpu_ctx, &small, small.dtype, ring, 0);
    LH_MUST(lh_plan_finalize(p));
    lone l;
    lone_init(&l, &small, p);
    CUgraph graph = NULL;
    CUgraphExec exec = NULL;
    CUresult r = env.cu->StreamBeginCapture(l.stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
    st = lh_forward(p, l.q, l.k, l.v, l.out, l.saved, l.fws, l.stream);
    char err[600];
    snprintf(err, sizeof err, "%s", lh_last_error());
    CUresult r2 = env.cu->StreamEndCapture(l.stream, &graph);
    check(r == CUDA_SUCCESS && r2 == CUDA_SUCCESS && st == LH_ERROR_BAD_STATE &&
              strstr(err, "outside capture"),
          "nccl_first_call_capture_refused", "begin %d end %d; forward %s (%s)", (int)r, (int)r2,
          lh_status_string(st), err);
    if (graph) env.cu->GraphDestroy(graph), graph = NULL;
    size_t fwd_bytes = l.nq + l.saved_bytes, bwd_n = (l.nq + 2 * l.nk) / 2;
    unsigned char *fa = malloc(fwd_bytes), *fb = malloc(fwd_bytes);
    float *ba = malloc(bwd_n * 4), *bb = malloc(bwd_n * 4);
    lone_poison(&l);
    st = fwd_bwd(&l);
    CUresult rs = env.cu->StreamSynchronize(l.stream);
    check(st == LH_OK && rs == CUDA_SUCCESS, "nccl_first_call", "-> %s (%s), sync %d",
          lh_status_string(st), st == LH_OK ? "" : lh_last_error(), (int)rs);
    snapshot(&l, fa, ba);
    r = env.cu->StreamBeginCapture(l.stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
    st = fwd_bwd(&l);
    snprintf(err, sizeof err, "%s", st == LH_OK ? "" : lh_last_error());
    r2 = env.cu->StreamEndCapture(l.stream, &graph);
    CUresult ri = graph ? env.cu->GraphInstantiate(&exec, graph, 0) : CUDA_ERROR_UNKNOWN;
    check(r == CUDA_SUCCESS && st == LH_OK && r2 == CUDA_SUCCESS && ri == CUDA_SUCCESS,
          "nccl_capture", "begin %d, calls %s (%s), end %d, instantiate %d", (int)r,
          lh_status_string(st), err, (int)r2, (int)ri);
    for (int rep = 0; exec && rep < 2; rep++) {
        lone_poison(&l);
        CUresult rl = env.cu->GraphLaunch(exec, l.stream);
        rs = env.cu->StreamSynchronize(l.stream);
        snapshot(&l, fb, bb);
        bool same = memcmp(fa, fb, fwd_bytes) == 0;
        double e = rel_error(bb, ba, bwd_n);
        check(rl == CUDA_SUCCESS && rs == CUDA_SUCCESS && same && e <= 1e-2, "nccl_replay",
              "#%d: launch %d sync %d, out and saved bit-exact %s, dq/dk/dv rel diff %.2e",
              rep + 1, (int)rl, (int)rs, same ? "yes" : "NO", e);
    }
    if (exec) env.cu->GraphExecDestroy(exec);
    if (graph) env.cu->GraphDestroy(graph);
    free(fa), free(fb), free(ba), free(bb);
    lone_free(&l);
    LH_MUST(lh_ring_destroy(ring));
}

int main(void) {
    setenv("NCCL_NVLS_ENABLE", "0", 0); /* no NVLink multicast on shared machines */
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *prog = "test_ring_safety_gpu";
    int rc = gpu_env_init(&env, prog);
    if (rc) return rc;
    lh_status st = lh_context_create(LH_BACKEND_CUDA, 0, &gpu_ctx);
    if (st == LH_ERROR_BACKEND_UNAVAILABLE) {
        printf("SKIP: %s: %s\n", prog, lh_last_error());
        return GPU_SKIP;
    }
    LH_MUST(st);
    test_failing_step();
    test_local_capture_refused();
    test_nccl_capture();
    lh_context_destroy(gpu_ctx);
    return finish(prog);
}
