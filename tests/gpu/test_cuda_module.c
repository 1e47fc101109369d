/*
 * test_cuda_module.c - the PTX module loader (runtime/cuda/cuda_module.c): a hand-written PTX
 * kernel (y = a*x + y) is JIT-loaded, launched on a stream and checked; malformed PTX and a
 * missing kernel name give clean errors with the JIT's log.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_module.h"
#include "gpu_common.h"

static const char saxpy_ptx[] =
    ".version 7.0\n"
    ".target sm_80\n"
    ".address_size 64\n"
    ".visible .entry saxpy(.param .u64 px, .param .u64 py, .param .f32 pa, .param .u32 pn)\n"
    "{\n"
    "  .reg .pred %p;\n"
    "  .reg .b32 %r<6>;\n"
    "  .reg .f32 %f<4>;\n"
    "  .reg .b64 %rd<8>;\n"
    "  ld.param.u64 %rd1, [px];\n"
    "  ld.param.u64 %rd2, [py];\n"
    "  ld.param.f32 %f1, [pa];\n"
    "  ld.param.u32 %r1, [pn];\n"
    "  mov.u32 %r2, %ctaid.x;\n"
    "  mov.u32 %r3, %ntid.x;\n"
    "  mov.u32 %r4, %tid.x;\n"
    "  mad.lo.s32 %r5, %r2, %r3, %r4;\n"
    "  setp.ge.u32 %p, %r5, %r1;\n"
    "  @%p bra DONE;\n"
    "  cvta.to.global.u64 %rd3, %rd1;\n"
    "  cvta.to.global.u64 %rd4, %rd2;\n"
    "  mul.wide.u32 %rd5, %r5, 4;\n"
    "  add.s64 %rd6, %rd3, %rd5;\n"
    "  add.s64 %rd7, %rd4, %rd5;\n"
    "  ld.global.f32 %f2, [%rd6];\n"
    "  ld.global.f32 %f3, [%rd7];\n"
    "  fma.rn.f32 %f3, %f1, %f2, %f3;\n"
    "  st.global.f32 [%rd7], %f3;\n"
    "DONE:\n"
    "  ret;\n"
    "}\n";

int main(void) {
    const char *prog = "test_cuda_module";
    gpu_env env;
    int rc = gpu_env_init(&env, prog);
    if (rc) return rc;

    lh_cu_module m = {0};
    lh_status st = lh_cu_module_load(env.cu, saxpy_ptx, &m);
    check(st == LH_OK, "load_ptx", "%s %s", lh_status_string(st), lh_error_message());
    if (st == LH_OK) {
        CUfunction fn;
        st = lh_cu_module_function(env.cu, &m, "saxpy", &fn);
        check(st == LH_OK, "get_function", "%s", lh_error_message());
        CUfunction missing;
        lh_status st2 = lh_cu_module_function(env.cu, &m, "no_such_kernel", &missing);
        check(st2 != LH_OK && strstr(lh_error_message(), "no_such_kernel"), "missing_function",
              "%s: %s", lh_status_string(st2), lh_error_message());
        if (st == LH_OK) {
            const unsigned n = 100003; /* not a multiple of the block */
            float *x = malloc(n * 4), *y = malloc(n * 4), *res = malloc(n * 4);
            for (unsigned i = 0; i < n; i++) {
                x[i] = (float)i * 0.5f;
                y[i] = 1.0f - (float)i;
            }
            void *dx = gpu_alloc(&env, n * 4), *dy = gpu_alloc(&env, n * 4);
            gpu_upload(&env, dx, x, n * 4);
            gpu_upload(&env, dy, y, n * 4);
            CUstream s;
            env.cu->StreamCreate(&s, CU_STREAM_NON_BLOCKING);
            float a = 3.0f;
            CUdeviceptr px = (CUdeviceptr)(uintptr_t)dx, py = (CUdeviceptr)(uintptr_t)dy;
            unsigned nn = n;
            void *params[] = {&px, &py, &a, &nn};
            lh_cu_launch l = {{(n + 255) / 256, 1, 1}, {256, 1, 1}, 0};
            st = lh_cu_launch_kernel(env.cu, fn, "saxpy", &l, s, params);
            env.cu->StreamSynchronize(s);
            gpu_download(&env, res, dy, n * 4);
            unsigned bad = 0;
            for (unsigned i = 0; i < n; i++)
                if (res[i] != fmaf(a, x[i], y[i])) bad++;
            check(st == LH_OK && bad == 0, "saxpy_result", "%u of %u values wrong (%s)", bad, n,
                  lh_status_string(st));
            /* a launch the driver must refuse: 4096 threads per block */
            lh_cu_launch too_big = {{1, 1, 1}, {4096, 1, 1}, 0};
            st = lh_cu_launch_kernel(env.cu, fn, "saxpy", &too_big, s, params);
            check(st == LH_ERROR_DEVICE && strstr(lh_error_message(), "saxpy"), "bad_launch",
                  "%s: %s", lh_status_string(st), lh_error_message());
            env.cu->StreamDestroy(s);
            gpu_free(&env, dx);
            gpu_free(&env, dy);
            free(x);
            free(y);
            free(res);
        }
        lh_cu_module_unload(env.cu, &m);
    }

    lh_cu_module bad = {0};
    st = lh_cu_module_load(env.cu, ".version 7.0\n.target sm_80\n.address_size 64\n"
                                   ".visible .entry broken() { this is not ptx; }\n",
                           &bad);
    check(st == LH_ERROR_COMPILE, "malformed_ptx", "%s: %s", lh_status_string(st),
          lh_error_message());
    return finish(prog);
}
