/* cudnn_graph_build.c - builder over the cuDNN backend descriptor API (see the header). */
#include "cudnn_graph_build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_verbose.h"

/* Records the first failure; later ones are consequences and would only hide the cause. */
static void gb_error(lh_gb *gb, lh_status st) {
    if (gb->status != LH_OK) return;
    gb->status = st;
    snprintf(gb->message, sizeof gb->message, "%s", lh_error_message());
}

static bool gb_ok(lh_gb *gb, cudnnStatus_t s, const char *what) {
    if (s == CUDNN_STATUS_SUCCESS) return true;
    gb_error(gb, lh_cudnn_fail(s, what));
    return false;
}

static lh_gb_desc gb_create(lh_gb *gb, cudnnBackendDescriptorType_t type, const char *what) {
    if (gb->status != LH_OK) return NULL;
    if (gb->descriptor_count == LH_GB_MAX_DESCRIPTORS) {
        gb_error(gb, lh_fail(LH_ERROR_INTERNAL, "cuDNN graph builder: more than %d descriptors",
                             LH_GB_MAX_DESCRIPTORS));
        return NULL;
    }
    lh_gb_desc d = NULL;
    if (!gb_ok(gb, gb->dnn->BackendCreateDescriptor(type, &d), what)) return NULL;
    gb->descriptors[gb->descriptor_count++] = d;
    return d;
}

static void gb_set(lh_gb *gb, lh_gb_desc d, cudnnBackendAttributeName_t name,
                   cudnnBackendAttributeType_t type, int64_t count, const void *value,
                   const char *what) {
    if (gb->status != LH_OK || !d) return;
    gb_ok(gb, gb->dnn->BackendSetAttribute(d, name, type, count, value), what);
}

static void gb_finalize(lh_gb *gb, lh_gb_desc d, const char *what) {
    if (gb->status != LH_OK || !d) return;
    gb_ok(gb, gb->dnn->BackendFinalize(d), what);
}

static void gb_add_op(lh_gb *gb, lh_gb_desc op) {
    if (gb->status != LH_OK || !op) return;
    if (gb->op_count == LH_GB_MAX_OPS) {
        gb_error(gb, lh_fail(LH_ERROR_INTERNAL, "cuDNN graph builder: more than %d operations",
                             LH_GB_MAX_OPS));
        return;
    }
    gb->ops[gb->op_count++] = op;
}

void lh_gb_init(lh_gb *gb, const lh_cudnn_api *dnn, cudnnHandle_t handle) {
    memset(gb, 0, sizeof *gb);
    gb->dnn = dnn;
    gb->handle = handle;
    gb->status = LH_OK;
}

void lh_gb_init_for_device(lh_gb *gb, const lh_cudnn_api *dnn, lh_gb_desc device) {
    lh_gb_init(gb, dnn, NULL);
    gb->device = device;
}

void lh_gb_destroy(lh_gb *gb) {
    /* Newest first: a descriptor may refer to older ones. */
    for (int i = gb->descriptor_count - 1; i >= 0; i--)
        gb->dnn->BackendDestroyDescriptor(gb->descriptors[i]);
    gb->descriptor_count = 0;
    gb->op_count = 0;
    gb->plan = NULL;
}

