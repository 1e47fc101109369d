/*
 * test_large_gpu.c - tensors of more than 2^31 elements on one GPU:
 *  (a) dense attention where one sequence's [N, H, D] block passes 2^31 elements in the
 *      [B, N, H, D] layout is refused at finalize with a sentence naming 2^31 (cuDNN's fused
 *      kernels are not verified past 32-bit element offsets, and a head range of that layout
 *      still spans the whole block);
 *  (b) the same tensors in [B, H, N, D] run in pieces of 4 heads (runtime/cuda/cuda_sdpa.c,
 *      cuda_sdpa_split): forward and backward, out and dq of sampled query rows and dk, dv of the
 *      last key rows of a head of each piece against fp64 (2e-2, max-norm relative per row), and
 *      every sampled output written (outputs poisoned with NaN first);
 *  (c) Lighthouse on the same size, N = 2M + 128K tokens, H = Hkv = 8, D = 128, bf16, BNHD (q,
 *      k, v, out and every gradient 2.23e9 elements, 4.5 GB each: past 2^31 elements and 2^32
 *      bytes), forward and backward, against a plan of one head on head 7's tokens alone (every
 *      tensor 2.9e8 elements, the sizes the rest of the suite checks against the CPU reference).
 *      Heads are independent in Lighthouse (each head scores, selects and attends on its own),
 *      so head 7 of out, dq, dk, dv must agree with the one-head plan's within bf16 rounding
 *      (1e-2, max-norm relative): an offset that wrapped at 2^31 elements or 2^32 bytes would
 *      read or write another head's rows.
 * Needs about 45 GB of device and 30 GB of host memory; SKIP lines where the device has less.
 * Exit 77 without a GPU.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_common.h"

enum { H = 8, D = 128, HEAD = 7 };
static const int64_t NBIG = INT64_C(2097152) + 131072;
static gpu_env env;

static lh_status make_plan(lh_context *ctx, lh_mode mode, lh_layout layout, int64_t heads,
                           lh_plan **out, char *why, size_t why_size) {
    lh_plan *p;
    LH_MUST(lh_plan_create(ctx, &p));
    const struct { lh_param k; int64_t v; } params[] = {
        {LH_PARAM_BATCH, 1}, {LH_PARAM_SEQ_LEN, NBIG}, {LH_PARAM_HEADS, heads},
        {LH_PARAM_KV_HEADS, heads}, {LH_PARAM_HEAD_DIM, D}, {LH_PARAM_DTYPE, LH_DTYPE_BFLOAT16},
        {LH_PARAM_MODE, mode}, {LH_PARAM_LAYOUT, layout}, {LH_PARAM_LEVELS, 3},
        {LH_PARAM_POOLING, 4}, {LH_PARAM_TOPK, 2048}};
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++) {
        if (mode == LH_MODE_DENSE && params[i].k >= LH_PARAM_LEVELS && params[i].k <= LH_PARAM_TOPK)
            continue;
        LH_MUST(lh_plan_set_i64(p, params[i].k, params[i].v));
    }
    lh_status st = lh_plan_finalize(p);
    if (st != LH_OK) {
        snprintf(why, why_size, "%s", lh_last_error());
        lh_plan_destroy(p);
        return st;
    }
    *out = p;
    return LH_OK;
}

/* (a) */
static void test_dense_bnhd_refused(lh_context *ctx) {
    lh_plan *p = NULL;
    char why[1024] = "";
    lh_status st = make_plan(ctx, LH_MODE_DENSE, LH_LAYOUT_BNHD, H, &p, why, sizeof why);
    check(st == LH_ERROR_UNSUPPORTED && strstr(why, "2^31"), "dense_bnhd_refused", "-> %s: %s",
          lh_status_string(st), why);
    if (st == LH_OK) lh_plan_destroy(p);
}

/* n elements of random bf16: one tile of cheap_inputs, repeated (the tile's length is odd, so
 * the repeat does not line up with tokens or heads) */
static uint16_t *host_random(size_t n, uint64_t seed) {
    const size_t tile = ((size_t)1 << 24) + 3;
    uint16_t *h = malloc(n * 2);
    if (!h) return NULL;
    cheap_inputs(&seed, LH_DTYPE_BFLOAT16, n < tile ? n : tile, h);
    for (size_t done = tile; done < n; done += tile)
        memcpy(h + done, h, (n - done < tile ? n - done : tile) * 2);
    return h;
}

