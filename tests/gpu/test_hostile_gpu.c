/*
 * test_hostile_gpu.c - hostile sizes and numbers on the CUDA backend, against the CPU backend:
 *  (a) sizes the kernels index with 32 bits (pyramid positions), or that pass the grid's y and z
 *      limits (65535), are refused at finalize with a sentence;
 *  (b) lh_select fed NaN, +-Inf and signed-zero scores writes valid indices, identical to the
 *      CPU backend's lh_select on the same scores (both rank scores by the same integer order);
 *  (c) NaN and Inf in q, k, v: forward and backward return LH_OK, the selection of the NaN
 *      input stays valid, and outputs that depend on the non-finite value are not finite;
 *  (d) large logits, SOFTMAX_SCALE swept from the default to 1e9 (max |scale q.k| from about 4
 *      to 5e10): inside the range of lighthouse.h (1e4) every output finite and out within 2e-2
 *      of the reference (dense: the CPU backend on the same bf16 inputs; Lighthouse: the CPU
 *      backend on the same sub-sequence rounded to bf16); beyond it LH_OK, valid indices and a
 *      finite out (dense: still within 2e-2), non-finite gradients counted and allowed.
 *  (e) lh_backward on a saved that no forward wrote (zeros, 0xFF, random bytes, positions and
 *      slots just outside their ranges): LH_OK and no device fault (`--foreign-saved` runs this
 *      case alone, for compute-sanitizer).
 * Outputs are poisoned (NaN) before every call that must write them. Exit 77 without a GPU.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_common.h"

static gpu_env env;
static lh_context *gpu_ctx, *cpu_ctx;
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

typedef struct hcfg {
    int64_t B, N, H, Hkv, D, L, p, topk;
    lh_mode mode;
    double scale;   /* 0: the default */
} hcfg;

/* The message of make_plan's failing finalize (lh_plan_destroy clears the library's own). */
static char finalize_msg[1024];

/* A plan of c on ctx (dtype FLOAT32 on the CPU, BFLOAT16 on the GPU); the finalize status. */
static lh_status make_plan(lh_context *ctx, const hcfg *c, lh_plan **out) {
    lh_plan *p;
    LH_MUST(lh_plan_create(ctx, &p));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_BATCH, c->B));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_SEQ_LEN, c->N));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEADS, c->H));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_KV_HEADS, c->Hkv));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEAD_DIM, c->D));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_MODE, c->mode));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_DTYPE,
                            ctx == gpu_ctx ? LH_DTYPE_BFLOAT16 : LH_DTYPE_FLOAT32));
    if (c->mode == LH_MODE_LIGHTHOUSE) {
        LH_MUST(lh_plan_set_i64(p, LH_PARAM_LEVELS, c->L));
        LH_MUST(lh_plan_set_i64(p, LH_PARAM_POOLING, c->p));
        LH_MUST(lh_plan_set_i64(p, LH_PARAM_TOPK, c->topk));
    }
    if (c->scale > 0) LH_MUST(lh_plan_set_f64(p, LH_PARAM_SOFTMAX_SCALE, c->scale));
    lh_status st = lh_plan_finalize(p);
    if (st != LH_OK) {
        snprintf(finalize_msg, sizeof finalize_msg, "%s", lh_last_error());
        lh_plan_destroy(p);
        return st;
    }
    *out = p;
    return LH_OK;
}

static void *dev_alloc(size_t bytes) { return gpu_alloc(&env, bytes ? bytes : 16); }

static void *host_alloc(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    if (!p) abort();
    memset(p, 0, (bytes + 63) / 64 * 64 + 64);
    return p;
}

/* ---- (a) limits ----------------------------------------------------------------------------- */

static void expect_refused(const hcfg *c, const char *name, const char *needle) {
    lh_plan *p = NULL;
    finalize_msg[0] = '\0';
    lh_status st = make_plan(gpu_ctx, c, &p);
    check(st == LH_ERROR_UNSUPPORTED && strstr(finalize_msg, needle), name,
          "-> %s (want LH_ERROR_UNSUPPORTED, a sentence with \"%s\"): %s", lh_status_string(st),
          needle, finalize_msg);
    if (p) lh_plan_destroy(p);
}

