/*
 * lighthouse-bench - Lighthouse against dense cuDNN and against the floor (cuDNN on a sequence
 * of the selected length), per stage with bandwidth against a device copy, JIT cold and warm,
 * and the memory kept for backward; one GPU, one run. Prints the GPU's name and a table last,
 * and writes JSON for tools/bench/plot_bench.py.
 *
 *   lighthouse-bench [--seqs 32768,65536,...] [--heads 8] [--kv-heads 8] [--dim 128]
 *                    [--levels 3] [--pooling 4] [--topk 2048] [--dtype bf16|fp16] [--batch 1]
 *                    [--warmup 2] [--repeats 7] [--dense-max N] [--json FILE]
 *                    [--recompute 0|1]        (LH_PARAM_RECOMPUTE_SUBSEQ of the Lighthouse plans)
 *                    [--dilated D]            (also the dilated scorer of dilation D against the
 *                                             norm scorer, in pairs: its extra cost per N)
 *                    [--pair-order fixed|alternate] (alternate: every other repeat of a timed
 *                                             pair runs its second call, the floor or the
 *                                             dilated scorer, first; fixed: never)
 *                    [--lighthouse-only 1|2] (for a profiler, see tests/gpu/profile_kernels.sh:
 *                                             1 runs Lighthouse alone, 2 Lighthouse and its
 *                                             floor in pairs; no copy, JIT, stages or dense)
 *   lighthouse-bench --startup-only 1 [--seqs ...] [--startup-cache DIR] [--startup-gap-ms M]
 *                    plan start-up alone (cold, disk, memory per N; bench_startup.c), for a
 *                    fresh machine's first plan: the first N's cold row is the process's first
 *                    plan and the first on a machine whose driver cache is empty; with
 *                    --startup-cache the "cold" plan starts from DIR (filled ahead of time by
 *                    lighthouse-compile --device) instead of an empty cache, and DIR is kept;
 *                    with --startup-gap-ms the cold plan is made M ms after its context was
 *                    created (a model's set-up in between), not at once
 *   lighthouse-bench --shape-table 1 [--seqs 65536,262144] [--batches 1,2] [--dense-max 131072]
 *                    [--repeats 5] [--warmup 1] [--json lighthouse-shapes.json]
 *                    the shapes real models train with, one run (bench_shapes.c); --heads,
 *                    --kv-heads, --dim and --dtype do not apply there
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int bench_repeats(const bench_options *o) {
    return o->repeats < BENCH_MAX_REPEATS ? o->repeats : BENCH_MAX_REPEATS;
}

double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return v[n / 2];
}

/* Runs the k functions one after the other, warmup + repeats times, each between two events:
 * ms[f] = function f's median; with k == 2 and `ratio`, *ratio = the median over repeats of
 * function 0's time / function 1's. With `each`, each[f][i] = function f's time in repeat i.
 * With --pair-order alternate, repeat i starts at function i % k (the others follow in order),
 * so no function always runs first, after the previous repeat's last call; times stay filed by
 * function. 0 on success. */
enum { MAX_TIMED = 2 };
static int timed_runs(const bench_options *o, int k, const bench_fn *fns, void *const *args, double *ms,
                      double *ratio, double (*each)[BENCH_MAX_REPEATS]) {
    hd_event *ev[MAX_TIMED + 1] = {0};
    double times[MAX_TIMED][BENCH_MAX_REPEATS], ratios[BENCH_MAX_REPEATS];
    int n = bench_repeats(o), rc = 1;
    for (int f = 0; f <= k; f++)
        if (!(ev[f] = hd_event_create())) goto done;
    for (int i = 0; i < o->warmup; i++)
        for (int f = 0; f < k; f++)
            if (fns[f](args[f], i)) goto done;
    for (int i = 0; i < n; i++) {
        int first = o->alternate_pairs ? i % k : 0;
        hd_event_record(ev[0]);
        for (int j = 0; j < k; j++) {
            int f = (first + j) % k;
            if (fns[f](args[f], o->warmup + i)) goto done;
            hd_event_record(ev[j + 1]);
        }
        for (int j = 0; j < k; j++) times[(first + j) % k][i] = hd_event_elapsed_ms(ev[j], ev[j + 1]);
        if (each)
            for (int f = 0; f < k; f++) each[f][i] = times[f][i];
        if (ratio) ratios[i] = times[0][i] / times[1][i];
    }
    for (int f = 0; f < k; f++) ms[f] = bench_median(times[f], n);
    if (ratio) *ratio = bench_median(ratios, n);
    rc = 0;
done:
    for (int f = 0; f <= k; f++) hd_event_destroy(ev[f]);
    return rc;
}

