/*
 * lighthouse-compile - pre-compiles the GPU kernels of one configuration into the kernel cache.
 *
 *   lighthouse-compile [--chip sm_90] [--pooling 4] [--levels 3] [--head-dim 128] [--dtype bf16]
 *                      [--kv-group 1]          (H / Hkv of the plans: the backward fixes it)
 *                      [--cache-dir DIR] [--ptx-out DIR]
 *
 * Prints one line per kernel: its constants, whether it was compiled or already cached, how
 * long that took, and the PTX size. The cache directory defaults as in the library
 * ($LIGHTHOUSE_CACHE_DIR, $XDG_CACHE_HOME/liblighthouse, ~/.cache/liblighthouse), and the
 * library finds the kernels there because both ask the compiler for the same constants.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compiler.h"
#include "runtime.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f) {
    fprintf(f, "usage: lighthouse-compile [--chip sm_90] [--pooling 4] [--levels 3] [--head-dim 128]\n"
               "                          [--dtype bf16|f16] [--kv-group 1] [--cache-dir DIR] [--ptx-out DIR]\n"
               "Compiles the GPU kernels of one configuration into the kernel cache.\n");
}

static int write_ptx(const char *dir, const char *kernel, const lhc_kernel *k) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.ptx", dir, kernel);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(k->ptx, 1, k->ptx_size, f) != k->ptx_size) {
        if (f) fclose(f);
        fprintf(stderr, "lighthouse-compile: cannot write %s\n", path);
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *chip = "sm_90", *dtype = "bf16", *cache_dir = NULL, *ptx_out = NULL;
    int pooling = 4, levels = 3, head_dim = 128, group = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            usage(stderr);
            return 2;
        }
        if (!strcmp(a, "--chip")) chip = v;
        else if (!strcmp(a, "--pooling")) pooling = atoi(v);
        else if (!strcmp(a, "--levels")) levels = atoi(v);
        else if (!strcmp(a, "--head-dim")) head_dim = atoi(v);
        else if (!strcmp(a, "--dtype")) dtype = v;
        else if (!strcmp(a, "--kv-group")) group = atoi(v);
        else if (!strcmp(a, "--cache-dir")) cache_dir = v;
        else if (!strcmp(a, "--ptx-out")) ptx_out = v;
        else {
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!lhc_available()) {
        fprintf(stderr, "lighthouse-compile: built with LH_WITH_COMPILER=OFF, nothing can be compiled\n");
        return 1;
    }
    lhc_kernel_request req[LHC_MAX_PLAN_KERNELS];
    int n = 0;
    lhc_plan_params params = {.pooling = pooling, .levels = levels, .head_dim = head_dim, .dtype = dtype,
                             .group = group};
    lhc_cache *cache = NULL;
    if (lhc_plan_kernels(&params, req, &n) != LH_OK || lhc_cache_create(&cache) != LH_OK ||
        lhc_cache_set_dir(cache, cache_dir) != LH_OK) {
        fprintf(stderr, "lighthouse-compile: %s\n", lh_error_message());
        lhc_cache_destroy(cache);
        return 1;
    }
    printf("kernel cache %s, chip %s\n", lhc_cache_dir(cache), chip);
    int failed = 0;
    double total = 0;
    for (int i = 0; i < n; i++) {
        lhc_cache_stats before, after;
        lhc_cache_get_stats(cache, &before);
        const lhc_kernel *k = NULL;
        double t0 = now_seconds();
        lh_status st = lhc_compile(cache, req[i].kernel, req[i].constants, chip, &k);
        double dt = now_seconds() - t0;
        total += dt;
        lhc_cache_get_stats(cache, &after);
        if (st != LH_OK) {
            printf("%-16s %-60s FAILED: %s\n", req[i].kernel, req[i].constants, lh_error_message());
            failed = 1;
            continue;
        }
        const char *how = after.compiles > before.compiles ? "compiled" : "cached";
        char entries[512] = "";
        for (int e = 0; e < k->num_entries; e++)
            snprintf(entries + strlen(entries), sizeof entries - strlen(entries), "%s%s", e ? "," : "", k->entries[e]);
        printf("%-16s %-60s %-8s %8.1f ms  %7zu bytes PTX  %s\n", req[i].kernel, req[i].constants, how, dt * 1e3,
               k->ptx_size, entries);
        if (after.disk_errors > before.disk_errors)
            printf("  warning: could not write the entry to %s\n", lhc_cache_dir(cache));
        if (ptx_out && write_ptx(ptx_out, req[i].kernel, k) != 0) failed = 1;
    }
    printf("%d kernels in %.1f ms\n", n, total * 1e3);
    lhc_cache_destroy(cache);
    return failed;
}