static void test_limits(void) {
    hcfg big = {1, INT64_C(1) << 31, 1, 1, 1, 5, 64, 128, LH_MODE_LIGHTHOUSE, 0};
    expect_refused(&big, "positions_beyond_int32", "2^31");
    hcfg batch = {65536, 1024, 1, 1, 64, 2, 2, 128, LH_MODE_LIGHTHOUSE, 0};
    expect_refused(&batch, "batch_beyond_grid_z", "65535");
    hcfg heads = {1, 1024, 32768, 16384, 8, 2, 2, 128, LH_MODE_LIGHTHOUSE, 0};
    expect_refused(&heads, "heads_beyond_grid_y", "65535");
}

/* ---- (b) selection of non-finite scores ----------------------------------------------------- */

static void test_select_non_finite(void) {
    hcfg c = {2, 4096, 2, 1, 64, 3, 4, 256, LH_MODE_LIGHTHOUSE, 0};
    lh_plan *gp, *cp;
    LH_MUST(make_plan(gpu_ctx, &c, &gp));
    LH_MUST(make_plan(cpu_ctx, &c, &cp));
    int64_t st = plan_query(gp, LH_QUERY_PYRAMID_LEN), ss = plan_query(gp, LH_QUERY_SUBSEQ_LEN);
    size_t nq = (size_t)(c.B * c.H * st), nk = (size_t)(c.B * c.Hkv * st);
    size_t ni = (size_t)(c.B * c.H * ss);
    float *sq = host_alloc(nq * 4), *sk = host_alloc(nk * 4);
    int32_t *gi = host_alloc(ni * 4), *ci = host_alloc(ni * 4);
    void *dsq = dev_alloc(nq * 4), *dsk = dev_alloc(nk * 4), *di = dev_alloc(ni * 4);
    void *gws = dev_alloc((size_t)plan_query(gp, LH_QUERY_STAGE_WORKSPACE_BYTES));
    void *cws = host_alloc((size_t)plan_query(cp, LH_QUERY_STAGE_WORKSPACE_BYTES));
    const float specials[] = {NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f};
    for (int pattern = 0; pattern < 4; pattern++) {
        uint64_t s = rng_state + (uint64_t)pattern;
        for (size_t i = 0; i < nq; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            float x = (float)(s >> 40) / (float)(1 << 24);
            /* 0: every query score NaN; 1: a third special; 2: all +Inf; 3: specials only */
            sq[i] = pattern == 0 ? NAN : pattern == 2 ? INFINITY
                    : (pattern == 3 || s % 3 == 0) ? specials[s % 6] : x;
            if (i < nk)
                sk[i] = pattern == 2 ? INFINITY : (pattern != 0 && s % 2 == 0) ? specials[(s >> 8) % 6] : x;
        }
        gpu_upload(&env, dsq, sq, nq * 4);
        gpu_upload(&env, dsk, sk, nk * 4);
        gpu_poison(&env, di, ni * 4);
        lh_status g = lh_select(gp, dsq, dsk, di, gws, NULL);
        gpu_sync(&env);
        lh_status h = lh_select(cp, sq, sk, ci, cws, NULL);
        gpu_download(&env, gi, di, ni * 4);
        size_t bad = 0, same = 0;
        for (size_t i = 0; i < ni; i++) {
            bad += gi[i] < 0 || gi[i] >= st;
            same += gi[i] == ci[i];
        }
        check(g == LH_OK && h == LH_OK && bad == 0 && same == ni, "select_non_finite",
              "pattern %d: GPU %s, CPU %s, %zu positions outside the pyramid, %zu of %zu equal to "
              "the CPU's", pattern, lh_status_string(g), lh_status_string(h), bad, same, ni);
    }
    free(sq), free(sk), free(gi), free(ci), free(cws);
    gpu_free(&env, dsq), gpu_free(&env, dsk), gpu_free(&env, di), gpu_free(&env, gws);
    lh_plan_destroy(gp);
    lh_plan_destroy(cp);
}

