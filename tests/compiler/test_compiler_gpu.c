/*
 * test_compiler_gpu.c - runs the compiled kernels on a GPU and compares them with a CPU
 * computation on fresh random inputs: pyramid_scores (against norms in double; its pooled
 * coarsest-level rows against the gather's fp32 arithmetic, to the bit; its scores without
 * pooled rows against those with, to the bit) and scatter (against the same fp32 sums, so the
 * result must match to the bit), the same once more with the kernels loaded from cubins kept
 * in a kernel cache.
 *
 * Kernels are loaded and launched through the runtime's descriptors and launcher
 * (runtime/cuda/cuda_kernels.c), and the CUDA driver through the runtime's loader (dlopen): the
 * program builds everywhere and exits 77 (ctest: skipped) where no driver or GPU exists.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "cuda_kernels.h"
#include "runtime.h"
#include "test_compiler_util.h"

/* The library's own loader of the driver and its launcher (lh_cuda_host). */
static const lh_cu_api *cu;

#define CU_CHECK(call)                                                                    \
    do {                                                                                  \
        CUresult r_ = (call);                                                             \
        if (r_ != CUDA_SUCCESS) {                                                         \
            printf("FAIL %s:%d: %s returned %d\n", __FILE__, __LINE__, #call, (int)r_);   \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

#define LH_CHECK(call)                                                                    \
    do {                                                                                  \
        lh_status s_ = (call);                                                            \
        if (s_ != LH_OK) {                                                                \
            printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, lh_error_message()); \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

/* ---- bf16 / f16 ------------------------------------------------------------------------- */

static uint16_t to_half(float x, int bf16) {
    if (!bf16) {
        _Float16 h = (_Float16)x;
        uint16_t u;
        memcpy(&u, &h, 2);
        return u;
    }
    uint32_t u;
    memcpy(&u, &x, 4);
    u += 0x7fff + ((u >> 16) & 1); /* round to nearest even (inputs are finite) */
    return (uint16_t)(u >> 16);
}

static float from_half(uint16_t v, int bf16) {
    if (!bf16) {
        _Float16 h;
        memcpy(&h, &v, 2);
        return (float)h;
    }
    uint32_t u = (uint32_t)v << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static double uniform(void) { /* xorshift64*: fresh but reproducible inputs per run */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 0x2545f4914f6cdd1dULL) >> 11) / 9007199254740992.0;
}

static CUdeviceptr upload(const void *host, size_t bytes) {
    CUdeviceptr d;
    CU_CHECK(cu->MemAlloc(&d, bytes ? bytes : 16));
    if (host && bytes) CU_CHECK(cu->MemcpyHtoD(d, host, bytes));
    return d;
}

/* Compiles and loads `template` as a plan of `pp` asks for it (its kernels then launch through
 * `k`); exits on failure. */
static void load(lhc_cache *cache, const char *chip, const lhc_plan_params *pp,
                 const char *template, cuda_kernels *k) {
    lhc_kernel_request req[LHC_MAX_PLAN_KERNELS];
    int nreq = 0;
    memset(k, 0, sizeof *k);
    if (lhc_plan_kernels(pp, req, &nreq) != LH_OK ||
        cuda_kernels_load(k, cu, cache, chip, find_request(req, nreq, template), 1, 1) != LH_OK) {
        printf("FAIL compile %s: %s\n", template, lh_error_message());
        exit(1);
    }
}

/* A device pointer as a kernel argument. */
static void *dev(CUdeviceptr p) { return (void *)(uintptr_t)p; }

typedef struct gpu_case {
    int b, n, h, hkv, d, p, levels, bf16, bhnd;
} gpu_case;

static int64_t level_off(const gpu_case *c, int l) {
    int64_t off = 0, f = 1;
    for (int j = 0; j < l; j++, f *= c->p) off += c->n / f;
    return off;
}

static int check_pyramid(lhc_cache *cache, const char *chip, const gpu_case *c) {
    lhc_plan_params pp = {c->p, c->levels, c->d, c->bf16 ? "bf16" : "f16", 1};
    cuda_kernels kernels;
    load(cache, chip, &pp, "scores", &kernels);
    int64_t s_total = level_off(c, c->levels);
    size_t nq = (size_t)c->b * c->n * c->h * c->d, nk = (size_t)c->b * c->n * c->hkv * c->d;
    uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2);
    for (size_t i = 0; i < nq; i++) q[i] = to_half((float)(uniform() * 4 - 2), c->bf16);
    for (size_t i = 0; i < nk; i++) k[i] = to_half((float)(uniform() * 4 - 2), c->bf16);
    size_t sq_n = (size_t)c->b * c->h * s_total, sk_n = (size_t)c->b * c->hkv * s_total;
    CUdeviceptr dq = upload(q, nq * 2), dk = upload(k, nk * 2), dsq = upload(NULL, sq_n * 4),
                dsk = upload(NULL, sk_n * 4);
    CU_CHECK(cu->MemsetD8(dsq, 0xff, sq_n * 4)); /* NaN: an unwritten score cannot pass */
    CU_CHECK(cu->MemsetD8(dsk, 0xff, sk_n * 4));
    /* the coarsest level's pooled rows: F = p^(L-1) tokens a row */
    int64_t F = 1;
    for (int l = 1; l < c->levels; l++) F *= c->p;
    int64_t n_f = c->n / F;
    size_t pq_n = (size_t)c->b * c->h * n_f * c->d, pk_n = (size_t)c->b * c->hkv * n_f * c->d;
    CUdeviceptr dpq = upload(NULL, pq_n * 2), dpk = upload(NULL, pk_n * 2);
    CU_CHECK(cu->MemsetD8(dpq, 0xff, pq_n * 2)); /* NaN rows: an unwritten row cannot pass */
    CU_CHECK(cu->MemsetD8(dpk, 0xff, pk_n * 2));
    /* strides in elements for [B,N,H,D] or [B,H,N,D] */
    int64_t n = c->n, heads = c->h, kvh = c->hkv;
    int64_t qsb = n * heads * c->d, ksb = n * kvh * c->d;
    int64_t qst = c->bhnd ? c->d : heads * c->d, kst = c->bhnd ? c->d : kvh * c->d;
    int64_t qsh = c->bhnd ? n * c->d : c->d, ksh = c->bhnd ? n * c->d : c->d;
    lhk_shape shape = {.batch = c->b};
    /* first without pooled rows (NULL pointers, as the stage entry point lh_scores runs it) ... */
    lhk_pyramid_scores_args a = {.q = dev(dq), .k = dev(dk), .sq = dev(dsq), .sk = dev(dsk),
                                 .n = n, .heads = heads, .kv_heads = kvh, .s_total = s_total,
                                 .write_pooled = 0, .q_sb = qsb, .q_st = qst, .q_sh = qsh,
                                 .k_sb = ksb, .k_st = kst, .k_sh = ksh};
    LH_CHECK(cuda_kernels_launch(&kernels, LHK_PYRAMID_SCORES, &a, &shape, NULL));
    CU_CHECK(cu->CtxSynchronize());
    float *sq0 = malloc(sq_n * 4), *sk0 = malloc(sk_n * 4);
    CU_CHECK(cu->MemcpyDtoH(sq0, dsq, sq_n * 4));
    CU_CHECK(cu->MemcpyDtoH(sk0, dsk, sk_n * 4));
    /* ... then with them (as the forward runs it): the scores must not change by a bit */
    CU_CHECK(cu->MemsetD8(dsq, 0xff, sq_n * 4));
    CU_CHECK(cu->MemsetD8(dsk, 0xff, sk_n * 4));
    a.pq = dev(dpq), a.pk = dev(dpk), a.write_pooled = 1;
    LH_CHECK(cuda_kernels_launch(&kernels, LHK_PYRAMID_SCORES, &a, &shape, NULL));
    CU_CHECK(cu->CtxSynchronize());
    float *sq = malloc(sq_n * 4), *sk = malloc(sk_n * 4);
    CU_CHECK(cu->MemcpyDtoH(sq, dsq, sq_n * 4));
    CU_CHECK(cu->MemcpyDtoH(sk, dsk, sk_n * 4));
    uint16_t *pq = malloc(pq_n * 2), *pk = malloc(pk_n * 2);
    CU_CHECK(cu->MemcpyDtoH(pq, dpq, pq_n * 2));
    CU_CHECK(cu->MemcpyDtoH(pk, dpk, pk_n * 2));

    int bad = 0;
    if (memcmp(sq0, sq, sq_n * 4) != 0 || memcmp(sk0, sk, sk_n * 4) != 0) {
        printf("  pyramid scores differ between write_pooled = 0 and 1\n");
        bad++;
    }
    /* pooled rows: lh_gather's arithmetic (fp32 sum from +0 in token order, times 1/F, one
     * rounding), so they must match to the bit */
    int bad_pool = 0;
    for (int which = 0; which < 2; which++) {
        int nh = which ? c->hkv : c->h;
        const uint16_t *x = which ? k : q, *got = which ? pk : pq;
        int64_t sb = which ? ksb : qsb, st = which ? kst : qst, sh = which ? ksh : qsh;
        float inv_f = 1.0f / (float)F;
        for (int b = 0; b < c->b; b++)
            for (int h = 0; h < nh; h++)
                for (int64_t i = 0; i < n_f; i++)
                    for (int e = 0; e < c->d; e++) {
                        float acc = 0.0f;
                        for (int64_t t = i * F; t < (i + 1) * F; t++)
                            acc += from_half(x[b * sb + t * st + h * sh + e], c->bf16);
                        uint16_t want = to_half(acc * inv_f, c->bf16);
                        uint16_t g = got[(((size_t)b * nh + h) * n_f + i) * c->d + e];
                        if (g != want && bad_pool++ < 5)
                            printf("  pooled mismatch %s b=%d h=%d i=%lld e=%d: gpu 0x%04x cpu 0x%04x\n",
                                   which ? "k" : "q", b, h, (long long)i, e, g, want);
                    }
    }
    bad += bad_pool;
    double worst = 0;
    double *norm = malloc((size_t)n * sizeof *norm);
    for (int which = 0; which < 2; which++) {
        int nh = which ? c->hkv : c->h;
        const uint16_t *x = which ? k : q;
        const float *got = which ? sk : sq;
        int64_t sb = which ? ksb : qsb, st = which ? kst : qst, sh = which ? ksh : qsh;
        for (int b = 0; b < c->b; b++)
            for (int h = 0; h < nh; h++) {
                for (int64_t t = 0; t < n; t++) {
                    double s = 0;
                    for (int e = 0; e < c->d; e++) {
                        double v = from_half(x[b * sb + t * st + h * sh + e], c->bf16);
                        s += v * v;
                    }
                    norm[t] = sqrt(s);
                }
                const float *row = got + ((size_t)b * nh + h) * s_total;
                int64_t fl = 1;
                for (int l = 0; l < c->levels; l++, fl *= c->p) {
                    for (int64_t i = 0; i < n / fl; i++) {
                        double m = 0;
                        for (int64_t j = i * fl; j < (i + 1) * fl; j++) m = norm[j] > m ? norm[j] : m;
                        double g = row[level_off(c, l) + i], err = fabs(g - m) / (m > 1e-30 ? m : 1);
                        if (!(err <= 2e-6)) {
                            if (bad++ < 5)
                                printf("  pyramid mismatch %s b=%d h=%d l=%d i=%lld: gpu %.9g cpu %.9g\n",
                                       which ? "k" : "q", b, h, l, (long long)i, g, m);
                        }
                        if (err > worst) worst = err;
                    }
                }
            }
    }
    printf("%s pyramid_scores B=%d N=%d H=%d Hkv=%d D=%d p=%d L=%d %s %s: %s (max rel err %.2g)\n",
           bad ? "FAIL" : "ok  ", c->b, c->n, c->h, c->hkv, c->d, c->p, c->levels, c->bf16 ? "bf16" : "f16",
           c->bhnd ? "BHND" : "BNHD", bad ? "mismatch" : "match", worst);
    free(norm);
    free(q);
    free(k);
    free(sq);
    free(sk);
    free(sq0);
    free(sk0);
    free(pq);
    free(pk);
    cu->MemFree(dq);
    cu->MemFree(dk);
    cu->MemFree(dsq);
    cu->MemFree(dsk);
    cu->MemFree(dpq);
    cu->MemFree(dpk);
    cuda_kernels_unload(&kernels);
    return bad != 0;
}

static int check_scatter(lhc_cache *cache, const char *chip, const gpu_case *c) {
    lhc_plan_params pp = {c->p, c->levels, c->d, c->bf16 ? "bf16" : "f16", 1};
    cuda_kernels kernels;
    load(cache, chip, &pp, "scatter", &kernels);
    int64_t s_total = level_off(c, c->levels), n = c->n, heads = c->h;
    /* a random selection: each pyramid position with probability 0.3, slots in random order */
    size_t inv_n = (size_t)c->b * heads * s_total;
    int32_t *inv = malloc(inv_n * 4);
    int64_t s_sel = 0;
    for (size_t i = 0; i < inv_n; i++) inv[i] = -1;
    for (int bh = 0; bh < c->b * c->h; bh++) {
        int64_t count = 0;
        for (int64_t s = 0; s < s_total; s++)
            if (uniform() < 0.3) inv[bh * s_total + s] = (int32_t)count++;
        if (count > s_sel) s_sel = count;
        for (int64_t s = s_total - 1; s > 0; s--) { /* shuffle the slots among selected positions */
            int64_t j = (int64_t)(uniform() * (double)(s + 1));
            int32_t a = inv[bh * s_total + s], bsw = inv[bh * s_total + j];
            if (a >= 0 && bsw >= 0) {
                inv[bh * s_total + s] = bsw;
                inv[bh * s_total + j] = a;
            }
        }
    }
    size_t o_n = (size_t)c->b * heads * s_sel * c->d, out_n = (size_t)c->b * n * heads * c->d;
    uint16_t *o = malloc(o_n * 2), *out = malloc(out_n * 2);
    for (size_t i = 0; i < o_n; i++) o[i] = to_half((float)(uniform() * 2 - 1), c->bf16);
    CUdeviceptr dO = upload(o, o_n * 2), dinv = upload(inv, inv_n * 4), dout = upload(NULL, out_n * 2);
    CU_CHECK(cu->MemsetD8(dout, 0xff, out_n * 2));
    int64_t osb = heads * s_sel * c->d, osh = s_sel * c->d, oss = c->d;
    int64_t wsb = n * heads * c->d, wst = c->bhnd ? c->d : heads * c->d, wsh = c->bhnd ? n * c->d : c->d;
    lhk_scatter_args a = {.o_sel = dev(dO), .inv = dev(dinv), .out = dev(dout), .n = n,
                          .heads = heads, .s_total = s_total, .o_sb = osb, .o_sh = osh,
                          .o_ss = oss, .out_sb = wsb, .out_st = wst, .out_sh = wsh};
    LH_CHECK(cuda_kernels_launch(&kernels, LHK_SCATTER, &a, &(lhk_shape){.batch = c->b}, NULL));
    CU_CHECK(cu->CtxSynchronize());
    CU_CHECK(cu->MemcpyDtoH(out, dout, out_n * 2));

    int bad = 0;
    float *acc = malloc((size_t)c->d * sizeof *acc);
    for (int b = 0; b < c->b; b++)
        for (int h = 0; h < c->h; h++)
            for (int64_t t = 0; t < n; t++) {
                for (int e = 0; e < c->d; e++) acc[e] = 0.0f;
                int64_t fl = 1;
                for (int l = 0; l < c->levels; l++, fl *= c->p) {
                    int64_t i = (t + 1) / fl - 1;
                    if (i < 0) continue;
                    int32_t slot = inv[((size_t)b * heads + h) * s_total + level_off(c, l) + i];
                    if (slot < 0) continue;
                    for (int e = 0; e < c->d; e++)
                        acc[e] += from_half(o[b * osb + h * osh + slot * oss + e], c->bf16);
                }
                for (int e = 0; e < c->d; e++) {
                    uint16_t want = to_half(acc[e], c->bf16), got = out[b * wsb + t * wst + h * wsh + e];
                    if (want != got && bad++ < 5)
                        printf("  scatter mismatch b=%d h=%d t=%lld e=%d: gpu %g cpu %g\n", b, h, (long long)t, e,
                               from_half(got, c->bf16), from_half(want, c->bf16));
                }
            }
    printf("%s scatter        B=%d N=%d H=%d D=%d p=%d L=%d %s %s, S_sel=%lld: %s\n", bad ? "FAIL" : "ok  ", c->b,
           c->n, c->h, c->d, c->p, c->levels, c->bf16 ? "bf16" : "f16", c->bhnd ? "BHND" : "BNHD", (long long)s_sel,
           bad ? "mismatch" : "bit-exact");
    free(acc);
    free(inv);
    free(o);
    free(out);
    cu->MemFree(dO);
    cu->MemFree(dinv);
    cu->MemFree(dout);
    cuda_kernels_unload(&kernels);
    return bad != 0;
}

/* Median-free quick timing: the mean of `reps` launches after one warm-up, in ms. */
static float time_launches(const cuda_kernels *k, lhk_kernel id, const void *args, int reps) {
    CUevent a, b;
    const lhk_shape shape = {.batch = 1};
    CU_CHECK(cu->EventCreate(&a, 0));
    CU_CHECK(cu->EventCreate(&b, 0));
    LH_CHECK(cuda_kernels_launch(k, id, args, &shape, NULL));
    CU_CHECK(cu->EventRecord(a, NULL));
    for (int i = 0; i < reps; i++) LH_CHECK(cuda_kernels_launch(k, id, args, &shape, NULL));
    CU_CHECK(cu->EventRecord(b, NULL));
    CU_CHECK(cu->EventSynchronize(b));
    float ms = 0;
    CU_CHECK(cu->EventElapsedTime(&ms, a, b));
    return ms / (float)reps;
}

/* PERF.md's configuration at 512K tokens: B = 1, H = Hkv = 8, D = 128, bf16, p = 4, L = 3,
 * S_sel = 49152. Prints each kernel's time and bandwidth next to a device-to-device copy. */
static int bench(lhc_cache *cache, const char *chip) {
    const int64_t n = 524288, heads = 8, d = 128;
    gpu_case c = {1, (int)n, (int)heads, (int)heads, (int)d, 4, 3, 1, 0};
    lhc_plan_params pp = {4, 3, (int)d, "bf16", 1};
    cuda_kernels kp, ks;
    load(cache, chip, &pp, "scores", &kp);
    load(cache, chip, &pp, "scatter", &ks);
    int64_t s_total = level_off(&c, 3), s_sel = 49152;
    size_t tensor = (size_t)n * heads * d * 2;
    CUdeviceptr q = upload(NULL, tensor), k = upload(NULL, tensor), sq = upload(NULL, heads * s_total * 4),
                sk = upload(NULL, heads * s_total * 4), o = upload(NULL, heads * s_sel * d * 2), out = upload(NULL, tensor);
    CU_CHECK(cu->MemsetD8(q, 0x3c, tensor));
    CU_CHECK(cu->MemsetD8(k, 0x3c, tensor));
    CU_CHECK(cu->MemsetD8(o, 0x3c, heads * s_sel * d * 2));
    /* an inverse map selecting every (S_total / S_sel)-th position, slots in order */
    int32_t *inv = malloc((size_t)heads * s_total * 4);
    for (int64_t h = 0; h < heads; h++) {
        int64_t slot = 0;
        for (int64_t s = 0; s < s_total; s++)
            inv[h * s_total + s] = (s * s_sel / s_total != (s + 1) * s_sel / s_total && slot < s_sel) ? (int32_t)slot++ : -1;
    }
    CUdeviceptr dinv = upload(inv, (size_t)heads * s_total * 4);
    int64_t sb = n * heads * d, st = heads * d, sh = d, kvh = heads;
    /* without pooled rows (lh_scores) and with them (the forward: F = 16, 1/16 of q and k more
     * written) */
    size_t pooled = tensor / 16;
    CUdeviceptr pq = upload(NULL, pooled), pk = upload(NULL, pooled);
    lhk_pyramid_scores_args pa = {.q = dev(q), .k = dev(k), .sq = dev(sq), .sk = dev(sk), .n = n,
                                  .heads = heads, .kv_heads = kvh, .s_total = s_total,
                                  .write_pooled = 0, .q_sb = sb, .q_st = st, .q_sh = sh,
                                  .k_sb = sb, .k_st = st, .k_sh = sh};
    float tp = time_launches(&kp, LHK_PYRAMID_SCORES, &pa, 20);
    pa.pq = dev(pq), pa.pk = dev(pk), pa.write_pooled = 1;
    float tpp = time_launches(&kp, LHK_PYRAMID_SCORES, &pa, 20);
    lhk_scatter_args sa = {.o_sel = dev(o), .inv = dev(dinv), .out = dev(out), .n = n,
                           .heads = heads, .s_total = s_total, .o_sb = heads * s_sel * d,
                           .o_sh = s_sel * d, .o_ss = d, .out_sb = sb, .out_st = st, .out_sh = sh};
    float ts = time_launches(&ks, LHK_SCATTER, &sa, 20);
    CUevent a, b;
    CU_CHECK(cu->EventCreate(&a, 0));
    CU_CHECK(cu->EventCreate(&b, 0));
    CU_CHECK(cu->MemcpyDtoD(out, q, tensor));
    CU_CHECK(cu->EventRecord(a, NULL));
    for (int i = 0; i < 20; i++) CU_CHECK(cu->MemcpyDtoD(out, q, tensor));
    CU_CHECK(cu->EventRecord(b, NULL));
    CU_CHECK(cu->EventSynchronize(b));
    float tc = 0;
    CU_CHECK(cu->EventElapsedTime(&tc, a, b));
    tc /= 20;
    double copy_bw = 2.0 * tensor / (tc * 1e-3) / 1e9;
    double p_bytes = 2.0 * tensor + 2.0 * heads * s_total * 4, s_bytes = tensor + heads * s_sel * d * 2.0 + heads * s_total * 4.0;
    printf("bench N=%lld H=%lld D=%lld bf16 p=4 L=3 (S_sel=%lld) on %s:\n", (long long)n, (long long)heads,
           (long long)d, (long long)s_sel, chip);
    printf("  copy (DtoD, 1 GiB)  %7.3f ms  %6.0f GB/s\n", tc, copy_bw);
    printf("  pyramid_scores      %7.3f ms  %6.0f GB/s (%.0f%% of copy)\n", tp, p_bytes / (tp * 1e-3) / 1e9,
           100.0 * p_bytes / (tp * 1e-3) / 1e9 / copy_bw);
    printf("  + pooled q/k rows   %7.3f ms  %6.0f GB/s (%.0f%% of copy)\n", tpp,
           (p_bytes + 2.0 * pooled) / (tpp * 1e-3) / 1e9, 100.0 * (p_bytes + 2.0 * pooled) / (tpp * 1e-3) / 1e9 / copy_bw);
    printf("  scatter             %7.3f ms  %6.0f GB/s (%.0f%% of copy)\n", ts, s_bytes / (ts * 1e-3) / 1e9,
           100.0 * s_bytes / (ts * 1e-3) / 1e9 / copy_bw);
    free(inv);
    cu->MemFree(pq);
    cu->MemFree(pk);
    cuda_kernels_unload(&kp);
    cuda_kernels_unload(&ks);
    return 0;
}

/* Kernels loaded from the cubins kept in a kernel cache (runtime/cuda/cuda_cubin_store.h): the
 * first cache on a directory links the PTX and writes the cubin, a new cache on it (a later
 * process) loads the cubin, and kernels loaded so compute what the checks above ask, to the same
 * bounds. */
static int check_cubin_store(const char *chip, const gpu_case *c) {
    char dir[512];
    if (make_temp_dir(dir, sizeof dir) != 0) {
        printf("FAIL cubin store: no temporary directory\n");
        return 1;
    }
    setenv("LIGHTHOUSE_KERNEL_CUBIN_STORE", "1", 1);
    lhc_plan_params pp = {c->p, c->levels, c->d, c->bf16 ? "bf16" : "f16", 1};
    int failed = 0;
    for (int later = 0; later < 2; later++) {
        lhc_cache *cache = NULL;
        LH_CHECK(lhc_cache_create(&cache));
        LH_CHECK(lhc_cache_set_dir(cache, dir));
        cuda_kernels k;
        load(cache, chip, &pp, "scores", &k);
        if (k.cubins_stored != !later || k.cubins_restored != later) {
            printf("FAIL cubin store, %s cache: %d cubin(s) written, %d restored\n",
                   later ? "a later" : "the first", k.cubins_stored, k.cubins_restored);
            failed++;
        }
        cuda_kernels_unload(&k);
        failed += check_pyramid(cache, chip, c); /* scores from the cubin */
        failed += check_scatter(cache, chip, c); /* scatter: linked first, then restored */
        lhc_cache_destroy(cache);
    }
    unsetenv("LIGHTHOUSE_KERNEL_CUBIN_STORE");
    remove_temp_dir(dir);
    printf("gpu: kernels from the kernel cache's cubins: %s\n", failed ? "FAIL" : "ok");
    return failed;
}

int run_gpu(void) {
    CUdevice dev;
    CUcontext ctx;
    int major = 0, minor = 0;
    if (lh_cu_load(&cu) != LH_OK || cu->DeviceGet(&dev, 0) != CUDA_SUCCESS) {
        printf("gpu: no CUDA driver or device, skipped\n");
        return 77;
    }
    if (!lhc_available()) {
        printf("gpu: built without the compiler, skipped\n");
        return 77;
    }
    CU_CHECK(cu->DeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
    CU_CHECK(cu->DeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
    CU_CHECK(cu->DevicePrimaryCtxRetain(&ctx, dev));
    CU_CHECK(cu->CtxSetCurrent(ctx));
    char chip[16];
    cuda_kernels_chip(major * 10 + minor, chip, sizeof chip); /* the runtime's choice */
    lhc_cache *cache = NULL;
    if (lhc_cache_create(&cache) != LH_OK) return 1;
    lhc_cache_set_disk_enabled(cache, 0);
    printf("gpu: chip %s\n", chip);

    static const gpu_case cases[] = {
        /* b, n, h, hkv, d, p, L, bf16, bhnd */
        {2, 4096, 3, 1, 128, 4, 3, 1, 0},  /* the common shape, GQA */
        {1, 4096, 2, 2, 128, 4, 3, 1, 1},  /* [B,H,N,D] */
        {2, 1000, 2, 1, 64, 2, 3, 0, 0},   /* N not a multiple of a slice: partial blocks, f16 */
        {1, 8192, 2, 1, 64, 8, 4, 1, 1},   /* widest window = one slice */
        {1, 8192, 1, 1, 128, 4, 6, 0, 0},  /* windows wider than a slice: running maxima */
        {1, 16384, 2, 1, 32, 64, 3, 1, 0}, /* p = 64, D = 32 */
        {1, 2048, 2, 2, 256, 2, 2, 1, 1},  /* D = 256: a row per warp */
    };
    int failed = 0;
    if (getenv("LIGHTHOUSE_COMPILER_GPU_BENCH")) failed += bench(cache, chip);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        failed += check_pyramid(cache, chip, &cases[i]);
        failed += check_scatter(cache, chip, &cases[i]);
    }
    failed += check_cubin_store(chip, &cases[0]);
    lhc_cache_destroy(cache);
    printf("gpu: %d failed\n", failed);
    return failed ? 1 : 0;
}
