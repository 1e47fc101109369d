/*
 * test_cuda_dense.c - dense causal attention on the GPU (cuDNN) against the CPU references.
 *
 * For each case: fresh N(0,1) inputs rounded to the case's dtype, outputs poisoned with NaN,
 * forward + backward through the public ABI on a caller-created stream, then
 *  - small N: the CPU backend (LH_BACKEND_CPU, fp32) on the same rounded inputs, every element of
 *    out, dq, dk, dv compared;
 *  - every N: an fp64 reference of sampled rows (first and last rows of sampled heads): out, the
 *    log-sum-exp in `saved`, dq, and dk/dv of the last rows (which need only the last rows' stats).
 * Error = max|gpu - ref| / max|ref|; limits 2e-2 (bfloat16) and 5e-3 (float16).
 *
 * Usage: test_cuda_dense [--small | --case NAME]   (--small: one tiny case, for compute-sanitizer)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_common.h"

typedef struct dense_case {
    const char *name;
    lh_dtype dtype;
    lh_layout layout;
    int64_t b, n, h, hkv, d;
    double scale;  /* 0: the default 1/sqrt(D) */
    bool full_cpu; /* compare every element with the CPU backend */
    bool optional; /* cuDNN may not support it: UNSUPPORTED is reported, not failed */
} dense_case;

#define BF LH_DTYPE_BFLOAT16
#define FP LH_DTYPE_FLOAT16
#define BNHD LH_LAYOUT_BNHD
#define BHND LH_LAYOUT_BHND

static const dense_case cases[] = {
    {"bf16_bnhd_b2_n128_h4_d64", BF, BNHD, 2, 128, 4, 4, 64, 0, true, false},
    {"fp16_bhnd_b2_n256_h4_kv2_d128", FP, BHND, 2, 256, 4, 2, 128, 0, true, false},
    {"bf16_bhnd_b1_n1024_h8_kv2_d128", BF, BHND, 1, 1024, 8, 2, 128, 0, true, false},
    {"fp16_bnhd_b2_n512_h2_kv1_d64", FP, BNHD, 2, 512, 2, 1, 64, 0, true, false},
    {"bf16_bnhd_b1_n2048_h4_d128_scale0.3", BF, BNHD, 1, 2048, 4, 4, 128, 0.3, true, false},
    {"fp16_bnhd_b3_n200_h2_d64", FP, BNHD, 3, 200, 2, 2, 64, 0, true, false},
    {"fp16_bhnd_b1_n4096_h2_d64", FP, BHND, 1, 4096, 2, 2, 64, 0, true, false},
    {"bf16_bnhd_b2_n256_h2_d256", BF, BNHD, 2, 256, 2, 2, 256, 0, true, true},
    {"bf16_bnhd_b1_n16384_h4_kv2_d128", BF, BNHD, 1, 16384, 4, 2, 128, 0, false, false},
    {"bf16_bhnd_b2_n32768_h2_kv1_d128", BF, BHND, 2, 32768, 2, 1, 128, 0, false, false},
    {"fp16_bnhd_b1_n65536_h4_d64", FP, BNHD, 1, 65536, 4, 4, 64, 0, false, false},
    {"bf16_bnhd_b1_n65536_h8_kv2_d128", BF, BNHD, 1, 65536, 8, 2, 128, 0, false, false},
};

static gpu_env env;
static lh_context *cuda_ctx, *cpu_ctx;
static CUstream stream;

static int64_t at(const dense_case *c, int64_t heads, int64_t b, int64_t t, int64_t h, int64_t d) {
    if (c->layout == BNHD) return ((b * c->n + t) * heads + h) * c->d + d;
    return ((b * heads + h) * c->n + t) * c->d + d;
}

static lh_status make_plan(lh_context *ctx, const dense_case *c, lh_dtype dtype, lh_plan **out) {
    lh_plan *p;
    LH_MUST(lh_plan_create(ctx, &p));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_MODE, LH_MODE_DENSE));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_BATCH, c->b));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_SEQ_LEN, c->n));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEADS, c->h));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_KV_HEADS, c->hkv));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEAD_DIM, c->d));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_DTYPE, dtype));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_LAYOUT, c->layout));
    if (c->scale > 0) LH_MUST(lh_plan_set_f64(p, LH_PARAM_SOFTMAX_SCALE, c->scale));
    lh_status st = lh_plan_finalize(p);
    if (st != LH_OK) {
        char msg[4096];
        snprintf(msg, sizeof msg, "%s", lh_last_error());
        lh_plan_destroy(p);
        fprintf(stderr, "plan_finalize: %s\n", msg);
        printf("INFO %s finalize: %s: %s\n", c->name, lh_status_string(st), msg);
        return st;
    }
    *out = p;
    return LH_OK;
}