double bench_median_ms(const bench_options *o, bench_fn fn, void *arg) {
    double ms;
    return timed_runs(o, 1, &fn, &arg, &ms, NULL, NULL) == 0 ? ms : -1.0;
}

int bench_pair_ms(const bench_options *o, const bench_fn fns[2], void *const args[2], double ms[2]) {
    return timed_runs(o, 2, fns, args, ms, NULL, NULL);
}

lh_plan *bench_plan(lh_context *ctx, const bench_options *o, int64_t seq, lh_mode mode) {
    lh_plan *plan = NULL;
    if (lh_plan_create(ctx, &plan) != LH_OK) return NULL;
    const struct { lh_param p; int64_t v; } params[] = {
        {LH_PARAM_BATCH, o->batch}, {LH_PARAM_SEQ_LEN, seq}, {LH_PARAM_HEADS, o->heads},
        {LH_PARAM_KV_HEADS, o->kv_heads}, {LH_PARAM_HEAD_DIM, o->dim}, {LH_PARAM_DTYPE, o->dtype},
        {LH_PARAM_LEVELS, o->levels}, {LH_PARAM_POOLING, o->pooling}, {LH_PARAM_TOPK, o->topk},
        {LH_PARAM_MODE, mode}, {LH_PARAM_RECOMPUTE_SUBSEQ, o->recompute},
        {LH_PARAM_STAGE_TIMING, o->stage_timing}};
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        if (lh_plan_set_i64(plan, params[i].p, params[i].v) != LH_OK) goto fail;
    if (o->dilated_plans && mode == LH_MODE_LIGHTHOUSE &&
        (lh_plan_set_i64(plan, LH_PARAM_SCORER, LH_SCORER_DILATED) != LH_OK ||
         lh_plan_set_i64(plan, LH_PARAM_DILATION, o->dilation) != LH_OK))
        goto fail;
    if (lh_plan_finalize(plan) != LH_OK) goto fail;
    return plan;
fail:
    fprintf(stderr, "  plan (N=%lld, %s): %s\n", (long long)seq,
            mode == LH_MODE_DENSE ? "dense" : "lighthouse", lh_last_error());
    lh_plan_destroy(plan);
    return NULL;
}

int64_t bench_query(lh_plan *plan, lh_query q) {
    int64_t v = 0;
    return lh_plan_get_i64(plan, q, &v) == LH_OK ? v : -1;
}

/* ---- forward / forward+backward of one plan ------------------------------------------------ */

int run_once(void *arg, int it) {
    run_buffers *r = arg;
    int s = it % r->sets;
    if (lh_forward(r->plan, r->q[s], r->k[s], r->v[s], r->out, r->saved, r->ws, NULL) != LH_OK) return 1;
    if (r->backward &&
        lh_backward(r->plan, r->q[s], r->k[s], r->v[s], r->out, r->dout, r->saved, r->dq, r->dk, r->dv,
                    r->ws, NULL) != LH_OK)
        return 1;
    return 0;
}

/* Random values in [-1, 1): one tile of TILE elements made on the host and uploaded, then copied
 * on the device, doubling, until `elems` are filled. TILE is odd, so the repeat does not line up
 * with rows, heads or tokens; a 2^31-element tensor fills in milliseconds instead of the minute
 * rand() would take. */
