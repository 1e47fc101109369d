/*
 * bench_cp_scaling.c - context-parallel scaling: one sequence of N tokens, forward + backward, on
 * one GPU (T1) and over rings of W ranks (T_W, the slowest rank), with how much of the ring's
 * communication stays exposed.
 *
 *   bench_cp_scaling [--mode=nccl|local] [--worlds=1,2,4,8] [--n=TOKENS] [--dense] [--iters=K]
 *                    [--heads=H] [--kv-heads=HKV] [--dim=D] [--levels=L] [--pooling=P]
 *                    [--topk=K] [--no-compute] [--cpu] [--null-nccl=PATH] [--json=FILE]
 *
 * Per W (W = 1: one plan without a ring over all N tokens, the baseline):
 *  - ring: --mode=nccl (default): W processes, one per GPU, one NCCL ring (not run where fewer
 *    than W GPUs exist); --mode=local: the W ranks as threads on GPU 0 (a functional check: they
 *    share one GPU, so this is not a scaling time).
 *  - compute: the same W-rank ring with every transfer skipped (libnccl_null.so in place of NCCL,
 *    one process per rank with no peers): each rank's computation alone, identical kernels and
 *    stream order. All W ranks at once, one per GPU, where W GPUs exist; else rank 0 alone on
 *    GPU 0 (every rank computes the same: 2W - 1 full and 2 causal block pairs on chunks of one
 *    size).
 *  - transfer (nccl): the ring's byte schedule alone on the same communicator, back to back.
 * Derived: speedup T1 / T_W (throughput against one GPU), efficiency T1 / (W T_W), compute
 * efficiency T1 / (W T_compute) (the ceiling without communication), exposed = T_W - T_compute
 * (communication and its interference not hidden behind computation), exposed / T_W, and
 * exposed / T_transfer (the share of the communication that is not hidden). Where the library
 * refuses T1 (a tensor of 2^31 elements or more), speedup and efficiency are relative to the
 * smallest W measured ("baseline_world" in the JSON).
 *
 * Defaults: Lighthouse, N = 1M, B = 1, H = Hkv = 8, D = 128, bf16, L = 3, p = 4, topk = 2048
 * (PERF.md), 5 timed runs after one warm-up. --cpu runs the CPU backend instead (fp32, the local
 * ring, one worker thread per rank; a scaling time only with at least W free cores).
 * Prints a line per W as it is measured and rewrites --json after each. NCCL_NVLS_ENABLE=0.
 */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench_cp.h"

#define MAX_WORLDS 8

typedef struct options {
    bench_cfg cfg;
    bool nccl, compute;
    int worlds[MAX_WORLDS], nworlds;
    const char *json;
    char null_lib[PATH_MAX];
    cp_gpus gpus;
} options;

/* One measurement over all its ranks. */
typedef struct agg {
    bool ran;
    int status;           /* worst rank_status */
    int ranks;            /* ranks that reported */
    double ms, min_ms, fwd_ms, bwd_ms, xfer_ms; /* slowest rank (its fwd/bwd split), fastest */
    int64_t chunk_entries, block_bytes;
    char note[400];       /* why it did not run or failed */
} agg;

typedef struct row {
    int world;
    agg ring, compute;
} row;

static const char *status_word(const agg *a) {
    if (!a->ran) return "not run";
    switch (a->status) {
    case RANK_OK: return "ok";
    case RANK_REFUSED: return "refused";
    case RANK_NO_MEMORY: return "no memory";
    default: return "failed";
    }
}

static agg measure(const options *o, bench_kind kind, int world, int processes) {
    bench_shared *sh = cp_shared_alloc(sizeof *sh);
    sh->cfg = o->cfg;
    sh->kind = kind;
    sh->world = world;
    sh->processes = processes;
    snprintf(sh->null_lib, sizeof sh->null_lib, "%s", o->null_lib);
    /* a rank whose peers died is killed a minute later rather than left in NCCL */
    int rc = cp_run_ranks(processes, bench_rank_main, sh, 60);
    agg a = {.ran = true, .min_ms = 1e300};
    int reporting = kind == BENCH_RING_LOCAL ? world : processes;
    /* the reason: the first rank that gave one, else the first that reported nothing */
    for (int pass = 0; pass < 2 && a.status == RANK_OK; pass++)
        for (int r = 0; r < reporting && a.status == RANK_OK; r++) {
            const rank_result *x = &sh->r[r];
            if (pass == 0 && x->status != RANK_OK) {
                a.status = x->status;
                snprintf(a.note, sizeof a.note, "rank %d: %s", r, x->msg);
            } else if (pass == 1 && x->ms <= 0) {
                a.status = RANK_FAILED;
                snprintf(a.note, sizeof a.note, "rank %d: %s", r,
                         rc == GPU_SKIP ? "no usable GPU" : "exited without a result (crashed or killed)");
            }
        }
    for (int r = 0; r < reporting; r++) {
        const rank_result *x = &sh->r[r];
        if (x->status != RANK_OK || x->ms <= 0) continue;
        a.ranks++;
        if (x->ms > a.ms) a.ms = x->ms, a.fwd_ms = x->fwd_ms, a.bwd_ms = x->bwd_ms;
        if (x->ms < a.min_ms) a.min_ms = x->ms;
        if (x->xfer_ms > a.xfer_ms) a.xfer_ms = x->xfer_ms;
        a.chunk_entries = x->chunk_entries;
        a.block_bytes = x->block_bytes;
    }
    munmap(sh, sizeof *sh);
    return a;
}