static lh_gb_desc gb_tensor(lh_gb *gb, int64_t uid, cudnnDataType_t type, int rank,
                            const int64_t *dims, const int64_t *strides, bool is_virtual,
                            bool by_value) {
    lh_gb_desc t = gb_create(gb, CUDNN_BACKEND_TENSOR_DESCRIPTOR, "creating a tensor descriptor");
    int64_t alignment = 16;
    bool virt = is_virtual;
    gb_set(gb, t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "tensor data type");
    gb_set(gb, t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, rank, dims, "tensor dims");
    gb_set(gb, t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, rank, strides, "tensor strides");
    gb_set(gb, t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor uid");
    gb_set(gb, t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment,
           "tensor alignment");
    gb_set(gb, t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt, "tensor is_virtual");
    if (by_value) {
        bool yes = true;
        gb_set(gb, t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes,
               "tensor is_by_value");
    }
    char what[96];
    snprintf(what, sizeof what, "finalizing tensor uid %lld", (long long)uid);
    gb_finalize(gb, t, what);
    return gb->status == LH_OK ? t : NULL;
}

lh_gb_desc lh_gb_tensor(lh_gb *gb, int64_t uid, cudnnDataType_t type, int rank,
                        const int64_t *dims, const int64_t *strides, bool is_virtual) {
    return gb_tensor(gb, uid, type, rank, dims, strides, is_virtual, false);
}

lh_gb_desc lh_gb_scalar(lh_gb *gb, int64_t uid, cudnnDataType_t type) {
    static const int64_t ones[4] = {1, 1, 1, 1};
    return gb_tensor(gb, uid, type, 4, ones, ones, false, true);
}

void lh_gb_pointwise(lh_gb *gb, cudnnPointwiseMode_t mode, cudnnDataType_t math, lh_gb_desc x,
                     lh_gb_desc b, lh_gb_desc t, lh_gb_desc y, int64_t axis) {
    lh_gb_desc pw = gb_create(gb, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "creating a pointwise");
    gb_set(gb, pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode,
           "pointwise mode");
    gb_set(gb, pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math,
           "pointwise precision");
    if (axis >= 0)
        gb_set(gb, pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "pointwise axis");
    gb_finalize(gb, pw, "finalizing a pointwise descriptor");
    lh_gb_desc op = gb_create(gb, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR,
                              "creating a pointwise operation");
    gb_set(gb, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
           &pw, "pointwise op descriptor");
    gb_set(gb, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x,
           "pointwise x");
    if (b)
        gb_set(gb, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b,
               "pointwise b");
    if (t)
        gb_set(gb, op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t,
               "pointwise t");
    gb_set(gb, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y,
           "pointwise y");
    char what[80];
    snprintf(what, sizeof what, "finalizing a pointwise operation (mode %d)", (int)mode);
    gb_finalize(gb, op, what);
    gb_add_op(gb, op);
}

void lh_gb_matmul(lh_gb *gb, lh_gb_desc a, lh_gb_desc b, lh_gb_desc c) {
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    lh_gb_desc mm = gb_create(gb, CUDNN_BACKEND_MATMUL_DESCRIPTOR, "creating a matmul");
    gb_set(gb, mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "matmul type");
    gb_finalize(gb, mm, "finalizing a matmul descriptor");
    lh_gb_desc op = gb_create(gb, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR,
                              "creating a matmul operation");
    gb_set(gb, op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a, "A");
    gb_set(gb, op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, "B");
    gb_set(gb, op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c, "C");
    gb_set(gb, op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm,
           "matmul op descriptor");
    gb_finalize(gb, op, "finalizing a matmul operation");
    gb_add_op(gb, op);
}

void lh_gb_reduction(lh_gb *gb, cudnnReduceTensorOp_t mode, lh_gb_desc x, lh_gb_desc y) {
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    lh_gb_desc red = gb_create(gb, CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "creating a reduction");
    gb_set(gb, red, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode,
           "reduction operator");
    gb_set(gb, red, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp,
           "reduction type");
    gb_finalize(gb, red, "finalizing a reduction descriptor");
    lh_gb_desc op = gb_create(gb, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR,
                              "creating a reduction operation");
    gb_set(gb, op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x,
           "reduction x");
    gb_set(gb, op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y,
           "reduction y");
    gb_set(gb, op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &red,
           "reduction op descriptor");
    gb_finalize(gb, op, "finalizing a reduction operation");
    gb_add_op(gb, op);
}

void lh_gb_reshape(lh_gb *gb, lh_gb_desc x, lh_gb_desc y) {
    lh_gb_desc op = gb_create(gb, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR,
                              "creating a reshape operation");
    gb_set(gb, op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x,
           "reshape x");
    gb_set(gb, op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y,
           "reshape y");
    gb_finalize(gb, op, "finalizing a reshape operation");
    gb_add_op(gb, op);
}


/* Whether the engine behind `cfg` carries the NONDETERMINISTIC numerical note; *runtime_compiled
 * (may be NULL) whether it carries the RUNTIME_COMPILATION behaviour note. */
static bool cfg_notes(lh_gb *gb, lh_gb_desc cfg, int64_t *engine_id, bool *runtime_compiled) {
    lh_gb_desc engine = NULL;
    *engine_id = -1;
    if (gb->dnn->BackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &engine) !=
        CUDNN_STATUS_SUCCESS)
        return false;
    int64_t n = 0;
    bool deterministic = false;
    if (gb->dnn->BackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &engine) ==
        CUDNN_STATUS_SUCCESS) {
        gb->dnn->BackendGetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1,
                                     &n, engine_id);
        cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
        n = 0;
        if (gb->dnn->BackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                                         CUDNN_TYPE_NUMERICAL_NOTE,
                                         CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n, notes) ==
            CUDNN_STATUS_SUCCESS) {
            deterministic = true;
            for (int64_t i = 0; i < n; i++)
                if (notes[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) deterministic = false;
        }
        if (runtime_compiled) {
            cudnnBackendBehaviorNote_t behaviour[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
            n = 0;
            *runtime_compiled = false;
            if (gb->dnn->BackendGetAttribute(engine, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE,
                                             CUDNN_TYPE_BEHAVIOR_NOTE,
                                             CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &n, behaviour) ==
                CUDNN_STATUS_SUCCESS)
                for (int64_t i = 0; i < n; i++)
                    if (behaviour[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION)
                        *runtime_compiled = true;
        }
    }
    gb->dnn->BackendDestroyDescriptor(engine);
    return deterministic;
}

/* The workspace an engine configuration reports before its plan is finalized; -1 where cuDNN
 * does not say. */
static int64_t cfg_workspace(lh_gb *gb, lh_gb_desc cfg) {
    int64_t ws = -1, n = 0;
    if (gb->dnn->BackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
                                     &n, &ws) != CUDNN_STATUS_SUCCESS ||
        n != 1)
        return -1;
    return ws;
}