static int fill_random(void *dev, size_t elems, lh_dtype dtype, unsigned seed) {
    enum { TILE = (1 << 22) + 15 };
    size_t first = elems < TILE ? elems : TILE, es = 2;
    float *h = malloc(first * sizeof(float));
    void *enc = malloc(first * es);
    int rc = !h || !enc;
    if (!rc) {
        srand(seed);
        for (size_t i = 0; i < first; i++) h[i] = (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
        hd_encode(dtype, h, enc, first);
        rc = hd_upload(LH_BACKEND_CUDA, dev, enc, first * es);
    }
    for (size_t done = first; rc == 0 && done < elems;) {
        size_t n = done < elems - done ? done : elems - done;
        rc = hd_copy_d2d((char *)dev + done * es, dev, n * es);
        done += n;
    }
    free(h);
    free(enc);
    return rc;
}

int buffers_alloc(const bench_options *o, lh_plan *plan, int64_t seq, run_buffers *r) {
    size_t es = 2;
    size_t qn = (size_t)(o->batch * seq * o->heads * o->dim), kn = (size_t)(o->batch * seq * o->kv_heads * o->dim);
    memset(r, 0, sizeof *r);
    r->plan = plan;
    size_t set_bytes = (qn + 2 * kn) * es;
    r->sets = set_bytes >= (size_t)256 << 20 ? 1 : 4;
    int64_t ws = bench_query(plan, LH_QUERY_FWD_WORKSPACE_BYTES), bws = bench_query(plan, LH_QUERY_BWD_WORKSPACE_BYTES);
    if (bws > ws) ws = bws;
    int ok = 1;
    for (int s = 0; s < r->sets; s++) {
        r->q[s] = hd_alloc(LH_BACKEND_CUDA, qn * es);
        r->k[s] = hd_alloc(LH_BACKEND_CUDA, kn * es);
        r->v[s] = hd_alloc(LH_BACKEND_CUDA, kn * es);
        ok = ok && r->q[s] && r->k[s] && r->v[s];
        ok = ok && fill_random(r->q[s], qn, o->dtype, 1 + 3 * s) == 0 &&
             fill_random(r->k[s], kn, o->dtype, 2 + 3 * s) == 0 &&
             fill_random(r->v[s], kn, o->dtype, 3 + 3 * s) == 0;
    }
    r->out = hd_alloc(LH_BACKEND_CUDA, qn * es);
    r->dout = hd_alloc(LH_BACKEND_CUDA, qn * es);
    r->dq = hd_alloc(LH_BACKEND_CUDA, qn * es);
    r->dk = hd_alloc(LH_BACKEND_CUDA, kn * es);
    r->dv = hd_alloc(LH_BACKEND_CUDA, kn * es);
    r->saved = hd_alloc(LH_BACKEND_CUDA, (size_t)bench_query(plan, LH_QUERY_SAVED_BYTES));
    r->ws = ws > 0 ? hd_alloc(LH_BACKEND_CUDA, (size_t)ws) : NULL;
    ok = ok && r->out && r->dout && r->dq && r->dk && r->dv && r->saved && (ws == 0 || r->ws);
    ok = ok && fill_random(r->dout, qn, o->dtype, 99) == 0;
    if (!ok) fprintf(stderr, "  out of device memory for N=%lld\n", (long long)seq);
    return ok ? 0 : 1;
}

void buffers_free(run_buffers *r) {
    for (int s = 0; s < r->sets; s++) {
        hd_free(LH_BACKEND_CUDA, r->q[s]); hd_free(LH_BACKEND_CUDA, r->k[s]); hd_free(LH_BACKEND_CUDA, r->v[s]);
    }
    void *rest[] = {r->out, r->dout, r->dq, r->dk, r->dv, r->saved, r->ws};
    for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++) hd_free(LH_BACKEND_CUDA, rest[i]);
    memset(r, 0, sizeof *r);
}

void time_plan(const bench_options *o, lh_plan *plan, int64_t seq, double *fwd, double *fwdbwd) {
    *fwd = *fwdbwd = -1.0;
    run_buffers r;
    if (buffers_alloc(o, plan, seq, &r) == 0) {
        r.backward = 0;
        *fwd = bench_median_ms(o, run_once, &r);
        r.backward = 1;
        *fwdbwd = bench_median_ms(o, run_once, &r);
        if (*fwd < 0 || *fwdbwd < 0) fprintf(stderr, "  run failed: %s\n", lh_last_error());
    }
    buffers_free(&r);
}