/* ---- one forward + backward on both backends ------------------------------------------------ */

typedef struct result {
    float *out, *dq, *dk, *dv;   /* decoded (GPU) or computed (CPU), BNHD */
    int32_t *idx;                /* GPU, Lighthouse: the selection (B x H x S_sel, from saved) */
    size_t nidx;
    lh_status fwd, bwd;
} result;

static void result_free(result *r) {
    free(r->out), free(r->dq), free(r->dk), free(r->dv), free(r->idx);
}

/* Runs c on the GPU with bf16 inputs (bits) and, when cpu != NULL, on the CPU with the same
 * rounded values (vals). */
static void run_both(const hcfg *c, uint16_t *const bits[4], float *const vals[4], result *gpu,
                     result *cpu) {
    size_t nq = (size_t)(c->B * c->N * c->H * c->D), nk = (size_t)(c->B * c->N * c->Hkv * c->D);
    size_t n[4] = {nq, nk, nk, nq};   /* q, k, v, dout */
    lh_plan *gp;
    LH_MUST(make_plan(gpu_ctx, c, &gp));
    void *d[4], *out = dev_alloc(nq * 2), *dq = dev_alloc(nq * 2), *dk = dev_alloc(nk * 2),
                *dv = dev_alloc(nk * 2);
    for (int i = 0; i < 4; i++) {
        d[i] = dev_alloc(n[i] * 2);
        gpu_upload(&env, d[i], bits[i], n[i] * 2);
    }
    void *saved = dev_alloc((size_t)plan_query(gp, LH_QUERY_SAVED_BYTES));
    void *fws = dev_alloc((size_t)plan_query(gp, LH_QUERY_FWD_WORKSPACE_BYTES));
    void *bws = dev_alloc((size_t)plan_query(gp, LH_QUERY_BWD_WORKSPACE_BYTES));
    gpu_poison(&env, out, nq * 2);
    gpu_poison(&env, dq, nq * 2), gpu_poison(&env, dk, nk * 2), gpu_poison(&env, dv, nk * 2);
    gpu->fwd = lh_forward(gp, d[0], d[1], d[2], out, saved, fws, NULL);
    gpu->bwd = gpu->fwd == LH_OK ? lh_backward(gp, d[0], d[1], d[2], out, d[3], saved, dq, dk, dv,
                                               bws, NULL)
                                 : gpu->fwd;
    gpu_sync(&env);
    gpu->idx = NULL, gpu->nidx = 0;
    if (c->mode == LH_MODE_LIGHTHOUSE) {  /* the indices lead saved */
        gpu->nidx = (size_t)(c->B * c->H * plan_query(gp, LH_QUERY_SUBSEQ_LEN));
        gpu->idx = malloc(gpu->nidx * 4);
        gpu_download(&env, gpu->idx, saved, gpu->nidx * 4);
    }
    void *outs[4] = {out, dq, dk, dv};
    float **res[4] = {&gpu->out, &gpu->dq, &gpu->dk, &gpu->dv};
    size_t rn[4] = {nq, nq, nk, nk};
    for (int i = 0; i < 4; i++) *res[i] = gpu_download_f32(&env, outs[i], rn[i], LH_DTYPE_BFLOAT16);
    for (int i = 0; i < 4; i++) gpu_free(&env, d[i]);
    gpu_free(&env, out), gpu_free(&env, dq), gpu_free(&env, dk), gpu_free(&env, dv);
    gpu_free(&env, saved), gpu_free(&env, fws), gpu_free(&env, bws);
    lh_plan_destroy(gp);
    if (!cpu) return;
    lh_plan *cp;
    LH_MUST(make_plan(cpu_ctx, c, &cp));
    cpu->idx = NULL;
    cpu->out = host_alloc(nq * 4), cpu->dq = host_alloc(nq * 4);
    cpu->dk = host_alloc(nk * 4), cpu->dv = host_alloc(nk * 4);
    void *cs = host_alloc((size_t)plan_query(cp, LH_QUERY_SAVED_BYTES));
    void *cf = host_alloc((size_t)plan_query(cp, LH_QUERY_FWD_WORKSPACE_BYTES));
    void *cb = host_alloc((size_t)plan_query(cp, LH_QUERY_BWD_WORKSPACE_BYTES));
    cpu->fwd = lh_forward(cp, vals[0], vals[1], vals[2], cpu->out, cs, cf, NULL);
    cpu->bwd = lh_backward(cp, vals[0], vals[1], vals[2], cpu->out, vals[3], cs, cpu->dq, cpu->dk,
                           cpu->dv, cb, NULL);
    free(cs), free(cf), free(cb);
    lh_plan_destroy(cp);
}

