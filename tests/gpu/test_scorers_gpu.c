/*
 * test_scorers_gpu.c - the scorers of docs/spec.md section 10 on the GPU against the CPU
 * reference backend.
 *
 *  (a) golden-dilated: lh_select on the stored dilated scores gives the stored indices; the
 *      dilated pipeline on the golden inputs (rounded to bf16) is checked as in (b), and its
 *      output's distance to the stored fp32 output is printed;
 *  (b) the dilated scorer (cuDNN on the strided view, then the norm kernel) on fresh random
 *      inputs, against the CPU's fp32 dilated scorer on the same rounded inputs:
 *        scores       lh_scores_qkv within 2e-2 (bf16) / 5e-3 (fp16) relative (max-norm);
 *        selection    the forward's indices equal the CPU's lh_select on the GPU's own scores
 *                     exactly, so the GPU selects exactly what its scores say, and the scores
 *                     are the CPU's up to rounding (rows where the CPU's own scores select
 *                     differently are printed: they differ only within rounding of a tie);
 *        outputs      out, dq, dk, dv within the same bounds of the CPU pipeline given the GPU's
 *                     scores (SCORER = EXTERNAL), i.e. the same selection;
 *  (c) external scores equal to the norm scorer's own (lh_scores) reproduce the norm path bit for
 *      bit: out, saved (indices, O_sel, statistics, the kept sub-sequence), dq, dk, dv;
 *  (d) the dilated scorer per chunk on a ring (section 8): a one-rank ring's two chunks select what
 *      ring-less plans of one chunk select, and its outputs are the CPU ring's given those scores.
 * Outputs are poisoned (NaN) before every call. Exit 77 without a GPU.
 *
 *   test_scorers_gpu [--quick|--tiny]   (--quick: the smaller configurations; --tiny: one small
 *                                        case of each, for compute-sanitizer)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_common.h"

#ifndef LH_GOLDEN_DILATED_DIR
#define LH_GOLDEN_DILATED_DIR "tests/golden-dilated"
#endif

static gpu_env env;
static lh_context *gpu_ctx, *cpu_ctx;
static uint64_t rng_state;

typedef struct scfg {
    const char *name;
    lh_dtype dtype;
    lh_layout layout;
    int64_t B, N, H, Hkv, D, L, p, topk, d; /* d: the dilation (0: not a dilated case) */
} scfg;

static double bound_of(lh_dtype t) { return t == LH_DTYPE_BFLOAT16 ? 2e-2 : 5e-3; }

static lh_plan *plan_of(lh_context *ctx, const scfg *c, lh_dtype dtype, lh_scorer scorer) {
    lh_plan *p;
    LH_MUST(lh_plan_create(ctx, &p));
    const struct { lh_param k; int64_t v; } pv[] = {
        {LH_PARAM_BATCH, c->B}, {LH_PARAM_SEQ_LEN, c->N}, {LH_PARAM_HEADS, c->H},
        {LH_PARAM_KV_HEADS, c->Hkv}, {LH_PARAM_HEAD_DIM, c->D}, {LH_PARAM_DTYPE, dtype},
        {LH_PARAM_LAYOUT, c->layout}, {LH_PARAM_LEVELS, c->L}, {LH_PARAM_POOLING, c->p},
        {LH_PARAM_TOPK, c->topk}, {LH_PARAM_SCORER, scorer}};
    for (size_t i = 0; i < sizeof pv / sizeof pv[0]; i++) LH_MUST(lh_plan_set_i64(p, pv[i].k, pv[i].v));
    if (scorer == LH_SCORER_DILATED) LH_MUST(lh_plan_set_i64(p, LH_PARAM_DILATION, c->d));
    LH_MUST(lh_plan_finalize(p));
    return p;
}

/* A size of the plan, as size_t (the sizes here are byte and element counts). */
static size_t query(const lh_plan *p, lh_query q) { return (size_t)plan_query(p, q); }

static void *dev_or_null(size_t bytes) { return bytes ? gpu_alloc(&env, bytes) : NULL; }
static void *host(size_t bytes) { return calloc(1, bytes ? bytes : 1); }