void time_against_floor(const bench_options *o, lh_plan *lh, int64_t seq, lh_plan *floor_plan,
                               int64_t s_sel, bench_row *row) {
    run_buffers a = {0}, b = {0};
    int ok = buffers_alloc(o, lh, seq, &a) == 0;
    ok = ok && buffers_alloc(o, floor_plan, s_sel, &b) == 0;
    for (int backward = 0; ok && backward < 2; backward++) {
        a.backward = b.backward = backward;
        const bench_fn fns[2] = {run_once, run_once};
        void *const args[2] = {&a, &b};
        double ms[2], ratio;
        if (timed_runs(o, 2, fns, args, ms, &ratio, row->pair_ms[backward]) != 0) {
            fprintf(stderr, "  run failed: %s\n", lh_last_error());
            break;
        }
        *(backward ? &row->lh_fwdbwd : &row->lh_fwd) = ms[0];
        *(backward ? &row->floor_fwdbwd : &row->floor_fwd) = ms[1];
        *(backward ? &row->fwdbwd_over_floor : &row->fwd_over_floor) = ratio;
        row->pairs = bench_repeats(o);
    }
    buffers_free(&a);
    buffers_free(&b);
}

/* ---- copy bandwidth ------------------------------------------------------------------------ */

typedef struct copy_arg { void *dst, *src; size_t bytes; } copy_arg;
static int copy_once(void *arg, int it) {
    (void)it;
    copy_arg *c = arg;
    return hd_copy_d2d(c->dst, c->src, c->bytes);
}

double copy_bandwidth_gbs(const bench_options *o) {
    copy_arg c = {NULL, NULL, (size_t)1 << 30};
    c.src = hd_alloc(LH_BACKEND_CUDA, c.bytes);
    c.dst = hd_alloc(LH_BACKEND_CUDA, c.bytes);
    double ms = (c.src && c.dst) ? bench_median_ms(o, copy_once, &c) : -1.0;
    hd_free(LH_BACKEND_CUDA, c.src);
    hd_free(LH_BACKEND_CUDA, c.dst);
    return ms > 0 ? 2.0 * (double)c.bytes / (ms * 1e-3) / 1e9 : -1.0;
}

/* ---- output -------------------------------------------------------------------------------- */

static void json_number(FILE *f, const char *key, double v, int last) {
    if (v < 0) fprintf(f, "\"%s\": null%s", key, last ? "" : ", ");
    else fprintf(f, "\"%s\": %.6g%s", key, v, last ? "" : ", ");
}

/* The smallest and largest of the row's per-pair ratios Lighthouse / floor; 0 if none. */
static int ratio_range(const bench_row *r, int backward, double *lo, double *hi) {
    *lo = *hi = -1.0;
    for (int i = 0; i < r->pairs; i++) {
        double x = r->pair_ms[backward][0][i] / r->pair_ms[backward][1][i];
        if (*lo < 0 || x < *lo) *lo = x;
        if (x > *hi) *hi = x;
    }
    return r->pairs > 0;
}

static void json_pairs(FILE *f, const char *key, const bench_row *r, int backward) {
    fprintf(f, "\"%s\": [", key);
    for (int i = 0; i < r->pairs; i++)
        fprintf(f, "[%.6g, %.6g]%s", r->pair_ms[backward][0][i], r->pair_ms[backward][1][i],
                i + 1 < r->pairs ? ", " : "");
    fprintf(f, "], ");
}