static size_t non_finite(const float *x, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += !isfinite(x[i]);
    return k;
}

/* Random bf16 inputs of c: bits[] and vals[] for q, k, v, dout (amp scales q and k). */
static void make_inputs(const hcfg *c, uint16_t *bits[4], float *vals[4]) {
    size_t nq = (size_t)(c->B * c->N * c->H * c->D), nk = (size_t)(c->B * c->N * c->Hkv * c->D);
    size_t n[4] = {nq, nk, nk, nq};
    for (int i = 0; i < 4; i++) {
        bits[i] = malloc(n[i] * 2);
        vals[i] = malloc(n[i] * 4);
        random_inputs(&rng_state, LH_DTYPE_BFLOAT16, n[i], bits[i], vals[i]);
    }
}

static void free_inputs(uint16_t *bits[4], float *vals[4]) {
    for (int i = 0; i < 4; i++) free(bits[i]), free(vals[i]);
}

/* ---- (c) non-finite input ------------------------------------------------------------------- */

static void test_non_finite_input(lh_mode mode) {
    hcfg c = {1, 2048, 2, 1, 64, 3, 4, 128, mode, 0};
    const float values[] = {NAN, INFINITY, -INFINITY};
    const char *names[] = {"NaN", "+Inf", "-Inf"};
    for (int which = 0; which < 3; which++)
        for (int vi = 0; vi < 3; vi++) {
            uint16_t *bits[4];
            float *vals[4];
            make_inputs(&c, bits, vals);
            int64_t heads = which == 0 ? c.H : c.Hkv, t0 = 1000;
            uint16_t special = f32_to_half_bits(values[vi], LH_DTYPE_BFLOAT16);
            for (int64_t d = 0; d < c.D; d++)   /* token t0, head 0, every element */
                bits[which][(size_t)((t0 * heads) * c.D + d)] = special;
            result g;
            run_both(&c, bits, vals, &g, NULL);
            size_t nq = (size_t)(c.N * c.H * c.D);
            size_t row_bad = non_finite(g.out + (size_t)(t0 * c.H * c.D), (size_t)c.D);
            size_t all_bad = non_finite(g.out, nq);
            /* Dense: row t0 of head 0 sees its own query and key and value t0 (a -Inf key
             * there may score -inf, weight 0, so only NaN is required of k). Lighthouse: some
             * output sees the pooled entry that holds token t0. */
            int need_row = mode == LH_MODE_DENSE && (which != 1 || vi == 0);
            bool ok = g.fwd == LH_OK && g.bwd == LH_OK && all_bad > 0 && (!need_row || row_bad > 0);
            check(ok, mode == LH_MODE_DENSE ? "non_finite_dense" : "non_finite_lighthouse",
                  "%s in %c: forward %s, backward %s, %zu of %zu out elements not finite (%zu in "
                  "row %lld)", names[vi], "qkv"[which], lh_status_string(g.fwd),
                  lh_status_string(g.bwd), all_bad, nq, row_bad, (long long)t0);
            result_free(&g);
            free_inputs(bits, vals);
        }
}