/* head `head` of a [N, H, D] tensor into a [N, 1, D] one */
static void one_head(const uint16_t *src, uint16_t *dst, int head) {
    for (int64_t t = 0; t < NBIG; t++)
        memcpy(dst + t * D, src + (t * H + head) * D, D * 2);
}

static float *to_float(const uint16_t *h, size_t n) {
    float *f = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) f[i] = half_bits_to_f32(h[i], LH_DTYPE_BFLOAT16);
    return f;
}

typedef struct run_set { void *q, *k, *v, *dout, *out, *dq, *dk, *dv, *saved, *ws; } run_set;

static void run_alloc(lh_plan *p, size_t n, run_set *r) {
    void **all[] = {&r->q, &r->k, &r->v, &r->dout, &r->out, &r->dq, &r->dk, &r->dv};
    for (int i = 0; i < 8; i++) *all[i] = gpu_alloc(&env, n * 2);
    int64_t fws = plan_query(p, LH_QUERY_FWD_WORKSPACE_BYTES), bws = plan_query(p, LH_QUERY_BWD_WORKSPACE_BYTES);
    r->saved = gpu_alloc(&env, (size_t)plan_query(p, LH_QUERY_SAVED_BYTES));
    r->ws = gpu_alloc(&env, (size_t)(fws > bws ? fws : bws) + 16);
    void *outs[] = {r->out, r->dq, r->dk, r->dv};
    for (int i = 0; i < 4; i++) gpu_poison(&env, outs[i], n * 2);
}

static void run_free(run_set *r) {
    void *all[] = {r->q, r->k, r->v, r->dout, r->out, r->dq, r->dk, r->dv, r->saved, r->ws};
    for (int i = 0; i < 10; i++) gpu_free(&env, all[i]);
}

static void run_plan(lh_plan *p, run_set *r) {
    LH_MUST(lh_forward(p, r->q, r->k, r->v, r->out, r->saved, r->ws, NULL));
    LH_MUST(lh_backward(p, r->q, r->k, r->v, r->out, r->dout, r->saved, r->dq, r->dk, r->dv,
                        r->ws, NULL));
    gpu_sync(&env);
}

/* (b) */
static void test_lighthouse_past_2g(lh_context *ctx) {
    const size_t nbig = (size_t)NBIG * H * D, none = (size_t)NBIG * D;
    size_t free_bytes = 0, total = 0;
    env.cu->MemGetInfo(&free_bytes, &total);
    if (free_bytes < (size_t)48 << 30) {
        printf("SKIP lighthouse_past_2g: needs about 45 GB of device memory, %.1f GB free\n",
               free_bytes / 1e9);
        return;
    }
    lh_plan *big, *small;
    char why[1024];
    lh_status st = make_plan(ctx, LH_MODE_LIGHTHOUSE, LH_LAYOUT_BNHD, H, &big, why, sizeof why);
    check(st == LH_OK, "lighthouse_past_2g_finalize", "N=%lld H=%d D=%d (%zu elements): %s",
          (long long)NBIG, H, D, nbig, st == LH_OK ? "finalized" : why);
    if (st != LH_OK) return;
    LH_MUST(make_plan(ctx, LH_MODE_LIGHTHOUSE, LH_LAYOUT_BNHD, 1, &small, why, sizeof why));
    double t0 = now_seconds();
    run_set rb, rs;
    run_alloc(big, nbig, &rb);
    run_alloc(small, none, &rs);
    uint16_t *slice = malloc(none * 2);
    void *big_in[] = {rb.q, rb.k, rb.v, rb.dout}, *small_in[] = {rs.q, rs.k, rs.v, rs.dout};
    for (int i = 0; i < 4; i++) {
        uint16_t *h = host_random(nbig, 0x51ed2701u + 977u * (unsigned)i);
        if (!h || !slice) { check(false, "lighthouse_past_2g_host_memory", "malloc failed"); return; }
        gpu_upload(&env, big_in[i], h, nbig * 2);
        one_head(h, slice, HEAD);
        gpu_upload(&env, small_in[i], slice, none * 2);
        free(h);
    }
    run_plan(big, &rb);
    run_plan(small, &rs);
    const char *names[] = {"out", "dq", "dk", "dv"};
    void *big_out[] = {rb.out, rb.dq, rb.dk, rb.dv}, *small_out[] = {rs.out, rs.dq, rs.dk, rs.dv};
    uint16_t *h = malloc(nbig * 2);
    for (int i = 0; i < 4 && h; i++) {
        gpu_download(&env, h, big_out[i], nbig * 2);
        one_head(h, slice, HEAD);
        float *a = to_float(slice, none);
        gpu_download(&env, slice, small_out[i], none * 2);
        float *r = to_float(slice, none);
        double e = rel_error(a, r, none);
        char name[64];
        snprintf(name, sizeof name, "lighthouse_past_2g_%s", names[i]);
        check(e <= 1e-2, name, "head %d of N=%lld H=%d against one head alone: rel error %.3g%s",
              HEAD, (long long)NBIG, H, e, memcmp(a, r, none * sizeof(float)) ? "" : " (bit-identical)");
        free(a);
        free(r);
    }
    printf("  (%.1f s with transfers)\n", now_seconds() - t0);
    free(h);
    free(slice);
    run_free(&rb);
    run_free(&rs);
    lh_plan_destroy(big);
    lh_plan_destroy(small);
}

