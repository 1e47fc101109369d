/*
 * lighthouse-compile - pre-compiles the GPU kernels of one plan configuration into the kernel
 * cache, on any machine (no GPU needed: a login node, a container build), so that the first
 * lh_plan_finalize of a training job loads its kernels instead of compiling them.
 *
 *   lighthouse-compile [--chip sm_90[,sm_100a...] | --device FILE] [--head-dim 128]
 *                      [--dtype bf16|f16] [--pooling 4] [--levels 3] [--heads 1]
 *                      [--kv-heads HEADS] [--mode lighthouse|dense] [--seq-len N[,N...]]
 *                      [--batch 1]
 *                      [--topk 2048] [--layout bnhd|bhnd] [--cache-dir DIR] [--threads N]
 *   lighthouse-compile --save-device FILE     (on the GPU: describes it for --device)
 *
 * A thin command line over lh_plan_precompile and lh_plan_precompile_device (lighthouse.h): a
 * CPU context, a plan with the given parameters, one call per chip, or one for the described
 * GPU, which also builds cuDNN's attention plans (and so needs --seq-len and the plan's other
 * parameters, as lh_plan_finalize does, and the NVIDIA driver's library: cuDNN has the driver
 * compile its engines, with or without a GPU). The kernels compile side by side on the
 * context's worker threads (--threads: LH_CONTEXT_NUM_THREADS; 0, the default, is one per online
 * core). The cache directory defaults as in the library (LIGHTHOUSE_CACHE_DIR, else
 * $XDG_CACHE_HOME/liblighthouse, else ~/.cache/liblighthouse).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lighthouse.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: lighthouse-compile [--chip sm_90[,sm_100a...] | --device FILE] [--head-dim 128]\n"
            "                          [--dtype bf16|f16] [--pooling 4] [--levels 3] [--heads 1]\n"
            "                          [--kv-heads HEADS] [--mode lighthouse|dense]\n"
            "                          [--seq-len N[,N...]]\n"
            "                          [--batch 1] [--topk 2048] [--layout bnhd|bhnd]\n"
            "                          [--cache-dir DIR] [--threads N]\n"
            "       lighthouse-compile --save-device FILE\n"
            "Compiles the GPU kernels that CUDA plans with these parameters load into the kernel\n"
            "cache (default: $LIGHTHOUSE_CACHE_DIR, else $XDG_CACHE_HOME/liblighthouse, else\n"
            "~/.cache/liblighthouse). Only HEAD_DIM, DTYPE, POOLING, LEVELS, HEADS / KV_HEADS and\n"
            "MODE change the kernels. They compile side by side on N threads (0, the default:\n"
            "one per online core). No GPU needed.\n"
            "--device FILE: for the GPU that FILE describes, the kernels and cuDNN's attention\n"
            "plans, which depend on every parameter (--seq-len is required; a list builds\n"
            "each length's). No GPU needed,\n"
            "but cuDNN needs the NVIDIA driver's libcuda.so.1 (CUDA_VISIBLE_DEVICES= on a GPU\n"
            "machine hides its GPUs).\n"
            "--save-device FILE: on a GPU, writes its description for --device.\n");
}

/* A whole decimal number in [lo, hi], or -1 with a message. */
static long long parse_int(const char *option, const char *text, long long lo, long long hi) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi) {
        fprintf(stderr, "lighthouse-compile: %s wants a whole number in %lld..%lld (got '%s')\n",
                option, lo, hi, text);
        return -1;
    }
    return v;
}

#define INT_PARAMS 7
#define MAX_SEQ_LENS 16
typedef struct options {
    const char *chips, *cache_dir, *device, *save_device;
    int64_t param[INT_PARAMS]; /* as int_params; 0 = the plan's default */
    int64_t seq_lens[MAX_SEQ_LENS]; /* --seq-len N[,N...]: one set of cuDNN plans per length */
    int num_seq_lens;
    int64_t threads;  /* LH_CONTEXT_NUM_THREADS */
    lh_dtype dtype;
    lh_mode mode;
    lh_layout layout;
} options;

static const lh_param int_params[INT_PARAMS] = {
    LH_PARAM_HEAD_DIM, LH_PARAM_POOLING, LH_PARAM_LEVELS, LH_PARAM_HEADS,
    LH_PARAM_KV_HEADS, LH_PARAM_BATCH,   LH_PARAM_TOPK};
