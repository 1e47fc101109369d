/* cuda_sdpa.c - cuDNN causal SDPA plans: the graphs (cuda_sdpa_graph.c) built, chosen, stored
 * and restored; workspace layout; execution. */
#include "cuda_sdpa.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_driver.h"
#include "cuda_sdpa_graph.h"
#include "cuda_verbose.h"

/* Workspace pieces are aligned like cudaMalloc'd memory so every engine is happy with them. */
#define WS_ALIGN 256
static int64_t align_up(int64_t x) { return (x + WS_ALIGN - 1) / WS_ALIGN * WS_ALIGN; }

struct lh_sdpa_plan {
    lh_sdpa_shape shape;
    const lh_cudnn_api *dnn;
    const lh_cu_api *cu;
    cudnnHandle_t handle;
    lh_gb_desc device;       /* no handle: built for a device description (cuda_sdpa_precompile) */
    pthread_mutex_t *exec_lock;
    lh_gb fwd, bwd;
    int64_t build_us;        /* creating the graphs' descriptors, before lh_gb_build_plan */
    lh_sdpa_bwd_kind bwd_kind;
    int64_t fwd_ws;
    /* backward workspace: cuDNN's own part first, then the buffers the graph binds by uid */
    int64_t bwd_ws, off_sum, off_accum;
    /* host values of the by-value scalars; the variant pack points at them */
    float scale, one, neg_inf;
    int64_t next_uid;
    lh_plan_store_outcome fwd_store, bwd_store;
    char description[320];
};

void lh_sdpa_layout_strides(bool bnhd, int64_t heads, int64_t s, int64_t d, int64_t out[4]) {
    if (bnhd) { /* [B, S, H, D] memory, logical [B, H, S, D] */
        out[0] = s * heads * d; out[1] = d; out[2] = heads * d; out[3] = 1;
    } else {
        out[0] = heads * s * d; out[1] = s * d; out[2] = d; out[3] = 1;
    }
}

/* ---- plan ----------------------------------------------------------------------------------- */

static lh_status check_shape(const lh_sdpa_shape *sh) {
    if (sh->dtype != LH_DTYPE_FLOAT16 && sh->dtype != LH_DTYPE_BFLOAT16)
        return lh_fail(LH_ERROR_UNSUPPORTED_DTYPE,
                       "the CUDA backend runs attention in float16 or bfloat16 only (DTYPE = %d)",
                       (int)sh->dtype);
    if (sh->d % 8 != 0 || sh->d > 256)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "cuDNN flash attention needs HEAD_DIM a multiple of 8 and at most 256 (got "
                       "%lld)",
                       (long long)sh->d);
    if (sh->h % sh->hkv != 0)
        return lh_fail(LH_ERROR_HEADS_MISMATCH, "HEADS (%lld) is not a multiple of KV_HEADS (%lld)",
                       (long long)sh->h, (long long)sh->hkv);
    /* The fused kernels index with 32-bit element offsets in places; until that is verified on
     * tensors this large, refuse rather than risk wrong results. q is the largest tensor (H >=
     * Hkv; the fp32 dQ accumulator has as many elements). */
    const int64_t limit = (int64_t)1 << 31;
    int64_t q_elems = sh->b * sh->h * sh->s * sh->d;
    if (q_elems >= limit)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "the CUDA attention supports tensors of fewer than 2^31 elements; q has "
                       "B*H*N*D = %lld*%lld*%lld*%lld = %lld (run fewer sequences or heads per "
                       "plan, or Lighthouse mode, whose attention runs on the shorter "
                       "sub-sequence)",
                       (long long)sh->b, (long long)sh->h, (long long)sh->s, (long long)sh->d,
                       (long long)q_elems);
    return LH_OK;
}

/* Which backward graph to try first: LIGHTHOUSE_CUDNN_SDPA_BWD=accum|deterministic, else the
 * deterministic one (Hopper's deterministic engine), falling back to the accumulator. */
static int bwd_preference(void) {
    const char *env = getenv("LIGHTHOUSE_CUDNN_SDPA_BWD");
    if (env && strcmp(env, "accum") == 0) return LH_SDPA_BWD_ACCUM;
    if (env && strcmp(env, "deterministic") == 0) return LH_SDPA_BWD_DETERMINISTIC;
    return -1;
}