static agg not_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static agg not_run(const char *fmt, ...) {
    agg x = {.ran = false};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x.note, sizeof x.note, fmt, ap);
    va_end(ap);
    return x;
}

/* ---- derived numbers -------------------------------------------------------------------------- */

static bool ok(const agg *a) { return a->ran && a->status == RANK_OK && a->ms > 0; }

/* Whether a row's ring time is a scaling time: not for ranks that share one GPU (local mode on
 * CUDA). */
static bool scaling(const options *o, const row *x) {
    return x->world == 1 || o->nccl || o->cfg.backend == LH_BACKEND_CPU;
}

/* The baseline: W = 1 where it ran, else the smallest W whose ring ran as a scaling time. */
static const row *baseline(const options *o, const row *rows, int n) {
    for (int i = 0; i < n; i++)
        if (rows[i].world == 1 && ok(&rows[i].ring)) return &rows[i];
    for (int i = 0; i < n; i++)
        if (ok(&rows[i].ring) && scaling(o, &rows[i])) return &rows[i];
    return NULL;
}

typedef struct derived {
    double bytes, transfer_gbs, tokens_per_s, speedup, efficiency, compute_efficiency, exposed,
        exposed_share, unhidden;  /* NAN: not available */
} derived;

static derived derive(const options *o, const row *x, const row *base) {
    derived d = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    int W = x->world;
    int64_t es = o->cfg.dtype == LH_DTYPE_FLOAT32 ? 4 : 2;
    int64_t cb = x->ring.block_bytes ? x->ring.block_bytes : x->compute.block_bytes;
    /* per rank: 2(W-1) shifts of 4 K/V blocks, W shifts of 4 fp32 dK/dV blocks */
    if (W > 1 && cb > 0) d.bytes = (double)(W - 1) * 8 * cb + (double)W * 4 * (cb / es * 4);
    if (W > 1 && x->ring.xfer_ms > 0) d.transfer_gbs = d.bytes / (x->ring.xfer_ms * 1e-3) / 1e9;
    if (ok(&x->ring) && scaling(o, x)) d.tokens_per_s = (double)o->cfg.n / (x->ring.ms * 1e-3);
    if (!base) return d;
    double tb = base->ring.ms * base->world;
    if (ok(&x->ring) && scaling(o, x)) {
        d.speedup = base->ring.ms / x->ring.ms;
        d.efficiency = tb / (W * x->ring.ms);
    }
    if (ok(&x->compute) && W > 1) d.compute_efficiency = tb / (W * x->compute.ms);
    if (ok(&x->ring) && ok(&x->compute) && o->nccl && W > 1) {
        d.exposed = x->ring.ms - x->compute.ms;
        d.exposed_share = d.exposed / x->ring.ms;
        if (x->ring.xfer_ms > 0) d.unhidden = d.exposed / x->ring.xfer_ms;
    }
    return d;
}

/* ---- output ----------------------------------------------------------------------------------- */

static const char *dtype_name(lh_dtype t) {
    return t == LH_DTYPE_BFLOAT16 ? "bf16" : t == LH_DTYPE_FLOAT16 ? "fp16" : "fp32";
}

static void describe(const options *o, char *out, size_t cap) {
    const bench_cfg *c = &o->cfg;
    int n = snprintf(out, cap, "%s N=%lld B=%lld H=%lld Hkv=%lld D=%lld %s",
                     c->mode == LH_MODE_DENSE ? "dense" : "lighthouse", (long long)c->n,
                     (long long)c->batch, (long long)c->heads, (long long)c->kv_heads,
                     (long long)c->dim, dtype_name(c->dtype));
    if (c->mode == LH_MODE_LIGHTHOUSE && n > 0 && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, " L=%lld p=%lld topk=%lld", (long long)c->levels,
                 (long long)c->pooling, (long long)c->topk);
}

