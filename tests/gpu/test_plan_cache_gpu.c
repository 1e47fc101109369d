/*
 * test_plan_cache_gpu.c - plans that share their context's cuDNN handle and SDPA plans
 * (runtime/cuda/cuda_dnn.c) compute what a plan that built its own computes:
 *  (a) a second plan of the same shape in a context takes the first's SDPA plans (it reports them
 *      reused and spends no time on cuDNN graphs, heuristics or execution plans); a plan of a new
 *      context builds its own (or restores it from the disk store beside the kernels: (e));
 *  (b) forward out of the sharing plans is bit-identical to the first plan's, and the new
 *      context's within 1e-2 (bit-identical where cuDNN picks the same engine); backward within
 *      1e-2 (the dQ-accumulator engine sums with atomics);
 *  (c) the two sharing plans run at once from two threads on two streams, 20 calls each, and give
 *      the serial results bit for bit (the handle's stream binding is locked);
 *  (d) a plan of the released shape, after both are destroyed, still finds it in the context;
 *  (e) the disk store of cuDNN plans (runtime/cuda/cudnn_plan_store.h): a dense plan of a
 *      context whose cache directory is empty builds its cuDNN plans and writes them there; a
 *      plan of a second context on that directory (its own, empty, SDPA cache) restores them:
 *      no graph or heuristics time, none reused; its out, dq, dk and dv are bit-identical to
 *      the built plan's on the same inputs (within 1e-2 where the built plan's own two runs
 *      differ: the dQ-accumulator engine sums with atomics). Where cuDNN serialises none of
 *      the engines, the store falls back to building and the case says so;
 *  (f) the backward graph built on a thread of its own beside the forward and handed over as
 *      cuDNN's text (runtime/cuda/cuda_sdpa.c) computes what the backward built after the
 *      forward on the plan's handle computes (LIGHTHOUSE_CUDNN_PARALLEL_BUILD=0): two dense plans
 *      of new contexts on empty cache directories, held to each other as (e) holds the
 *      restored plan to the built one;
 *  (g) plans made ahead of time for a described GPU (lh_context_save_device, then
 *      lh_plan_precompile_device on a CPU context): the kernels and cuDNN plans land in an empty
 *      directory, a second call builds nothing, and a CUDA plan on that directory restores
 *      them (no graph or heuristics time) and computes what a plan built here computes, held to
 *      it as (e) holds the restored plan.
 * Outputs are poisoned before every call that must write them. Exit 77 without a GPU.
 */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu_common.h"

enum { B = 2, N = 16384, H = 8, HKV = 2, D = 128 };
static gpu_env env;

/* The Lighthouse plan's parameters, not yet finalized (lh_plan_precompile_device takes it so). */
static lh_plan *plan_with_params(lh_context *ctx) {
    lh_plan *p;
    LH_MUST(lh_plan_create(ctx, &p));
    const struct { lh_param k; int64_t v; } params[] = {
        {LH_PARAM_BATCH, B}, {LH_PARAM_SEQ_LEN, N}, {LH_PARAM_HEADS, H}, {LH_PARAM_KV_HEADS, HKV},
        {LH_PARAM_HEAD_DIM, D}, {LH_PARAM_DTYPE, LH_DTYPE_BFLOAT16}, {LH_PARAM_LEVELS, 3},
        {LH_PARAM_POOLING, 4}, {LH_PARAM_TOPK, 256}};
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        LH_MUST(lh_plan_set_i64(p, params[i].k, params[i].v));
    return p;
}

static lh_plan *make_plan(lh_context *ctx) {
    lh_plan *p = plan_with_params(ctx);
    LH_MUST(lh_plan_finalize(p));
    return p;
}

/* Plain dense attention (MODE = DENSE): it loads no kernels, so its context's cache directory
 * may be any empty one on a machine without the kernel compiler. */