bool cuda_sdpa_split(bool bnhd, int64_t b, int64_t h, int64_t hkv, int64_t s, int64_t d,
                     int64_t *nb, int64_t *nh) {
    const int64_t limit = (int64_t)1 << 31, head = s * d, group = h / hkv;
    for (int64_t n = b; n >= 1; n--)
        if (b % n == 0 && n * h * head < limit) {
            *nb = n, *nh = h;
            return true;
        }
    if (bnhd) return false;
    for (int64_t m = hkv; m >= 1; m--)
        if (hkv % m == 0 && m * group * head < limit) {
            *nb = 1, *nh = m * group;
            return true;
        }
    return false;
}

void cuda_sdpa_key(const lh_sdpa_shape *sh, lh_plan_key *key) {
    memset(key, 0, sizeof *key);
    int64_t *w = key->w, scale_bits;
    memcpy(&scale_bits, &sh->scale, sizeof scale_bits);
    int n = 0;
    w[n++] = sh->b, w[n++] = sh->h, w[n++] = sh->hkv, w[n++] = sh->s, w[n++] = sh->d;
    w[n++] = sh->dtype;
    for (int i = 0; i < 4; i++) w[n++] = sh->q_strides[i];
    for (int i = 0; i < 4; i++) w[n++] = sh->kv_strides[i];
    w[n++] = scale_bits;
    w[n++] = sh->full;
    w[n++] = sh->forward_only;
    w[n++] = bwd_preference();
}

void cuda_sdpa_setup_us(const lh_sdpa_plan *p, int64_t *graph, int64_t *heuristics,
                        int64_t *plan_us) {
    *graph = p->build_us + p->fwd.graph_us + p->bwd.graph_us;
    *heuristics = p->fwd.heuristics_us + p->bwd.heuristics_us;
    *plan_us = p->fwd.plan_us + p->bwd.plan_us;
}

/* A graph of the plan started on its handle, or for its device description. */
static void gb_begin(const lh_sdpa_plan *p, lh_gb *gb) {
    if (p->device) lh_gb_init_for_device(gb, p->dnn, p->device);
    else lh_gb_init(gb, p->dnn, p->handle);
}

/* `workspace_limit` (0: none): an engine needing more is not built (lh_gb.workspace_limit). */
static lh_status build_bwd_plan(lh_sdpa_plan *p, lh_sdpa_bwd_kind kind, int64_t workspace_limit) {
    int64_t t0 = lh_clock_us(), graph_us = p->bwd.graph_us, heur_us = p->bwd.heuristics_us,
            plan_us = p->bwd.plan_us;
    gb_begin(p, &p->bwd);
    /* a second attempt (the accumulator after the deterministic graph) adds to the first's */
    p->bwd.graph_us = graph_us, p->bwd.heuristics_us = heur_us, p->bwd.plan_us = plan_us;
    p->bwd.workspace_limit = workspace_limit;
    cuda_sdpa_graph_backward(&p->shape, &p->bwd, kind, &p->next_uid);
    p->build_us += lh_clock_us() - t0;
    lh_status st = lh_gb_build_plan(&p->bwd, kind == LH_SDPA_BWD_DETERMINISTIC,
                                    kind == LH_SDPA_BWD_ACCUM ? "SDPA backward (dQ accumulator)"
                                                              : "SDPA backward (deterministic)");
    if (st != LH_OK) lh_gb_destroy(&p->bwd);
    else p->bwd_kind = kind;
    return st;
}

static const char *store_note(lh_plan_store_outcome o) {
    return o == LH_PLAN_STORE_RESTORED       ? ", restored"
           : o == LH_PLAN_STORE_SAVED        ? ", stored"
           : o == LH_PLAN_STORE_UNSERIALISED ? ", not serialisable"
                                             : "";
}

/* The backward as before: the preferred graph, the accumulator where the deterministic one is
 * refused or its workspace too large. */
static lh_status choose_bwd_plan(lh_sdpa_plan *p, int64_t accum_bytes) {
    lh_status st;
    int pref = bwd_preference();
    if (pref == LH_SDPA_BWD_ACCUM) return build_bwd_plan(p, LH_SDPA_BWD_ACCUM, 0);
    /* A deterministic engine whose scratch dwarfs the accumulator's is not worth it (its
     * workspace grows with N^2 on some versions). The heuristics say so before its engine is
     * compiled; the check after building covers a cuDNN that does not. */
    int64_t limit = 4 * accum_bytes + (256 << 20);
    st = build_bwd_plan(p, LH_SDPA_BWD_DETERMINISTIC, pref < 0 ? limit : 0);
    if (pref < 0 && st == LH_OK && p->bwd.workspace_bytes > limit) {
        lh_cuda_say("cuDNN SDPA backward: the deterministic engine's workspace (%lld B) "
                    "outweighs the accumulator's (%lld B): building that",
                    (long long)p->bwd.workspace_bytes, (long long)accum_bytes);
        lh_gb_destroy(&p->bwd);
        st = LH_ERROR_UNSUPPORTED;
    }
    if (pref < 0 && st != LH_OK) {
        lh_clear_error(); /* the accumulator's outcome is the one to report */
        st = build_bwd_plan(p, LH_SDPA_BWD_ACCUM, 0);
    }
    return st;
}