static void write_json(const bench_options *o, const bench_row *rows, int n, double copy_gbs) {
    FILE *f = fopen(o->json_path, "w");
    if (!f) { fprintf(stderr, "cannot write %s\n", o->json_path); return; }
    fprintf(f, "{\"gpu\": \"%s\", \"library\": \"%s\", \"config\": {\"batch\": %lld, \"heads\": %lld, "
               "\"kv_heads\": %lld, \"dim\": %lld, \"levels\": %lld, \"pooling\": %lld, \"topk\": %lld, "
               "\"dtype\": \"%s\", \"pair_order\": \"%s\"}, ",
            hd_gpu_name(), lh_version_string(), (long long)o->batch, (long long)o->heads,
            (long long)o->kv_heads, (long long)o->dim, (long long)o->levels, (long long)o->pooling,
            (long long)o->topk, o->dtype == LH_DTYPE_BFLOAT16 ? "bf16" : "fp16",
            o->alternate_pairs ? "alternate" : "fixed");
    json_number(f, "copy_bandwidth_gbs", copy_gbs > 0 ? copy_gbs : -1.0, 0);   /* null: not measured */
    fprintf(f, "\"rows\": [\n");
    for (int i = 0; i < n; i++) {
        const bench_row *r = &rows[i];
        fprintf(f, "  {\"seq\": %lld, \"s_sel\": %lld, ", (long long)r->seq, (long long)r->s_sel);
        json_number(f, "lighthouse_fwd_ms", r->lh_fwd, 0);
        json_number(f, "lighthouse_fwdbwd_ms", r->lh_fwdbwd, 0);
        json_number(f, "dense_fwd_ms", r->dense_fwd, 0);
        json_number(f, "dense_fwdbwd_ms", r->dense_fwdbwd, 0);
        json_number(f, "floor_fwd_ms", r->floor_fwd, 0);
        json_number(f, "floor_fwdbwd_ms", r->floor_fwdbwd, 0);
        json_number(f, "fwd_over_floor", r->fwd_over_floor, 0);
        json_number(f, "fwdbwd_over_floor", r->fwdbwd_over_floor, 0);
        json_pairs(f, "pairs_fwd_ms", r, 0);      /* [Lighthouse, floor] per repeat */
        json_pairs(f, "pairs_fwdbwd_ms", r, 1);
        json_number(f, "jit_cold_ms", r->startup[STARTUP_COLD].total_ms, 0);
        json_number(f, "jit_disk_ms", r->startup[STARTUP_DISK].total_ms, 0);
        json_number(f, "jit_memory_ms", r->startup[STARTUP_MEMORY].total_ms, 0);
        json_startup(f, r->startup);
        fprintf(f, ", ");
        bench_scorer_json(f, r);
        /* only the stages bench_stages() measured: none under --lighthouse-only */
        fprintf(f, "\"saved_bytes\": %lld, \"stages\": [", (long long)r->saved_bytes);
        for (int s = 0, written = 0; s < BENCH_STAGES; s++) {
            if (!r->stages[s].name) continue;
            fprintf(f, "%s{\"name\": \"%s\", ", written++ ? ", " : "", r->stages[s].name);
            json_number(f, "ms", r->stages[s].ms, 0);
            json_number(f, "bytes", r->stages[s].bytes > 0 ? r->stages[s].bytes : -1.0, 1);
            fprintf(f, "}");
        }
        fprintf(f, "]}%s\n", i + 1 < n ? "," : "");
    }
    fprintf(f, "]}\n");
    fclose(f);
    printf("wrote %s\n", o->json_path);
}

static void print_ms(double v) { if (v < 0) printf(" %9s", "-"); else printf(" %9.2f", v); }

