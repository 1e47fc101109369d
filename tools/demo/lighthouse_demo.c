/*
 * lighthouse-demo - one Lighthouse forward and backward on the best backend available, next to
 * dense causal attention on the same inputs, and a plain account of what happened.
 *
 *   lighthouse-demo [--cpu | --cuda] [--seq N] [--heads H] [--dim D] [--topk K]
 *
 * Without a GPU it runs the fp32 CPU reference at a small size; with one, bf16 at 64K tokens.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_device.h"
#include "lighthouse.h"

typedef struct demo_config {
    lh_backend backend;
    int64_t seq, heads, dim, levels, pooling, topk;
    lh_dtype dtype;
} demo_config;

#define CHECK(call)                                                                         \
    do {                                                                                    \
        lh_status st_ = (call);                                                             \
        if (st_ != LH_OK) {                                                                 \
            fprintf(stderr, "%s failed: %s: %s\n", #call, lh_status_string(st_), lh_last_error()); \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

static lh_plan *make_plan(lh_context *ctx, const demo_config *c, lh_mode mode) {
    lh_plan *plan = NULL;
    CHECK(lh_plan_create(ctx, &plan));
    CHECK(lh_plan_set_i64(plan, LH_PARAM_SEQ_LEN, c->seq));
    CHECK(lh_plan_set_i64(plan, LH_PARAM_HEADS, c->heads));
    CHECK(lh_plan_set_i64(plan, LH_PARAM_HEAD_DIM, c->dim));
    CHECK(lh_plan_set_i64(plan, LH_PARAM_DTYPE, c->dtype));
    CHECK(lh_plan_set_i64(plan, LH_PARAM_LEVELS, c->levels));
    CHECK(lh_plan_set_i64(plan, LH_PARAM_POOLING, c->pooling));
    CHECK(lh_plan_set_i64(plan, LH_PARAM_TOPK, c->topk));
    CHECK(lh_plan_set_i64(plan, LH_PARAM_MODE, mode));
    CHECK(lh_plan_finalize(plan));
    return plan;
}

static int64_t query(lh_plan *plan, lh_query q) {
    int64_t v = 0;
    CHECK(lh_plan_get_i64(plan, q, &v));
    return v;
}

typedef struct run_result {
    float *out, *dq;      /* host copies, fp32 */
    double fwd_s, bwd_s;
} run_result;

/* One forward and one backward of `plan` on the backend's side; results copied back. */
static run_result run(lh_plan *plan, const demo_config *c, void *q, void *k, void *v, void *dout) {
    size_t n = (size_t)(c->seq * c->heads * c->dim), bytes = n * (c->dtype == LH_DTYPE_FLOAT32 ? 4 : 2);
    int64_t ws_bytes = query(plan, LH_QUERY_FWD_WORKSPACE_BYTES);
    int64_t bws = query(plan, LH_QUERY_BWD_WORKSPACE_BYTES);
    if (bws > ws_bytes) ws_bytes = bws;
    void *out = hd_alloc(c->backend, bytes), *dq = hd_alloc(c->backend, bytes);
    void *dk = hd_alloc(c->backend, bytes), *dv = hd_alloc(c->backend, bytes);
    void *saved = hd_alloc(c->backend, (size_t)query(plan, LH_QUERY_SAVED_BYTES));
    void *ws = hd_alloc(c->backend, (size_t)ws_bytes);
    if (!out || !dq || !dk || !dv || !saved || !ws) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    run_result r;
    double t0 = hd_now();
    CHECK(lh_forward(plan, q, k, v, out, saved, ws, NULL));
    hd_synchronize(c->backend);
    double t1 = hd_now();
    CHECK(lh_backward(plan, q, k, v, out, dout, saved, dq, dk, dv, ws, NULL));
    hd_synchronize(c->backend);
    r.fwd_s = t1 - t0;
    r.bwd_s = hd_now() - t1;
    void *host = malloc(bytes);
    r.out = malloc(n * sizeof(float));
    r.dq = malloc(n * sizeof(float));
    hd_download(c->backend, host, out, bytes);
    hd_decode(c->dtype, host, r.out, n);
    hd_download(c->backend, host, dq, bytes);
    hd_decode(c->dtype, host, r.dq, n);
    free(host);
    hd_free(c->backend, out); hd_free(c->backend, dq); hd_free(c->backend, dk);
    hd_free(c->backend, dv); hd_free(c->backend, saved); hd_free(c->backend, ws);
    return r;
}

