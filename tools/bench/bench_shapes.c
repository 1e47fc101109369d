/* bench_shapes.c - the shape table: Lighthouse, its floor and dense cuDNN at the shapes real
 * models train with (grouped-query heads 4:1 and 8:1, H = 8 to 32, D = 64 and 128, fp16 once),
 * B = 1 and 2, every N of --seqs, in one process; plan start-up first (its cold case is then the
 * process's first plan). Writes JSON for tools/bench/plot_shapes.py and tools/bench/shape_table.py.
 *
 * Which layers: the heads and head widths of open models of 1-70B parameters. (8, 8, 128) is the
 * configuration of every earlier entry of docs/perf-log.md, so the table starts where those end.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

typedef struct model_shape {
    int64_t heads, kv_heads, dim;
    lh_dtype dtype;
} model_shape;

static const model_shape shapes[] = {
    {8, 8, 128, LH_DTYPE_BFLOAT16},  {16, 4, 128, LH_DTYPE_BFLOAT16},
    {32, 8, 128, LH_DTYPE_BFLOAT16}, {16, 16, 64, LH_DTYPE_BFLOAT16},
    {32, 4, 64, LH_DTYPE_BFLOAT16},  {8, 8, 128, LH_DTYPE_FLOAT16},
};
enum { NUM_SHAPES = sizeof shapes / sizeof shapes[0] };

typedef struct shape_row {
    model_shape shape;
    int64_t batch;
    double lh_plan_ms, floor_plan_ms;   /* finalize of each plan in the shared context */
    int64_t lh_reused, floor_reused;    /* cuDNN attention plans it took from the context */
    bench_row r;
} shape_row;

static const char *dtype_name(lh_dtype t) { return t == LH_DTYPE_FLOAT16 ? "fp16" : "bf16"; }

static lh_plan *timed_plan(lh_context *ctx, const bench_options *o, int64_t seq, lh_mode mode,
                           double *ms, int64_t *reused) {
    double t0 = hd_now();
    lh_plan *plan = bench_plan(ctx, o, seq, mode);
    *ms = plan ? (hd_now() - t0) * 1e3 : -1.0;
    *reused = plan ? bench_query(plan, LH_QUERY_SETUP_CUDNN_REUSED) : -1;
    return plan;
}

static void measure_row(const bench_options *o, lh_context *ctx, shape_row *row) {
    bench_row *r = &row->r;
    r->lh_fwd = r->lh_fwdbwd = r->dense_fwd = r->dense_fwdbwd = r->floor_fwd = r->floor_fwdbwd = -1;
    r->fwd_over_floor = r->fwdbwd_over_floor = -1;
    row->lh_plan_ms = row->floor_plan_ms = -1;
    lh_plan *lh = timed_plan(ctx, o, r->seq, LH_MODE_LIGHTHOUSE, &row->lh_plan_ms, &row->lh_reused);
    if (!lh) {
        r->lh_error = strdup(lh_last_error()); /* freed by bench_shape_table */
        return;
    }
    r->s_sel = bench_query(lh, LH_QUERY_SUBSEQ_LEN);
    r->saved_bytes = bench_query(lh, LH_QUERY_SAVED_BYTES);
    lh_plan *fl = timed_plan(ctx, o, r->s_sel, LH_MODE_DENSE, &row->floor_plan_ms, &row->floor_reused);
    if (fl) time_against_floor(o, lh, r->seq, fl, r->s_sel, r);
    lh_plan_destroy(fl);
    lh_plan_destroy(lh);
    if (r->seq <= o->dense_max_seq) {
        bench_options dense_o = *o;
        dense_o.warmup = 1;
        dense_o.repeats = 3; /* dense costs 10-100x Lighthouse here */
        lh_plan *dn = bench_plan(ctx, o, r->seq, LH_MODE_DENSE);
        if (dn) time_plan(&dense_o, dn, r->seq, &r->dense_fwd, &r->dense_fwdbwd);
        lh_plan_destroy(dn);
    }
}