static lh_plan *make_dense_plan(lh_context *ctx) {
    lh_plan *p;
    LH_MUST(lh_plan_create(ctx, &p));
    const struct { lh_param k; int64_t v; } params[] = {
        {LH_PARAM_BATCH, B}, {LH_PARAM_SEQ_LEN, N}, {LH_PARAM_HEADS, H}, {LH_PARAM_KV_HEADS, HKV},
        {LH_PARAM_HEAD_DIM, D}, {LH_PARAM_DTYPE, LH_DTYPE_BFLOAT16},
        {LH_PARAM_MODE, LH_MODE_DENSE}};
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        LH_MUST(lh_plan_set_i64(p, params[i].k, params[i].v));
    LH_MUST(lh_plan_finalize(p));
    return p;
}

typedef struct outputs { void *out, *dq, *dk, *dv, *saved, *ws; } outputs;
static const size_t QN = (size_t)B * N * H * D, KN = (size_t)B * N * HKV * D;
static void *q, *k, *v, *dout;

static void outputs_alloc(const lh_plan *p, outputs *o) {
    size_t ws = (size_t)fmax((double)plan_query(p, LH_QUERY_FWD_WORKSPACE_BYTES),
                             (double)plan_query(p, LH_QUERY_BWD_WORKSPACE_BYTES));
    o->out = gpu_alloc(&env, QN * 2), o->dq = gpu_alloc(&env, QN * 2);
    o->dk = gpu_alloc(&env, KN * 2), o->dv = gpu_alloc(&env, KN * 2);
    o->saved = gpu_alloc(&env, (size_t)plan_query(p, LH_QUERY_SAVED_BYTES));
    o->ws = gpu_alloc(&env, ws ? ws : 16);
}

static void outputs_free(outputs *o) {
    void *all[] = {o->out, o->dq, o->dk, o->dv, o->saved, o->ws};
    for (size_t i = 0; i < 6; i++) gpu_free(&env, all[i]);
}

/* forward + backward of p into o on `stream` */
static lh_status run(lh_plan *p, outputs *o, CUstream stream) {
    lh_status st = lh_forward(p, q, k, v, o->out, o->saved, o->ws, stream);
    if (st == LH_OK)
        st = lh_backward(p, q, k, v, o->out, dout, o->saved, o->dq, o->dk, o->dv, o->ws, stream);
    return st;
}

static float *fetch(const void *dev, size_t n) {
    uint16_t *bits = malloc(n * 2);
    float *f = malloc(n * sizeof(float));
    gpu_download(&env, bits, dev, n * 2);
    for (size_t i = 0; i < n; i++) f[i] = half_bits_to_f32(bits[i], LH_DTYPE_BFLOAT16);
    free(bits);
    return f;
}

/* rel_error of each output of a against r; *bitwise: out identical bit for bit; *all_bitwise
 * (may be NULL): out, dq, dk and dv all identical (bf16 widens to fp32 exactly, so comparing
 * the widened values compares the bits) */
static double worst(const outputs *a, const outputs *r, bool *bitwise, bool *all_bitwise) {
    const void *pa[] = {a->out, a->dq, a->dk, a->dv}, *pr[] = {r->out, r->dq, r->dk, r->dv};
    size_t n[] = {QN, QN, KN, KN};
    double e = 0;
    if (all_bitwise) *all_bitwise = true;
    for (int i = 0; i < 4; i++) {
        float *x = fetch(pa[i], n[i]), *y = fetch(pr[i], n[i]);
        double ei = rel_error(x, y, n[i]);
        bool same = memcmp(x, y, n[i] * sizeof(float)) == 0;
        if (i == 0) *bitwise = same;
        if (all_bitwise) *all_bitwise = *all_bitwise && same;
        e = isnan(ei) || ei > e ? ei : e;
        free(x);
        free(y);
    }
    return e;
}

static void poison(outputs *o) {
    gpu_poison(&env, o->out, QN * 2), gpu_poison(&env, o->dq, QN * 2);
    gpu_poison(&env, o->dk, KN * 2), gpu_poison(&env, o->dv, KN * 2);
}

typedef struct worker { lh_plan *plan; outputs *o; lh_status st; } worker;

