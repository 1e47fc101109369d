/*
 * bench_scorer.c - the dilated scorer's extra cost (lighthouse-bench --dilated D): Lighthouse with
 * the dilated scorer against Lighthouse with the norm scorer at the same N, forward and
 * forward+backward, each pair of calls back to back (bench_pair_ms); and the scores stage of
 * each alone (LH_PARAM_STAGE_TIMING), where the difference lives: the dilated scorer's two
 * causal attentions over the N/D-token strided sequences of D*H heads (docs/spec.md section 10).
 */
#include <stdlib.h>

#include "bench.h"

/* The median time of the scores stage of `plan`'s forward (a plan with stage timing). */
static double scores_stage_ms(const bench_options *o, lh_plan *plan, int64_t seq) {
    double t[BENCH_MAX_REPEATS];
    int n = bench_repeats(o), got = 0;
    run_buffers r;
    if (buffers_alloc(o, plan, seq, &r) == 0) {
        r.backward = 0;
        int ok = 1;
        for (int i = 0; ok && i < o->warmup + n; i++) {
            double ms;
            ok = run_once(&r, i) == 0;
            if (ok && i >= o->warmup && lh_plan_get_stage_ms(plan, LH_STAGE_SCORES, &ms) == LH_OK) t[got++] = ms;
        }
    }
    buffers_free(&r);
    return got ? bench_median(t, got) : -1.0;
}

void bench_scorer(const bench_options *o, lh_context *ctx, int64_t seq, bench_row *row) {
    row->norm_fwd = row->dilated_fwd = row->norm_fwdbwd = row->dilated_fwdbwd = -1.0;
    row->norm_scores_ms = row->dilated_scores_ms = -1.0;
    bench_options no = *o, dil = *o;
    no.dilated_plans = 0;
    dil.dilated_plans = 1;
    lh_plan *norm = bench_plan(ctx, &no, seq, LH_MODE_LIGHTHOUSE);
    lh_plan *dilated = bench_plan(ctx, &dil, seq, LH_MODE_LIGHTHOUSE);
    run_buffers a = {0}, b = {0};
    int ok = norm && dilated && buffers_alloc(o, norm, seq, &a) == 0 && buffers_alloc(o, dilated, seq, &b) == 0;
    for (int backward = 0; ok && backward < 2; backward++) {
        a.backward = b.backward = backward;
        const bench_fn fns[2] = {run_once, run_once};
        void *const args[2] = {&a, &b};
        double ms[2];
        if (bench_pair_ms(o, fns, args, ms) != 0) {
            fprintf(stderr, "  scorers (N=%lld): %s\n", (long long)seq, lh_last_error());
            break;
        }
        *(backward ? &row->norm_fwdbwd : &row->norm_fwd) = ms[0];
        *(backward ? &row->dilated_fwdbwd : &row->dilated_fwd) = ms[1];
    }
    buffers_free(&a);
    buffers_free(&b);
    lh_plan_destroy(norm);
    lh_plan_destroy(dilated);
    /* the scores stage alone, through stage timing */
    no.stage_timing = dil.stage_timing = 1;
    norm = bench_plan(ctx, &no, seq, LH_MODE_LIGHTHOUSE);
    dilated = bench_plan(ctx, &dil, seq, LH_MODE_LIGHTHOUSE);
    if (norm) row->norm_scores_ms = scores_stage_ms(o, norm, seq);
    if (dilated) row->dilated_scores_ms = scores_stage_ms(o, dilated, seq);
    lh_plan_destroy(norm);
    lh_plan_destroy(dilated);
}

static void ms_or_dash(double v) {
    if (v < 0) printf(" %10s", "-");
    else printf(" %10.2f", v);
}

void bench_scorer_table(const bench_options *o, const bench_row *rows, int n) {
    printf("\n== dilated scorer (d = %lld) against the norm scorer | %s | ms, median of %d; pairs back to back\n",
           (long long)o->dilation, hd_gpu_name(), o->repeats);
    printf("%8s | %10s %10s %10s | %10s %10s %10s | %10s %10s\n", "N", "norm fwd", "dil fwd", "extra",
           "norm f+b", "dil f+b", "extra", "norm scr", "dil scr");
    for (int i = 0; i < n; i++) {
        const bench_row *r = &rows[i];
        printf("%8lld |", (long long)r->seq);
        ms_or_dash(r->norm_fwd), ms_or_dash(r->dilated_fwd);
        ms_or_dash(r->norm_fwd >= 0 && r->dilated_fwd >= 0 ? r->dilated_fwd - r->norm_fwd : -1.0);
        printf(" |");
        ms_or_dash(r->norm_fwdbwd), ms_or_dash(r->dilated_fwdbwd);
        ms_or_dash(r->norm_fwdbwd >= 0 && r->dilated_fwdbwd >= 0 ? r->dilated_fwdbwd - r->norm_fwdbwd : -1.0);
        printf(" |");
        ms_or_dash(r->norm_scores_ms), ms_or_dash(r->dilated_scores_ms);
        printf("\n");
    }
}

void bench_scorer_json(FILE *f, const bench_row *r) {
    if (r->norm_fwd < 0 && r->dilated_fwd < 0) return;
    double v[6] = {r->norm_fwd, r->dilated_fwd, r->norm_fwdbwd, r->dilated_fwdbwd, r->norm_scores_ms,
                   r->dilated_scores_ms};
    static const char *keys[6] = {"norm_scorer_fwd_ms", "dilated_scorer_fwd_ms", "norm_scorer_fwdbwd_ms",
                                  "dilated_scorer_fwdbwd_ms", "norm_scores_stage_ms", "dilated_scores_stage_ms"};
    for (int i = 0; i < 6; i++) {
        if (v[i] < 0) fprintf(f, "\"%s\": null, ", keys[i]);
        else fprintf(f, "\"%s\": %.6g, ", keys[i], v[i]);
    }
}
