/*
 * fuzz_abi.c - a fuzz target for the C ABI on the CPU backend: libFuzzer's entry point (the
 * seeded driver of fuzz_main.c calls the same function) and the helpers of fuzz_ops.c.
 *
 * An input is a little program: each operation is one byte (the opcode) followed by its
 * arguments, and a missing byte reads as 0 (fuzz_ops.c lists the operations). They create and
 * destroy up to three plans, set parameters from menus of valid, edge and raw values, finalize,
 * query, bind a ring of one rank (it runs) or of two (its rendezvous times out: nobody else
 * comes), set attention hooks (that pass through, fail, or leave an error behind and succeed),
 * and call every entry point with buffers of exactly the sizes the plan reports, or NULL,
 * misaligned, or with a stream, on inputs that are random, non-finite, huge or zero, and a
 * `saved` that is the forward's, zeros, random or another plan's. After every call the target
 * checks what the header promises:
 *  - the status is one of lh_status; lh_last_error() is "" exactly when it is LH_OK;
 *  - nothing is written past the end of a buffer (64 canary bytes after each);
 *  - a failing call leaves every output it was given untouched (poisoned before the call);
 *  - lh_select writes only pyramid positions; lh_backward refuses zeros and random bytes;
 * and the sanitizers check everything else (no out-of-bounds access, no undefined behaviour, no
 * leak). A broken promise aborts with a sentence.
 */
#include "fuzz_abi.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CANARY 64
#define CANARY_BYTE 0xa5
#define POISON 0x5a

/* ---- the input ----------------------------------------------------------------------------- */

uint8_t fz_u8(reader *r) {
    if (!r->n) return 0;
    r->n--;
    return *r->p++;
}

uint32_t fz_u16(reader *r) {
    uint32_t lo = fz_u8(r);
    return lo | (uint32_t)fz_u8(r) << 8;
}

uint64_t fz_u64(reader *r) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)fz_u8(r) << (8 * i);
    return v;
}

int64_t fz_value_i64(reader *r) {
    static const int64_t small[] = {1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
                                    6, 12, 96, 384, 768, 3072};
    static const int64_t edge[] = {0, -1, -128, 127, 65535, 65536, INT64_C(2147483647),
                                   INT64_C(2147483648), INT64_C(4294967296), INT64_C(1) << 40,
                                   (INT64_C(1) << 40) + 1, INT64_C(1) << 62, INT64_MAX, INT64_MIN};
    uint8_t c = fz_u8(r);
    if (c < 160) return small[c % (sizeof small / sizeof small[0])];
    if (c < 200) return (int64_t)fz_u16(r);
    if (c < 230) return edge[c % (sizeof edge / sizeof edge[0])];
    return (int64_t)fz_u64(r);
}

