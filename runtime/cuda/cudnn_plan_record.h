/*
 * cudnn_plan_record.h - the on-disk record of one finalized cuDNN execution plan, and its
 * identity: the part of the plan store that needs no cuDNN (cudnn_plan_store.c makes and
 * restores the plans), so that its format and keying are tested on any machine.
 *
 * A record is text, kept in the kernel cache's directory through lhc_cache_record_read/_write
 * (compiler.h: the same trust rules, atomic writes and checksum as the kernels):
 *     LHCP1\n
 *     <identity>\n
 *     engine <id> workspace <bytes> deterministic <0|1> bwd <kind>\n
 *     <cuDNN's JSON representation of the plan>
 * The identity names everything that decides the plan: the library's and cuDNN's versions, the
 * GPU (compute capability and name), the version of the SDPA graphs and their tensor uids, the
 * graph's role and the SDPA shape key. The file's name hashes it; the record repeats it in full,
 * and a record whose identity differs (another version, a hash collision, a copied file) is not
 * used.
 */
#ifndef LH_CUDNN_PLAN_RECORD_H
#define LH_CUDNN_PLAN_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compiler.h"
#include "plan_cache.h"

#define LH_PLAN_RECORD_IDENTITY_CAP 1024

/* What decides a stored plan. */
typedef struct lh_plan_record_id {
    size_t cudnn_version;       /* cudnnGetVersion() */
    int sm;                     /* 10 * major + minor */
    const char *device;         /* the GPU's name */
    int graph_version;          /* the SDPA graphs and their tensor uids (cuda_sdpa.c) */
    const char *role;           /* "forward", "backward" */
    const lh_plan_key *shape;   /* cuda_sdpa_key */
} lh_plan_record_id;

/* What the plan's builder read after building it, so a restored plan describes itself alike. */
typedef struct lh_plan_record_meta {
    int64_t engine_id;
    int64_t workspace_bytes;
    bool deterministic;
    int bwd_kind;               /* the backward graph (lh_sdpa_bwd_kind); 0 for the forward */
} lh_plan_record_meta;

/* The identity as one line (no newline in it); false where it does not fit. */
bool lh_plan_record_identity(const lh_plan_record_id *id, char *out, size_t cap);

/* The record's text, malloc'd, and its length in *size; NULL when out of memory or `json` is
 * empty. */
char *lh_plan_record_encode(const char *identity, const lh_plan_record_meta *meta,
                            const char *json, size_t *size);
/* Parses `text` (NUL-terminated): true with *meta and *json (pointing into `text`) when it is a
 * whole record of `identity`; false for anything else. */
bool lh_plan_record_decode(const char *text, const char *identity, lh_plan_record_meta *meta,
                           const char **json);

/* Reads the record of `identity` from the cache's directory: true with *meta and a malloc'd
 * *json (free it), false when there is none usable. */
bool lh_plan_record_load(lhc_cache *cache, const char *identity, lh_plan_record_meta *meta,
                         char **json);
/* Writes it; false where it could not be written (never an error: the plan is built again). */
bool lh_plan_record_save(lhc_cache *cache, const char *identity, const lh_plan_record_meta *meta,
                         const char *json);

#endif /* LH_CUDNN_PLAN_RECORD_H */