static void fmt_num(char *out, size_t cap, double v, const char *f) {
    if (isnan(v)) snprintf(out, cap, "%s", "-");
    else snprintf(out, cap, f, v);
}

static void print_row(const options *o, const row *x, const row *base) {
    derived d = derive(o, x, base);
    char ring[3][32], comp[3][32], xfer[32], exp[32], sp[32], eff[32], ceff[32], unh[32];
    const agg *aggs[2] = {&x->ring, &x->compute};
    char(*cells[2])[32] = {ring, comp};
    for (int a = 0; a < 2; a++) {
        bool good = ok(aggs[a]);
        double v[3] = {aggs[a]->ms, aggs[a]->fwd_ms, aggs[a]->bwd_ms};
        for (int k = 0; k < 3; k++) fmt_num(cells[a][k], 32, good ? v[k] : NAN, "%.2f");
        if (!good && (a == 0 || x->world > 1)) snprintf(cells[a][0], 32, "%s", status_word(aggs[a]));
    }
    fmt_num(xfer, sizeof xfer, x->ring.xfer_ms > 0 ? x->ring.xfer_ms : NAN, "%.2f");
    fmt_num(exp, sizeof exp, d.exposed, "%.2f");
    fmt_num(sp, sizeof sp, d.speedup, "%.2fx");
    fmt_num(eff, sizeof eff, d.efficiency, "%.3f");
    fmt_num(ceff, sizeof ceff, d.compute_efficiency, "%.3f");
    fmt_num(unh, sizeof unh, d.unhidden, "%.2f");
    printf("%2d %10s %9s %9s %10s %9s %9s %9s %9s %8s %6s %9s %9s\n", x->world, ring[0], ring[1],
           ring[2], comp[0], comp[1], comp[2], xfer, exp, sp, eff, ceff, unh);
    if (x->ring.note[0]) printf("    ring: %s\n", x->ring.note);
    if (!isnan(d.bytes)) {
        int64_t ce = x->ring.chunk_entries ? x->ring.chunk_entries : x->compute.chunk_entries;
        printf("    per rank: chunks of %lld entries, %.1f MB sent", (long long)ce, d.bytes / 1e6);
        if (!isnan(d.transfer_gbs))
            printf(", alone in %.2f ms (%.0f GB/s)", x->ring.xfer_ms, d.transfer_gbs);
        printf("\n");
    }
    if (o->compute && x->world > 1 && x->compute.note[0]) printf("    compute: %s\n", x->compute.note);
    fflush(stdout);
}

static void json_num(FILE *f, const char *key, double v, bool valid) {
    if (valid && !isnan(v)) fprintf(f, ", \"%s\": %.6g", key, v);
    else fprintf(f, ", \"%s\": null", key);
}

static void json_str(FILE *f, const char *key, const char *s) {
    fprintf(f, ", \"%s\": \"", key);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        if ((unsigned char)*s >= 0x20) fputc(*s, f);
    }
    fputc('"', f);
}

static void json_agg(FILE *f, const char *prefix, const agg *a) {
    char k[64];
    bool v = ok(a);
    snprintf(k, sizeof k, "%s_status", prefix), json_str(f, k, status_word(a));
    snprintf(k, sizeof k, "%s_note", prefix), json_str(f, k, a->note);
    snprintf(k, sizeof k, "%s_ms", prefix), json_num(f, k, a->ms, v);
    snprintf(k, sizeof k, "%s_fwd_ms", prefix), json_num(f, k, a->fwd_ms, v);
    snprintf(k, sizeof k, "%s_bwd_ms", prefix), json_num(f, k, a->bwd_ms, v);
    snprintf(k, sizeof k, "%s_min_ms", prefix), json_num(f, k, a->min_ms, v);
    snprintf(k, sizeof k, "%s_ranks", prefix), json_num(f, k, a->ranks, a->ran);
}