static void *work(void *arg) {
    worker *w = arg;
    CUstream s;
    env.cu->CtxSetCurrent(env.ctx);
    if (env.cu->StreamCreate(&s, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS) {
        w->st = LH_ERROR_DEVICE;
        return NULL;
    }
    w->st = LH_OK;
    for (int i = 0; i < 20 && w->st == LH_OK; i++) w->st = run(w->plan, w->o, s);
    env.cu->StreamSynchronize(s);
    env.cu->StreamDestroy(s);
    return NULL;
}

/* Files of the store in `dir` ("cudnn-plan-*"); removes every file when `remove`. */
static int store_files(const char *dir, bool remove) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    char path[1200];
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        n += strncmp(e->d_name, "cudnn-plan-", 11) == 0;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (remove) unlink(path);
    }
    closedir(d);
    return n;
}

static lh_context *context_on(const char *dir) {
    lh_context *c;
    LH_MUST(lh_context_create(LH_BACKEND_CUDA, 0, &c));
    LH_MUST(lh_context_set_str(c, LH_CONTEXT_CACHE_DIR, dir));
    return c;
}

/* Runs `ref` twice and `plan` once on the same (poisoned) outputs and holds `plan` to `ref`: bit
 * for bit where ref's own two runs are; where they differ (a backward that accumulates in a
 * run-dependent order), only to the forward's bits and a bound of 1e-2. */
static void check_matches(lh_plan *ref, lh_plan *plan, const char *name, const char *ref_what,
                          const char *plan_what) {
    outputs o1, o2, op;
    outputs_alloc(ref, &o1), outputs_alloc(ref, &o2), outputs_alloc(plan, &op);
    poison(&o1), poison(&o2), poison(&op);
    LH_MUST(run(ref, &o1, NULL));
    LH_MUST(run(ref, &o2, NULL));
    LH_MUST(run(plan, &op, NULL));
    gpu_sync(&env);
    bool deterministic, same, out_same, unused;
    worst(&o2, &o1, &unused, &deterministic);
    double e = worst(&op, &o1, &out_same, &same);
    check(deterministic ? same : out_same && e <= 1e-2, name,
          "two runs of the %s plan %s; %s against %s: out %s, out/dq/dk/dv %s, worst rel error "
          "%.3g",
          ref_what, deterministic ? "bit-identical" : "differ (run-dependent accumulation)",
          plan_what, ref_what, out_same ? "bit-identical" : "DIFFERS",
          same ? "bit-identical" : "not bit-identical", e);
    outputs_free(&o1), outputs_free(&o2), outputs_free(&op);
}

/* A temporary directory under $TMPDIR (or /tmp) into `dir`; false (and a failed check) if not. */
static bool temp_dir(char *dir, size_t size, const char *what) {
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, size, "%s/lh-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", what);
    if (mkdtemp(dir)) return true;
    check(false, what, "mkdtemp %s failed", dir);
    return false;
}