static void print_table(const bench_options *o, const bench_row *rows, int n, double copy_gbs) {
    printf("\nper stage, inside lh_forward / lh_backward (CUDA events around each stage, median of %d);\n"
           "bandwidth vs device copy %.0f GB/s (attention is cuDNN, compute-bound: no bandwidth):\n",
           o->repeats, copy_gbs);
    printf("%8s %-18s %9s %9s %9s %7s\n", "N", "stage", "ms", "GB", "GB/s", "%copy");
    for (int i = 0; i < n; i++)
        for (int s = 0; s < BENCH_STAGES; s++) {
            const stage_result *st = &rows[i].stages[s];
            if (!st->name || st->ms <= 0) continue;
            printf("%8lld %-18s %9.3f", (long long)rows[i].seq, st->name, st->ms);
            if (st->bytes <= 0) {
                printf(" %9s %9s %7s\n", "-", "-", "-");
                continue;
            }
            double gbs = st->bytes / (st->ms * 1e-3) / 1e9;
            printf(" %9.3f %9.0f %6.0f%%\n", st->bytes / 1e9, gbs,
                   copy_gbs > 0 ? 100.0 * gbs / copy_gbs : 0.0);
        }
    int startup_measured = 0;   /* --lighthouse-only measures no start-up: no empty table */
    for (int i = 0; i < n; i++) startup_measured |= rows[i].startup[STARTUP_COLD].total_ms >= 0;
    if (startup_measured) {
        printf("\nplan start-up (lh_plan_finalize, Lighthouse), ms: cold = new context, empty kernel cache\n"
               "(first row: also the process's first plan); disk = new context, kernels cached; memory =\n"
               "second plan of the cold plan's context; reused = cuDNN attention plans taken from the context\n");
        print_startup_header();
        for (int i = 0; i < n; i++) print_startup_rows(rows[i].seq, rows[i].startup);
    }
    printf("\n%8s %12s\n", "N", "saved MiB");
    for (int i = 0; i < n; i++)
        printf("%8lld %12.1f\n", (long long)rows[i].seq, (double)rows[i].saved_bytes / (1 << 20));
    printf("\n== %s | B=%lld H=%lld Hkv=%lld D=%lld %s L=%lld p=%lld topk=%lld | ms, median of %d\n",
           hd_gpu_name(), (long long)o->batch, (long long)o->heads, (long long)o->kv_heads, (long long)o->dim,
           o->dtype == LH_DTYPE_BFLOAT16 ? "bf16" : "fp16", (long long)o->levels, (long long)o->pooling,
           (long long)o->topk, o->repeats);
    printf("(ratios to the floor: median over repeats of Lighthouse's time / the floor's, each pair back to back;\n"
           " f+b range: the smallest and largest of those per-pair f+b ratios)\n");
    printf("%8s %7s | %9s %9s | %9s %9s | %9s %9s | %7s %7s %13s %8s\n", "N", "S_sel", "LH fwd", "LH f+b",
           "floor fwd", "floor f+b", "dense fwd", "dense f+b", "fwd/flr", "f+b/flr", "f+b range", "dense/LH");
    for (int i = 0; i < n; i++) {
        const bench_row *r = &rows[i];
        printf("%8lld %7lld |", (long long)r->seq, (long long)r->s_sel);
        print_ms(r->lh_fwd); print_ms(r->lh_fwdbwd); printf(" |");
        print_ms(r->floor_fwd); print_ms(r->floor_fwdbwd); printf(" |");
        print_ms(r->dense_fwd); print_ms(r->dense_fwdbwd); printf(" |");
        if (r->fwd_over_floor > 0) printf(" %7.3f", r->fwd_over_floor); else printf(" %7s", "-");
        if (r->fwdbwd_over_floor > 0) printf(" %7.3f", r->fwdbwd_over_floor); else printf(" %7s", "-");
        double lo, hi;
        if (r->fwdbwd_over_floor > 0 && ratio_range(r, 1, &lo, &hi)) printf("   %.3f-%.3f", lo, hi);
        else printf(" %13s", "-");
        if (r->lh_fwdbwd > 0 && r->dense_fwdbwd > 0) printf(" %8.1f", r->dense_fwdbwd / r->lh_fwdbwd); else printf(" %8s", "-");
        printf("\n");
        if (r->lh_error) printf("         Lighthouse not run: %s\n", r->lh_error);
    }
}

/* ---- main ---------------------------------------------------------------------------------- */

/* A comma-separated list of integers into out[0 .. max); returns how many. */
static int parse_list(const char *list, int64_t *out, int max) {
    int n = 0;
    for (const char *p = list; *p && n < max;) {
        out[n++] = strtoll(p, (char **)&p, 10);
        if (*p == ',') p++;
        else if (*p) break;
    }
    return n;
}

static void parse_seqs(bench_options *o, const char *list) {
    o->num_seqs = parse_list(list, o->seqs, BENCH_MAX_SEQS);
}

/* --startup-only: the start-up table alone, nothing timed before it (the first cold plan is
 * the process's first). */