/* ---- (b) dense [B, H, N, D] in pieces, against fp64 rows ------------------------------------ */

typedef struct host_set { uint16_t *q, *k, *v, *dout; } host_set;

static double bf(const uint16_t *t, int64_t head, int64_t tok, int64_t i) {
    return half_bits_to_f32(t[(head * NBIG + tok) * D + i], LH_DTYPE_BFLOAT16);
}

/* fp64 attention row `tok` of `head`: out, lse, and with dout also dq and delta = dout . out */
typedef struct ref_row { double out[D], dq[D], lse, delta; } ref_row;

static void reference_row(const host_set *h, int64_t head, int64_t tok, double scale, ref_row *r) {
    double m = -INFINITY, z = 0, q[D], dout[D], acc[D] = {0};
    for (int i = 0; i < D; i++) q[i] = bf(h->q, head, tok, i), dout[i] = bf(h->dout, head, tok, i);
    double *s = malloc((size_t)(tok + 1) * sizeof(double));
    for (int64_t j = 0; j <= tok; j++) {
        double dot = 0;
        for (int i = 0; i < D; i++) dot += q[i] * bf(h->k, head, j, i);
        s[j] = dot * scale;
        if (s[j] > m) m = s[j];
    }
    for (int64_t j = 0; j <= tok; j++) {
        double e = exp(s[j] - m);
        z += e;
        for (int i = 0; i < D; i++) acc[i] += e * bf(h->v, head, j, i);
    }
    r->lse = m + log(z);
    r->delta = 0;
    for (int i = 0; i < D; i++) r->out[i] = acc[i] / z, r->delta += dout[i] * r->out[i];
    for (int i = 0; i < D; i++) r->dq[i] = 0;
    for (int64_t j = 0; j <= tok; j++) {
        double dp = 0;
        for (int i = 0; i < D; i++) dp += dout[i] * bf(h->v, head, j, i);
        double ds = exp(s[j] - r->lse) * (dp - r->delta) * scale;
        for (int i = 0; i < D; i++) r->dq[i] += ds * bf(h->k, head, j, i);
    }
    free(s);
}

/* the larger error, NaN if either is (fmax would drop a NaN) */
static double worse(double a, double b) { return isnan(a) || isnan(b) ? NAN : fmax(a, b); }

/* max-norm relative error of a device row of a [1, H, N, D] bf16 tensor against r */
static double row_error(void *dev, int64_t head, int64_t tok, const double *r) {
    uint16_t bits[D];
    gpu_download(&env, bits, (char *)dev + (size_t)((head * NBIG + tok) * D) * 2, sizeof bits);
    double err = 0, mag = 0;
    for (int i = 0; i < D; i++) {
        double g = half_bits_to_f32(bits[i], LH_DTYPE_BFLOAT16);
        if (isnan(g)) return NAN;
        err = fmax(err, fabs(g - r[i]));
        mag = fmax(mag, fabs(r[i]));
    }
    return err / (mag > 0 ? mag : 1);
}

