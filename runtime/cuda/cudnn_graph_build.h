/*
 * cudnn_graph_build.h - a small builder over the cuDNN backend descriptor API (plain C, no
 * cudnn-frontend): tensors, pointwise / matmul / reduction / reshape operations, the operation
 * graph, heuristics, and one finalized execution plan.
 *
 * Errors are sticky: the first failing call records its status and message in the builder, later
 * calls do nothing and return NULL, and lh_gb_build_plan reports that first failure. Graph code
 * therefore reads as a straight list of nodes. Every descriptor the builder creates stays alive
 * until lh_gb_destroy, because an execution plan may refer to them.
 */
#ifndef LH_CUDNN_GRAPH_BUILD_H
#define LH_CUDNN_GRAPH_BUILD_H

#include <stdbool.h>

#include "cudnn_api.h"

#define LH_GB_MAX_DESCRIPTORS 256
#define LH_GB_MAX_OPS 64

typedef cudnnBackendDescriptor_t lh_gb_desc;

typedef struct lh_gb {
    const lh_cudnn_api *dnn;
    cudnnHandle_t handle;
    /* Without a handle: a finalized device-properties descriptor (not owned) that the heuristics
     * and the execution plan are built for, on a machine that need not have that GPU or any
     * (cudnn_device.h). Such a plan is only for lh_gb_plan_json. */
    lh_gb_desc device;
    lh_gb_desc descriptors[LH_GB_MAX_DESCRIPTORS];
    int descriptor_count;
    lh_gb_desc ops[LH_GB_MAX_OPS];
    int op_count;
    lh_status status;     /* the first failure, LH_OK while none */
    char message[1024];   /* its message */
    lh_gb_desc plan;      /* after lh_gb_build_plan */
    int64_t workspace_bytes;
    bool deterministic;   /* the chosen engine has no NONDETERMINISTIC note */
    int64_t engine_id;
    /* where lh_gb_build_plan spent its time, in microseconds: finalizing the operation graph,
     * the heuristics (engine configurations), finalizing execution plans */
    int64_t graph_us, heuristics_us, plan_us;
    /* Set before lh_gb_build_plan (0: none): the first configuration in the search order whose
     * workspace (as the heuristics report it, before finalizing) exceeds it ends the search with
     * LH_ERROR_UNSUPPORTED and `over_limit` set, without compiling its engine. */
    int64_t workspace_limit;
    bool over_limit;
} lh_gb;

void lh_gb_init(lh_gb *gb, const lh_cudnn_api *dnn, cudnnHandle_t handle);
/* For building without a GPU: no handle, the plan made for `device` (see lh_gb.device). */
void lh_gb_init_for_device(lh_gb *gb, const lh_cudnn_api *dnn, lh_gb_desc device);
void lh_gb_destroy(lh_gb *gb);

/* A tensor of rank `rank` (dims/strides in elements). Virtual tensors stay inside the fused
 * kernel; non-virtual ones are bound to memory through the variant pack by `uid`. */
lh_gb_desc lh_gb_tensor(lh_gb *gb, int64_t uid, cudnnDataType_t type, int rank,
                        const int64_t *dims, const int64_t *strides, bool is_virtual);
/* A by-value scalar (rank 4, all dims 1); its host pointer goes in the variant pack. */
lh_gb_desc lh_gb_scalar(lh_gb *gb, int64_t uid, cudnnDataType_t type);

/* y = op(x [, b [, t]]); `axis` is used by GEN_INDEX (pass -1 otherwise). */
void lh_gb_pointwise(lh_gb *gb, cudnnPointwiseMode_t mode, cudnnDataType_t math, lh_gb_desc x,
                     lh_gb_desc b, lh_gb_desc t, lh_gb_desc y, int64_t axis);
/* c = a @ b over the last two dims, batched over the leading ones (fp32 accumulation). */
void lh_gb_matmul(lh_gb *gb, lh_gb_desc a, lh_gb_desc b, lh_gb_desc c);
/* y = reduce(x) over the dims where y has extent 1 (or a divisor of x's extent). */
void lh_gb_reduction(lh_gb *gb, cudnnReduceTensorOp_t op, lh_gb_desc x, lh_gb_desc y);
/* y = x viewed with y's dims and strides (a transpose when only the strides move). */
void lh_gb_reshape(lh_gb *gb, lh_gb_desc x, lh_gb_desc y);

/* Finalizes the graph and picks an engine: heuristics mode A, then FALLBACK; the first
 * configuration that finalizes wins, preferring deterministic ones when `prefer_deterministic`.
 * `what` names the graph in messages. */
lh_status lh_gb_build_plan(lh_gb *gb, bool prefer_deterministic, const char *what);

/* The finalized plan as cuDNN's JSON text (malloc'd), or NULL where its engine cannot be
 * serialised (cuDNN documents it for runtime-compiled engines) or memory runs out. */
char *lh_gb_plan_json(const lh_gb *gb);
/* A plan restored from lh_gb_plan_json's text into `gb` (initialised, holding no plan): true
 * with gb->plan and gb->workspace_bytes set; false where cuDNN refuses the text (the caller then
 * builds the graph). Records no error: a plan that cannot be restored is only built. */
bool lh_gb_restore_plan(lh_gb *gb, const char *json);

/* Runs the plan on the handle's current stream with the given uid -> pointer bindings. */
lh_status lh_gb_execute(const lh_gb *gb, int count, const int64_t *uids, void *const *pointers,
                        void *workspace, const char *what);

#endif /* LH_CUDNN_GRAPH_BUILD_H */
