/* bench_startup.c - what lh_plan_finalize of a Lighthouse plan costs, and where the time goes:
 * cold (a new context on an empty kernel cache; in the first row also the process's first plan,
 * which opens cuDNN), disk (a new context on the cache the cold plan filled: kernels from disk,
 * a new cuDNN handle, and the attention plans restored from the cold plan's stored records where
 * cuDNN serialises them, else built again), memory (a second plan in the cold plan's context: its cuDNN
 * handle and attention plans are the context's already). --startup-gap-ms puts a pause between
 * the cold plan's context and the plan. The breakdown comes from the plan
 * itself (LH_QUERY_SETUP_*); "other" is the rest of the call (validation, buffer table). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

static const char *const case_names[STARTUP_CASES] = {"cold", "disk", "memory"};
static const char *const phase_names[BENCH_SETUP_PHASES] = {
    "kernels", "cudnn_handle", "cudnn_graph", "cudnn_heuristics", "cudnn_plan"};

static void finalize_timed(lh_context *ctx, const bench_options *o, int64_t seq,
                           startup_result *r) {
    double t0 = hd_now();
    lh_plan *plan = bench_plan(ctx, o, seq, LH_MODE_LIGHTHOUSE);
    r->total_ms = plan ? (hd_now() - t0) * 1e3 : -1.0;
    for (int i = 0; i < BENCH_SETUP_PHASES; i++)
        r->phase_ms[i] = plan ? (double)bench_query(plan, LH_QUERY_SETUP_KERNELS_US + i) / 1e3 : -1.0;
    r->reused = plan ? bench_query(plan, LH_QUERY_SETUP_CUDNN_REUSED) : -1;
    lh_plan_destroy(plan);
}

static lh_context *context_on(const char *dir) {
    lh_context *ctx = NULL;
    if (lh_context_create(LH_BACKEND_CUDA, 0, &ctx) != LH_OK) return NULL;
    lh_context_set_str(ctx, LH_CONTEXT_CACHE_DIR, dir);
    return ctx;
}

void bench_startup(const bench_options *o, int64_t seq, startup_result out[STARTUP_CASES]) {
    for (int c = 0; c < STARTUP_CASES; c++) {
        out[c].total_ms = -1.0;
        out[c].reused = -1;
        for (int i = 0; i < BENCH_SETUP_PHASES; i++) out[c].phase_ms[i] = -1.0;
    }
    char dir[4096] = "/tmp/lh-bench-cache-XXXXXX";
    bool given = o->startup_cache != NULL;
    if (given) snprintf(dir, sizeof dir, "%s", o->startup_cache);
    else if (!mkdtemp(dir)) return;
    lh_context *ctx = context_on(dir);
    if (ctx) {
        /* what a training script does between creating the context and its first plan; the
         * context's own work in the background (cuDNN's libraries read ahead) continues */
        if (o->startup_gap_ms > 0) usleep((useconds_t)o->startup_gap_ms * 1000);
        finalize_timed(ctx, o, seq, &out[STARTUP_COLD]);
        finalize_timed(ctx, o, seq, &out[STARTUP_MEMORY]);
        lh_context_destroy(ctx);
    }
    if ((ctx = context_on(dir))) {
        finalize_timed(ctx, o, seq, &out[STARTUP_DISK]);
        lh_context_destroy(ctx);
    }
    if (given) return; /* the caller's, kept */
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "  could not remove %s\n", dir);
}

static void print_cell(double v) {
    if (v < 0) printf(" %9s", "-");
    else printf(" %9.1f", v);
}

void print_startup_header(void) {
    printf("%8s %-7s %9s %9s %9s %9s %9s %9s %9s %7s\n", "N", "case", "total ms", "kernels",
           "cudnn h.", "graph", "heurist.", "plans", "other", "reused");
}

void print_startup_rows(int64_t seq, const startup_result r[STARTUP_CASES]) {
    for (int c = 0; c < STARTUP_CASES; c++) {
        printf("%8lld %-7s", (long long)seq, case_names[c]);
        print_cell(r[c].total_ms);
        double other = r[c].total_ms;
        for (int i = 0; i < BENCH_SETUP_PHASES; i++) {
            print_cell(r[c].phase_ms[i]);
            if (r[c].phase_ms[i] > 0) other -= r[c].phase_ms[i];
        }
        print_cell(r[c].total_ms < 0 ? -1.0 : other);
        printf(" %7lld\n", (long long)r[c].reused);
    }
}

void json_startup(FILE *f, const startup_result r[STARTUP_CASES]) {
    fprintf(f, "\"startup\": {");
    for (int c = 0; c < STARTUP_CASES; c++) {
        fprintf(f, "\"%s\": {", case_names[c]);
        if (r[c].total_ms < 0) fprintf(f, "\"total_ms\": null");
        else fprintf(f, "\"total_ms\": %.3f", r[c].total_ms);
        for (int i = 0; i < BENCH_SETUP_PHASES; i++) {
            if (r[c].phase_ms[i] < 0) fprintf(f, ", \"%s_ms\": null", phase_names[i]);
            else fprintf(f, ", \"%s_ms\": %.3f", phase_names[i], r[c].phase_ms[i]);
        }
        fprintf(f, ", \"cudnn_reused\": %lld}%s", (long long)r[c].reused,
                c + 1 < STARTUP_CASES ? ", " : "");
    }
    fprintf(f, "}");
}