/* (e) */
static void plan_store_case(void) {
    char dir[1024];
    if (!temp_dir(dir, sizeof dir, "store_dir")) return;
    lh_context *cb = context_on(dir), *cr = context_on(dir);
    lh_plan *built = make_dense_plan(cb);
    int files = store_files(dir, false);
    check(plan_query(built, LH_QUERY_SETUP_CUDNN_HEURISTICS_US) > 0, "store_first_builds",
          "heuristics %lld us, %d plan records written",
          (long long)plan_query(built, LH_QUERY_SETUP_CUDNN_HEURISTICS_US), files);
    lh_plan *restored = make_dense_plan(cr);
    int64_t graph = plan_query(restored, LH_QUERY_SETUP_CUDNN_GRAPH_US),
            heur = plan_query(restored, LH_QUERY_SETUP_CUDNN_HEURISTICS_US),
            plans = plan_query(restored, LH_QUERY_SETUP_CUDNN_PLAN_US);
    if (files == 0) {
        printf("NOTE store_not_exercised: cuDNN serialised none of these engines; the plans are "
               "built (graphs %lld us, heuristics %lld us, plans %lld us)\n",
               (long long)graph, (long long)heur, (long long)plans);
    } else {
        check(plan_query(restored, LH_QUERY_SETUP_CUDNN_REUSED) == 0 && graph == 0 && heur == 0,
              "store_restores",
              "reused %lld, graphs %lld us, heuristics %lld us, plans (restored) %lld us "
              "(built: graphs %lld, heuristics %lld, plans %lld us)",
              (long long)plan_query(restored, LH_QUERY_SETUP_CUDNN_REUSED), (long long)graph,
              (long long)heur, (long long)plans,
              (long long)plan_query(built, LH_QUERY_SETUP_CUDNN_GRAPH_US),
              (long long)plan_query(built, LH_QUERY_SETUP_CUDNN_HEURISTICS_US),
              (long long)plan_query(built, LH_QUERY_SETUP_CUDNN_PLAN_US));
    }
    check_matches(built, restored, "store_matches_built", "built", "restored");
    lh_plan_destroy(built);
    lh_plan_destroy(restored);
    LH_MUST(lh_context_destroy(cb));
    LH_MUST(lh_context_destroy(cr));
    store_files(dir, true);
    rmdir(dir);
}

/* (f) */
static void parallel_build_case(void) {
    char dir_p[1024], dir_s[1024];
    if (!temp_dir(dir_p, sizeof dir_p, "parallel_build_dir")) return;
    if (!temp_dir(dir_s, sizeof dir_s, "serial_build_dir")) {
        rmdir(dir_p);
        return;
    }
    lh_context *cp = context_on(dir_p), *cs = context_on(dir_s);
    lh_plan *par = make_dense_plan(cp);
    setenv("LIGHTHOUSE_CUDNN_PARALLEL_BUILD", "0", 1);
    lh_plan *ser = make_dense_plan(cs);
    unsetenv("LIGHTHOUSE_CUDNN_PARALLEL_BUILD");
    check(plan_query(par, LH_QUERY_SETUP_CUDNN_HEURISTICS_US) > 0 &&
              plan_query(ser, LH_QUERY_SETUP_CUDNN_HEURISTICS_US) > 0,
          "parallel_build_builds", "cuDNN plans %lld us (both graphs' time, side by side) "
          "against %lld us one after the other; plan finalize's kernels + cuDNN handle %lld us",
          (long long)plan_query(par, LH_QUERY_SETUP_CUDNN_PLAN_US),
          (long long)plan_query(ser, LH_QUERY_SETUP_CUDNN_PLAN_US),
          (long long)(plan_query(par, LH_QUERY_SETUP_KERNELS_US) +
                      plan_query(par, LH_QUERY_SETUP_CUDNN_HANDLE_US)));
    check_matches(ser, par, "parallel_build_matches_serial", "serially built",
                  "side-by-side built");
    lh_plan_destroy(par);
    lh_plan_destroy(ser);
    LH_MUST(lh_context_destroy(cp));
    LH_MUST(lh_context_destroy(cs));
    store_files(dir_p, true), store_files(dir_s, true);
    rmdir(dir_p), rmdir(dir_s);
}