/* ---- the CPU backend over the whole problem ------------------------------------------------ */

typedef struct tensors {
    float *q, *k, *v, *dout, *out, *dq, *dk, *dv, *lse;
} tensors;

static bool cpu_reference(const dense_case *c, const tensors *in, tensors *ref) {
    lh_plan *p;
    if (make_plan(cpu_ctx, c, LH_DTYPE_FLOAT32, &p) != LH_OK) return false;
    size_t nq = (size_t)(c->b * c->n * c->h * c->d), nkv = (size_t)(c->b * c->n * c->hkv * c->d);
    void *saved = malloc((size_t)plan_query(p, LH_QUERY_SAVED_BYTES) + 16);
    void *wf = malloc((size_t)plan_query(p, LH_QUERY_FWD_WORKSPACE_BYTES) + 16);
    void *wb = malloc((size_t)plan_query(p, LH_QUERY_BWD_WORKSPACE_BYTES) + 16);
    ref->out = malloc(nq * 4);
    ref->dq = malloc(nq * 4);
    ref->dk = malloc(nkv * 4);
    ref->dv = malloc(nkv * 4);
    double t0 = now_seconds();
    lh_status st = lh_forward(p, in->q, in->k, in->v, ref->out, saved, wf, NULL);
    if (st == LH_OK)
        st = lh_backward(p, in->q, in->k, in->v, ref->out, in->dout, saved, ref->dq, ref->dk,
                         ref->dv, wb, NULL);
    if (st != LH_OK) printf("INFO %s CPU reference: %s: %s\n", c->name, lh_status_string(st),
                            lh_last_error());
    else printf("INFO %s CPU reference took %.1f s\n", c->name, now_seconds() - t0);
    free(saved);
    free(wf);
    free(wb);
    lh_plan_destroy(p);
    return st == LH_OK;
}

/* ---- fp64 reference of sampled rows --------------------------------------------------------- */

typedef struct sample_acc {
    float *gpu, *ref;
    size_t n, cap;
} sample_acc;

static void acc_push(sample_acc *a, float g, double r) {
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 4096;
        a->gpu = realloc(a->gpu, a->cap * 4);
        a->ref = realloc(a->ref, a->cap * 4);
    }
    a->gpu[a->n] = g;
    a->ref[a->n++] = (float)r;
}

/* One query row: probabilities p[0..i], lse, out row, D = dout . out. */
static void row_forward(const dense_case *c, const tensors *in, double scale, int64_t b,
                        int64_t h, int64_t kvh, int64_t i, double *p, double *lse, double *o,
                        double *delta) {
    int64_t D = c->d;
    double m = -INFINITY;
    for (int64_t j = 0; j <= i; j++) {
        double s = 0;
        for (int64_t d = 0; d < D; d++)
            s += (double)in->q[at(c, c->h, b, i, h, d)] * in->k[at(c, c->hkv, b, j, kvh, d)];
        p[j] = s * scale;
        if (p[j] > m) m = p[j];
    }
    double z = 0;
    for (int64_t j = 0; j <= i; j++) z += exp(p[j] - m);
    *lse = m + log(z);
    for (int64_t d = 0; d < D; d++) o[d] = 0;
    for (int64_t j = 0; j <= i; j++) {
        p[j] = exp(p[j] - *lse);
        for (int64_t d = 0; d < D; d++) o[d] += p[j] * in->v[at(c, c->hkv, b, j, kvh, d)];
    }
    *delta = 0;
    for (int64_t d = 0; d < D; d++) *delta += (double)in->dout[at(c, c->h, b, i, h, d)] * o[d];
}