/* ---- the backward built beside the forward ------------------------------------------------
 * Where cuDNN compiles its engines at run time (a machine's first plan, a new length: a second
 * or more per graph, docs/compiler.md), the two graphs are built at once. A cuDNN handle serves
 * one thread at a time, so the backward is built on a thread with a handle of its own and handed
 * over as cuDNN's text of the finalized plan, restored on the plan's handle as the plan store
 * restores it. Where cuDNN gives no text or refuses it, the backward is built again on the
 * plan's handle: slower, never different. LIGHTHOUSE_CUDNN_PARALLEL_BUILD=0 builds the two
 * one after the other. */

static bool parallel_build(void) {
    const char *v = getenv("LIGHTHOUSE_CUDNN_PARALLEL_BUILD");
    return !(v && strcmp(v, "0") == 0);
}

typedef struct bwd_beside {
    lh_sdpa_plan work;  /* the plan as it was before the forward, with the thread's handle */
    CUcontext ctx;      /* the caller's current context, made current on the thread */
    int64_t accum_bytes;
    lh_status st;
    char message[1024];
    char *json;         /* the finalized backward as cuDNN's text (malloc'd; NULL: none) */
    pthread_t thread;
    bool started;
} bwd_beside;

static void *bwd_beside_run(void *arg) {
    bwd_beside *b = arg;
    lh_sdpa_plan *w = &b->work;
    CUcontext ignored;
    cudnnHandle_t handle = NULL;
    b->st = lh_cu_check(w->cu->CtxPushCurrent(b->ctx), "making the plan's context current");
    if (b->st == LH_OK) {
        int64_t t0 = lh_clock_us();
        b->st = lh_cudnn_check(w->dnn->Create(&handle), "cudnnCreate (a handle to build on)");
        lh_cuda_say("cuDNN SDPA backward: a handle of its own on the builder thread in %.1f ms",
                    (double)(lh_clock_us() - t0) / 1e3);
        if (b->st == LH_OK) {
            w->handle = handle; /* build_bwd_plan initialises w->bwd on it */
            b->st = choose_bwd_plan(w, b->accum_bytes);
            if (b->st == LH_OK) b->json = lh_gb_plan_json(&w->bwd);
            lh_gb_destroy(&w->bwd); /* its engine, workspace and times stay in the struct */
            w->dnn->Destroy(handle);
        }
        w->cu->CtxPopCurrent(&ignored);
    }
    if (b->st != LH_OK) snprintf(b->message, sizeof b->message, "%s", lh_error_message());
    return NULL;
}

/* Starts the backward's thread; false where it cannot run one (the caller builds it itself). */
static bool bwd_beside_begin(lh_sdpa_plan *p, int64_t accum_bytes, bwd_beside *b) {
    b->started = false;
    b->json = NULL;
    if (!parallel_build() || p->cu->CtxGetCurrent(&b->ctx) != CUDA_SUCCESS || !b->ctx)
        return false;
    b->work = *p;
    b->accum_bytes = accum_bytes;
    b->started = pthread_create(&b->thread, NULL, bwd_beside_run, b) == 0;
    return b->started;
}

/* Waits for the thread and puts its backward on the plan's handle: the same engine, workspace
 * and graph (kind) as built there, restored from its text; built again where that fails. */