/* (g) */
static void device_precompile_case(void) {
    char dir[1024], dir_b[1024], dev[1200];
    if (!temp_dir(dir, sizeof dir, "device_precompile_dir")) return;
    if (!temp_dir(dir_b, sizeof dir_b, "device_built_dir")) {
        rmdir(dir);
        return;
    }
    snprintf(dev, sizeof dev, "%s/gpu.dev", dir_b);
    lh_context *cb = context_on(dir_b), *cpu = NULL;
    lh_status st = lh_context_save_device(cb, dev);
    check(st == LH_OK, "device_described", "%s", st == LH_OK ? dev : lh_last_error());
    LH_MUST(lh_context_create(LH_BACKEND_CPU, 0, &cpu));
    LH_MUST(lh_context_set_str(cpu, LH_CONTEXT_CACHE_DIR, dir));
    lh_plan *pre = plan_with_params(cpu);
    int64_t kernels = -1, plans = -1, kernels2 = -1, plans2 = -1;
    if (st == LH_OK) st = lh_plan_precompile_device(pre, dev, &kernels, &plans);
    if (st == LH_ERROR_BACKEND_UNAVAILABLE) {
        printf("NOTE device_precompile_not_exercised: %s\n", lh_last_error());
    } else {
        check(st == LH_OK && plans >= 2 && kernels > 0, "device_precompile_builds",
              "%s: %lld kernels compiled, %lld cuDNN plans built for the description",
              st == LH_OK ? "ok" : lh_last_error(), (long long)kernels, (long long)plans);
        st = lh_plan_precompile_device(pre, dev, &kernels2, &plans2);
        check(st == LH_OK && kernels2 == 0 && plans2 == 0, "device_precompile_again_builds_nothing",
              "%lld kernels, %lld cuDNN plans", (long long)kernels2, (long long)plans2);
        lh_context *ca = context_on(dir);
        lh_plan *aot = make_plan(ca), *built = make_plan(cb);
        int64_t graph = plan_query(aot, LH_QUERY_SETUP_CUDNN_GRAPH_US),
                heur = plan_query(aot, LH_QUERY_SETUP_CUDNN_HEURISTICS_US);
        check(graph == 0 && heur == 0 && plan_query(aot, LH_QUERY_SETUP_CUDNN_REUSED) == 0,
              "device_precompile_restores",
              "graphs %lld us, heuristics %lld us, plans (restored) %lld us, kernels %lld us "
              "(built here: heuristics %lld, plans %lld us)", (long long)graph, (long long)heur,
              (long long)plan_query(aot, LH_QUERY_SETUP_CUDNN_PLAN_US),
              (long long)plan_query(aot, LH_QUERY_SETUP_KERNELS_US),
              (long long)plan_query(built, LH_QUERY_SETUP_CUDNN_HEURISTICS_US),
              (long long)plan_query(built, LH_QUERY_SETUP_CUDNN_PLAN_US));
        check_matches(built, aot, "device_precompile_matches_built", "built",
                      "precompiled without the GPU");
        lh_plan_destroy(aot);
        lh_plan_destroy(built);
        LH_MUST(lh_context_destroy(ca));
    }
    lh_plan_destroy(pre);
    LH_MUST(lh_context_destroy(cpu));
    LH_MUST(lh_context_destroy(cb));
    store_files(dir, true), store_files(dir_b, true);
    rmdir(dir), rmdir(dir_b);
}