/* dS_ij = p_ij (dout_i . v_j - delta_i) */
static double ds_entry(const dense_case *c, const tensors *in, int64_t b, int64_t h, int64_t kvh,
                       int64_t i, int64_t j, double p, double delta) {
    double dp = 0;
    for (int64_t d = 0; d < c->d; d++)
        dp += (double)in->dout[at(c, c->h, b, i, h, d)] * in->v[at(c, c->hkv, b, j, kvh, d)];
    return p * (dp - delta);
}

typedef struct sampled {
    sample_acc out, lse, dq, dk, dv;
} sampled;

static void sampled_reference(const dense_case *c, const tensors *in, const tensors *gpu,
                              sampled *s) {
    double scale = c->scale > 0 ? c->scale : 1.0 / sqrt((double)c->d);
    int64_t N = c->n, D = c->d, group = c->h / c->hkv;
    int64_t R = N < 64 ? N / 2 : 32; /* rows sampled at each end */
    if (R < 1) R = 1;
    int64_t b = c->b - 1;
    int64_t kv_heads[2] = {0, c->hkv - 1};
    double *p = malloc((size_t)N * 8), *o = malloc((size_t)D * 8);
    /* last rows' p and delta per query head of a group, for dk/dv */
    double *tail_p = malloc((size_t)(group * R * R) * 8), *tail_delta = malloc((size_t)(group * R) * 8);
    double *acc_k = malloc((size_t)D * 8), *acc_v = malloc((size_t)D * 8);
    for (int kk = 0; kk < (c->hkv > 1 ? 2 : 1); kk++) {
        int64_t kvh = kv_heads[kk];
        for (int64_t g = 0; g < group; g++) {
            int64_t h = kvh * group + g;
            for (int64_t r = 0; r < 2 * R; r++) {
                int64_t i = r < R ? r : N - 2 * R + r;
                if (r >= R && i < R) continue; /* N < 2R: rows already done */
                double lse, delta;
                row_forward(c, in, scale, b, h, kvh, i, p, &lse, o, &delta);
                for (int64_t d = 0; d < D; d++)
                    acc_push(&s->out, gpu->out[at(c, c->h, b, i, h, d)], o[d]);
                acc_push(&s->lse, gpu->lse[(b * c->h + h) * N + i], lse);
                double *dq = acc_k;
                for (int64_t d = 0; d < D; d++) dq[d] = 0;
                for (int64_t j = 0; j <= i; j++) {
                    double ds = ds_entry(c, in, b, h, kvh, i, j, p[j], delta) * scale;
                    for (int64_t d = 0; d < D; d++) dq[d] += ds * in->k[at(c, c->hkv, b, j, kvh, d)];
                }
                for (int64_t d = 0; d < D; d++)
                    acc_push(&s->dq, gpu->dq[at(c, c->h, b, i, h, d)], dq[d]);
                if (i >= N - R) {
                    int64_t ti = i - (N - R);
                    for (int64_t j = N - R; j <= i; j++) tail_p[(g * R + ti) * R + (j - (N - R))] = p[j];
                    tail_delta[g * R + ti] = delta;
                }
            }
        }
        /* dk_j, dv_j for the last R kv rows: only query rows i >= j contribute */
        for (int64_t j = N - R; j < N; j++) {
            int64_t tj = j - (N - R);
            for (int64_t d = 0; d < D; d++) acc_k[d] = acc_v[d] = 0;
            for (int64_t g = 0; g < group; g++) {
                int64_t h = kvh * group + g;
                for (int64_t i = j; i < N; i++) {
                    int64_t ti = i - (N - R);
                    double pij = tail_p[(g * R + ti) * R + tj];
                    double ds = ds_entry(c, in, b, h, kvh, i, j, pij, tail_delta[g * R + ti]) * scale;
                    for (int64_t d = 0; d < D; d++) {
                        acc_v[d] += pij * in->dout[at(c, c->h, b, i, h, d)];
                        acc_k[d] += ds * in->q[at(c, c->h, b, i, h, d)];
                    }
                }
            }
            for (int64_t d = 0; d < D; d++) {
                acc_push(&s->dk, gpu->dk[at(c, c->hkv, b, j, kvh, d)], acc_k[d]);
                acc_push(&s->dv, gpu->dv[at(c, c->hkv, b, j, kvh, d)], acc_v[d]);
            }
        }
    }
    free(p); free(o); free(tail_p); free(tail_delta); free(acc_k); free(acc_v);
}