/* Tries the configurations of one heuristics mode; returns true once a plan finalized. */
static bool try_mode(lh_gb *gb, lh_gb_desc graph, cudnnBackendHeurMode_t mode,
                     bool prefer_deterministic, const char *what, char *notes,
                     size_t notes_size) {
    lh_gb_desc heur = gb_create(gb, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "creating heuristics");
    gb_set(gb, heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
           &graph, "heuristics graph");
    gb_set(gb, heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heur mode");
    if (!gb->handle && gb->device)
        gb_set(gb, heur, CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
               &gb->device, "heuristics device properties");
    if (gb->status != LH_OK) return false;
    int64_t t0 = lh_clock_us();
    cudnnStatus_t s = gb->dnn->BackendFinalize(heur);
    gb->heuristics_us += lh_clock_us() - t0;
    if (s != CUDNN_STATUS_SUCCESS) {
        size_t used = strlen(notes);
        snprintf(notes + used, notes_size - used, " [heuristics mode %d: %s]", (int)mode,
                 gb->dnn->GetErrorString(s));
        return false;
    }
    int64_t count = 0;
    if (!gb_ok(gb, gb->dnn->BackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, NULL),
               "counting heuristics results"))
        return false;
    enum { MAX_CFGS = 16 };
    if (count > MAX_CFGS) count = MAX_CFGS;
    lh_gb_desc cfgs[MAX_CFGS];
    for (int64_t i = 0; i < count; i++)
        cfgs[i] = gb_create(gb, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "creating an engine config");
    if (gb->status != LH_OK) return false;
    int64_t got = 0;
    if (!gb_ok(gb, gb->dnn->BackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, cfgs),
               "reading heuristics results"))
        return false;
    /* LIGHTHOUSE_CUDA_VERBOSE: every configuration the heuristics offer and every attempt to
     * finalize one, with its time (which engines need run-time compilation is what a machine's
     * first plan costs, docs/compiler.md). */
    bool verbose = lh_cuda_verbose();
    for (int64_t i = 0; verbose && i < got; i++) {
        int64_t id;
        bool rtc = false, det = cfg_notes(gb, cfgs[i], &id, &rtc);
        lh_cuda_say("cuDNN %s: heuristics mode %d offers engine %lld (%s, %s, workspace %lld B)",
                what, (int)mode, (long long)id, det ? "deterministic" : "nondeterministic",
                rtc ? "compiled at run time" : "precompiled", (long long)cfg_workspace(gb, cfgs[i]));
    }
    /* Two passes when determinism is preferred: deterministic engines first, then any. */
    for (int pass = prefer_deterministic ? 0 : 1; pass < 2; pass++) {
        for (int64_t i = 0; i < got; i++) {
            int64_t engine_id;
            bool det = cfg_notes(gb, cfgs[i], &engine_id, NULL);
            if (pass == 0 && !det) continue;
            /* Over the caller's limit: what finalizing it and then refusing it would end in,
             * without compiling an engine that will not run (seconds on a fresh machine). */
            int64_t need = cfg_workspace(gb, cfgs[i]);
            if (gb->workspace_limit > 0 && need > gb->workspace_limit) {
                if (verbose)
                    lh_cuda_say("cuDNN %s: engine %lld needs %lld B of workspace, over the limit "
                                "of %lld B: not built", what,
                            (long long)engine_id, (long long)need,
                            (long long)gb->workspace_limit);
                gb->over_limit = true;
                gb->workspace_bytes = need;
                gb->engine_id = engine_id;
                return false;
            }
            lh_gb_desc plan = NULL;
            if (gb->dnn->BackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan) !=
                CUDNN_STATUS_SUCCESS)
                continue;
            if (gb->handle)
                gb->dnn->BackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE,
                                             CUDNN_TYPE_HANDLE, 1, &gb->handle);
            else
                gb->dnn->BackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_DEVICEPROP,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &gb->device);
            gb->dnn->BackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                         CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]);
            int64_t t1 = lh_clock_us();
            s = gb->dnn->BackendFinalize(plan);
            int64_t took = lh_clock_us() - t1;
            gb->plan_us += took;
            if (verbose)
                lh_cuda_say("cuDNN %s: engine %lld %s in %.1f ms", what,
                        (long long)engine_id,
                        s == CUDNN_STATUS_SUCCESS ? "finalized" : gb->dnn->GetErrorString(s),
                        took / 1e3);
            if (s != CUDNN_STATUS_SUCCESS) {
                size_t used = strlen(notes);
                snprintf(notes + used, notes_size - used, " [engine %lld: %s]",
                         (long long)engine_id, gb->dnn->GetErrorString(s));
                gb->dnn->BackendDestroyDescriptor(plan);
                continue;
            }
            int64_t ws = 0, n = 0;
            gb->dnn->BackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                         CUDNN_TYPE_INT64, 1, &n, &ws);
            if (gb->descriptor_count == LH_GB_MAX_DESCRIPTORS) {
                gb->dnn->BackendDestroyDescriptor(plan);
                gb_error(gb, lh_fail(LH_ERROR_INTERNAL, "cuDNN graph builder: descriptors full"));
                return false;
            }
            gb->descriptors[gb->descriptor_count++] = plan;
            gb->plan = plan;
            gb->workspace_bytes = ws;
            gb->deterministic = det;
            gb->engine_id = engine_id;
            return true;
        }
    }
    return false;
}