static void write_json(const options *o, const row *rows, int n) {
    if (!o->json) return;
    FILE *f = fopen(o->json, "w");
    if (!f) {
        fprintf(stderr, "bench_cp_scaling: cannot write %s\n", o->json);
        return;
    }
    const bench_cfg *c = &o->cfg;
    const row *base = baseline(o, rows, n);
    fprintf(f, "{\"program\": \"bench_cp_scaling\"");
    json_str(f, "gpu", o->cfg.backend == LH_BACKEND_CPU ? "CPU" : o->gpus.name);
    json_num(f, "gpus", o->gpus.count, true);
    json_str(f, "backend", c->backend == LH_BACKEND_CPU ? "cpu" : "cuda");
    json_str(f, "transport", o->nccl ? "nccl" : "local");
    json_num(f, "baseline_world", base ? base->world : 0, base != NULL);
    fprintf(f, ",\n \"config\": {\"mode\": \"%s\", \"seq\": %lld, \"batch\": %lld, \"heads\": %lld, "
               "\"kv_heads\": %lld, \"dim\": %lld, \"dtype\": \"%s\", \"levels\": %lld, "
               "\"pooling\": %lld, \"topk\": %lld, \"iters\": %d},\n \"rows\": [",
            c->mode == LH_MODE_DENSE ? "dense" : "lighthouse", (long long)c->n, (long long)c->batch,
            (long long)c->heads, (long long)c->kv_heads, (long long)c->dim, dtype_name(c->dtype),
            (long long)c->levels, (long long)c->pooling, (long long)c->topk, c->iters);
    for (int i = 0; i < n; i++) {
        const row *x = &rows[i];
        derived d = derive(o, x, base);
        fprintf(f, "%s\n  {\"world\": %d", i ? "," : "", x->world);
        json_agg(f, "ring", &x->ring);
        json_agg(f, "compute", &x->compute);
        json_num(f, "transfer_ms", x->ring.xfer_ms, x->ring.xfer_ms > 0);
        int64_t ce = x->ring.chunk_entries ? x->ring.chunk_entries : x->compute.chunk_entries;
        int64_t bb = x->ring.block_bytes ? x->ring.block_bytes : x->compute.block_bytes;
        json_num(f, "chunk_entries", (double)ce, ce > 0);
        json_num(f, "kv_block_bytes", (double)bb, bb > 0 && x->world > 1);
        const char *keys[] = {"bytes_per_rank", "transfer_gbs", "tokens_per_s", "speedup",
                              "efficiency", "compute_efficiency", "exposed_ms", "exposed_share",
                              "unhidden_transfer_share"};
        double vals[] = {d.bytes, d.transfer_gbs, d.tokens_per_s, d.speedup, d.efficiency,
                         d.compute_efficiency, d.exposed, d.exposed_share, d.unhidden};
        for (int k = 0; k < 9; k++) json_num(f, keys[k], vals[k], true);
        fprintf(f, "}");
    }
    fprintf(f, "\n]}\n");
    fclose(f);
}

/* ---- arguments ---------------------------------------------------------------------------------- */

static bool parse_worlds(const char *s, options *o) {
    o->nworlds = 0;
    while (*s) {
        char *end;
        long w = strtol(s, &end, 10);
        if (end == s || w < 1 || w > CP_MAX_RANKS || o->nworlds == MAX_WORLDS) return false;
        o->worlds[o->nworlds++] = (int)w;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return false;
    }
    return o->nworlds > 0;
}

/* libnccl_null.so beside this program (where the build and scripts/gpu_pack.sh put it). */
static void default_null_lib(options *o) {
    static const char name[] = "libnccl_null.so";
    ssize_t n = readlink("/proc/self/exe", o->null_lib, sizeof o->null_lib - sizeof name);
    if (n <= 0) return;
    o->null_lib[n] = 0;
    char *slash = strrchr(o->null_lib, '/');
    memcpy(slash ? slash + 1 : o->null_lib, name, sizeof name);
}

static int usage(void) {
    fprintf(stderr, "usage: bench_cp_scaling [--mode=nccl|local] [--worlds=1,2,4,8] [--n=TOKENS] "
                    "[--dense] [--iters=K] [--heads=H] [--kv-heads=HKV] [--dim=D] [--levels=L] "
                    "[--pooling=P] [--topk=K] [--no-compute] [--cpu] [--null-nccl=PATH] "
                    "[--json=FILE]\n");
    return 2;
}

