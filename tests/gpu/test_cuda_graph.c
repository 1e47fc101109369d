/*
 * test_cuda_graph.c - forward + backward captured into a CUDA graph and replayed give what
 * direct calls give: the library never synchronises, allocates or touches another stream inside
 * them. The graph is captured on one set of inputs and replayed after the inputs (same pointers)
 * were replaced, then compared with direct calls on the new inputs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_common.h"

static gpu_env env;

enum { B = 2, N = 1024, H = 4, HKV = 2, D = 128 };

typedef struct bufs {
    void *q, *k, *v, *dout, *out, *saved, *wf, *wb, *dq, *dk, *dv;
} bufs;

static lh_status run(lh_plan *p, const bufs *b, CUstream s) {
    lh_status st = lh_forward(p, b->q, b->k, b->v, b->out, b->saved, b->wf, s);
    if (st == LH_OK)
        st = lh_backward(p, b->q, b->k, b->v, b->out, b->dout, b->saved, b->dq, b->dk, b->dv, b->wb,
                         s);
    return st;
}

static void snapshot(const bufs *b, size_t nq, size_t nkv, size_t saved_b, uint8_t *dst) {
    gpu_download(&env, dst, b->out, nq * 2);
    dst += nq * 2;
    gpu_download(&env, dst, b->saved, saved_b);
    dst += saved_b;
    gpu_download(&env, dst, b->dq, nq * 2);
    dst += nq * 2;
    gpu_download(&env, dst, b->dk, nkv * 2);
    dst += nkv * 2;
    gpu_download(&env, dst, b->dv, nkv * 2);
}

int main(void) {
    const char *prog = "test_cuda_graph";
    int rc = gpu_env_init(&env, prog);
    if (rc) return rc;
    lh_context *ctx;
    lh_status st = lh_context_create(LH_BACKEND_CUDA, 0, &ctx);
    if (st == LH_ERROR_BACKEND_UNAVAILABLE) {
        printf("SKIP: %s: %s\n", prog, lh_last_error());
        return GPU_SKIP;
    }
    LH_MUST(st);
    lh_plan *p;
    LH_MUST(lh_plan_create(ctx, &p));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_MODE, LH_MODE_DENSE));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_BATCH, B));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_SEQ_LEN, N));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEADS, H));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_KV_HEADS, HKV));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEAD_DIM, D));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_DTYPE, LH_DTYPE_BFLOAT16));
    LH_MUST(lh_plan_finalize(p));
    int64_t saved_b, wf_b, wb_b;
    LH_MUST(lh_plan_get_i64(p, LH_QUERY_SAVED_BYTES, &saved_b));
    LH_MUST(lh_plan_get_i64(p, LH_QUERY_FWD_WORKSPACE_BYTES, &wf_b));
    LH_MUST(lh_plan_get_i64(p, LH_QUERY_BWD_WORKSPACE_BYTES, &wb_b));
    size_t nq = (size_t)B * N * H * D, nkv = (size_t)B * N * HKV * D;
    bufs b = {gpu_alloc(&env, nq * 2), gpu_alloc(&env, nkv * 2), gpu_alloc(&env, nkv * 2),
              gpu_alloc(&env, nq * 2), gpu_alloc(&env, nq * 2), gpu_alloc(&env, (size_t)saved_b),
              wf_b ? gpu_alloc(&env, (size_t)wf_b) : NULL, wb_b ? gpu_alloc(&env, (size_t)wb_b) : NULL,
              gpu_alloc(&env, nq * 2), gpu_alloc(&env, nkv * 2), gpu_alloc(&env, nkv * 2)};
    uint16_t *bits = malloc(nq * 2);
    float *vals = malloc(nq * 4);
    uint64_t state = 0x1234567ULL ^ (uint64_t)(now_seconds() * 1e6);
    void *inputs[] = {b.q, b.k, b.v, b.dout};
    size_t counts[] = {nq, nkv, nkv, nq};
#define FILL()                                                                                 \
    for (int i = 0; i < 4; i++) {                                                              \
        random_inputs(&state, LH_DTYPE_BFLOAT16, counts[i], bits, vals);                       \
        gpu_upload(&env, inputs[i], bits, counts[i] * 2);                                      \
    }

    CUstream s;
    if (env.cu->StreamCreate(&s, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS) return 1;
    FILL();
    /* capture (inputs set 1) */
    CUgraph graph = NULL;
    CUgraphExec exec = NULL;
    CUresult r = env.cu->StreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL);
    st = run(p, &b, s);
    CUresult r2 = env.cu->StreamEndCapture(s, &graph);
    check(r == CUDA_SUCCESS && st == LH_OK && r2 == CUDA_SUCCESS, "capture",
          "begin %d, lh calls %s (%s), end %d", (int)r, lh_status_string(st), lh_last_error(),
          (int)r2);
    if (r2 == CUDA_SUCCESS && graph) {
        r = env.cu->GraphInstantiate(&exec, graph, 0);
        check(r == CUDA_SUCCESS, "instantiate", "cuGraphInstantiateWithFlags -> %d", (int)r);
    }
    if (exec) {
        size_t total = (nq * 2) * 2 + saved_b + nkv * 4;
        uint8_t *direct = malloc(total), *replayed = malloc(total);
        FILL(); /* inputs set 2, same pointers */
        gpu_poison(&env, b.out, nq * 2);
        gpu_poison(&env, b.dq, nq * 2);
        gpu_poison(&env, b.dk, nkv * 2);
        gpu_poison(&env, b.dv, nkv * 2);
        LH_MUST(run(p, &b, s));
        env.cu->StreamSynchronize(s);
        snapshot(&b, nq, nkv, (size_t)saved_b, direct);
        for (int rep = 0; rep < 2; rep++) {
            gpu_poison(&env, b.out, nq * 2);
            gpu_poison(&env, b.saved, (size_t)saved_b);
            gpu_poison(&env, b.dq, nq * 2);
            gpu_poison(&env, b.dk, nkv * 2);
            gpu_poison(&env, b.dv, nkv * 2);
            r = env.cu->GraphLaunch(exec, s);
            CUresult rs = env.cu->StreamSynchronize(s);
            snapshot(&b, nq, nkv, (size_t)saved_b, replayed);
            /* forward is deterministic: bit-exact; backward may sum in another order */
            size_t fwd_bytes = nq * 2 + saved_b;
            bool fwd_same = memcmp(direct, replayed, fwd_bytes) == 0;
            size_t bwd_n = (total - fwd_bytes) / 2;
            float *a = malloc(bwd_n * 4), *c = malloc(bwd_n * 4);
            uint16_t *da = (uint16_t *)(direct + fwd_bytes), *dc = (uint16_t *)(replayed + fwd_bytes);
            size_t same = 0;
            for (size_t i = 0; i < bwd_n; i++) {
                a[i] = half_bits_to_f32(dc[i], LH_DTYPE_BFLOAT16);
                c[i] = half_bits_to_f32(da[i], LH_DTYPE_BFLOAT16);
                same += da[i] == dc[i];
            }
            double e = rel_error(a, c, bwd_n);
            check(r == CUDA_SUCCESS && rs == CUDA_SUCCESS && fwd_same && e <= 1e-2, "replay",
                  "#%d: launch %d sync %d, forward bit-exact %s, backward rel diff %.2e "
                  "(%.1f%% bit-identical)",
                  rep + 1, (int)r, (int)rs, fwd_same ? "yes" : "NO", e, 100.0 * same / bwd_n);
            free(a);
            free(c);
        }
        free(direct);
        free(replayed);
        env.cu->GraphExecDestroy(exec);
    }
    if (graph) env.cu->GraphDestroy(graph);
    env.cu->StreamDestroy(s);
    lh_plan_destroy(p);
    void **all = (void **)&b;
    for (size_t i = 0; i < sizeof b / sizeof(void *); i++) gpu_free(&env, all[i]);
    free(bits);
    free(vals);
    lh_context_destroy(ctx);
    return finish(prog);
}