static float *decode(const void *dev, size_t n, lh_dtype dtype) {
    return gpu_download_f32(&env, dev, n, dtype);
}

/* q, k, v, dout: device copies in the plan's dtype and the same values as fp32 for the CPU. */
typedef struct inputs {
    size_t n[4];
    float *val[4];
    void *dev[4];
} inputs;

/* From fp32 values (NULL: fresh N(0,1) noise), rounded to dtype; all of layout c->layout. */
static inputs inputs_make(const scfg *c, float *const given[4]) {
    inputs in;
    size_t nq = (size_t)(c->B * c->N * c->H * c->D), nk = (size_t)(c->B * c->N * c->Hkv * c->D);
    size_t n[4] = {nq, nk, nk, nq};
    for (int i = 0; i < 4; i++) {
        in.n[i] = n[i];
        in.val[i] = malloc(n[i] * 4);
        uint16_t *bits = malloc(n[i] * 2);
        if (given) {
            for (size_t j = 0; j < n[i]; j++) {
                bits[j] = f32_to_half_bits(given[i][j], c->dtype);
                in.val[i][j] = half_bits_to_f32(bits[j], c->dtype);
            }
        } else {
            random_inputs(&rng_state, c->dtype, n[i], bits, in.val[i]);
        }
        in.dev[i] = gpu_alloc(&env, n[i] * 2);
        gpu_upload(&env, in.dev[i], bits, n[i] * 2);
        free(bits);
    }
    return in;
}

static void inputs_free(inputs *in) {
    for (int i = 0; i < 4; i++) free(in->val[i]), gpu_free(&env, in->dev[i]);
}

/* One forward (with the caller's scores when sq != NULL) and backward on the GPU, outputs
 * poisoned first; results decoded to fp32, indices (the start of saved) and saved's bytes. */
typedef struct gpu_run {
    float *out, *dq, *dk, *dv;
    uint8_t *saved;
    size_t saved_b;
} gpu_run;

static gpu_run run_gpu(lh_plan *p, const scfg *c, const inputs *in, const void *sq, const void *sk) {
    gpu_run r = {.saved_b = query(p, LH_QUERY_SAVED_BYTES)};
    size_t nq = in->n[0], nk = in->n[1];
    void *out = gpu_alloc(&env, nq * 2), *dq = gpu_alloc(&env, nq * 2), *dk = gpu_alloc(&env, nk * 2);
    void *dv = gpu_alloc(&env, nk * 2), *saved = gpu_alloc(&env, r.saved_b);
    void *wf = dev_or_null(query(p, LH_QUERY_FWD_WORKSPACE_BYTES));
    void *wb = dev_or_null(query(p, LH_QUERY_BWD_WORKSPACE_BYTES));
    void *outs[] = {out, dq, dk, dv, saved};
    size_t sizes[] = {nq * 2, nq * 2, nk * 2, nk * 2, r.saved_b};
    for (int i = 0; i < 5; i++) gpu_poison(&env, outs[i], sizes[i]);
    if (sq) LH_MUST(lh_forward_with_scores(p, in->dev[0], in->dev[1], in->dev[2], sq, sk, out, saved, wf, NULL));
    else LH_MUST(lh_forward(p, in->dev[0], in->dev[1], in->dev[2], out, saved, wf, NULL));
    LH_MUST(lh_backward(p, in->dev[0], in->dev[1], in->dev[2], NULL, in->dev[3], saved, dq, dk, dv, wb, NULL));
    gpu_sync(&env);
    r.out = decode(out, nq, c->dtype), r.dq = decode(dq, nq, c->dtype);
    r.dk = decode(dk, nk, c->dtype), r.dv = decode(dv, nk, c->dtype);
    r.saved = malloc(r.saved_b);
    gpu_download(&env, r.saved, saved, r.saved_b);
    for (int i = 0; i < 5; i++) gpu_free(&env, outs[i]);
    if (wf) gpu_free(&env, wf);
    if (wb) gpu_free(&env, wb);
    return r;
}