static void test_select_of_non_finite_input(void) {
    /* lh_scores + lh_select on the GPU with NaN and Inf tokens: valid positions, equal to the
     * CPU's lh_select on the GPU's scores. */
    hcfg c = {1, 2048, 2, 1, 64, 3, 4, 128, LH_MODE_LIGHTHOUSE, 0};
    uint16_t *bits[4];
    float *vals[4];
    make_inputs(&c, bits, vals);
    uint16_t nan = f32_to_half_bits(NAN, LH_DTYPE_BFLOAT16);
    uint16_t inf = f32_to_half_bits(INFINITY, LH_DTYPE_BFLOAT16);
    for (int64_t d = 0; d < c.D; d++) {
        bits[0][(size_t)((300 * c.H) * c.D + d)] = nan;
        bits[1][(size_t)(900 * c.D + d)] = inf;
        bits[0][(size_t)((1500 * c.H + 1) * c.D + d)] = inf;
    }
    lh_plan *gp, *cp;
    LH_MUST(make_plan(gpu_ctx, &c, &gp));
    LH_MUST(make_plan(cpu_ctx, &c, &cp));
    int64_t st = plan_query(gp, LH_QUERY_PYRAMID_LEN), ss = plan_query(gp, LH_QUERY_SUBSEQ_LEN);
    size_t nq = (size_t)(c.N * c.H * c.D), nk = (size_t)(c.N * c.Hkv * c.D);
    size_t nsq = (size_t)(c.H * st), nsk = (size_t)(c.Hkv * st), ni = (size_t)(c.H * ss);
    void *dq = dev_alloc(nq * 2), *dk = dev_alloc(nk * 2), *dsq = dev_alloc(nsq * 4),
         *dsk = dev_alloc(nsk * 4), *di = dev_alloc(ni * 4);
    void *ws = dev_alloc((size_t)plan_query(gp, LH_QUERY_STAGE_WORKSPACE_BYTES));
    gpu_upload(&env, dq, bits[0], nq * 2);
    gpu_upload(&env, dk, bits[1], nk * 2);
    gpu_poison(&env, di, ni * 4);
    lh_status s1 = lh_scores(gp, dq, dk, dsq, dsk, ws, NULL);
    lh_status s2 = s1 == LH_OK ? lh_select(gp, dsq, dsk, di, ws, NULL) : s1;
    gpu_sync(&env);
    float *sq = host_alloc(nsq * 4), *sk = host_alloc(nsk * 4);
    int32_t *gi = host_alloc(ni * 4), *ci = host_alloc(ni * 4);
    gpu_download(&env, sq, dsq, nsq * 4);
    gpu_download(&env, sk, dsk, nsk * 4);
    gpu_download(&env, gi, di, ni * 4);
    void *cws = host_alloc((size_t)plan_query(cp, LH_QUERY_STAGE_WORKSPACE_BYTES));
    lh_status s3 = lh_select(cp, sq, sk, ci, cws, NULL);
    size_t bad = 0, same = 0;
    for (size_t i = 0; i < ni; i++) {
        bad += gi[i] < 0 || gi[i] >= st;
        same += gi[i] == ci[i];
    }
    check(s2 == LH_OK && s3 == LH_OK && bad == 0 && same == ni, "select_of_non_finite_input",
          "GPU %s, CPU %s, %zu positions outside the pyramid, %zu of %zu equal to the CPU's "
          "selection of the GPU's scores", lh_status_string(s2), lh_status_string(s3), bad, same,
          ni);
    free(sq), free(sk), free(gi), free(ci), free(cws);
    gpu_free(&env, dq), gpu_free(&env, dk), gpu_free(&env, dsq), gpu_free(&env, dsk);
    gpu_free(&env, di), gpu_free(&env, ws);
    lh_plan_destroy(gp);
    lh_plan_destroy(cp);
    free_inputs(bits, vals);
}

/* ---- (d) large logits ----------------------------------------------------------------------- */

/* The CPU backend's Lighthouse output with its sub-sequence rounded to bf16, as the GPU's
 * attention sees it: the stage entry points, the rounding, the attention step, the scatter. The
 * pooled rows of the sub-sequence are means that bf16 cannot hold exactly; rounding them moves a
 * logit by up to about 2^-8 |scale q.k|, so at large logits the fp32 reference is not what a
 * bf16 attention can be compared with. */