static const char *const int_options[INT_PARAMS] = {"--head-dim", "--pooling", "--levels",
                                                    "--heads",    "--kv-heads", "--batch",
                                                    "--topk"};

/* --seq-len N[,N...]: a job that trains at several lengths has cuDNN plans for each. */
static int parse_seq_lens(const char *v, options *o) {
    char list[512];
    snprintf(list, sizeof list, "%s", v);
    o->num_seq_lens = 0;
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->num_seq_lens == MAX_SEQ_LENS) {
            fprintf(stderr, "lighthouse-compile: --seq-len takes at most %d lengths\n",
                    MAX_SEQ_LENS);
            return 2;
        }
        long long x = parse_int("--seq-len", t, 1, (long long)1 << 40);
        if (x < 0) return 2;
        o->seq_lens[o->num_seq_lens++] = x;
    }
    if (o->num_seq_lens == 0) {
        fprintf(stderr, "lighthouse-compile: --seq-len wants one length or more (got '%s')\n", v);
        return 2;
    }
    return 0;
}

/* 0 or 1: which of the two names `text` is; -1 (with a message) for neither. */
static int parse_choice(const char *option, const char *text, const char *first, const char *second) {
    if (!strcmp(text, first)) return 0;
    if (!strcmp(text, second)) return 1;
    fprintf(stderr, "lighthouse-compile: %s is %s or %s (got '%s')\n", option, first, second, text);
    return -1;
}

/* One option `a` with its value `v`: 0 when taken, 2 on a usage error (printed). */
static int parse_option(const char *a, const char *v, options *o) {
    for (int p = 0; p < INT_PARAMS; p++) {
        if (strcmp(a, int_options[p]) != 0) continue;
        long long x = parse_int(a, v, 1, (long long)1 << 40);
        if (x < 0) return 2;
        o->param[p] = x;
        return 0;
    }
    int choice = 0;
    if (!strcmp(a, "--seq-len")) {
        return parse_seq_lens(v, o);
    } else if (!strcmp(a, "--chip")) {
        o->chips = v;
    } else if (!strcmp(a, "--device")) {
        o->device = v;
    } else if (!strcmp(a, "--save-device")) {
        o->save_device = v;
    } else if (!strcmp(a, "--layout")) {
        if ((choice = parse_choice(a, v, "bnhd", "bhnd")) < 0) return 2;
        o->layout = choice ? LH_LAYOUT_BHND : LH_LAYOUT_BNHD;
    } else if (!strcmp(a, "--threads")) {
        long long x = parse_int(a, v, 0, 256);
        if (x < 0) return 2;
        o->threads = x;
    } else if (!strcmp(a, "--cache-dir")) {
        o->cache_dir = v;
    } else if (!strcmp(a, "--dtype")) {
        if ((choice = parse_choice(a, v, "bf16", "f16")) < 0) return 2;
        o->dtype = choice ? LH_DTYPE_FLOAT16 : LH_DTYPE_BFLOAT16;
    } else if (!strcmp(a, "--mode")) {
        if ((choice = parse_choice(a, v, "lighthouse", "dense")) < 0) return 2;
        o->mode = choice ? LH_MODE_DENSE : LH_MODE_LIGHTHOUSE;
    } else {
        usage(stderr);
        return 2;
    }
    return 0;
}

/* 0: parsed; 1: --help printed; 2: a usage error (printed). */
static int parse(int argc, char **argv, options *o) {
    *o = (options){.chips = "sm_90", .param = {128, 0, 0, 1, 0, 0, 0},
                   .dtype = LH_DTYPE_BFLOAT16, .mode = LH_MODE_LIGHTHOUSE,
                   .layout = LH_LAYOUT_BNHD};
    for (int i = 1; i < argc; i += 2) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 1;
        }
        if (i + 1 == argc) { /* every other option takes a value */
            usage(stderr);
            return 2;
        }
        int rc = parse_option(argv[i], argv[i + 1], o);
        if (rc) return rc;
    }
    return 0;
}

