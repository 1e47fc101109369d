/*
 * cpu_saved.c - what lh_backward checks in `saved` before it reads anything from it.
 *
 * `saved` comes back from the caller, who may hand over zeros, stale bytes, or the buffer of a
 * plan of another configuration that happens to have the same size. Two checks, both cheap next
 * to a backward:
 *  - a 64-byte tag at its end, written by lh_forward after everything else succeeded: a magic
 *    word, the configuration's fingerprint and the size. A buffer that a forward of this
 *    configuration did not write fails here, with a sentence.
 *  - Lighthouse mode: every index is a pyramid position (0 <= position < S_total of its chunk)
 *    and each row is in the order of docs/spec.md section 3 (the integer key increases strictly).
 *    Only this one protects memory: positions select the rows that gather, scatter and the pool
 *    backward read and write, so nothing is read or written before all of them have passed.
 * O_sel and the softmax statistics are floats: any bits are safe to compute with.
 */
#include <inttypes.h>
#include <string.h>

#include "cpu_internal.h"

#define TAG_MAGIC UINT64_C(0x314445564153484c) /* "LHSAVED1" in little-endian bytes */

typedef struct saved_tag {
    uint64_t magic, fingerprint, bytes, check;
    uint64_t unused[4];
} saved_tag;

_Static_assert(sizeof(saved_tag) == LH_CPU_SAVED_TAG_BYTES, "the tag fills its 64 bytes");

/* The bytes of `saved`, and where its tag and indices are (runtime/buffers.c lays them out). */
static int64_t saved_bytes(const lh_cpu_plan *plan) {
    return plan->pipeline.buffers.bytes[LH_BUF_SAVED];
}

static void *region(const lh_cpu_plan *plan, lh_region r, const void *saved) {
    return lh_buffer_at(&plan->pipeline.buffers, LH_BUF_SAVED, r, saved);
}

void lh_cpu_saved_seal(void *plan_state, void *saved) {
    const lh_cpu_plan *plan = plan_state;
    saved_tag tag = {.magic = TAG_MAGIC,
                     .fingerprint = plan->cfg.fingerprint,
                     .bytes = (uint64_t)saved_bytes(plan),
                     .check = ~plan->cfg.fingerprint};
    memcpy(region(plan, LH_REGION_TAG, saved), &tag, sizeof tag);
}

/* The integer key of docs/spec.md section 3 of slot s of a row (positions already in range). A
 * refined entry comes right after its last child in a valid row, and a kept-coarse entry never
 * does (its children are not in the row), so the predecessor decides which key applies. */
static int64_t order_key(const lh_config *cfg, const int32_t *row, int64_t s) {
    int64_t l, i;
    lh_cpu_locate(cfg, row[s], &l, &i);
    int64_t f = cfg->level_width[l];
    if (l > 0 && s > 0) {
        int64_t pl, pi;
        lh_cpu_locate(cfg, row[s - 1], &pl, &pi);
        if (pl == l - 1 && pi == i * cfg->pooling + cfg->pooling - 1)
            return (((i + 1) * f) << 16) - (INT64_C(1) << (16 - l));
    }
    return (i * f) << 16;
}

static lh_status check_indices(const lh_cpu_plan *plan, const int32_t *idx) {
    const lh_config *cfg = &plan->chunk->cfg;   /* positions are those of one chunk's pyramid */
    int64_t rows = plan->cfg.chunks * plan->cfg.batch * plan->cfg.heads, S = cfg->s_sel;
    for (int64_t r = 0; r < rows; r++) {
        const int32_t *row = idx + r * S;
        for (int64_t s = 0; s < S; s++)
            if (row[s] < 0 || row[s] >= cfg->s_total)
                return lh_fail(LH_ERROR_INVALID_VALUE,
                               "saved: index %" PRId64 " = %" PRId32 " is not a pyramid position "
                               "(0 <= position < S_total = %" PRId64 "); `saved` must be what "
                               "lh_forward of this plan wrote",
                               r * S + s, row[s], cfg->s_total);
        int64_t prev = -1;
        for (int64_t s = 0; s < S; s++) {
            int64_t key = order_key(cfg, row, s);
            if (key <= prev)
                return lh_fail(LH_ERROR_INVALID_VALUE,
                               "saved: index %" PRId64 " = %" PRId32 " breaks the order of the "
                               "sub-sequence (docs/spec.md section 3: each row is in increasing "
                               "order, no position twice); `saved` must be what lh_forward of "
                               "this plan wrote",
                               r * S + s, row[s]);
            prev = key;
        }
    }
    return LH_OK;
}

lh_status lh_cpu_saved_check(void *plan_state, const void *saved) {
    const lh_cpu_plan *plan = plan_state;
    saved_tag tag;
    memcpy(&tag, region(plan, LH_REGION_TAG, saved), sizeof tag);
    if (tag.magic != TAG_MAGIC || tag.check != ~tag.fingerprint)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "saved was not written by lh_forward (its last %d bytes hold no tag of a "
                       "forward): pass the `saved` that lh_forward of this plan filled",
                       LH_CPU_SAVED_TAG_BYTES);
    if (tag.fingerprint != plan->cfg.fingerprint || tag.bytes != (uint64_t)saved_bytes(plan))
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "saved was written by lh_forward of a plan of another configuration "
                       "(%" PRIu64 " bytes, fingerprint %016" PRIx64 "; this plan: %" PRId64
                       " bytes, fingerprint %016" PRIx64 ")",
                       tag.bytes, tag.fingerprint, saved_bytes(plan), plan->cfg.fingerprint);
    if (plan->cfg.mode != LH_MODE_LIGHTHOUSE) return LH_OK;
    return check_indices(plan, region(plan, LH_REGION_INDICES, saved));
}
