/*
 * test_large_gpu.c - tensors of more than 2^31 elements on one GPU:
 *  (a) dense attention on such tensors is refused at finalize with a sentence naming 2^31 (cuDNN's
 *      fused kernels are not verified past 32-bit element offsets), in both layouts;
 *  (b) Lighthouse on N = 2M + 128K tokens, H = Hkv = 8, D = 128, bf16, BNHD (q, k, v, out and
 *      every gradient 2.23e9 elements, 4.5 GB each: past 2^31 elements and 2^32 bytes), forward
 *      and backward, against a plan of one head on head 7's tokens alone (every tensor 2.9e8
 *      elements, the sizes the rest of the suite checks against the CPU reference). Heads are
 *      independent in Lighthouse (each head scores, selects and attends on its own), so head 7
 *      of out, dq, dk, dv must agree with the one-head plan's within bf16 rounding (1e-2,
 *      max-norm relative): an offset that wrapped at 2^31 elements or 2^32 bytes would read or
 *      write another head's rows. Outputs are poisoned (NaN) first.
 * Needs about 45 GB of device and 30 GB of host memory; SKIP where the device has less.
 * Exit 77 without a GPU.
 */
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

static int64_t query(const lh_plan *p, lh_query q) {
    int64_t v = 0;
    LH_MUST(lh_plan_get_i64(p, q, &v));
    return v;
}

/* (a) */
static void test_dense_refused(lh_context *ctx) {
    const lh_layout layouts[] = {LH_LAYOUT_BNHD, LH_LAYOUT_BHND};
    for (int i = 0; i < 2; i++) {
        lh_plan *p = NULL;
        char why[1024] = "";
        lh_status st = make_plan(ctx, LH_MODE_DENSE, layouts[i], H, &p, why, sizeof why);
        check(st == LH_ERROR_UNSUPPORTED && strstr(why, "2^31"),
              i ? "dense_bhnd_refused" : "dense_bnhd_refused", "-> %s: %s", lh_status_string(st),
              why);
        if (st == LH_OK) lh_plan_destroy(p);
    }
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
    int64_t fws = query(p, LH_QUERY_FWD_WORKSPACE_BYTES), bws = query(p, LH_QUERY_BWD_WORKSPACE_BYTES);
    r->saved = gpu_alloc(&env, (size_t)query(p, LH_QUERY_SAVED_BYTES));
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

int main(void) {
    int rc = gpu_env_init(&env, "test_large_gpu");
    if (rc) return rc;
    lh_context *ctx;
    LH_MUST(lh_context_create(LH_BACKEND_CUDA, 0, &ctx));
    test_dense_refused(ctx);
    test_lighthouse_past_2g(ctx);
    LH_MUST(lh_context_destroy(ctx));
    return finish("test_large_gpu");
}