lh_status lh_gb_build_plan(lh_gb *gb, bool prefer_deterministic, const char *what) {
    lh_gb_desc graph = gb_create(gb, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR,
                                 "creating an operation graph");
    /* a graph built for a device description has no handle (cuDNN takes the device from the
     * heuristics and the plan) */
    if (gb->handle)
        gb_set(gb, graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &gb->handle,
               "graph handle");
    gb_set(gb, graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, gb->op_count,
           gb->ops, "graph operations");
    int64_t t0 = lh_clock_us();
    gb_finalize(gb, graph, "finalizing the operation graph");
    int64_t took = lh_clock_us() - t0;
    gb->graph_us += took;
    lh_cuda_say("cuDNN %s: operation graph finalized in %.1f ms", what, took / 1e3);
    char notes[768] = "";
    if (gb->status == LH_OK &&
        !try_mode(gb, graph, CUDNN_HEUR_MODE_A, prefer_deterministic, what, notes,
                  sizeof notes) &&
        gb->status == LH_OK && !gb->over_limit)
        try_mode(gb, graph, CUDNN_HEUR_MODE_FALLBACK, prefer_deterministic, what, notes,
                 sizeof notes);
    if (gb->status != LH_OK)
        return lh_fail(gb->status, "building the cuDNN %s graph: %s", what, gb->message);
    if (gb->over_limit)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "the cuDNN %s graph's engine %lld needs %lld B of workspace, more than "
                       "the %lld B allowed",
                       what, (long long)gb->engine_id, (long long)gb->workspace_bytes,
                       (long long)gb->workspace_limit);
    if (!gb->plan)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "cuDNN %zu has no engine for the %s graph on this GPU (tried heuristics "
                       "modes A and FALLBACK:%s)",
                       gb->dnn->version, what, notes[0] ? notes : " no configurations");
    return LH_OK;
}