static float *cpu_rounded_lighthouse(const hcfg *c, float *const vals[4]) {
    lh_plan *cp;
    LH_MUST(make_plan(cpu_ctx, c, &cp));
    int64_t st = plan_query(cp, LH_QUERY_PYRAMID_LEN), ss = plan_query(cp, LH_QUERY_SUBSEQ_LEN);
    size_t nsel = (size_t)(c->B * c->H * ss * c->D), nq = (size_t)(c->B * c->N * c->H * c->D);
    float *sq = host_alloc((size_t)(c->B * c->H * st) * 4);
    float *sk = host_alloc((size_t)(c->B * c->Hkv * st) * 4);
    int32_t *idx = host_alloc((size_t)(c->B * c->H * ss) * 4);
    float *sel[3] = {host_alloc(nsel * 4), host_alloc(nsel * 4), host_alloc(nsel * 4)};
    float *o_sel = host_alloc(nsel * 4), *lse = host_alloc((size_t)(c->B * c->H * ss) * 4);
    float *out = host_alloc(nq * 4);
    void *ws = host_alloc((size_t)plan_query(cp, LH_QUERY_STAGE_WORKSPACE_BYTES));
    void *aws = host_alloc((size_t)plan_query(cp, LH_QUERY_ATTENTION_WORKSPACE_BYTES));
    LH_MUST(lh_scores(cp, vals[0], vals[1], sq, sk, ws, NULL));
    LH_MUST(lh_select(cp, sq, sk, idx, ws, NULL));
    LH_MUST(lh_gather(cp, vals[0], vals[1], vals[2], idx, sel[0], sel[1], sel[2], ws, NULL));
    for (int t = 0; t < 3; t++)
        for (size_t i = 0; i < nsel; i++)
            sel[t][i] = half_bits_to_f32(f32_to_half_bits(sel[t][i], LH_DTYPE_BFLOAT16),
                                         LH_DTYPE_BFLOAT16);
    LH_MUST(lh_attention_forward(cp, sel[0], sel[1], sel[2], o_sel, lse, aws, NULL));
    LH_MUST(lh_scatter(cp, idx, o_sel, out, ws, NULL));
    free(sq), free(sk), free(idx), free(sel[0]), free(sel[1]), free(sel[2]), free(o_sel);
    free(lse), free(ws), free(aws);
    lh_plan_destroy(cp);
    return out;
}

/* max |q.k| over every pair of a row with a key at or before it (causal), on the bf16 inputs. */
static double max_abs_qk(const hcfg *c, float *const vals[4]) {
    double m = 0;
    int64_t group = c->H / c->Hkv;
    for (int64_t h = 0; h < c->H; h++)
        for (int64_t i = 0; i < c->N; i++) {
            const float *q = vals[0] + (size_t)((i * c->H + h) * c->D);
            for (int64_t j = 0; j <= i; j++) {
                const float *k = vals[1] + (size_t)((j * c->Hkv + h / group) * c->D);
                float d = 0;
                for (int64_t e = 0; e < c->D; e++) d += q[e] * k[e];
                if (fabsf(d) > m) m = fabsf(d);
            }
        }
    return m;
}

/* The contract of lighthouse.h: while max |scale q.k| <= 1e4 (LH_GPU_LOGIT_RANGE below) the
 * GPU's results are finite and out is within 2e-2 of its reference (dense: the CPU backend on
 * the same bf16 inputs; Lighthouse: the CPU backend on the same sub-sequence rounded to bf16),
 * dv too in dense mode (dq and dk of a near one-hot softmax are rounding noise times the scale:
 * only their finiteness is checked). Beyond it, every call still returns LH_OK and selects valid
 * positions, and out stays finite (dense: within 2e-2); non-finite gradients are counted and
 * allowed. */
#define LH_GPU_LOGIT_RANGE 1e4