static lh_status bwd_beside_end(lh_sdpa_plan *p, bwd_beside *b) {
    pthread_join(b->thread, NULL);
    b->started = false;
    if (b->st != LH_OK) {
        free(b->json);
        return lh_fail(b->st, "%s", b->message);
    }
    const lh_gb *built = &b->work.bwd;
    lh_gb_init(&p->bwd, p->dnn, p->handle);
    int64_t t0 = lh_clock_us();
    bool had_text = b->json != NULL;
    bool moved = had_text && lh_gb_restore_plan(&p->bwd, b->json) &&
                 p->bwd.workspace_bytes == built->workspace_bytes;
    free(b->json);
    b->json = NULL;
    if (!moved) {
        lh_cuda_say("cuDNN SDPA backward: engine %lld %s; building it again on the plan's "
                    "handle", (long long)built->engine_id,
                    had_text ? "was refused as text" : "gives no text");
        lh_gb_destroy(&p->bwd);
        return choose_bwd_plan(p, b->accum_bytes);
    }
    p->bwd.engine_id = built->engine_id;
    p->bwd.deterministic = built->deterministic;
    p->bwd.graph_us = built->graph_us;
    p->bwd.heuristics_us = built->heuristics_us;
    p->bwd.plan_us = built->plan_us + (lh_clock_us() - t0);
    lh_cuda_say("cuDNN SDPA backward: restored on the plan's handle from the builder's text in "
                "%.1f ms", (double)(lh_clock_us() - t0) / 1e3);
    p->bwd_kind = b->work.bwd_kind;
    p->build_us += b->work.build_us;
    return LH_OK;
}

lh_status cuda_sdpa_plan_create(const lh_cudnn_api *dnn, cudnnHandle_t handle,
                                pthread_mutex_t *exec_lock, const lh_plan_store *store,
                                const lh_sdpa_shape *shape, lh_sdpa_plan **out_plan) {
    lh_status st = check_shape(shape);
    if (st != LH_OK) return st;
    const lh_cu_api *cu = NULL;
    st = lh_cu_load(&cu);
    if (st != LH_OK) return st;
    lh_sdpa_plan *p = calloc(1, sizeof *p);
    if (!p) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "allocating a cuDNN SDPA plan failed");
    p->shape = *shape;
    p->dnn = dnn;
    p->cu = cu;
    p->handle = handle;
    p->exec_lock = exec_lock;
    p->scale = (float)shape->scale;
    p->one = 1.0f;
    p->neg_inf = -INFINITY;
    p->next_uid = UID_VIRTUAL;

    lh_plan_key key;
    cuda_sdpa_key(shape, &key);
    int64_t b = shape->b, h = shape->h, s = shape->s, d = shape->d;
    int64_t accum_bytes = align_up(b * h * s * d * 4);
    /* The stored backward is the one the choice below made when it was built (the key holds
     * LIGHTHOUSE_CUDNN_SDPA_BWD), so its record carries which graph that was. */
    int kind = LH_SDPA_BWD_DETERMINISTIC;
    lh_gb_init(&p->fwd, dnn, handle);
    lh_gb_init(&p->bwd, dnn, handle);
    bool fwd_restored =
        lh_plan_store_restore(store, &key, SDPA_GRAPH_VERSION, "forward", &p->fwd, NULL);
    bool bwd_restored = !shape->forward_only && lh_plan_store_restore(store, &key,
                                                                      SDPA_GRAPH_VERSION,
                                                                      "backward", &p->bwd, &kind);
    /* both to build: the backward beside the forward */
    bwd_beside beside;
    beside.started = false;
    if (!shape->forward_only && !bwd_restored && !fwd_restored &&
        bwd_beside_begin(p, accum_bytes, &beside))
        lh_cuda_say("cuDNN SDPA (B %lld, H %lld, S %lld, D %lld): the forward built here, the "
                    "backward on a thread beside", (long long)b, (long long)h, (long long)s,
                    (long long)d);
    if (fwd_restored) {
        p->fwd_store = LH_PLAN_STORE_RESTORED;
    } else {
        int64_t t0 = lh_clock_us();
        cuda_sdpa_graph_forward(&p->shape, &p->fwd, &p->next_uid);
        p->build_us = lh_clock_us() - t0;
        st = lh_gb_build_plan(&p->fwd, false, "SDPA forward");
        if (st != LH_OK) {
            if (beside.started) {
                pthread_join(beside.thread, NULL);
                free(beside.json);
            }
            lh_gb_destroy(&p->fwd);
            lh_gb_destroy(&p->bwd);
            free(p);
            return st;
        }
        p->fwd_store = lh_plan_store_save(store, &key, SDPA_GRAPH_VERSION, "forward", &p->fwd, 0);
    }
    p->fwd_ws = align_up(p->fwd.workspace_bytes);

    if (shape->forward_only) {
        snprintf(p->description, sizeof p->description,
                 "cuDNN %zu: forward engine %lld (workspace %lld B%s), no backward", dnn->version,
                 (long long)p->fwd.engine_id, (long long)p->fwd.workspace_bytes,
                 store_note(p->fwd_store));
        *out_plan = p;
        return LH_OK;
    }
    if (bwd_restored) {
        p->bwd_kind = kind == LH_SDPA_BWD_ACCUM ? LH_SDPA_BWD_ACCUM : LH_SDPA_BWD_DETERMINISTIC;
        p->bwd_store = LH_PLAN_STORE_RESTORED;
        st = LH_OK;
    } else {
        st = beside.started ? bwd_beside_end(p, &beside) : choose_bwd_plan(p, accum_bytes);
        if (st == LH_OK)
            p->bwd_store = lh_plan_store_save(store, &key, SDPA_GRAPH_VERSION, "backward",
                                              &p->bwd, (int)p->bwd_kind);
    }
    if (st != LH_OK) {
        lh_gb_destroy(&p->fwd);
        free(p);
        return st;
    }
    int64_t off = align_up(p->bwd.workspace_bytes);
    p->off_sum = off;
    off += align_up(b * h * s * 4);
    p->off_accum = -1;
    if (p->bwd_kind == LH_SDPA_BWD_ACCUM) {
        p->off_accum = off;
        off += accum_bytes;
    }
    p->bwd_ws = off;
    snprintf(p->description, sizeof p->description,
             "cuDNN %zu: forward engine %lld (workspace %lld B%s), backward %s engine %lld%s "
             "(cuDNN workspace %lld B, total %lld B%s)",
             dnn->version, (long long)p->fwd.engine_id, (long long)p->fwd.workspace_bytes,
             store_note(p->fwd_store),
             p->bwd_kind == LH_SDPA_BWD_ACCUM ? "dQ-accumulator" : "deterministic-graph",
             (long long)p->bwd.engine_id, p->bwd.deterministic ? " (deterministic)" : "",
             (long long)p->bwd.workspace_bytes, (long long)p->bwd_ws, store_note(p->bwd_store));
    *out_plan = p;
    return LH_OK;
}