static double rel_diff(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static double cosine(const float *a, const float *b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) { ab += (double)a[i] * b[i]; aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i]; }
    return ab / sqrt(aa * bb + 1e-300);
}

/* Dense causal attention of one query row (token t, head h) computed directly in double: the
 * check that the dense path is exact, on a few sampled rows. */
static double dense_row_error(const demo_config *c, const float *q, const float *k, const float *v,
                              const float *out, int64_t t, int64_t h) {
    int64_t H = c->heads, D = c->dim;
    double scale = 1.0 / sqrt((double)D), mx = -1e300, den = 0.0;
    double *w = malloc((size_t)(t + 1) * sizeof(double)), *o = calloc((size_t)D, sizeof(double));
    for (int64_t s = 0; s <= t; s++) {
        double dot = 0.0;
        for (int64_t d = 0; d < D; d++) dot += (double)q[(t * H + h) * D + d] * k[(s * H + h) * D + d];
        w[s] = dot * scale;
        if (w[s] > mx) mx = w[s];
    }
    for (int64_t s = 0; s <= t; s++) {
        w[s] = exp(w[s] - mx);
        den += w[s];
        for (int64_t d = 0; d < D; d++) o[d] += w[s] * v[(s * H + h) * D + d];
    }
    double num = 0.0, ref = 0.0;
    for (int64_t d = 0; d < D; d++) {
        double r = o[d] / den, g = out[(t * H + h) * D + d];
        num += (g - r) * (g - r);
        ref += r * r;
    }
    free(w);
    free(o);
    return sqrt(num / (ref > 0 ? ref : 1));
}

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static void parse_args(int argc, char **argv, demo_config *c, lh_backend *wanted) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int64_t *target = NULL;
        if (!strcmp(a, "--cpu")) *wanted = LH_BACKEND_CPU;
        else if (!strcmp(a, "--cuda")) *wanted = LH_BACKEND_CUDA;
        else if (!strcmp(a, "--seq")) target = &c->seq;
        else if (!strcmp(a, "--heads")) target = &c->heads;
        else if (!strcmp(a, "--dim")) target = &c->dim;
        else if (!strcmp(a, "--topk")) target = &c->topk;
        else {
            fprintf(stderr, "usage: %s [--cpu|--cuda] [--seq N] [--heads H] [--dim D] [--topk K]\n", argv[0]);
            exit(2);
        }
        if (target) {
            if (i + 1 >= argc) { fprintf(stderr, "%s needs a value\n", a); exit(2); }
            *target = atoll(argv[++i]);
        }
    }
}