static void test_large_logits(lh_mode mode) {
    hcfg c = {1, 2048, 2, 1, 128, 3, 4, 128, mode, 0};
    uint16_t *bits[4];
    float *vals[4];
    make_inputs(&c, bits, vals);
    double qk = max_abs_qk(&c, vals);
    /* the default, growing scales, the top of the range (0.9e4), and 1e9 (about 5e10) */
    const double scales[] = {1.0 / sqrt(128.0), 1, 10, 100, 0.9 * LH_GPU_LOGIT_RANGE / qk, 1e9};
    const char *name = mode == LH_MODE_DENSE ? "large_logits_dense" : "large_logits_lighthouse";
    size_t nq = (size_t)(c.N * c.H * c.D), nk = (size_t)(c.N * c.Hkv * c.D);
    for (size_t si = 0; si < sizeof scales / sizeof scales[0]; si++) {
        c.scale = scales[si];
        double logit = qk * c.scale;
        bool inside = logit <= LH_GPU_LOGIT_RANGE;
        result g, h = {0};
        run_both(&c, bits, vals, &g, mode == LH_MODE_DENSE ? &h : NULL);
        float *ref = mode == LH_MODE_DENSE ? h.out : cpu_rounded_lighthouse(&c, vals);
        size_t bad_out = non_finite(g.out, nq);
        size_t bad_grad = non_finite(g.dq, nq) + non_finite(g.dk, nk) + non_finite(g.dv, nk);
        size_t bad_idx = 0;
        int64_t st = 0;
        if (g.idx) {
            lh_plan *gp;
            LH_MUST(make_plan(gpu_ctx, &c, &gp));
            st = plan_query(gp, LH_QUERY_PYRAMID_LEN);
            lh_plan_destroy(gp);
            for (size_t i = 0; i < g.nidx; i++) bad_idx += g.idx[i] < 0 || g.idx[i] >= st;
        }
        double e_out = rel_error(g.out, ref, nq);
        double e_dv = mode == LH_MODE_DENSE ? rel_error(g.dv, h.dv, nk) : 0;
        bool ok = g.fwd == LH_OK && g.bwd == LH_OK && bad_idx == 0 && bad_out == 0;
        if (inside) ok = ok && bad_grad == 0 && e_out <= 2e-2 && e_dv <= 2e-2;
        else if (mode == LH_MODE_DENSE) ok = ok && e_out <= 2e-2;
        check(ok, name,
              "scale %.3g, max |scale q.k| %.3g (%s the range 1e4): GPU %s/%s, %zu invalid "
              "indices, %zu non-finite out, %zu non-finite dq/dk/dv%s; out %.3g from the %s, "
              "dv %.3g", c.scale, logit, inside ? "inside" : "beyond", lh_status_string(g.fwd),
              lh_status_string(g.bwd), bad_idx, bad_out, bad_grad,
              inside ? "" : " (allowed)", e_out,
              mode == LH_MODE_DENSE ? "CPU" : "CPU on the bf16 sub-sequence", e_dv);
        if (mode != LH_MODE_DENSE) free(ref);
        result_free(&g);
        result_free(&h);
    }
    free_inputs(bits, vals);
}

/* ---- (e) a foreign saved ---------------------------------------------------------------------- */

/* lh_backward given a saved that no forward of the plan wrote: the CUDA backend checks nothing
 * in saved (docs/abi.md), but every kernel bounds what it loads from there, so the call returns
 * LH_OK and the device reports no fault (run_gpu_tests.sh also runs this under
 * compute-sanitizer's memcheck, which reports any access outside the buffers). The gradients
 * are unspecified. */
