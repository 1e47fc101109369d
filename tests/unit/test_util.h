/* test_util.h - helpers shared by the CPU conformance and property tests: plans from a small
 * configuration struct, buffers sized by the plan, file loading, layouts, error norms. */
#ifndef LH_TEST_UTIL_H
#define LH_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "lighthouse.h"

typedef struct test_cfg {
    int64_t batch, seq_len, heads;
    int64_t kv_heads;   /* 0 = leave LH_PARAM_KV_HEADS unset (its default is HEADS) */
    int64_t head_dim;
    int64_t levels, pooling, topk;
    lh_layout layout;
    lh_mode mode;
    double scale;   /* 0 = the default */
    lh_scorer scorer;   /* 0 = NORM, the default */
    int64_t dilation;   /* 0 = leave LH_PARAM_DILATION unset (its default is 4) */
} test_cfg;

/* A finalized plan of `cfg` on `ctx` (fails the running Check test on any error). */
lh_plan *test_plan(lh_context *ctx, const test_cfg *cfg);

/* Caller memory of one plan: the sizes it reports, allocated 64-byte aligned. */
typedef struct test_buffers {
    void *saved, *fwd_ws, *bwd_ws, *stage_ws;
    int64_t s_sel, s_total;
} test_buffers;

test_buffers test_buffers_alloc(lh_plan *plan);
void test_buffers_free(test_buffers *b);

/* Elements of a q-side ([B,N,H,D] or [B,H,N,D] with H heads) tensor. */
size_t test_elems(const test_cfg *cfg, int64_t heads);

/* Reads `count` elements of `elem_size` bytes from dir/name; fails the test if it cannot. */
void *test_load(const char *dir, const char *name, size_t count, size_t elem_size);

/* Allocates `count` floats (64-byte aligned, zeroed). */
float *test_floats(size_t count);

/* Fills x with uniform values in [-amp, amp) from a xorshift generator seeded by *state. */
void test_fill_uniform(float *x, size_t n, float amp, uint64_t *state);

/* dst[B,H,N,D] from src[B,N,H,D] (or the reverse with `to_bnhd`). */
void test_transpose(const float *src, float *dst, int64_t B, int64_t N, int64_t H, int64_t D,
                    int to_bnhd);

/* ||a - b|| / ||b|| (Frobenius, accumulated in double); 0 when both are zero. */
double test_rel_err(const float *a, const float *b, size_t n);

/* max |a - b| / max(1, |b|). */
double test_max_err(const float *a, const float *b, size_t n);

/* The seed of a test program: LIGHTHOUSE_TEST_SEED if set, else one from the clock; printed
 * with the program's name so that a failing run can be repeated. */
uint64_t test_seed(const char *program);

/* The attention step's workspace of `plan` (LH_QUERY_ATTENTION_WORKSPACE_BYTES, 64-byte
 * aligned), allocated for one hook call and freed by the caller; NULL with *st saying why. */
void *test_attention_workspace(lh_plan *plan, lh_status *st);

/* Runs every test of `s` (one Check suite) and returns the program's exit status. */
struct Suite;
int test_run_suite(struct Suite *s);

#endif /* LH_TEST_UTIL_H */