/* ---- one case ------------------------------------------------------------------------------- */

static float *download_half(const void *dev, size_t n, lh_dtype dtype) {
    return gpu_download_f32(&env, dev, n, dtype);
}

static void run_case(const dense_case *c, uint64_t seed) {
    double tol = c->dtype == BF ? 2e-2 : 5e-3;
    lh_plan *plan;
    lh_status st = make_plan(cuda_ctx, c, c->dtype, &plan);
    if (st != LH_OK) {
        if (c->optional && st == LH_ERROR_UNSUPPORTED) {
            printf("INFO %s: not supported by this cuDNN (optional case)\n", c->name);
            return;
        }
        check(false, c->name, "plan finalize failed: %s", lh_status_string(st));
        return;
    }
    size_t nq = (size_t)(c->b * c->n * c->h * c->d), nkv = (size_t)(c->b * c->n * c->hkv * c->d);
    size_t saved_b = (size_t)plan_query(plan, LH_QUERY_SAVED_BYTES);
    size_t wf_b = (size_t)plan_query(plan, LH_QUERY_FWD_WORKSPACE_BYTES);
    size_t wb_b = (size_t)plan_query(plan, LH_QUERY_BWD_WORKSPACE_BYTES);
    printf("INFO %s: saved %zu B, fwd workspace %zu B, bwd workspace %zu B\n", c->name, saved_b,
           wf_b, wb_b);

    tensors in = {0}, gpu = {0}, ref = {0};
    uint16_t *qb = malloc(nq * 2), *kb = malloc(nkv * 2), *vb = malloc(nkv * 2), *db = malloc(nq * 2);
    in.q = malloc(nq * 4); in.k = malloc(nkv * 4); in.v = malloc(nkv * 4); in.dout = malloc(nq * 4);
    uint64_t state = seed;
    random_inputs(&state, c->dtype, nq, qb, in.q);
    random_inputs(&state, c->dtype, nkv, kb, in.k);
    random_inputs(&state, c->dtype, nkv, vb, in.v);
    random_inputs(&state, c->dtype, nq, db, in.dout);

    void *dq_ = gpu_alloc(&env, nq * 2), *dk_ = gpu_alloc(&env, nkv * 2),
         *dv_ = gpu_alloc(&env, nkv * 2), *ddo = gpu_alloc(&env, nq * 2),
         *dout_ = gpu_alloc(&env, nq * 2), *dsaved = gpu_alloc(&env, saved_b),
         *dwf = wf_b ? gpu_alloc(&env, wf_b) : NULL, *dwb = wb_b ? gpu_alloc(&env, wb_b) : NULL,
         *ddq = gpu_alloc(&env, nq * 2), *ddk = gpu_alloc(&env, nkv * 2),
         *ddv = gpu_alloc(&env, nkv * 2);
    gpu_upload(&env, dq_, qb, nq * 2);
    gpu_upload(&env, dk_, kb, nkv * 2);
    gpu_upload(&env, dv_, vb, nkv * 2);
    gpu_upload(&env, ddo, db, nq * 2);
    gpu_poison(&env, dout_, nq * 2);
    gpu_poison(&env, dsaved, saved_b);
    gpu_poison(&env, ddq, nq * 2);
    gpu_poison(&env, ddk, nkv * 2);
    gpu_poison(&env, ddv, nkv * 2);
    if (dwf) gpu_poison(&env, dwf, wf_b);
    if (dwb) gpu_poison(&env, dwb, wb_b);

    double t0 = now_seconds();
    st = lh_forward(plan, dq_, dk_, dv_, dout_, dsaved, dwf, stream);
    if (st == LH_OK)
        st = lh_backward(plan, dq_, dk_, dv_, dout_, ddo, dsaved, ddq, ddk, ddv, dwb, stream);
    if (st != LH_OK) {
        check(false, c->name, "forward/backward returned %s: %s", lh_status_string(st),
              lh_last_error());
    } else {
        if (env.cu->StreamSynchronize(stream) != CUDA_SUCCESS) {
            check(false, c->name, "the stream failed after forward/backward");
        } else {
            printf("INFO %s: GPU forward+backward (first call) %.3f s\n", c->name,
                   now_seconds() - t0);
            gpu.out = download_half(dout_, nq, c->dtype);
            gpu.dq = download_half(ddq, nq, c->dtype);
            gpu.dk = download_half(ddk, nkv, c->dtype);
            gpu.dv = download_half(ddv, nkv, c->dtype);
            gpu.lse = malloc(saved_b);
            gpu_download(&env, gpu.lse, dsaved, saved_b);

            if (c->full_cpu) {
                if (cpu_reference(c, &in, &ref)) {
                    double e_o = rel_error(gpu.out, ref.out, nq), e_q = rel_error(gpu.dq, ref.dq, nq);
                    double e_k = rel_error(gpu.dk, ref.dk, nkv), e_v = rel_error(gpu.dv, ref.dv, nkv);
                    bool ok = e_o <= tol && e_q <= tol && e_k <= tol && e_v <= tol;
                    check(ok, c->name, "vs CPU backend (all elements): out %.2e dq %.2e dk %.2e "
                          "dv %.2e (limit %.0e)", e_o, e_q, e_k, e_v, tol);
                } else {
                    check(false, c->name, "the CPU reference backend did not run");
                }
            }
            sampled s = {0};
            double t1 = now_seconds();
            sampled_reference(c, &in, &gpu, &s);
            double e_o = rel_error(s.out.gpu, s.out.ref, s.out.n);
            double e_l = rel_error(s.lse.gpu, s.lse.ref, s.lse.n);
            double e_q = rel_error(s.dq.gpu, s.dq.ref, s.dq.n);
            double e_k = rel_error(s.dk.gpu, s.dk.ref, s.dk.n);
            double e_v = rel_error(s.dv.gpu, s.dv.ref, s.dv.n);
            bool ok = e_o <= tol && e_l <= tol && e_q <= tol && e_k <= tol && e_v <= tol;
            check(ok, c->name, "vs fp64 sampled rows (%zu out values, %.1f s): out %.2e lse %.2e "
                  "dq %.2e dk %.2e dv %.2e (limit %.0e)", s.out.n, now_seconds() - t1, e_o, e_l,
                  e_q, e_k, e_v, tol);
            sample_acc *all[] = {&s.out, &s.lse, &s.dq, &s.dk, &s.dv};
            for (int i = 0; i < 5; i++) { free(all[i]->gpu); free(all[i]->ref); }
        }
    }
    lh_plan_destroy(plan);
    void *bufs[] = {dq_, dk_, dv_, ddo, dout_, dsaved, dwf, dwb, ddq, ddk, ddv};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu_free(&env, bufs[i]);
    void *host[] = {qb, kb, vb, db, in.q, in.k, in.v, in.dout, gpu.out, gpu.dq, gpu.dk, gpu.dv,
                    gpu.lse, ref.out, ref.dq, ref.dk, ref.dv};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(int argc, char **argv) {
    const char *prog = "test_cuda_dense";
    int rc = gpu_env_init(&env, prog);
    if (rc) return rc;
    lh_status st = lh_context_create(LH_BACKEND_CUDA, 0, &cuda_ctx);
    if (st == LH_ERROR_BACKEND_UNAVAILABLE) {
        printf("SKIP: %s: the CUDA backend is unavailable: %s\n", prog, lh_last_error());
        return GPU_SKIP;
    }
    LH_MUST(st);
    LH_MUST(lh_context_create(LH_BACKEND_CPU, 0, &cpu_ctx));
    if (env.cu->StreamCreate(&stream, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS) {
        printf("FAIL cuStreamCreate\n");
        return 1;
    }
    bool small = argc > 1 && strcmp(argv[1], "--small") == 0;
    const char *only = argc > 2 && strcmp(argv[1], "--case") == 0 ? argv[2] : NULL;
    uint64_t seed = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(now_seconds() * 1e6); /* fresh inputs */
    printf("INFO seed %llu\n", (unsigned long long)seed);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (small && i > 0) break;
        if (only && strcmp(only, cases[i].name) != 0) continue;
        run_case(&cases[i], seed + i);
    }
    env.cu->StreamDestroy(stream);
    lh_context_destroy(cpu_ctx);
    lh_context_destroy(cuda_ctx);
    return finish(prog);
}