static void json_value(FILE *f, const char *key, double v) {
    if (v < 0) fprintf(f, ", \"%s\": null", key);
    else fprintf(f, ", \"%s\": %.6g", key, v);
}

static void write_json(const bench_options *o, const shape_row *rows, int n, double copy_gbs,
                       int64_t startup_seq, const startup_result *startup) {
    FILE *f = fopen(o->json_path, "w");
    if (!f) { fprintf(stderr, "cannot write %s\n", o->json_path); return; }
    fprintf(f, "{\"kind\": \"shape_table\", \"gpu\": \"%s\", \"library\": \"%s\", \"levels\": %lld, "
               "\"pooling\": %lld, \"topk\": %lld, \"repeats\": %d, \"copy_bandwidth_gbs\": %.1f, "
               "\"startup_seq\": %lld, \"pair_order\": \"%s\", ",
            hd_gpu_name(), lh_version_string(), (long long)o->levels, (long long)o->pooling,
            (long long)o->topk, o->repeats, copy_gbs, (long long)startup_seq,
            o->alternate_pairs ? "alternate" : "fixed");
    json_startup(f, startup);
    fprintf(f, ", \"rows\": [\n");
    for (int i = 0; i < n; i++) {
        const shape_row *s = &rows[i];
        const bench_row *r = &s->r;
        fprintf(f, "  {\"heads\": %lld, \"kv_heads\": %lld, \"dim\": %lld, \"dtype\": \"%s\", "
                   "\"batch\": %lld, \"seq\": %lld, \"s_sel\": %lld",
                (long long)s->shape.heads, (long long)s->shape.kv_heads, (long long)s->shape.dim,
                dtype_name(s->shape.dtype), (long long)s->batch, (long long)r->seq,
                (long long)r->s_sel);
        json_value(f, "lighthouse_fwd_ms", r->lh_fwd);
        json_value(f, "lighthouse_fwdbwd_ms", r->lh_fwdbwd);
        json_value(f, "floor_fwd_ms", r->floor_fwd);
        json_value(f, "floor_fwdbwd_ms", r->floor_fwdbwd);
        json_value(f, "fwd_over_floor", r->fwd_over_floor);
        json_value(f, "fwdbwd_over_floor", r->fwdbwd_over_floor);
        json_value(f, "dense_fwd_ms", r->dense_fwd);
        json_value(f, "dense_fwdbwd_ms", r->dense_fwdbwd);
        json_value(f, "lighthouse_plan_ms", s->lh_plan_ms);
        json_value(f, "floor_plan_ms", s->floor_plan_ms);
        fprintf(f, ", \"lighthouse_plan_cudnn_reused\": %lld, \"floor_plan_cudnn_reused\": %lld, "
                   "\"saved_bytes\": %lld",
                (long long)s->lh_reused, (long long)s->floor_reused, (long long)r->saved_bytes);
        if (r->lh_error) {
            fprintf(f, ", \"error\": \"");
            for (const char *c = r->lh_error; *c; c++)
                fprintf(f, *c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
            fprintf(f, "\"");
        }
        fprintf(f, "}%s\n", i + 1 < n ? "," : "");
    }
    fprintf(f, "]}\n");
    fclose(f);
    printf("wrote %s\n", o->json_path);
}

static void cell(double v, const char *fmt) {
    if (v < 0) printf(" %8s", "-");
    else printf(fmt, v);
}

static void print_table(const bench_options *o, const shape_row *rows, int n) {
    printf("\n== shape table: %s | L=%lld p=%lld topk=%lld | ms, median of %d (dense: of 3)\n",
           hd_gpu_name(), (long long)o->levels, (long long)o->pooling, (long long)o->topk,
           o->repeats);
    printf("(ratios to the floor: median over repeats of Lighthouse's time / the floor's, each pair "
           "back to back)\n");
    printf("%3s %3s %4s %4s %2s %8s %6s | %8s %8s %8s | %8s %8s %8s | %8s %8s %8s\n", "H", "Hkv",
           "D", "type", "B", "N", "S_sel", "LH fwd", "flr fwd", "fwd/flr", "LH f+b", "flr f+b",
           "f+b/flr", "dns fwd", "dns f+b", "dns/LH");
    for (int i = 0; i < n; i++) {
        const shape_row *s = &rows[i];
        const bench_row *r = &s->r;
        printf("%3lld %3lld %4lld %4s %2lld %8lld %6lld |", (long long)s->shape.heads,
               (long long)s->shape.kv_heads, (long long)s->shape.dim, dtype_name(s->shape.dtype),
               (long long)s->batch, (long long)r->seq, (long long)r->s_sel);
        cell(r->lh_fwd, " %8.2f"); cell(r->floor_fwd, " %8.2f"); cell(r->fwd_over_floor, " %8.3f");
        printf(" |");
        cell(r->lh_fwdbwd, " %8.2f"); cell(r->floor_fwdbwd, " %8.2f");
        cell(r->fwdbwd_over_floor, " %8.3f");
        printf(" |");
        cell(r->dense_fwd, " %8.2f"); cell(r->dense_fwdbwd, " %8.2f");
        cell(r->lh_fwdbwd > 0 && r->dense_fwdbwd > 0 ? r->dense_fwdbwd / r->lh_fwdbwd : -1.0,
             " %8.1f");
        printf("\n");
        if (r->lh_error) printf("    Lighthouse not run: %s\n", r->lh_error);
    }
}

int bench_shape_table(const bench_options *o, lh_context *ctx, double copy_gbs) {
    int nb = o->num_batches > 0 ? o->num_batches : 1, n = 0;
    shape_row *rows = calloc((size_t)(NUM_SHAPES * nb * o->num_seqs), sizeof *rows);
    if (!rows) return 1;
    /* start-up first, at the headline shape and the first N: the cold case is the process's
     * first plan */
    bench_options so = *o;
    so.heads = shapes[0].heads, so.kv_heads = shapes[0].kv_heads, so.dim = shapes[0].dim;
    so.dtype = shapes[0].dtype, so.batch = 1;
    startup_result startup[STARTUP_CASES];
    int64_t startup_seq = o->seqs[0];
    bench_startup(&so, startup_seq, startup);
    printf("\nplan start-up (lh_plan_finalize, Lighthouse, H=%lld Hkv=%lld D=%lld %s B=1 N=%lld), ms:\n"
           "cold = the process's first plan, empty kernel cache; disk = new context, kernels cached;\n"
           "memory = second plan of the cold plan's context; reused = cuDNN attention plans taken\n"
           "from the context\n",
           (long long)so.heads, (long long)so.kv_heads, (long long)so.dim, dtype_name(so.dtype),
           (long long)startup_seq);
    print_startup_header();
    print_startup_rows(startup_seq, startup);
    fflush(stdout);
    for (int s = 0; s < NUM_SHAPES; s++)
        for (int b = 0; b < nb; b++)
            for (int i = 0; i < o->num_seqs; i++) {
                shape_row *row = &rows[n++];
                bench_options ro = *o;
                ro.heads = shapes[s].heads, ro.kv_heads = shapes[s].kv_heads;
                ro.dim = shapes[s].dim, ro.dtype = shapes[s].dtype;
                ro.batch = o->num_batches > 0 ? o->batches[b] : o->batch;
                row->shape = shapes[s];
                row->batch = ro.batch;
                row->r.seq = o->seqs[i];
                printf("H=%lld Hkv=%lld D=%lld %s B=%lld N=%lld\n", (long long)ro.heads,
                       (long long)ro.kv_heads, (long long)ro.dim, dtype_name(ro.dtype),
                       (long long)ro.batch, (long long)row->r.seq);
                fflush(stdout);
                measure_row(&ro, ctx, row);
            }
    write_json(o, rows, n, copy_gbs, startup_seq, startup);
    print_table(o, rows, n);
    for (int i = 0; i < n; i++) free((char *)rows[i].r.lh_error);
    free(rows);
    return 0;
}