/* ---- built ahead of time, for a device description ------------------------------------------ */

/* A built plan's record written, or the sentence why not. */
static lh_status stored(lh_plan_store_outcome o, const lh_gb *gb, const char *what) {
    if (o == LH_PLAN_STORE_SAVED) return LH_OK;
    return lh_fail(LH_ERROR_IO,
                   "the %s graph's engine %lld was built but could not be kept: cuDNN gives no "
                   "text for it, or the cache directory cannot be written",
                   what, (long long)gb->engine_id);
}

lh_status cuda_sdpa_precompile(const lh_cudnn_api *dnn, lh_gb_desc device,
                               const lh_plan_store *store, const lh_sdpa_shape *shape,
                               int *out_built) {
    *out_built = 0;
    lh_status st = check_shape(shape);
    if (st != LH_OK) return st;
    if (!lh_plan_store_enabled(store))
        return lh_fail(LH_ERROR_BAD_STATE,
                       "the cuDNN plan store is off (LIGHTHOUSE_CUDNN_PLAN_STORE=0): plans built "
                       "ahead of time would have nowhere to go");
    lh_sdpa_plan *p = calloc(1, sizeof *p);
    if (!p) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "allocating a cuDNN SDPA plan failed");
    p->shape = *shape;
    p->dnn = dnn;
    p->device = device;
    lh_plan_key key;
    cuda_sdpa_key(shape, &key);
    /* What is stored already is not built again (a GPU could not tell the two apart). */
    if (!lh_plan_store_has(store, dnn, &key, SDPA_GRAPH_VERSION, "forward")) {
        p->next_uid = UID_VIRTUAL;
        gb_begin(p, &p->fwd);
        cuda_sdpa_graph_forward(&p->shape, &p->fwd, &p->next_uid);
        st = lh_gb_build_plan(&p->fwd, false, "SDPA forward");
        if (st == LH_OK)
            st = stored(lh_plan_store_save(store, &key, SDPA_GRAPH_VERSION, "forward", &p->fwd, 0),
                        &p->fwd, "SDPA forward");
        if (st == LH_OK) (*out_built)++;
        lh_gb_destroy(&p->fwd);
    }
    if (st == LH_OK && !shape->forward_only &&
        !lh_plan_store_has(store, dnn, &key, SDPA_GRAPH_VERSION, "backward")) {
        /* numbered from the start, as the backward built beside the forward is on a GPU */
        p->next_uid = UID_VIRTUAL;
        int64_t accum_bytes = align_up(shape->b * shape->h * shape->s * shape->d * 4);
        st = choose_bwd_plan(p, accum_bytes);
        if (st == LH_OK)
            st = stored(lh_plan_store_save(store, &key, SDPA_GRAPH_VERSION, "backward", &p->bwd,
                                           (int)p->bwd_kind),
                        &p->bwd, "SDPA backward");
        if (st == LH_OK) (*out_built)++;
        lh_gb_destroy(&p->bwd);
    }
    free(p);
    return st;
}

