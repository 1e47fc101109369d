/* test_cp.h - what the context-parallel tests share: plans, problems (global inputs and
 * results), and the direct computation of docs/spec.md section 8 (test_cp_direct.c). */
#ifndef LH_TEST_CP_H
#define LH_TEST_CP_H

#include <stddef.h>
#include <stdint.h>

#include "lighthouse.h"
#include "test_util.h"

/* The context every plan of the tests is made on (CPU, 2 worker threads). */
extern lh_context *test_cp_ctx;

typedef struct hooks {
    lh_attention_forward_hook fwd;
    lh_attention_backward_hook bwd;
    void *user;
} hooks;

/* Global inputs and results, BNHD [B,N,heads,D]. */
typedef struct problem {
    test_cfg cfg;
    size_t nq, nkv;
    float *q, *k, *v, *dout;
    float *out, *dq, *dk, *dv;
    int32_t *idx;     /* indices, [2W][B,H,S_c] in global chunk order */
    size_t nidx;
} problem;

/* A plan of c (ring != NULL: bound as `rank`), finalized; returns the status of the first step
 * that failed (the plan is then destroyed and *out NULL). */
lh_status make_plan(const test_cfg *c, lh_ring *ring, int rank, const hooks *hk, lh_plan **out);
int64_t kv_of(const test_cfg *c);
/* `bytes` zeroed bytes, 64-byte aligned (at least 1). */
void *alloc_bytes(int64_t bytes);
int64_t query(lh_plan *plan, lh_query q);
/* Allocates p's result tensors, sized as those of `of`. */
void problem_results(problem *p, const problem *of);
void problem_free(problem *p);

/* The norm scores of every chunk of p as a sequence of its own (section 8), in rank order: rank
 * r's two blocks [B,H,S_c] / [B,Hkv,S_c] (chunk r, then 2W-1-r) at sq + 2r blocks, sk alike;
 * allocated here. What an external scorer hands each rank to reproduce the norm scorer. */
void chunk_norm_scores(const problem *p, int W, float **sq, float **sk, int64_t *s_total);

/* docs/spec.md section 8 computed directly for W ranks: results into res (BNHD), indices
 * [2W][B,H,S_c]; gradients when `grads`. */
void run_direct(const problem *p, int W, int grads, problem *res);

#endif /* LH_TEST_CP_H */
