/*
 * cudnn_plan_store.h - finalized cuDNN execution plans kept on disk between processes, beside
 * the compiled kernels.
 *
 * Why: once a plan's kernels come from the disk cache, what is left of a new process's first
 * plan is cuDNN: finalizing the SDPA operation graphs, the heuristics and the execution plans,
 * some 100+ ms for a forward and a backward graph. cuDNN can write a finalized plan out as text
 * (its JSON representation) and finalize a plan from that text alone, skipping graph,
 * heuristics and plan building. cuDNN documents this for runtime-compiled engines; for others
 * the text may be refused either way, and the plan is then built as before: the store is only
 * ever an optimisation, never an error.
 *
 * The records live in the kernel cache's directory (cudnn_plan_record.c: format and identity)
 * and follow its switch: no store where the context's disk cache is disabled
 * (LH_CONTEXT_CACHE_ENABLED = 0) or LIGHTHOUSE_CUDNN_PLAN_STORE=0.
 */
#ifndef LH_CUDNN_PLAN_STORE_H
#define LH_CUDNN_PLAN_STORE_H

#include "cudnn_graph_build.h"
#include "cudnn_plan_record.h"

typedef struct lh_plan_store {
    lhc_cache *cache;     /* the context's kernel cache (its directory and its switch) */
    int sm;               /* the GPU: compute capability and name */
    const char *device;
} lh_plan_store;

/* What became of one graph's plan, for the plan's description. */
typedef enum lh_plan_store_outcome {
    LH_PLAN_STORE_OFF = 0,      /* no store: built */
    LH_PLAN_STORE_RESTORED,     /* restored from the store */
    LH_PLAN_STORE_SAVED,        /* built and written to the store */
    LH_PLAN_STORE_UNSERIALISED  /* built; cuDNN gave no text for its engine, or writing failed */
} lh_plan_store_outcome;

/* Restores the plan of `role` (e.g. "forward") of the graphs of version `graph_version` for
 * `shape` into `gb` (initialised, no plan): true with gb->plan, workspace, engine id and
 * deterministic flag as when it was built, and the record's backward kind in *bwd_kind (NULL:
 * not wanted, as for the forward). Its
 * time, successful or not, is added to gb->plan_us. NULL store: false. */
bool lh_plan_store_restore(const lh_plan_store *store, const lh_plan_key *shape,
                           int graph_version, const char *role, lh_gb *gb, int *bwd_kind);
/* Whether the store holds a whole record of that identity (read, not restored: this needs no
 * GPU). */
bool lh_plan_store_has(const lh_plan_store *store, const lh_cudnn_api *dnn,
                       const lh_plan_key *shape, int graph_version, const char *role);
/* Whether plans are stored at all: a store on a cache, and LIGHTHOUSE_CUDNN_PLAN_STORE not 0. */
bool lh_plan_store_enabled(const lh_plan_store *store);
/* Writes the built plan of `gb` for the same identity; its time is added to gb->plan_us. */
lh_plan_store_outcome lh_plan_store_save(const lh_plan_store *store, const lh_plan_key *shape,
                                         int graph_version, const char *role, lh_gb *gb,
                                         int bwd_kind);

#endif /* LH_CUDNN_PLAN_STORE_H */