static void test_foreign_saved(void) {
    hcfg c = {1, 2048, 2, 1, 64, 3, 4, 128, LH_MODE_LIGHTHOUSE, 0};
    uint16_t *bits[4];
    float *vals[4];
    make_inputs(&c, bits, vals);
    lh_plan *gp;
    LH_MUST(make_plan(gpu_ctx, &c, &gp));
    size_t nq = (size_t)(c.N * c.H * c.D) * 2, nk = (size_t)(c.N * c.Hkv * c.D) * 2;
    size_t sb = (size_t)plan_query(gp, LH_QUERY_SAVED_BYTES);
    size_t n[4] = {nq, nk, nk, nq};
    void *d[4], *out = dev_alloc(nq), *dq = dev_alloc(nq), *dk = dev_alloc(nk), *dv = dev_alloc(nk);
    for (int i = 0; i < 4; i++) d[i] = dev_alloc(n[i]), gpu_upload(&env, d[i], bits[i], n[i]);
    void *saved = dev_alloc(sb), *bws = dev_alloc((size_t)plan_query(gp, LH_QUERY_BWD_WORKSPACE_BYTES));
    unsigned char *h = host_alloc(sb);
    const char *kinds[] = {"zeros", "0xFF bytes", "random bytes", "random positions"};
    for (int kind = 0; kind < 4; kind++) {
        uint64_t x = rng_state + (uint64_t)kind;
        for (size_t i = 0; i < sb; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            h[i] = kind == 0 ? 0 : kind == 1 ? 0xFF : (unsigned char)(x >> 24);
        }
        if (kind == 3) /* every int32 of saved a position or slot just past its range */
            for (size_t i = 0; i + 4 <= sb; i += 4) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                int32_t v = (int32_t)(x % 1000000) - 1000;
                memcpy(h + i, &v, 4);
            }
        gpu_upload(&env, saved, h, sb);
        gpu_poison(&env, dq, nq), gpu_poison(&env, dk, nk), gpu_poison(&env, dv, nk);
        lh_status st = lh_backward(gp, d[0], d[1], d[2], out, d[3], saved, dq, dk, dv, bws, NULL);
        CUresult r = env.cu->CtxSynchronize();
        check(st == LH_OK && r == CUDA_SUCCESS, "foreign_saved",
              "%s: lh_backward %s, device %s (the CUDA backend checks nothing in saved; its "
              "kernels read nothing outside the buffers)", kinds[kind], lh_status_string(st),
              r == CUDA_SUCCESS ? "without a fault" : "FAULTED");
        if (r != CUDA_SUCCESS) break; /* the context is lost */
    }
    free(h);
    for (int i = 0; i < 4; i++) gpu_free(&env, d[i]);
    gpu_free(&env, out), gpu_free(&env, dq), gpu_free(&env, dk), gpu_free(&env, dv);
    gpu_free(&env, saved), gpu_free(&env, bws);
    lh_plan_destroy(gp);
    free_inputs(bits, vals);
}

int main(int argc, char **argv) {
    const char *prog = "test_hostile_gpu";
    /* --foreign-saved: that case alone (run_gpu_tests.sh runs it under compute-sanitizer) */
    bool foreign_only = argc > 1 && strcmp(argv[1], "--foreign-saved") == 0;
    int rc = gpu_env_init(&env, prog);
    if (rc) return rc;
    lh_status st = lh_context_create(LH_BACKEND_CUDA, 0, &gpu_ctx);
    if (st == LH_ERROR_BACKEND_UNAVAILABLE) {
        printf("SKIP: %s: %s\n", prog, lh_last_error());
        return GPU_SKIP;
    }
    LH_MUST(st);
    LH_MUST(lh_context_create(LH_BACKEND_CPU, 0, &cpu_ctx));
    if (foreign_only) {
        test_foreign_saved();
        lh_context_destroy(cpu_ctx);
        lh_context_destroy(gpu_ctx);
        return finish(prog);
    }
    test_limits();
    test_select_non_finite();
    test_select_of_non_finite_input();
    test_non_finite_input(LH_MODE_DENSE);
    test_non_finite_input(LH_MODE_LIGHTHOUSE);
    test_large_logits(LH_MODE_DENSE);
    test_large_logits(LH_MODE_LIGHTHOUSE);
    test_foreign_saved();
    lh_context_destroy(cpu_ctx);
    lh_context_destroy(gpu_ctx);
    return finish(prog);
}