static int startup_only(const bench_options *o) {
    startup_result r[BENCH_MAX_SEQS][STARTUP_CASES];
    for (int i = 0; i < o->num_seqs; i++) bench_startup(o, o->seqs[i], r[i]);
    printf("\nplan start-up (lh_plan_finalize, Lighthouse, H=%lld Hkv=%lld D=%lld %s B=%lld), ms: cold = new\n"
           "context, empty kernel cache and plan store (first row: also the process's first plan);\n"
           "disk = new context on what the cold plan stored; memory = second plan of the cold context\n",
           (long long)o->heads, (long long)o->kv_heads, (long long)o->dim,
           o->dtype == LH_DTYPE_BFLOAT16 ? "bf16" : "fp16", (long long)o->batch);
    print_startup_header();
    int failed = 0;
    for (int i = 0; i < o->num_seqs; i++) {
        print_startup_rows(o->seqs[i], r[i]);
        failed |= r[i][STARTUP_COLD].total_ms < 0;
    }
    printf("== %s\n", hd_gpu_name());
    if (failed) fprintf(stderr, "lighthouse-bench: a plan failed: %s\n", lh_last_error());
    return failed;
}

static void parse_args(int argc, char **argv, bench_options *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "%s needs a value\n", a); exit(2); }
        i++;
        if (!strcmp(a, "--seqs")) parse_seqs(o, v);
        else if (!strcmp(a, "--batch")) o->batch = atoll(v);
        else if (!strcmp(a, "--heads")) o->heads = o->kv_heads = atoll(v);
        else if (!strcmp(a, "--kv-heads")) o->kv_heads = atoll(v);
        else if (!strcmp(a, "--dim")) o->dim = atoll(v);
        else if (!strcmp(a, "--levels")) o->levels = atoll(v);
        else if (!strcmp(a, "--pooling")) o->pooling = atoll(v);
        else if (!strcmp(a, "--topk")) o->topk = atoll(v);
        else if (!strcmp(a, "--dtype")) o->dtype = !strcmp(v, "fp16") ? LH_DTYPE_FLOAT16 : LH_DTYPE_BFLOAT16;
        else if (!strcmp(a, "--warmup")) o->warmup = atoi(v);
        else if (!strcmp(a, "--repeats")) o->repeats = atoi(v);
        else if (!strcmp(a, "--dense-max")) o->dense_max_seq = atoll(v);
        else if (!strcmp(a, "--json")) o->json_path = v;
        else if (!strcmp(a, "--lighthouse-only")) o->lighthouse_only = atoi(v);
        else if (!strcmp(a, "--recompute")) o->recompute = atoi(v) != 0;
        else if (!strcmp(a, "--shape-table")) o->shape_table = atoi(v) != 0;
        else if (!strcmp(a, "--startup-only")) o->startup_only = atoi(v) != 0;
        else if (!strcmp(a, "--startup-cache")) o->startup_cache = v;
        else if (!strcmp(a, "--startup-gap-ms")) o->startup_gap_ms = atoi(v);
        else if (!strcmp(a, "--batches")) o->num_batches = parse_list(v, o->batches, 4);
        else if (!strcmp(a, "--dilated")) o->dilation = atoll(v);
        else if (!strcmp(a, "--pair-order")) {
            if (strcmp(v, "fixed") && strcmp(v, "alternate")) {
                fprintf(stderr, "--pair-order takes fixed or alternate, not %s\n", v);
                exit(2);
            }
            o->alternate_pairs = !strcmp(v, "alternate");
        }
        else { fprintf(stderr, "unknown option %s (see the comment at the top of lighthouse_bench.c)\n", a); exit(2); }
    }
    if (o->repeats < 1) o->repeats = 1;
}