static void gpu_run_free(gpu_run *r) { free(r->out), free(r->dq), free(r->dk), free(r->dv), free(r->saved); }

/* The CPU's forward and backward (with the caller's scores when sq != NULL): out, dq, dk, dv and
 * the indices (the start of its saved). */
static gpu_run run_cpu(lh_plan *p, const inputs *in, const float *sq, const float *sk) {
    gpu_run r = {.saved_b = query(p, LH_QUERY_SAVED_BYTES)};
    r.out = host(in->n[0] * 4), r.dq = host(in->n[0] * 4), r.dk = host(in->n[1] * 4);
    r.dv = host(in->n[1] * 4), r.saved = host(r.saved_b);
    void *wf = host(query(p, LH_QUERY_FWD_WORKSPACE_BYTES)), *wb = host(query(p, LH_QUERY_BWD_WORKSPACE_BYTES));
    if (sq) LH_MUST(lh_forward_with_scores(p, in->val[0], in->val[1], in->val[2], sq, sk, r.out, r.saved, wf, NULL));
    else LH_MUST(lh_forward(p, in->val[0], in->val[1], in->val[2], r.out, r.saved, wf, NULL));
    LH_MUST(lh_backward(p, in->val[0], in->val[1], in->val[2], NULL, in->val[3], r.saved, r.dq, r.dk, r.dv, wb, NULL));
    free(wf), free(wb);
    return r;
}

/* ---- (b) the dilated scorer against the CPU ------------------------------------------------ */

/* Returns the GPU's output (for (a)'s comparison with the stored one); the caller frees it. */
static float *check_dilated(const scfg *c, const inputs *in) {
    lh_plan *gp = plan_of(gpu_ctx, c, c->dtype, LH_SCORER_DILATED);
    lh_plan *cp = plan_of(cpu_ctx, c, LH_DTYPE_FLOAT32, LH_SCORER_DILATED);
    lh_plan *ce = plan_of(cpu_ctx, c, LH_DTYPE_FLOAT32, LH_SCORER_EXTERNAL);
    size_t st = query(gp, LH_QUERY_PYRAMID_LEN), ss = query(gp, LH_QUERY_SUBSEQ_LEN);
    size_t nsq = (size_t)c->B * c->H * st, nsk = (size_t)c->B * c->Hkv * st, ni = (size_t)c->B * c->H * ss;
    double bound = bound_of(c->dtype);

    /* scores: the GPU's lh_scores_qkv (poisoned first) against the CPU's */
    void *dsq = gpu_alloc(&env, nsq * 4), *dsk = gpu_alloc(&env, nsk * 4);
    void *gws = dev_or_null(query(gp, LH_QUERY_STAGE_WORKSPACE_BYTES));
    gpu_poison(&env, dsq, nsq * 4);
    gpu_poison(&env, dsk, nsk * 4);
    LH_MUST(lh_scores_qkv(gp, in->dev[0], in->dev[1], in->dev[2], dsq, dsk, gws, NULL));
    float *gsq = malloc(nsq * 4), *gsk = malloc(nsk * 4), *csq = malloc(nsq * 4), *csk = malloc(nsk * 4);
    gpu_download(&env, gsq, dsq, nsq * 4);
    gpu_download(&env, gsk, dsk, nsk * 4);
    void *cws = host(query(cp, LH_QUERY_STAGE_WORKSPACE_BYTES));
    LH_MUST(lh_scores_qkv(cp, in->val[0], in->val[1], in->val[2], csq, csk, cws, NULL));
    double eq = rel_error(gsq, csq, nsq), ek = rel_error(gsk, csk, nsk);
    check(eq <= bound && ek <= bound, "dilated_scores", "%s: scores_q %.2e, scores_k %.2e (bound %.0e)",
          c->name, eq, ek, bound);

    /* selection: the forward's, the CPU's on the GPU's scores, the CPU's on its own */
    gpu_run g = run_gpu(gp, c, in, NULL, NULL);
    int32_t *from_gpu_scores = malloc(ni * 4);
    LH_MUST(lh_select(cp, gsq, gsk, from_gpu_scores, cws, NULL));
    size_t bad = 0;
    for (size_t i = 0; i < ni; i++) bad += ((int32_t *)g.saved)[i] != from_gpu_scores[i];
    check(bad == 0, "dilated_selection", "%s: %zu of %zu indices differ from the CPU's selection on the "
          "GPU's scores", c->name, bad, ni);
    gpu_run own = run_cpu(cp, in, NULL, NULL);
    size_t rows_differ = 0;
    for (size_t row = 0; row < (size_t)(c->B * c->H); row++)
        rows_differ += memcmp((int32_t *)own.saved + row * ss, (int32_t *)g.saved + row * ss, ss * 4) != 0;
    printf("  %s: %zu of %lld (batch, head) rows select otherwise from the CPU's own scores (score "
           "rounding at near-ties)\n", c->name, rows_differ, (long long)(c->B * c->H));

    /* outputs: the CPU pipeline with the GPU's scores (the same selection) */
    gpu_run ref = run_cpu(ce, in, gsq, gsk);
    double e[4] = {rel_error(g.out, ref.out, in->n[0]), rel_error(g.dq, ref.dq, in->n[0]),
                   rel_error(g.dk, ref.dk, in->n[1]), rel_error(g.dv, ref.dv, in->n[1])};
    bool ok = true;
    for (int i = 0; i < 4; i++) ok = ok && e[i] <= bound; /* NaN (an unwritten element) fails */
    check(ok, "dilated_outputs", "%s: out %.2e dq %.2e dk %.2e dv %.2e (bound %.0e)", c->name, e[0], e[1],
          e[2], e[3], bound);

    float *out = g.out;
    g.out = NULL;
    gpu_run_free(&g), gpu_run_free(&own), gpu_run_free(&ref);
    free(gsq), free(gsk), free(csq), free(csk), free(cws), free(from_gpu_scores);
    gpu_free(&env, dsq), gpu_free(&env, dsk);
    if (gws) gpu_free(&env, gws);
    lh_plan_destroy(gp), lh_plan_destroy(cp), lh_plan_destroy(ce);
    return out;
}