int main(int argc, char **argv) {
    lh_backend wanted = LH_BACKEND_AUTO;
    demo_config small = {LH_BACKEND_CPU, 4096, 4, 64, 3, 4, 128, LH_DTYPE_FLOAT32};
    demo_config big = {LH_BACKEND_CUDA, 65536, 8, 128, 3, 4, 2048, LH_DTYPE_BFLOAT16};
    demo_config overrides = {0, 0, 0, 0, 0, 0, 0, 0};
    parse_args(argc, argv, &overrides, &wanted);

    if (wanted != LH_BACKEND_CPU && hd_gpu_init(0) != 0) {
        if (wanted == LH_BACKEND_CUDA) { fprintf(stderr, "no usable GPU (libcuda.so.1 / device 0)\n"); return 1; }
        wanted = LH_BACKEND_CPU;
    }
    lh_context *ctx = NULL;
    CHECK(lh_context_create(wanted, 0, &ctx));
    lh_backend backend;
    CHECK(lh_context_get_backend(ctx, &backend));
    demo_config c = backend == LH_BACKEND_CUDA ? big : small;
    if (overrides.seq) c.seq = overrides.seq;
    if (overrides.heads) c.heads = overrides.heads;
    if (overrides.dim) c.dim = overrides.dim;
    if (overrides.topk) c.topk = overrides.topk;

    printf("liblighthouse %s demo on the %s backend\n", lh_version_string(),
           backend == LH_BACKEND_CUDA ? "CUDA" : "CPU reference");
    lh_plan *lighthouse = make_plan(ctx, &c, LH_MODE_LIGHTHOUSE);
    lh_plan *dense = make_plan(ctx, &c, LH_MODE_DENSE);
    int64_t s_sel = query(lighthouse, LH_QUERY_SUBSEQ_LEN);
    printf("  sizes: B=1 N=%lld H=%lld D=%lld %s, levels=%lld pooling=%lld topk=%lld\n",
           (long long)c.seq, (long long)c.heads, (long long)c.dim,
           c.dtype == LH_DTYPE_FLOAT32 ? "fp32" : "bf16", (long long)c.levels,
           (long long)c.pooling, (long long)c.topk);
    double frac = (double)s_sel / (double)c.seq;
    printf("  sub-sequence: S_sel=%lld of N=%lld tokens (1/%.1f), attention work saved %.1f%%\n",
           (long long)s_sel, (long long)c.seq, 1.0 / frac, 100.0 * (1.0 - frac * frac));

    size_t n = (size_t)(c.seq * c.heads * c.dim), bytes = n * (c.dtype == LH_DTYPE_FLOAT32 ? 4 : 2);
    float *host[4];
    void *enc = malloc(bytes);
    void *dev[4];
    srand(12345);
    for (int t = 0; t < 4; t++) {
        host[t] = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) host[t][i] = (float)rand() / RAND_MAX * 2.0f - 1.0f;
        hd_round_to(c.dtype, host[t], n);   /* the exact values the backend sees */
        hd_encode(c.dtype, host[t], enc, n);
        dev[t] = hd_alloc(backend, bytes);
        hd_upload(backend, dev[t], enc, bytes);
    }
    run_result lh = run(lighthouse, &c, dev[0], dev[1], dev[2], dev[3]);
    run_result dn = run(dense, &c, dev[0], dev[1], dev[2], dev[3]);
    printf("  Lighthouse: forward %.3f ms, backward %.3f ms\n", lh.fwd_s * 1e3, lh.bwd_s * 1e3);
    printf("  dense:      forward %.3f ms, backward %.3f ms (%.1fx the Lighthouse time)\n",
           dn.fwd_s * 1e3, dn.bwd_s * 1e3, (dn.fwd_s + dn.bwd_s) / (lh.fwd_s + lh.bwd_s));
    int ok = all_finite(lh.out, n) && all_finite(lh.dq, n) && all_finite(dn.out, n);
    /* Dense mode must be exact attention: check sampled rows against a direct computation. */
    double worst = 0.0;
    const double rows[] = {0.0, 0.001, 0.25, 0.5, 0.999};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int64_t t = (int64_t)(rows[i] * (double)(c.seq - 1));
        double e = dense_row_error(&c, host[0], host[1], host[2], dn.out, t, (int64_t)i % c.heads);
        if (e > worst) worst = e;
    }
    double tol = c.dtype == LH_DTYPE_FLOAT32 ? 1e-5 : 2e-2;
    printf("  dense vs direct attention on 5 sampled rows: max relative error %.2e (bound %.0e): %s\n",
           worst, tol, worst <= tol ? "ok" : "FAILED");
    ok = ok && worst <= tol;
    printf("  Lighthouse vs dense: output cosine %.4f, relative difference %.3f "
           "(an approximation, not expected to be 0)\n",
           cosine(lh.out, dn.out, n), rel_diff(lh.out, dn.out, n));
    printf("  outputs and gradients finite: %s\n", ok ? "yes" : "NO");
    for (int t = 0; t < 4; t++) hd_free(backend, dev[t]);
    for (int t = 0; t < 4; t++) free(host[t]);
    free(enc); free(lh.out); free(lh.dq); free(dn.out); free(dn.dq);
    lh_plan_destroy(lighthouse);
    lh_plan_destroy(dense);
    lh_context_destroy(ctx);
    return ok ? 0 : 1;
}