int main(int argc, char **argv) {
    bench_options o = {.batch = 1, .heads = 8, .kv_heads = 8, .dim = 128, .levels = 3, .pooling = 4,
                       .topk = 2048, .dtype = LH_DTYPE_BFLOAT16, .warmup = 2, .repeats = 7,
                       .dense_max_seq = 1 << 19, .json_path = "lighthouse-bench.json"};
    parse_seqs(&o, "32768,65536,131072,262144,524288,1048576,2097152");
    o.num_batches = parse_list("1,2", o.batches, 4);
    /* the shape table's defaults, unless given: N = 64K and 256K, dense to 128K, 5 repeats */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--shape-table") && i + 1 < argc && atoi(argv[i + 1])) {
            parse_seqs(&o, "65536,262144");
            o.dense_max_seq = 131072;
            o.repeats = 5;
            o.warmup = 1;
            o.json_path = "lighthouse-shapes.json";
        }
    parse_args(argc, argv, &o);
    if (hd_gpu_init(0) != 0) {
        printf("lighthouse-bench: no usable GPU (libcuda.so.1, device 0); nothing to measure\n");
        return 77;
    }
    lh_context *ctx = NULL;
    if (lh_context_create(LH_BACKEND_CUDA, 0, &ctx) != LH_OK) {
        fprintf(stderr, "lighthouse-bench: %s\n", lh_last_error());
        return 1;
    }
    printf("lighthouse-bench %s on %s\n", lh_version_string(), hd_gpu_name());
    if (o.startup_only) {
        lh_context_destroy(ctx);
        return startup_only(&o);
    }
    double copy_gbs = o.lighthouse_only ? 0.0 : copy_bandwidth_gbs(&o);
    if (copy_gbs > 0) printf("device-to-device copy: %.0f GB/s (read + write)\n", copy_gbs);
    else printf("device-to-device copy: not measured%s\n", o.lighthouse_only ? " (--lighthouse-only)" : "");
    if (o.shape_table) {
        int rc = bench_shape_table(&o, ctx, copy_gbs);
        lh_context_destroy(ctx);
        return rc;
    }
    bench_row rows[BENCH_MAX_SEQS];
    memset(rows, 0, sizeof rows);
    for (int i = 0; i < o.num_seqs; i++) {
        bench_row *r = &rows[i];
        r->seq = o.seqs[i];
        r->lh_fwd = r->lh_fwdbwd = r->dense_fwd = r->dense_fwdbwd = r->floor_fwd = r->floor_fwdbwd = -1;
        r->fwd_over_floor = r->fwdbwd_over_floor = -1;
        printf("N = %lld\n", (long long)r->seq);
        fflush(stdout);
        if (!o.lighthouse_only) bench_startup(&o, r->seq, r->startup);
        else for (int c = 0; c < STARTUP_CASES; c++) r->startup[c].total_ms = -1.0;
        lh_plan *lh = bench_plan(ctx, &o, r->seq, LH_MODE_LIGHTHOUSE);
        if (lh) {
            r->s_sel = bench_query(lh, LH_QUERY_SUBSEQ_LEN);
            r->saved_bytes = bench_query(lh, LH_QUERY_SAVED_BYTES);
            /* the floor: cuDNN (dense mode) on a sequence of length S_sel, timed in pairs with
             * Lighthouse; --lighthouse-only 1 times Lighthouse alone */
            int with_floor = o.lighthouse_only != 1 && r->s_sel > 0;
            lh_plan *fl = with_floor ? bench_plan(ctx, &o, r->s_sel, LH_MODE_DENSE) : NULL;
            if (fl) time_against_floor(&o, lh, r->seq, fl, r->s_sel, r);
            else time_plan(&o, lh, r->seq, &r->lh_fwd, &r->lh_fwdbwd);
            lh_plan_destroy(fl);
            lh_plan_destroy(lh);
            if (!o.lighthouse_only) bench_stages(&o, ctx, r->seq, r);
            if (o.dilation > 0) bench_scorer(&o, ctx, r->seq, r);
        } else {
            static char why[BENCH_MAX_SEQS][512];
            snprintf(why[i], sizeof why[i], "%s", lh_last_error());
            r->lh_error = why[i];
        }
        if (o.lighthouse_only) continue;
        if (r->seq <= o.dense_max_seq) {
            bench_options dense_o = o;
            if (r->seq >= (1 << 18)) { dense_o.warmup = 1; dense_o.repeats = 3; } /* seconds per call */
            lh_plan *dn = bench_plan(ctx, &o, r->seq, LH_MODE_DENSE);
            if (dn) { time_plan(&dense_o, dn, r->seq, &r->dense_fwd, &r->dense_fwdbwd); lh_plan_destroy(dn); }
        }
    }
    write_json(&o, rows, o.num_seqs, copy_gbs);
    print_table(&o, rows, o.num_seqs, copy_gbs);
    if (o.dilation > 0) bench_scorer_table(&o, rows, o.num_seqs);
    lh_context_destroy(ctx);
    return 0;
}