/* ---- (a) golden-dilated ----------------------------------------------------------------------- */

static void *load(const char *dir, const char *name, const char *what, size_t n) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, what);
    FILE *f = fopen(path, "rb");
    void *x = malloc(n * 4);
    size_t got = f ? fread(x, 4, n, f) : 0;
    if (f) fclose(f);
    if (got != n) {
        free(x);
        return NULL;
    }
    return x;
}

static void golden_dilated(int tiny) {
    static const scfg goldens[] = {
        {"d1", LH_DTYPE_BFLOAT16, LH_LAYOUT_BNHD, 1, 4096, 2, 2, 32, 3, 4, 256, 4},
        {"d2", LH_DTYPE_BFLOAT16, LH_LAYOUT_BNHD, 2, 2048, 2, 2, 16, 2, 8, 128, 4},
        {"d3", LH_DTYPE_BFLOAT16, LH_LAYOUT_BNHD, 1, 8192, 1, 1, 32, 3, 2, 256, 8},
    };
    char dir[1536];
    const char *golden = getenv("LIGHTHOUSE_GOLDEN_DIR");
    if (getenv("LIGHTHOUSE_GOLDEN_DILATED_DIR")) snprintf(dir, sizeof dir, "%s", getenv("LIGHTHOUSE_GOLDEN_DILATED_DIR"));
    else if (golden) snprintf(dir, sizeof dir, "%s/../golden-dilated", golden);
    else snprintf(dir, sizeof dir, "%s", LH_GOLDEN_DILATED_DIR);
    for (size_t g = 0; g < (tiny ? 1 : sizeof goldens / sizeof goldens[0]); g++) {
        const scfg *c = &goldens[g];
        lh_plan *gp = plan_of(gpu_ctx, c, c->dtype, LH_SCORER_DILATED);
        size_t st = query(gp, LH_QUERY_PYRAMID_LEN), ss = query(gp, LH_QUERY_SUBSEQ_LEN);
        size_t ns = (size_t)c->B * c->H * st, ni = (size_t)c->B * c->H * ss;
        size_t n = (size_t)(c->B * c->N * c->H * c->D);
        float *sq = load(dir, c->name, "scores_qk.f32", ns), *sk = load(dir, c->name, "scores_kq.f32", ns);
        int32_t *want = load(dir, c->name, "indices.i32", ni);
        float *x[4] = {load(dir, c->name, "q.f32", n), load(dir, c->name, "k.f32", n),
                       load(dir, c->name, "v.f32", n), load(dir, c->name, "dout.f32", n)};
        float *out_bhnd = load(dir, c->name, "out.f32", n);
        if (!sq || !sk || !want || !x[0] || !x[1] || !x[2] || !x[3] || !out_bhnd) {
            check(false, "golden_dilated", "%s: cannot read the vectors in %s (set LIGHTHOUSE_GOLDEN_DIR)",
                  c->name, dir);
        } else {
            void *dsq = gpu_alloc(&env, ns * 4), *dsk = gpu_alloc(&env, ns * 4), *didx = gpu_alloc(&env, ni * 4);
            void *ws = dev_or_null(query(gp, LH_QUERY_STAGE_WORKSPACE_BYTES));
            gpu_upload(&env, dsq, sq, ns * 4);
            gpu_upload(&env, dsk, sk, ns * 4);
            gpu_poison(&env, didx, ni * 4);
            LH_MUST(lh_select(gp, dsq, dsk, didx, ws, NULL));
            int32_t *got = malloc(ni * 4);
            gpu_download(&env, got, didx, ni * 4);
            size_t bad = 0;
            for (size_t i = 0; i < ni; i++) bad += got[i] != want[i];
            check(bad == 0, "golden_dilated_select", "%s: %zu of %zu indices differ from the stored ones",
                  c->name, bad, ni);
            /* dout is stored [B,H,N,D]: to BNHD */
            float *dout = malloc(n * 4), *ref_out = malloc(n * 4);
            for (int64_t b = 0; b < c->B; b++)
                for (int64_t h = 0; h < c->H; h++)
                    for (int64_t t = 0; t < c->N; t++) {
                        size_t bhnd = (size_t)(((b * c->H + h) * c->N + t) * c->D);
                        size_t bnhd = (size_t)(((b * c->N + t) * c->H + h) * c->D);
                        memcpy(dout + bnhd, x[3] + bhnd, (size_t)c->D * 4);
                        memcpy(ref_out + bnhd, out_bhnd + bhnd, (size_t)c->D * 4);
                    }
            float *given[4] = {x[0], x[1], x[2], dout};
            inputs in = inputs_make(c, given);
            float *gout = check_dilated(c, &in);
            printf("  %s: GPU (bf16 inputs) out against the stored fp32 out: %.2e relative (max-norm)\n",
                   c->name, rel_error(gout, ref_out, n));
            free(gout), free(dout), free(ref_out), free(got);
            inputs_free(&in);
            gpu_free(&env, dsq), gpu_free(&env, dsk), gpu_free(&env, didx);
            if (ws) gpu_free(&env, ws);
        }
        free(sq), free(sk), free(want), free(out_bhnd);
        for (int i = 0; i < 4; i++) free(x[i]);
        lh_plan_destroy(gp);
    }
}