static void test_dense_bhnd_pieces(lh_context *ctx) {
    const size_t n = (size_t)NBIG * H * D;
    size_t free_bytes = 0, total = 0;
    env.cu->MemGetInfo(&free_bytes, &total);
    if (free_bytes < (size_t)48 << 30) {
        printf("SKIP dense_bhnd_pieces: needs about 45 GB of device memory, %.1f GB free\n",
               free_bytes / 1e9);
        return;
    }
    lh_plan *p;
    char why[1024];
    lh_status st = make_plan(ctx, LH_MODE_DENSE, LH_LAYOUT_BHND, H, &p, why, sizeof why);
    check(st == LH_OK, "dense_bhnd_finalize", "N=%lld H=%d D=%d (%zu elements) in pieces: %s",
          (long long)NBIG, H, D, n, st == LH_OK ? "finalized" : why);
    if (st != LH_OK) return;
    run_set r;
    run_alloc(p, n, &r);
    host_set h;
    uint16_t **hs[] = {&h.q, &h.k, &h.v, &h.dout};
    void *dev[] = {r.q, r.k, r.v, r.dout};
    for (int i = 0; i < 4; i++) {
        *hs[i] = host_random(n, 0x2545f491u + 131u * (unsigned)i);
        if (!*hs[i]) { check(false, "dense_bhnd_host_memory", "malloc failed"); return; }
        gpu_upload(&env, dev[i], *hs[i], n * 2);
    }
    double t0 = now_seconds();
    run_plan(p, &r);
    double t1 = now_seconds();
    const double scale = 1.0 / sqrt((double)D);
    const int64_t heads[] = {1, 6}; /* one head in each piece of 4 */
    const int64_t queries[] = {NBIG - 1, NBIG / 2 + 7};
    double worst_out = 0, worst_dq = 0, worst_dkv = 0;
    for (int a = 0; a < 2; a++) {
        for (int b = 0; b < 2; b++) {
            ref_row rr;
            reference_row(&h, heads[a], queries[b], scale, &rr);
            worst_out = worse(worst_out, row_error(r.out, heads[a], queries[b], rr.out));
            worst_dq = worse(worst_dq, row_error(r.dq, heads[a], queries[b], rr.dq));
        }
        /* dk, dv of the last three key rows: only the last three queries see them */
        enum { LAST = 3 };
        ref_row rows[LAST];
        for (int i = 0; i < LAST; i++) reference_row(&h, heads[a], NBIG - LAST + i, scale, &rows[i]);
        for (int j = 0; j < LAST; j++) {
            int64_t key = NBIG - LAST + j;
            double dk[D] = {0}, dv[D] = {0};
            for (int i = j; i < LAST; i++) {
                int64_t qt = NBIG - LAST + i;
                double dot = 0, dp = 0;
                for (int e = 0; e < D; e++) {
                    dot += bf(h.q, heads[a], qt, e) * bf(h.k, heads[a], key, e);
                    dp += bf(h.dout, heads[a], qt, e) * bf(h.v, heads[a], key, e);
                }
                double prob = exp(dot * scale - rows[i].lse);
                double ds = prob * (dp - rows[i].delta) * scale;
                for (int e = 0; e < D; e++) {
                    dv[e] += prob * bf(h.dout, heads[a], qt, e);
                    dk[e] += ds * bf(h.q, heads[a], qt, e);
                }
            }
            worst_dkv = worse(worst_dkv, worse(row_error(r.dk, heads[a], key, dk),
                                               row_error(r.dv, heads[a], key, dv)));
        }
    }
    check(worst_out <= 2e-2, "dense_bhnd_out", "heads 1 and 6, 2 rows each, against fp64: %.3g",
          worst_out);
    check(worst_dq <= 2e-2, "dense_bhnd_dq", "same rows: %.3g", worst_dq);
    check(worst_dkv <= 2e-2, "dense_bhnd_dk_dv", "last 3 key rows of heads 1 and 6: %.3g",
          worst_dkv);
    printf("  (dense forward + backward at N = %lld: %.1f s)\n", (long long)NBIG, t1 - t0);
    for (int i = 0; i < 4; i++) free(*hs[i]);
    run_free(&r);
    lh_plan_destroy(p);
}

int main(void) {
    int rc = gpu_env_init(&env, "test_large_gpu");
    if (rc) return rc;
    lh_context *ctx;
    LH_MUST(lh_context_create(LH_BACKEND_CUDA, 0, &ctx));
    test_dense_bnhd_refused(ctx);
    test_lighthouse_past_2g(ctx);
    test_dense_bhnd_pieces(ctx);
    LH_MUST(lh_context_destroy(ctx));
    return finish("test_large_gpu");
}
