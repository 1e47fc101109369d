/*
 * gpu_common.h - what the GPU test programs share: the CUDA driver (through the library's own
 * dlopen loader, linked into each test), device buffers, bf16/fp16 conversion, random inputs, the
 * error measure and the PASS/FAIL/SKIP bookkeeping.
 *
 * Every program exits 77 (ctest's SKIP_RETURN_CODE) with a SKIP line when no usable GPU exists,
 * 0 when all its checks passed and 1 otherwise.
 */
#ifndef LH_GPU_COMMON_H
#define LH_GPU_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cuda_driver.h"
#include "lighthouse.h"

#define GPU_SKIP 77

typedef struct gpu_env {
    const lh_cu_api *cu;
    CUdevice device;
    CUcontext ctx; /* the primary context of `device`, made current */
    int device_count;
} gpu_env;

/* Loads the driver and makes device 0's primary context current. Returns 0, or GPU_SKIP after
 * printing "SKIP: <program>: <why>". */
int gpu_env_init(gpu_env *env, const char *program);
/* The same on device `ordinal` (one process per GPU: no context is made on any other device). */
int gpu_env_init_on(gpu_env *env, const char *program, int ordinal);

/* Device memory and copies; any failure aborts the program with a message (a broken test rig,
 * not a library result). */
void *gpu_alloc(const gpu_env *env, size_t bytes);
void gpu_free(const gpu_env *env, void *p);
void gpu_upload(const gpu_env *env, void *dst, const void *src, size_t bytes);
void gpu_download(const gpu_env *env, void *dst, const void *src, size_t bytes);
void gpu_poison(const gpu_env *env, void *p, size_t bytes); /* 0xFF bytes: NaN in any float */
void gpu_sync(const gpu_env *env);

/* Conversions between float and the 16-bit storage types (round to nearest even). */
uint16_t f32_to_half_bits(float f, lh_dtype dtype);
float half_bits_to_f32(uint16_t h, lh_dtype dtype);
/* n 16-bit elements of device memory, downloaded and widened to fp32 (malloc'd; the caller frees). */
float *gpu_download_f32(const gpu_env *env, const void *src, size_t n, lh_dtype dtype);

/* Fills `n` values with N(0,1) noise rounded to `dtype`: bits[] for the GPU, values[] (the same
 * numbers as float) for the CPU reference. */
void random_inputs(uint64_t *state, lh_dtype dtype, size_t n, uint16_t *bits, float *values);
/* n values (u1 + u2 - 1) * 1.7 of two uniforms, rounded to dtype: inputs for timings, where
 * random_inputs's logarithm and cosine per element would cost minutes at a million tokens.
 * *state must not be 0. */
void cheap_inputs(uint64_t *state, lh_dtype dtype, size_t n, uint16_t *bits);

/* Max-norm relative error max|a - r| / max|r| over n pairs; NaN if any a is NaN. */
double rel_error(const float *a, const float *r, size_t n);

/* Result bookkeeping: prints "PASS name detail" / "FAIL name detail" and counts. */
void check(bool ok, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prints "SUMMARY program: P passed, F failed" and returns the exit code. */
int finish(const char *program);

/* lh_* calls that must succeed: on failure print the call, status and lh_last_error and exit. */
#define LH_MUST(call)                                                                         \
    do {                                                                                      \
        lh_status must_st_ = (call);                                                          \
        if (must_st_ != LH_OK) gpu_die_lh(#call, must_st_, __FILE__, __LINE__);                \
    } while (0)
void gpu_die_lh(const char *call, lh_status st, const char *file, int line)
    __attribute__((noreturn));

/* One of the plan's sizes (lh_plan_get_i64); a failure ends the program like LH_MUST. */
int64_t plan_query(const lh_plan *p, lh_query q);
double now_seconds(void);

#endif /* LH_GPU_COMMON_H */