/* ---- (d) the dilated scorer per chunk on a ring --------------------------------------------- */

/* A one-rank local ring holds chunks 0 and 1 of the sequence in one BHND shard (the scorer's
 * strided view then has the shard's batch stride, not the chunk's). Each chunk's selection must
 * be that of a ring-less GPU plan of one chunk (N/2 tokens, TOPK/2) on the chunk's tokens
 * (section 8), and the ring's out and gradients those of the CPU ring given the same scores. */
static void dilated_ring_chunks(const scfg *c) {
    lh_ring *ring = NULL, *cring = NULL;
    LH_MUST(lh_ring_create_local(1, &ring));
    LH_MUST(lh_ring_create_local(1, &cring));
    lh_plan *gp, *cp;
    LH_MUST(lh_plan_create(gpu_ctx, &gp));
    LH_MUST(lh_plan_create(cpu_ctx, &cp));
    const struct { lh_param k; int64_t v; } pv[] = {
        {LH_PARAM_BATCH, c->B}, {LH_PARAM_SEQ_LEN, c->N}, {LH_PARAM_HEADS, c->H},
        {LH_PARAM_HEAD_DIM, c->D}, {LH_PARAM_LAYOUT, c->layout}, {LH_PARAM_LEVELS, c->L},
        {LH_PARAM_POOLING, c->p}, {LH_PARAM_TOPK, c->topk}};
    for (size_t i = 0; i < sizeof pv / sizeof pv[0]; i++) {
        LH_MUST(lh_plan_set_i64(gp, pv[i].k, pv[i].v));
        LH_MUST(lh_plan_set_i64(cp, pv[i].k, pv[i].v));
    }
    LH_MUST(lh_plan_set_i64(gp, LH_PARAM_DTYPE, c->dtype));
    LH_MUST(lh_plan_set_i64(gp, LH_PARAM_SCORER, LH_SCORER_DILATED));
    LH_MUST(lh_plan_set_i64(gp, LH_PARAM_DILATION, c->d));
    LH_MUST(lh_plan_set_i64(cp, LH_PARAM_SCORER, LH_SCORER_EXTERNAL));
    LH_MUST(lh_plan_set_ring(gp, ring, 0));
    LH_MUST(lh_plan_set_ring(cp, cring, 0));
    LH_MUST(lh_plan_finalize(gp));
    LH_MUST(lh_plan_finalize(cp));
    inputs in = inputs_make(c, NULL);
    gpu_run g = run_gpu(gp, c, &in, NULL, NULL);

    /* each chunk through a ring-less plan of its own: its tokens copied out of the shard */
    scfg half = *c;
    half.N = c->N / 2, half.topk = c->topk / 2, half.B = c->B;
    lh_plan *hp = plan_of(gpu_ctx, &half, c->dtype, LH_SCORER_DILATED);
    size_t st = query(hp, LH_QUERY_PYRAMID_LEN), ss = query(hp, LH_QUERY_SUBSEQ_LEN);
    size_t rows = (size_t)c->B * c->H * ss, nsc = (size_t)c->B * c->H * st;
    size_t nh = in.n[0] / 2, D = (size_t)c->D;
    float *scores = malloc(4 * nsc * 4); /* [C][B,H,S_t] q scores, then k scores */
    int32_t *idx = malloc(rows * 4);
    void *part[3], *dsq = gpu_alloc(&env, nsc * 4), *dsk = gpu_alloc(&env, nsc * 4), *didx = gpu_alloc(&env, rows * 4);
    void *ws = dev_or_null(query(hp, LH_QUERY_STAGE_WORKSPACE_BYTES));
    uint16_t *bits = malloc(in.n[0] * 2), *hbits = malloc(nh * 2);
    size_t bad = 0;
    for (int i = 0; i < 3; i++) part[i] = gpu_alloc(&env, nh * 2);
    for (int64_t j = 0; j < 2; j++) {
        for (int i = 0; i < 3; i++) {
            gpu_download(&env, bits, in.dev[i], in.n[i] * 2);
            /* BHND rows of chunk j: tokens [j N/2, (j+1) N/2) of every (b, h) */
            for (size_t bh = 0; bh < (size_t)(c->B * c->H); bh++)
                memcpy(hbits + bh * (nh / (size_t)(c->B * c->H)),
                       bits + (bh * (size_t)c->N + (size_t)j * (size_t)half.N) * D, (size_t)half.N * D * 2);
            gpu_upload(&env, part[i], hbits, nh * 2);
        }
        LH_MUST(lh_scores_qkv(hp, part[0], part[1], part[2], dsq, dsk, ws, NULL));
        gpu_poison(&env, didx, rows * 4);
        LH_MUST(lh_select(hp, dsq, dsk, didx, ws, NULL));
        gpu_download(&env, idx, didx, rows * 4);
        gpu_download(&env, scores + (size_t)j * nsc, dsq, nsc * 4);
        gpu_download(&env, scores + (2 + (size_t)j) * nsc, dsk, nsc * 4);
        for (size_t i = 0; i < rows; i++) bad += idx[i] != ((int32_t *)g.saved)[(size_t)j * rows + i];
    }
    check(bad == 0, "dilated_ring_chunks", "%s: %zu of %zu indices of the ring's two chunks differ from "
          "ring-less plans of one chunk", c->name, bad, 2 * rows);
    gpu_run ref = run_cpu(cp, &in, scores, scores + 2 * nsc);
    double e[4] = {rel_error(g.out, ref.out, in.n[0]), rel_error(g.dq, ref.dq, in.n[0]),
                   rel_error(g.dk, ref.dk, in.n[1]), rel_error(g.dv, ref.dv, in.n[1])};
    bool ok = true;
    for (int i = 0; i < 4; i++) ok = ok && e[i] <= bound_of(c->dtype);
    check(ok, "dilated_ring_outputs", "%s: out %.2e dq %.2e dk %.2e dv %.2e against the CPU ring given the "
          "same scores", c->name, e[0], e[1], e[2], e[3]);
    gpu_run_free(&g), gpu_run_free(&ref);
    for (int i = 0; i < 3; i++) gpu_free(&env, part[i]);
    gpu_free(&env, dsq), gpu_free(&env, dsk), gpu_free(&env, didx);
    if (ws) gpu_free(&env, ws);
    free(scores), free(idx), free(bits), free(hbits);
    inputs_free(&in);
    lh_plan_destroy(hp), lh_plan_destroy(gp), lh_plan_destroy(cp);
    lh_ring_destroy(ring), lh_ring_destroy(cring);
}

