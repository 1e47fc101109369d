/*
 * test_compiler_timing.c - how long a plan's kernels take: cold (MLIR runs) and warm (a new
 * cache loads them from disk, as a new process would), one by one and side by side
 * (lhc_compile_requests, one thread per online core). Prints numbers, asserts nothing about
 * them (timings belong in docs/compiler.md, not in pass/fail).
 *
 *   test_compiler timing [chip]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "compiler.h"
#include "runtime.h"
#include "test_compiler_util.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Compiles every kernel of `pp` through a new cache at `dir`: one by one, printing each
 * kernel's time (side_by_side 0), or through lhc_compile_requests with one thread per online
 * core (1). Returns seconds, -1 on error. */
static double compile_plan(const char *dir, const lhc_plan_params *pp, const char *chip,
                           int side_by_side) {
    lhc_kernel_request req[LHC_MAX_PLAN_KERNELS];
    const lhc_kernel *out[LHC_MAX_PLAN_KERNELS];
    int n = 0;
    lhc_cache *cache = NULL;
    double t0 = now_s();
    lh_status st = lhc_plan_kernels(pp, req, &n);
    if (st == LH_OK) st = lhc_cache_create(&cache);
    if (st == LH_OK) st = lhc_cache_set_dir(cache, dir);
    if (st == LH_OK && side_by_side) st = lhc_compile_requests(cache, req, n, chip, 0, out, NULL);
    for (int i = 0; i < n && st == LH_OK && !side_by_side; i++) {
        double t1 = now_s();
        st = lhc_compile(cache, req[i].kernel, req[i].constants, chip, &out[i]);
        if (st == LH_OK)
            printf("  %-16s %8.2f ms  %zu bytes of PTX\n", req[i].kernel, (now_s() - t1) * 1e3,
                   out[i]->ptx_size);
    }
    if (st != LH_OK) printf("error: %s\n", lh_error_message());
    lhc_cache_destroy(cache);
    return st == LH_OK ? now_s() - t0 : -1;
}

int run_timing(void) {
    const char *chip = "sm_90";
    if (!lhc_available()) {
        printf("timing: built without the compiler, skipped\n");
        return 77;
    }
    char dir[1024];
    if (make_temp_dir(dir, sizeof dir) != 0) return 1;
    lhc_plan_params pp = {.pooling = 4, .levels = 3, .head_dim = 128, .dtype = "bf16"};
    printf("plan p=4 L=3 D=128 bf16, chip %s\ncold (first compile in this process, MLIR runs):\n", chip);
    double cold = compile_plan(dir, &pp, chip, 0);
    printf("warm (new cache, entries read from disk):\n");
    double warm = compile_plan(dir, &pp, chip, 0);
    /* a second cold compile in the same process: MLIR's one-time set-up already paid */
    char dir2[1024];
    if (make_temp_dir(dir2, sizeof dir2) != 0) return 1;
    printf("cold again (other directory, same process):\n");
    double cold2 = compile_plan(dir2, &pp, chip, 0);
    char dir3[1024];
    if (make_temp_dir(dir3, sizeof dir3) != 0) return 1;
    double side = compile_plan(dir3, &pp, chip, 1);
    printf("plan total: cold %.1f ms, cold again %.1f ms, cold side by side (%ld cores) %.1f ms, "
           "warm %.3f ms\n", cold * 1e3, cold2 * 1e3, sysconf(_SC_NPROCESSORS_ONLN), side * 1e3,
           warm * 1e3);
    remove_temp_dir(dir);
    remove_temp_dir(dir2);
    remove_temp_dir(dir3);
    return cold < 0 || warm < 0 || cold2 < 0 || side < 0;
}