int main(void) {
    int rc = gpu_env_init(&env, "test_plan_cache_gpu");
    if (rc) return rc;
    lh_context *c1, *c2;
    LH_MUST(lh_context_create(LH_BACKEND_CUDA, 0, &c1));
    LH_MUST(lh_context_create(LH_BACKEND_CUDA, 0, &c2));
    /* inputs */
    uint64_t state = 12345;
    uint16_t *h = malloc(QN * 2);
    q = gpu_alloc(&env, QN * 2), k = gpu_alloc(&env, KN * 2), v = gpu_alloc(&env, KN * 2);
    dout = gpu_alloc(&env, QN * 2);
    void *ins[] = {q, k, v, dout};
    size_t ns[] = {QN, KN, KN, QN};
    for (int i = 0; i < 4; i++) {
        cheap_inputs(&state, LH_DTYPE_BFLOAT16, ns[i], h);
        gpu_upload(&env, ins[i], h, ns[i] * 2);
    }
    free(h);

    /* (a) */
    lh_plan *a = make_plan(c1), *b = make_plan(c1), *c = make_plan(c2);
    int64_t built = plan_query(a, LH_QUERY_SETUP_CUDNN_PLAN_US) + plan_query(a, LH_QUERY_SETUP_CUDNN_HEURISTICS_US);
    int64_t b_cudnn = plan_query(b, LH_QUERY_SETUP_CUDNN_GRAPH_US) +
                      plan_query(b, LH_QUERY_SETUP_CUDNN_HEURISTICS_US) + plan_query(b, LH_QUERY_SETUP_CUDNN_PLAN_US);
    check(plan_query(a, LH_QUERY_SETUP_CUDNN_REUSED) == 0 && built > 0, "first_plan_builds",
          "reused %lld, cuDNN heuristics + plans %lld us, kernels %lld us, handle %lld us",
          (long long)plan_query(a, LH_QUERY_SETUP_CUDNN_REUSED), (long long)built,
          (long long)plan_query(a, LH_QUERY_SETUP_KERNELS_US),
          (long long)plan_query(a, LH_QUERY_SETUP_CUDNN_HANDLE_US));
    check(plan_query(b, LH_QUERY_SETUP_CUDNN_REUSED) >= 1 && b_cudnn == 0, "second_plan_reuses",
          "reused %lld, cuDNN graphs + heuristics + plans %lld us",
          (long long)plan_query(b, LH_QUERY_SETUP_CUDNN_REUSED), (long long)b_cudnn);
    check(plan_query(c, LH_QUERY_SETUP_CUDNN_REUSED) == 0, "new_context_builds", "reused %lld",
          (long long)plan_query(c, LH_QUERY_SETUP_CUDNN_REUSED));

    /* (b) */
    outputs oa, ob, oc, ta, tb;
    outputs_alloc(a, &oa), outputs_alloc(b, &ob), outputs_alloc(c, &oc);
    outputs_alloc(a, &ta), outputs_alloc(b, &tb);
    poison(&oa), poison(&ob), poison(&oc);
    LH_MUST(run(a, &oa, NULL));
    LH_MUST(run(b, &ob, NULL));
    LH_MUST(run(c, &oc, NULL));
    gpu_sync(&env);
    bool same;
    double e = worst(&ob, &oa, &same, NULL);
    check(same && e <= 1e-2, "shared_plan_matches", "out bit-identical %d, worst rel error %.3g",
          same, e);
    e = worst(&oc, &oa, &same, NULL);
    check(e <= 1e-2, "new_context_matches", "out bit-identical %d, worst rel error %.3g", same, e);

    /* (c) */
    poison(&ta), poison(&tb);
    pthread_t t1, t2;
    worker w1 = {a, &ta, LH_OK}, w2 = {b, &tb, LH_OK};
    pthread_create(&t1, NULL, work, &w1);
    pthread_create(&t2, NULL, work, &w2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    check(w1.st == LH_OK && w2.st == LH_OK, "threads_run", "%s / %s", lh_status_string(w1.st),
          lh_status_string(w2.st));
    double e1 = worst(&ta, &oa, &same, NULL);
    bool same2;
    double e2 = worst(&tb, &oa, &same2, NULL);
    check(same && same2 && e1 <= 1e-2 && e2 <= 1e-2, "threads_match_serial",
          "out bit-identical %d %d, worst rel error %.3g %.3g", same, same2, e1, e2);

    /* (d) */
    outputs_free(&ta), outputs_free(&tb), outputs_free(&ob);
    lh_plan_destroy(a);
    poison(&oa);
    LH_MUST(run(b, &oa, NULL)); /* b holds the shared plans after a is gone */
    gpu_sync(&env);
    e = worst(&oa, &oc, &same, NULL);
    check(e <= 1e-2, "survives_first_plan", "worst rel error against the new context's %.3g", e);
    lh_plan_destroy(b);
    lh_plan *d = make_plan(c1);
    check(plan_query(d, LH_QUERY_SETUP_CUDNN_REUSED) >= 1, "released_plans_stay", "reused %lld",
          (long long)plan_query(d, LH_QUERY_SETUP_CUDNN_REUSED));
    lh_plan_destroy(d);
    lh_plan_destroy(c);
    plan_store_case();
    parallel_build_case();
    device_precompile_case();
    outputs_free(&oa), outputs_free(&oc);
    for (int i = 0; i < 4; i++) gpu_free(&env, ins[i]);
    LH_MUST(lh_context_destroy(c1));
    LH_MUST(lh_context_destroy(c2));
    return finish("test_plan_cache_gpu");
}