double fz_value_f64(reader *r) {
    static const double menu[] = {0.125, 0.25, 1.0, 1e9, 1e-9, 0.0, -1.0, NAN, INFINITY,
                                  -INFINITY, 1e300, 5e-324, 0.3};
    uint8_t c = fz_u8(r);
    if (c < 200) return menu[c % (sizeof menu / sizeof menu[0])];
    uint64_t bits = fz_u64(r);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* ---- buffers ------------------------------------------------------------------------------- */

static uint64_t rng = 1;

uint64_t fz_random(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

buf fz_buf(size_t bytes) {
    buf b = {NULL, bytes};
    b.base = aligned_alloc(64, (bytes + CANARY + 63) / 64 * 64);
    if (!b.base) abort();
    memset(b.base, POISON, bytes);
    memset(b.base + bytes, CANARY_BYTE, CANARY);
    return b;
}

void fz_buf_free(buf *b) {
    free(b->base);
    b->base = NULL;
    b->bytes = 0;
}

void fz_fill_floats(buf *b, int mode) {
    float *f = (float *)b->base;
    size_t n = b->bytes / sizeof(float);
    for (size_t i = 0; i < n; i++) {
        uint64_t x = fz_random();
        float v = (float)((double)(x >> 40) / 4194304.0 - 2.0);
        if (mode == 1 && x % 7 == 0)
            v = (x >> 3) % 3 == 0 ? NAN : (x >> 3) % 3 == 1 ? INFINITY : -INFINITY;
        if (mode == 2) v = 0.0f;
        if (mode == 3) v = (x & 1) ? 1e30f : -1e30f;
        f[i] = v;
    }
}

void fz_fill_random(buf *b) {
    for (size_t i = 0; i < b->bytes; i++) b->base[i] = (unsigned char)fz_random();
}

void fz_check_canary(const buf *b, const char *name, const char *call) {
    if (!b->base) return;
    for (size_t i = 0; i < CANARY; i++)
        if (b->base[b->bytes + i] != CANARY_BYTE) {
            char what[128];
            snprintf(what, sizeof what, "wrote past the end of %s (%zu bytes)", name, b->bytes);
            fz_fail(what, call);
        }
}

int fz_poisoned(const buf *b) {
    for (size_t i = 0; i < b->bytes; i++)
        if (b->base[i] != POISON) return 0;
    return 1;
}

void fz_fail(const char *what, const char *call) {
    fprintf(stderr, "fuzz_abi: %s: %s (last error: \"%s\")\n", call, what, lh_last_error());
    abort();
}

void fz_check_status(lh_status st, const char *call) {
    if ((int)st < LH_OK || st > LH_ERROR_INTERNAL) fz_fail("a status outside lh_status", call);
    if (st == LH_ERROR_INTERNAL) fz_fail("LH_ERROR_INTERNAL", call);
    int empty = lh_last_error()[0] == '\0';
    if (st == LH_OK && !empty) fz_fail("LH_OK, but lh_last_error() is not empty", call);
    if (st != LH_OK && empty) fz_fail("an error without a message", call);
}

/* ---- hooks --------------------------------------------------------------------------------- */

static void *attention_workspace(lh_plan *plan, lh_status *st) {
    int64_t bytes = 0;
    *st = lh_plan_get_i64(plan, LH_QUERY_ATTENTION_WORKSPACE_BYTES, &bytes);
    if (*st != LH_OK) return NULL;
    void *ws = aligned_alloc(64, (size_t)(bytes + 63) / 64 * 64 + 64);
    if (!ws) *st = LH_ERROR_OUT_OF_HOST_MEMORY;
    return ws;
}

lh_status fz_forward_hook(void *u, lh_plan *plan, const void *q, const void *k, const void *v,
                          void *o, float *lse, void *stream) {
    intptr_t kind = (intptr_t)u;
    if (kind == 2) return LH_ERROR_INVALID_VALUE;
    lh_status st;
    void *ws = attention_workspace(plan, &st);
    if (!ws) return st;
    st = lh_attention_forward(plan, q, k, v, o, lse, ws, stream);
    free(ws);
    int64_t x = 0;
    if (kind == 3) lh_plan_get_i64(plan, (lh_query)-5, &x);
    return st;
}

lh_status fz_backward_hook(void *u, lh_plan *plan, const void *q, const void *k, const void *v,
                           const void *o, const float *lse, const void *dO, void *dq, void *dk,
                           void *dv, void *stream) {
    intptr_t kind = (intptr_t)u;
    if (kind == 2) return LH_ERROR_COMMUNICATION;
    lh_status st;
    void *ws = attention_workspace(plan, &st);
    if (!ws) return st;
    st = lh_attention_backward(plan, q, k, v, o, lse, dO, dq, dk, dv, ws, stream);
    free(ws);
    int64_t x = 0;
    if (kind == 3) lh_plan_get_i64(plan, (lh_query)99, &x);
    return st;
}

/* ---- one input ----------------------------------------------------------------------------- */

void fz_slot_drop(slot *sl) {
    buf *b[] = {&sl->saved, &sl->q, &sl->k, &sl->v, &sl->out, &sl->indices};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) fz_buf_free(b[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int once;
    if (!once) {
        once = 1;
        /* the two-rank ring's lone rank gives up at once instead of after 120 s */
        setenv("LIGHTHOUSE_RING_TIMEOUT_S", "0.002", 1);
    }
    reader r = {data, size};
    rng = 0x9e3779b97f4a7c15ull ^ size;
    fz_state st;
    memset(&st, 0, sizeof st);
    if (lh_context_create(LH_BACKEND_CPU, 0, &st.ctx) != LH_OK ||
        lh_context_create(LH_BACKEND_CPU, 0, &st.scratch) != LH_OK)
        fz_fail("no CPU context", "lh_context_create");
    /* One worker thread: each run stays short, and thread stacks would look like leaks to
     * libFuzzer's per-input leak check. (The ThreadSanitizer build covers the threads.) */
    lh_context_set_i64(st.ctx, LH_CONTEXT_NUM_THREADS, 1);
    for (int ops = 0; ops < FUZZ_MAX_OPS && r.n; ops++) fz_run_op(&st, &r);
    for (int i = 0; i < FUZZ_SLOTS; i++) {
        fz_slot_drop(&st.s[i]);
        if (lh_plan_destroy(st.s[i].plan) != LH_OK) fz_fail("destroying a plan failed", "lh_plan_destroy");
    }
    if (lh_ring_destroy(st.ring1) != LH_OK || lh_ring_destroy(st.ring2) != LH_OK)
        fz_fail("destroying a ring without plans failed", "lh_ring_destroy");
    if (lh_context_destroy(st.ctx) != LH_OK || lh_context_destroy(st.scratch) != LH_OK)
        fz_fail("destroying a context without plans failed", "lh_context_destroy");
    return 0;
}
