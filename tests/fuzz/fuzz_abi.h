/*
 * fuzz_abi.h - what the files of the C ABI fuzz target share: reading the input, checked
 * buffers, the promises checked after every call, and the state of one input.
 */
#ifndef LH_FUZZ_ABI_H
#define LH_FUZZ_ABI_H

#include <stddef.h>
#include <stdint.h>

#include "lighthouse.h"

#define FUZZ_SLOTS 3
#define FUZZ_MAX_OPS 48
/* A run operation whose buffers would be larger, or whose attention would take longer, is
 * skipped: an input must run in milliseconds. */
#define FUZZ_MAX_BUFFER (8u << 20)
#define FUZZ_MAX_WORK (INT64_C(1) << 22)

/* ---- the input: bytes read in order, 0 once it is used up ---------------------------------- */

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

uint8_t fz_u8(reader *r);
uint32_t fz_u16(reader *r);
uint64_t fz_u64(reader *r);
/* Sizes and enum values: mostly small valid ones, sometimes edges (0, -1, 2^31, 2^40, ...) or
 * raw 64-bit values. */
int64_t fz_value_i64(reader *r);
/* Scales: valid ones, 0, negative, NaN, +-Inf, huge, subnormal, or raw bits. */
double fz_value_f64(reader *r);

/* ---- buffers: `bytes` poisoned, then 64 canary bytes -------------------------------------- */

typedef struct buf {
    unsigned char *base;
    size_t bytes;
} buf;

buf fz_buf(size_t bytes);
void fz_buf_free(buf *b);
/* mode 0: random floats in [-2, 2); 1: with NaN and +-Inf sprinkled; 2: zeros; 3: +-1e30 */
void fz_fill_floats(buf *b, int mode);
void fz_fill_random(buf *b);
uint64_t fz_random(void);
/* Aborts if anything was written past the end of b. */
void fz_check_canary(const buf *b, const char *name, const char *call);
/* Whether every byte of b still holds the poison written by fz_buf. */
int fz_poisoned(const buf *b);

/* Aborts with a sentence: a promise of the header was broken. */
void fz_fail(const char *what, const char *call) __attribute__((noreturn));
/* The status is one of lh_status (and not INTERNAL), and lh_last_error() is "" exactly on LH_OK. */
void fz_check_status(lh_status st, const char *call);

/* ---- hooks: user_data 1 passes through, 2 fails without a message, 3 passes through and then
 * makes a library call that fails (the hook still succeeds) ------------------------------------ */

lh_status fz_forward_hook(void *u, lh_plan *plan, const void *q, const void *k, const void *v,
                          void *o, float *lse, void *stream);
lh_status fz_backward_hook(void *u, lh_plan *plan, const void *q, const void *k, const void *v,
                           const void *o, const float *lse, const void *dO, void *dq, void *dk,
                           void *dv, void *stream);

/* ---- the state of one input ---------------------------------------------------------------- */

typedef struct slot {
    lh_plan *plan;
    int finalized;
    int hooks;               /* the kind set (0: none) */
    buf saved, q, k, v, out; /* the last successful forward's */
    buf indices;             /* the last successful lh_select's */
} slot;

typedef struct fz_state {
    lh_context *ctx;
    lh_context *scratch;     /* options with costly values (many threads) go here */
    lh_ring *ring1, *ring2;  /* one rank; two ranks, of which only one ever comes */
    slot s[FUZZ_SLOTS];
} fz_state;

/* Runs one operation of the input (fuzz_ops.c). */
void fz_run_op(fz_state *st, reader *r);
/* Frees a slot's buffers of earlier runs. */
void fz_slot_drop(slot *sl);

#endif /* LH_FUZZ_ABI_H */