void cuda_sdpa_plan_destroy(lh_sdpa_plan *p) {
    if (!p) return;
    lh_gb_destroy(&p->fwd);
    lh_gb_destroy(&p->bwd);
    free(p);
}

int64_t cuda_sdpa_stats_bytes(const lh_sdpa_plan *p) {
    return p->shape.b * p->shape.h * p->shape.s * (int64_t)sizeof(float);
}
int64_t cuda_sdpa_fwd_workspace_bytes(const lh_sdpa_plan *p) { return p->fwd_ws; }
int64_t cuda_sdpa_bwd_workspace_bytes(const lh_sdpa_plan *p) { return p->bwd_ws; }
lh_sdpa_bwd_kind cuda_sdpa_bwd_kind(const lh_sdpa_plan *p) { return p->bwd_kind; }
const char *cuda_sdpa_describe(const lh_sdpa_plan *p) { return p->description; }

/* Binds the handle to `stream` and enqueues `gb`, under the handle's lock where it is shared. */
static lh_status execute_on(const lh_sdpa_plan *p, const lh_gb *gb, CUstream stream, int count,
                            const int64_t *uids, void *const *ptrs, void *workspace,
                            const char *what) {
    if (p->exec_lock) pthread_mutex_lock(p->exec_lock);
    lh_status st = lh_cudnn_check(p->dnn->SetStream(p->handle, (cudaStream_t)stream),
                                  "cudnnSetStream");
    if (st == LH_OK) st = lh_gb_execute(gb, count, uids, ptrs, workspace, what);
    if (p->exec_lock) pthread_mutex_unlock(p->exec_lock);
    return st;
}

lh_status cuda_sdpa_forward(lh_sdpa_plan *p, const void *q, const void *k, const void *v,
                            void *out, float *stats, void *workspace, CUstream stream) {
    const int64_t uids[] = {UID_Q, UID_K, UID_V, UID_O, UID_STATS, UID_SCALE_S, UID_NEG_INF};
    void *const ptrs[] = {(void *)q, (void *)k, (void *)v, out, stats, &p->scale, &p->neg_inf};
    /* A full (unmasked) graph has no -inf scalar: bind only the uids the graph has. */
    return execute_on(p, &p->fwd, stream, p->shape.full ? 6 : 7, uids, ptrs,
                      p->fwd_ws ? workspace : NULL, "running the cuDNN SDPA forward");
}

lh_status cuda_sdpa_backward(lh_sdpa_plan *p, const void *q, const void *k, const void *v,
                             const void *out, const void *dout, const float *stats, void *dq,
                             void *dk, void *dv, void *workspace, CUstream stream) {
    lh_status st;
    char *ws = workspace;
    int64_t uids[16] = {UID_Q, UID_K, UID_V, UID_O, UID_DO, UID_STATS, UID_DQ, UID_DK, UID_DV,
                        UID_SOFTMAX_SUM, UID_SCALE_S, UID_SCALE_DS, UID_ONE, UID_NEG_INF};
    void *ptrs[16] = {(void *)q, (void *)k, (void *)v, (void *)out, (void *)dout, (void *)stats,
                      dq, dk, dv, ws + p->off_sum, &p->scale, &p->scale, &p->one, &p->neg_inf};
    int n = p->shape.full ? 13 : 14; /* a full graph has no -inf scalar */
    if (p->bwd_kind == LH_SDPA_BWD_ACCUM) {
        /* The accumulator is summed into with atomics, so it starts at zero on every call. */
        size_t words = (size_t)(p->shape.b * p->shape.h * p->shape.s * p->shape.d);
        st = lh_cu_check(p->cu->MemsetD32Async((CUdeviceptr)(ws + p->off_accum), 0, words, stream),
                         "clearing the dQ accumulator (cuMemsetD32Async)");
        if (st != LH_OK) return st;
        uids[n] = UID_DQ_ACCUM;
        ptrs[n++] = ws + p->off_accum;
    }
    return execute_on(p, &p->bwd, stream, n, uids, ptrs,
                      p->bwd.workspace_bytes ? workspace : NULL, "running the cuDNN SDPA backward");
}