/* ---- (c) external scores = the norm scorer ------------------------------------------------- */

static void external_equals_norm(const scfg *c) {
    lh_plan *norm = plan_of(gpu_ctx, c, c->dtype, LH_SCORER_NORM);
    lh_plan *ext = plan_of(gpu_ctx, c, c->dtype, LH_SCORER_EXTERNAL);
    inputs in = inputs_make(c, NULL);
    size_t st = query(norm, LH_QUERY_PYRAMID_LEN);
    size_t nsq = (size_t)c->B * c->H * st, nsk = (size_t)c->B * c->Hkv * st;
    void *dsq = gpu_alloc(&env, nsq * 4), *dsk = gpu_alloc(&env, nsk * 4);
    void *ws = dev_or_null(query(norm, LH_QUERY_STAGE_WORKSPACE_BYTES));
    LH_MUST(lh_scores(norm, in.dev[0], in.dev[1], dsq, dsk, ws, NULL));
    gpu_run a = run_gpu(norm, c, &in, NULL, NULL), b = run_gpu(ext, c, &in, dsq, dsk);
    size_t nq = in.n[0], nk = in.n[1];
    bool same = a.saved_b == b.saved_b && !memcmp(a.saved, b.saved, a.saved_b) &&
                !memcmp(a.out, b.out, nq * 4) && !memcmp(a.dq, b.dq, nq * 4) &&
                !memcmp(a.dk, b.dk, nk * 4) && !memcmp(a.dv, b.dv, nk * 4);
    double e = fmax(rel_error(b.out, a.out, nq), rel_error(b.dq, a.dq, nq));
    check(same, "external_equals_norm", "%s: out, saved (%zu bytes), dq, dk, dv %s (max error %.1e)",
          c->name, a.saved_b, same ? "bit-identical" : "DIFFER", e);
    size_t ext_ws = query(ext, LH_QUERY_FWD_WORKSPACE_BYTES), norm_ws = query(norm, LH_QUERY_FWD_WORKSPACE_BYTES);
    check(ext_ws < norm_ws, "external_workspace", "%s: forward workspace %zu bytes (norm plan: %zu)",
          c->name, ext_ws, norm_ws);
    gpu_run_free(&a), gpu_run_free(&b);
    inputs_free(&in);
    gpu_free(&env, dsq), gpu_free(&env, dsk);
    if (ws) gpu_free(&env, ws);
    lh_plan_destroy(norm), lh_plan_destroy(ext);
}