static bool parse(int argc, char **argv, options *o) {
    bench_cfg *c = &o->cfg;
    *c = (bench_cfg){LH_BACKEND_CUDA, LH_MODE_LIGHTHOUSE, LH_DTYPE_BFLOAT16, 1 << 20, 1, 8, 0, 128,
                     3, 4, 2048, 5};
    o->nccl = o->compute = true;
    parse_worlds("1,2,4,8", o);
    default_null_lib(o);
    const struct { const char *name; int64_t *slot; } ints[] = {
        {"--n=", &c->n},         {"--heads=", &c->heads},     {"--kv-heads=", &c->kv_heads},
        {"--dim=", &c->dim},     {"--levels=", &c->levels},   {"--pooling=", &c->pooling},
        {"--topk=", &c->topk},
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool known = false;
        for (size_t k = 0; k < sizeof ints / sizeof ints[0] && !known; k++)
            if (strncmp(a, ints[k].name, strlen(ints[k].name)) == 0)
                *ints[k].slot = atoll(a + strlen(ints[k].name)), known = true;
        if (known) continue;
        if (strcmp(a, "--mode=nccl") == 0) o->nccl = true;
        else if (strcmp(a, "--mode=local") == 0) o->nccl = false;
        else if (strncmp(a, "--worlds=", 9) == 0) {
            if (!parse_worlds(a + 9, o)) return false;
        } else if (strcmp(a, "--dense") == 0) c->mode = LH_MODE_DENSE;
        else if (strncmp(a, "--iters=", 8) == 0) c->iters = atoi(a + 8);
        else if (strcmp(a, "--no-compute") == 0) o->compute = false;
        else if (strcmp(a, "--cpu") == 0) c->backend = LH_BACKEND_CPU;
        else if (strncmp(a, "--null-nccl=", 12) == 0) snprintf(o->null_lib, sizeof o->null_lib, "%s", a + 12);
        else if (strncmp(a, "--json=", 7) == 0) o->json = a + 7;
        else return false;
    }
    if (c->kv_heads == 0) c->kv_heads = c->heads;
    if (c->iters < 1 || c->iters > 15) return false;
    if (c->backend == LH_BACKEND_CPU) {
        c->dtype = LH_DTYPE_FLOAT32;
        o->nccl = false; /* the CPU backend has local rings only */
        o->compute = false;
    }
    return true;
}

int main(int argc, char **argv) {
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    setvbuf(stdout, NULL, _IOLBF, 0);
    options o = {0};
    if (!parse(argc, argv, &o)) return usage();
    bool cpu = o.cfg.backend == LH_BACKEND_CPU;
    if (cpu) {
        o.gpus.count = 0;
        snprintf(o.gpus.name, sizeof o.gpus.name, "CPU (%ld cores)", sysconf(_SC_NPROCESSORS_ONLN));
    } else {
        /* counted in a child: this process never initialises CUDA, so it may fork the ranks */
        o.gpus = cp_probe_gpus("bench_cp_scaling");
        if (o.gpus.count == 0) return GPU_SKIP;
    }
    bool have_null = access(o.null_lib, R_OK) == 0;
    char what[200];
    describe(&o, what, sizeof what);
    printf("bench_cp_scaling: %s, forward+backward, %s x%d, ring %s; median of %d runs\n", what,
           o.gpus.name, cpu ? 1 : o.gpus.count,
           cpu ? "local (CPU backend, one thread per rank)"
           : o.nccl ? "over NCCL, one process per GPU" : "in-process on GPU 0 (not a scaling time)",
           o.cfg.iters);
    printf("%2s %10s %9s %9s %10s %9s %9s %9s %9s %8s %6s %9s %9s\n", "W", "ring ms", "fwd",
           "bwd", "compute ms", "fwd", "bwd", "transfer", "exposed", "speedup", "eff", "comp eff",
           "unhidden");
    row rows[MAX_WORLDS];
    int n = 0;
    for (int i = 0; i < o.nworlds; i++) {
        int W = o.worlds[i];
        row *x = &rows[n++];
        *x = (row){.world = W};
        if (W == 1) {
            x->ring = measure(&o, BENCH_SINGLE, 1, 1);
        } else {
            if (!o.nccl) x->ring = measure(&o, BENCH_RING_LOCAL, W, 1);
            else if (W <= o.gpus.count) x->ring = measure(&o, BENCH_RING_NCCL, W, W);
            else x->ring = not_run("needs %d GPUs (%d here)", W, o.gpus.count);
            if (!o.compute) x->compute = not_run("%s", cpu ? "the CPU backend has no NCCL" : "--no-compute");
            else if (!have_null) x->compute = not_run("%s not found (--null-nccl=PATH)", o.null_lib);
            else x->compute = measure(&o, BENCH_RING_NULL, W, W <= o.gpus.count ? W : 1);
        }
        print_row(&o, x, baseline(&o, rows, n));
        write_json(&o, rows, n);
    }
    const row *base = baseline(&o, rows, n);
    if (base && base->world != 1)
        printf("note: no W = 1 time; speedup and efficiency are relative to W = %d\n", base->world);
    if (o.json) printf("wrote %s\n", o.json);
    for (int i = 0; i < n; i++)
        if (rows[i].ring.ran && rows[i].ring.status == RANK_FAILED) return 1;
    return 0;
}