static lh_status make_plan(const options *o, lh_context **ctx, lh_plan **plan) {
    lh_status st = lh_context_create(LH_BACKEND_CPU, 0, ctx);
    if (st == LH_OK && o->cache_dir) st = lh_context_set_str(*ctx, LH_CONTEXT_CACHE_DIR, o->cache_dir);
    if (st == LH_OK) st = lh_context_set_i64(*ctx, LH_CONTEXT_NUM_THREADS, o->threads);
    if (st == LH_OK) st = lh_plan_create(*ctx, plan);
    for (int p = 0; p < INT_PARAMS && st == LH_OK; p++)
        if (o->param[p] > 0) st = lh_plan_set_i64(*plan, int_params[p], o->param[p]);
    if (st == LH_OK) st = lh_plan_set_i64(*plan, LH_PARAM_DTYPE, o->dtype);
    if (st == LH_OK) st = lh_plan_set_i64(*plan, LH_PARAM_MODE, o->mode);
    if (st == LH_OK) st = lh_plan_set_i64(*plan, LH_PARAM_LAYOUT, o->layout);
    return st; /* SEQ_LEN: per length, in for_device (the kernels do not depend on it) */
}

/* --save-device: the description of GPU 0 (CUDA_VISIBLE_DEVICES picks another). */
static int save_device(const char *path) {
    lh_context *ctx = NULL;
    lh_status st = lh_context_create(LH_BACKEND_CUDA, 0, &ctx);
    if (st == LH_OK) st = lh_context_save_device(ctx, path);
    if (st != LH_OK) fprintf(stderr, "lighthouse-compile: %s\n", lh_last_error());
    else printf("%s: the description of this GPU, for lighthouse-compile --device\n", path);
    lh_context_destroy(ctx);
    return st != LH_OK;
}

/* --device: the kernels and cuDNN's attention plans for the described GPU, per length (without
 * --seq-len the call itself says that SEQ_LEN is missing). */
static int for_device(lh_plan *plan, const options *o) {
    for (int i = 0; i < (o->num_seq_lens ? o->num_seq_lens : 1); i++) {
        int64_t kernels = 0, plans = 0;
        double t0 = now_seconds();
        if ((o->num_seq_lens &&
             lh_plan_set_i64(plan, LH_PARAM_SEQ_LEN, o->seq_lens[i]) != LH_OK) ||
            lh_plan_precompile_device(plan, o->device, &kernels, &plans) != LH_OK) {
            fprintf(stderr, "lighthouse-compile: %s\n", lh_last_error());
            return 1;
        }
        printf("%s, N = %lld: %lld kernel(s) compiled, %lld cuDNN plan(s) built into the cache "
               "(%.1f ms)\n", o->device, (long long)o->seq_lens[i],
               (long long)kernels, (long long)plans, (now_seconds() - t0) * 1e3);
    }
    return 0;
}

int main(int argc, char **argv) {
    options o;
    int parsed = parse(argc, argv, &o);
    if (parsed) return parsed == 1 ? 0 : 2;
    if (o.save_device) return save_device(o.save_device);
    lh_context *ctx = NULL;
    lh_plan *plan = NULL;
    int failed = 0;
    if (make_plan(&o, &ctx, &plan) != LH_OK) {
        fprintf(stderr, "lighthouse-compile: %s\n", lh_last_error());
        failed = 1;
    }
    if (!failed)
        printf("kernel cache: %s\n", o.cache_dir ? o.cache_dir
                                                 : "the default ($LIGHTHOUSE_CACHE_DIR, else "
                                                   "$XDG_CACHE_HOME/liblighthouse, else "
                                                   "~/.cache/liblighthouse)");
    if (!failed && o.device) {
        failed = for_device(plan, &o);
        o.chips = "";
    }
    char chips[256];
    snprintf(chips, sizeof chips, "%s", o.chips);
    for (char *save = NULL, *chip = strtok_r(chips, ",", &save); chip && !failed;
         chip = strtok_r(NULL, ",", &save)) {
        int64_t compiled = 0;
        double t0 = now_seconds();
        if (lh_plan_precompile(plan, chip, &compiled) != LH_OK) {
            fprintf(stderr, "lighthouse-compile: %s\n", lh_last_error());
            failed = 1;
            break;
        }
        double ms = (now_seconds() - t0) * 1e3;
        if (compiled) printf("%s: %lld kernel(s) compiled into the cache (%.1f ms)\n", chip, (long long)compiled, ms);
        else printf("%s: every kernel was in the cache already (%.1f ms)\n", chip, ms);
    }
    lh_plan_destroy(plan);
    lh_context_destroy(ctx);
    return failed;
}