int main(int argc, char **argv) {
    const char *program = "test_scorers_gpu";
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    int tiny = argc > 1 && strcmp(argv[1], "--tiny") == 0;
    int rc = gpu_env_init(&env, program);
    if (rc) return rc;
    if (lh_context_create(LH_BACKEND_CUDA, 0, &gpu_ctx) != LH_OK) {
        printf("SKIP: %s: no CUDA context: %s\n", program, lh_last_error());
        return GPU_SKIP;
    }
    LH_MUST(lh_context_create(LH_BACKEND_CPU, 0, &cpu_ctx));
    const char *seed = getenv("LIGHTHOUSE_TEST_SEED");
    rng_state = seed ? strtoull(seed, NULL, 10) : (uint64_t)(now_seconds() * 1e6) | 1;
    printf("%s: seed %llu (LIGHTHOUSE_TEST_SEED repeats it)\n", program, (unsigned long long)rng_state);

    golden_dilated(tiny);
    static const scfg dilated[] = {
        {"bf16_bnhd_b1_n4096_h2_d64_dil4", LH_DTYPE_BFLOAT16, LH_LAYOUT_BNHD, 1, 4096, 2, 2, 64, 3, 4, 256, 4},
        {"fp16_bhnd_b2_n2048_h2_d32_dil8", LH_DTYPE_FLOAT16, LH_LAYOUT_BHND, 2, 2048, 2, 2, 32, 2, 4, 128, 8},
        {"bf16_bhnd_b1_n8192_h2_d128_dil16", LH_DTYPE_BFLOAT16, LH_LAYOUT_BHND, 1, 8192, 2, 2, 128, 3, 4, 256, 16},
        {"bf16_bnhd_b1_n16384_h4_d128_dil4", LH_DTYPE_BFLOAT16, LH_LAYOUT_BNHD, 1, 16384, 4, 4, 128, 3, 4, 512, 4},
    };
    size_t nd = tiny ? 1 : quick ? 2 : sizeof dilated / sizeof dilated[0];
    for (size_t i = 0; i < nd; i++) {
        inputs in = inputs_make(&dilated[i], NULL);
        free(check_dilated(&dilated[i], &in));
        inputs_free(&in);
    }
    static const scfg ring = {"bf16_bhnd_b2_n8192_h2_d64_dil4_ring", LH_DTYPE_BFLOAT16, LH_LAYOUT_BHND,
                              2, 8192, 2, 2, 64, 3, 4, 512, 4};
    if (!tiny) dilated_ring_chunks(&ring);
    static const scfg external[] = {
        {"bf16_bnhd_b2_n4096_h4_kv2_d64", LH_DTYPE_BFLOAT16, LH_LAYOUT_BNHD, 2, 4096, 4, 2, 64, 3, 4, 256, 0},
        {"fp16_bhnd_b1_n2048_h2_kv1_d32", LH_DTYPE_FLOAT16, LH_LAYOUT_BHND, 1, 2048, 2, 1, 32, 2, 4, 128, 0},
        {"bf16_bnhd_b1_n65536_h8_kv8_d128", LH_DTYPE_BFLOAT16, LH_LAYOUT_BNHD, 1, 65536, 8, 8, 128, 3, 4, 2048, 0},
    };
    size_t ne = tiny ? 1 : quick ? 2 : sizeof external / sizeof external[0];
    for (size_t i = 0; i < ne; i++) external_equals_norm(&external[i]);

    lh_context_destroy(gpu_ctx);
    lh_context_destroy(cpu_ctx);
    return finish(program);
}