char *lh_gb_plan_json(const lh_gb *gb) {
    if (!gb->plan) return NULL;
    int64_t n = 0;
    if (gb->dnn->BackendGetAttribute(gb->plan, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION,
                                     CUDNN_TYPE_CHAR, 0, &n, NULL) != CUDNN_STATUS_SUCCESS ||
        n <= 0)
        return NULL;
    char *json = malloc((size_t)n + 1);
    int64_t got = 0;
    if (!json ||
        gb->dnn->BackendGetAttribute(gb->plan, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION,
                                     CUDNN_TYPE_CHAR, n, &got, json) != CUDNN_STATUS_SUCCESS ||
        got <= 0 || got > n) {
        free(json);
        return NULL;
    }
    json[got] = '\0';
    /* the count may include the terminator; a NUL inside would cut the text */
    if (strlen(json) == 0 || strlen(json) + 1 < (size_t)got) {
        free(json);
        return NULL;
    }
    return json;
}

bool lh_gb_restore_plan(lh_gb *gb, const char *json) {
    if (gb->status != LH_OK || gb->plan || gb->descriptor_count == LH_GB_MAX_DESCRIPTORS)
        return false;
    lh_gb_desc plan = NULL;
    if (gb->dnn->BackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan) !=
        CUDNN_STATUS_SUCCESS)
        return false;
    int64_t ws = 0, n = 0;
    bool ok = gb->dnn->BackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE,
                                           CUDNN_TYPE_HANDLE, 1, &gb->handle) ==
                  CUDNN_STATUS_SUCCESS &&
              gb->dnn->BackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION,
                                           CUDNN_TYPE_CHAR, (int64_t)strlen(json), json) ==
                  CUDNN_STATUS_SUCCESS &&
              gb->dnn->BackendFinalize(plan) == CUDNN_STATUS_SUCCESS &&
              gb->dnn->BackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                           CUDNN_TYPE_INT64, 1, &n, &ws) ==
                  CUDNN_STATUS_SUCCESS &&
              n == 1 && ws >= 0;
    if (!ok) {
        gb->dnn->BackendDestroyDescriptor(plan);
        return false;
    }
    gb->descriptors[gb->descriptor_count++] = plan;
    gb->plan = plan;
    gb->workspace_bytes = ws;
    return true;
}

lh_status lh_gb_execute(const lh_gb *gb, int count, const int64_t *uids, void *const *pointers,
                        void *workspace, const char *what) {
    const lh_cudnn_api *dnn = gb->dnn;
    lh_gb_desc pack = NULL;
    cudnnStatus_t s = dnn->BackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
    if (s != CUDNN_STATUS_SUCCESS) return lh_cudnn_fail(s, "creating a variant pack");
    s = dnn->BackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, count,
                                 uids);
    if (s == CUDNN_STATUS_SUCCESS)
        s = dnn->BackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                                     CUDNN_TYPE_VOID_PTR, count, pointers);
    if (s == CUDNN_STATUS_SUCCESS)
        s = dnn->BackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR,
                                     1, &workspace);
    if (s == CUDNN_STATUS_SUCCESS) s = dnn->BackendFinalize(pack);
    if (s == CUDNN_STATUS_SUCCESS) s = dnn->BackendExecute(gb->handle, gb->plan, pack);
    lh_status st = s == CUDNN_STATUS_SUCCESS ? LH_OK : lh_cudnn_fail(s, what);
    dnn->BackendDestroyDescriptor(pack);
    return st;
}
