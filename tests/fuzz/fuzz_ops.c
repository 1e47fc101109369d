/*
 * fuzz_ops.c - the operations of a fuzz input (see fuzz_abi.c). Opcode byte % OP_COUNT:
 *   0 create     slot, flags          5 forward    slot, flags(2)
 *   1 destroy    slot                 6 backward   slot, saved source, flags(2)
 *   2 set_i64    slot, param, value   7 stage      slot, which, source, flags(2)
 *   3 set_f64    slot, param, value   8 attention  slot, backward?, flags(2)
 *   4 finalize   slot                 9 hooks      slot, kind
 *  10 ring       slot, which, rank   11 context    option, value
 *  12 misc       what, value         13 query      slot, what, key
 * flags(2): byte f, byte w. f bit 0: argument w % 10 is NULL; bit 2: argument (w >> 3) % 10 is
 * misaligned by 1 + (w >> 6) % 3 bytes; bit 3: a (fake) stream; bits 4-5: how inputs are filled
 * (random, with NaN/Inf, zeros, +-1e30). Arguments count from 0 in the order of the call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_abi.h"

enum { OP_CREATE, OP_DESTROY, OP_SET_I64, OP_SET_F64, OP_FINALIZE, OP_FORWARD, OP_BACKWARD,
       OP_STAGE, OP_ATTENTION, OP_HOOKS, OP_RING, OP_CONTEXT, OP_MISC, OP_QUERY, OP_COUNT };

typedef struct flags {
    int null_arg, misalign_arg, misalign_by, stream, fill;
} flags;

static flags read_flags(reader *r) {
    uint8_t f = fz_u8(r), w = fz_u8(r);
    flags a = {-1, -1, 1 + (w >> 6) % 3, (f & 8) != 0, (f >> 4) & 3};
    if (f & 1) a.null_arg = w % 10;
    if (f & 4) a.misalign_arg = (w >> 3) % 10;
    return a;
}

/* Argument `index` of a call: NULL, misaligned, or the buffer. */
static void *arg(buf *b, int index, const flags *a) {
    if (a->null_arg == index) return NULL;
    if (a->misalign_arg == index && b->base) return b->base + a->misalign_by;
    return b->base;
}

static void *stream_of(const flags *a) {
    static int fake;
    return a->stream ? &fake : NULL;
}

static int64_t q64(lh_plan *p, lh_query q) {
    int64_t v = -1;
    if (lh_plan_get_i64(p, q, &v) != LH_OK) fz_fail("a query of a finalized plan failed", "lh_plan_get_i64");
    return v;
}

static int64_t param(lh_plan *p, lh_param k) {
    int64_t v = -1;
    if (lh_plan_get_param_i64(p, k, &v) != LH_OK) fz_fail("reading a parameter failed", "lh_plan_get_param_i64");
    return v;
}

/* Bytes of B x rows x width floats (or ints) of a finalized plan; (size_t)-1 when too large. */
static size_t bytes_of(lh_plan *p, int64_t heads, int64_t rows, int64_t width) {
    double n = (double)param(p, LH_PARAM_BATCH) * (double)heads * (double)rows * (double)width * 4.0;
    return n > FUZZ_MAX_BUFFER ? (size_t)-1 : (size_t)n;
}

/* The sizes of one plan's run, or 0 when the run would be too large or too slow. */
typedef struct sizes {
    size_t q, kv, sel, rows, scores_q, scores_k, saved, fwd_ws, bwd_ws, stage_ws, attn_ws;
} sizes;

static int sizes_of(lh_plan *p, sizes *s) {
    int64_t H = param(p, LH_PARAM_HEADS), Hkv = param(p, LH_PARAM_KV_HEADS);
    int64_t D = param(p, LH_PARAM_HEAD_DIM), B = param(p, LH_PARAM_BATCH);
    int64_t n = q64(p, LH_QUERY_LOCAL_SEQ_LEN), ss = q64(p, LH_QUERY_SUBSEQ_LEN);
    int64_t st = q64(p, LH_QUERY_PYRAMID_LEN);
    s->q = bytes_of(p, H, n, D);
    s->kv = bytes_of(p, Hkv, n, D);
    s->sel = bytes_of(p, H, ss, D);
    s->rows = bytes_of(p, H, ss, 1);
    s->scores_q = bytes_of(p, H, st, 1);
    s->scores_k = bytes_of(p, Hkv, st, 1);
    int64_t ws[] = {q64(p, LH_QUERY_SAVED_BYTES), q64(p, LH_QUERY_FWD_WORKSPACE_BYTES),
                    q64(p, LH_QUERY_BWD_WORKSPACE_BYTES), q64(p, LH_QUERY_STAGE_WORKSPACE_BYTES),
                    q64(p, LH_QUERY_ATTENTION_WORKSPACE_BYTES)};
    size_t *dst[] = {&s->saved, &s->fwd_ws, &s->bwd_ws, &s->stage_ws, &s->attn_ws};
    for (int i = 0; i < 5; i++) {
        if (ws[i] < 0) fz_fail("a negative size", "lh_plan_get_i64");
        *dst[i] = ws[i] > (int64_t)(4 * FUZZ_MAX_BUFFER) ? (size_t)-1 : (size_t)ws[i];
    }
    size_t all[] = {s->q, s->kv, s->sel, s->rows, s->scores_q, s->scores_k, s->saved, s->fwd_ws,
                    s->bwd_ws, s->stage_ws, s->attn_ws};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i] == (size_t)-1) return 0;
    double work = (double)B * (double)H * (double)ss * (double)ss * (double)D;
    return work <= (double)FUZZ_MAX_WORK;
}

static slot *slot_of(fz_state *st, reader *r) { return &st->s[fz_u8(r) % FUZZ_SLOTS]; }

/* A finalized plan whose runs fit, or NULL after checking that the call is refused. */
static lh_plan *runnable(slot *sl, sizes *s, const char *call) {
    if (!sl->plan || !sl->finalized) {
        lh_status st = lh_forward(sl->plan, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
        fz_check_status(st, call);
        if (st != (sl->plan ? LH_ERROR_BAD_STATE : LH_ERROR_NULL_POINTER))
            fz_fail("a plan that is not ready ran", call);
        return NULL;
    }
    return sizes_of(sl->plan, s) ? sl->plan : NULL;
}

static buf input(size_t bytes, int fill) {
    buf b = fz_buf(bytes);
    fz_fill_floats(&b, fill);
    return b;
}

/* ---- forward and backward ------------------------------------------------------------------- */

static void op_forward(slot *sl, reader *r) {
    sizes s;
    flags a = read_flags(r);
    lh_plan *p = runnable(sl, &s, "lh_forward");
    if (!p) return;
    buf q = input(s.q, a.fill), k = input(s.kv, a.fill), v = input(s.kv, a.fill);
    buf out = fz_buf(s.q), saved = fz_buf(s.saved), ws = fz_buf(s.fwd_ws);
    fz_fill_random(&ws);   /* a workspace holds anything */
    /* the caller's scores (any plan: those of other scorers must refuse them), every chunk's */
    int with_scores = param(p, LH_PARAM_SCORER) == LH_SCORER_EXTERNAL || (a.fill & 1);
    size_t chunks = (size_t)q64(p, LH_QUERY_CHUNKS);
    buf sq = input(with_scores ? chunks * s.scores_q : 0, a.fill);
    buf sk = input(with_scores ? chunks * s.scores_k : 0, a.fill);
    lh_status st = with_scores
        ? lh_forward_with_scores(p, arg(&q, 0, &a), arg(&k, 1, &a), arg(&v, 2, &a), arg(&sq, 6, &a),
                                 arg(&sk, 7, &a), arg(&out, 3, &a), arg(&saved, 4, &a),
                                 arg(&ws, 5, &a), stream_of(&a))
        : lh_forward(p, arg(&q, 0, &a), arg(&k, 1, &a), arg(&v, 2, &a), arg(&out, 3, &a),
                     arg(&saved, 4, &a), arg(&ws, 5, &a), stream_of(&a));
    fz_check_status(st, "lh_forward");
    const buf *all[] = {&q, &k, &v, &out, &saved, &ws, &sq, &sk};
    const char *names[] = {"q", "k", "v", "out", "saved", "workspace", "scores_q", "scores_k"};
    for (int i = 0; i < 8; i++) fz_check_canary(all[i], names[i], "lh_forward");
    fz_buf_free(&sq);
    fz_buf_free(&sk);
    /* a failing hook may have written what it was given (o_sel, lse in saved) */
    if (st != LH_OK && (!fz_poisoned(&out) || (!sl->hooks && !fz_poisoned(&saved))))
        fz_fail("a failing call wrote an output", "lh_forward");
    fz_buf_free(&ws);
    if (st != LH_OK) {
        buf *b[] = {&q, &k, &v, &out, &saved};
        for (int i = 0; i < 5; i++) fz_buf_free(b[i]);
        return;
    }
    fz_slot_drop(sl);
    sl->q = q, sl->k = k, sl->v = v, sl->out = out, sl->saved = saved;
}

static void op_backward(fz_state *fs, slot *sl, reader *r) {
    sizes s;
    int source = fz_u8(r) % 4;   /* 0: the forward's, 1: zeros, 2: random, 3: another slot's */
    flags a = read_flags(r);
    lh_plan *p = runnable(sl, &s, "lh_backward");
    if (!p) return;
    int own = source == 0 && sl->saved.base && sl->saved.bytes == s.saved;
    buf saved = fz_buf(s.saved);
    if (own) memcpy(saved.base, sl->saved.base, s.saved);
    else if (source == 2) fz_fill_random(&saved);
    else if (source == 3) {
        const slot *o = &fs->s[(sl - fs->s + 1) % FUZZ_SLOTS];
        if (o->saved.base && o->saved.bytes == s.saved) memcpy(saved.base, o->saved.base, s.saved);
        else memset(saved.base, 0, s.saved);
    } else memset(saved.base, 0, s.saved);
    buf q = input(s.q, a.fill), k = input(s.kv, a.fill), v = input(s.kv, a.fill);
    buf out = input(s.q, a.fill), dout = input(s.q, a.fill);
    if (own) {
        memcpy(q.base, sl->q.base, s.q), memcpy(k.base, sl->k.base, s.kv);
        memcpy(v.base, sl->v.base, s.kv), memcpy(out.base, sl->out.base, s.q);
    }
    buf dq = fz_buf(s.q), dk = fz_buf(s.kv), dv = fz_buf(s.kv), ws = fz_buf(s.bwd_ws);
    fz_fill_random(&ws);
    lh_status st = lh_backward(p, arg(&q, 0, &a), arg(&k, 1, &a), arg(&v, 2, &a), arg(&out, 3, &a),
                               arg(&dout, 4, &a), arg(&saved, 5, &a), arg(&dq, 6, &a),
                               arg(&dk, 7, &a), arg(&dv, 8, &a), arg(&ws, 9, &a),
                               stream_of(&a));
    fz_check_status(st, "lh_backward");
    buf *all[] = {&q, &k, &v, &out, &dout, &saved, &dq, &dk, &dv, &ws};
    const char *names[] = {"q", "k", "v", "out", "dout", "saved", "dq", "dk", "dv", "workspace"};
    for (int i = 0; i < 10; i++) fz_check_canary(all[i], names[i], "lh_backward");
    if (st != LH_OK && (!fz_poisoned(&dq) || !fz_poisoned(&dk) || !fz_poisoned(&dv)))
        fz_fail("a failing call wrote an output", "lh_backward");
    /* the CPU backend checks `saved`: zeros and random bytes are never what a forward wrote */
    if (st == LH_OK && (source == 1 || source == 2))
        fz_fail("a `saved` of zeros or random bytes was accepted", "lh_backward");
    for (int i = 0; i < 10; i++) fz_buf_free(all[i]);
}

/* ---- stage entry points --------------------------------------------------------------------- */

/* Indices for gather / scatter: the last selection, random integers, or positions in range in
 * a random order. */
static void fill_indices(slot *sl, buf *idx, int source, int64_t s_total) {
    int32_t *x = (int32_t *)idx->base;
    size_t n = idx->bytes / 4;
    if (source == 0 && sl->indices.base && sl->indices.bytes == idx->bytes) {
        memcpy(x, sl->indices.base, idx->bytes);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t z = fz_random();
        x[i] = source == 1 ? (int32_t)z : (int32_t)(z % (uint64_t)(s_total > 0 ? s_total : 1));
    }
}

static void op_stage(slot *sl, reader *r) {
    sizes s;
    int which = fz_u8(r) % 4, source = fz_u8(r) % 3;
    flags a = read_flags(r);
    lh_plan *p = runnable(sl, &s, "lh_scores");
    if (!p) return;
    void *ws_ptr = NULL;
    buf ws = fz_buf(s.stage_ws);
    fz_fill_random(&ws);
    ws_ptr = arg(&ws, 7, &a);
    buf in[3] = {{0}}, out[3] = {{0}}, idx = {0};
    lh_status st;
    const char *call;
    int64_t s_total = q64(p, LH_QUERY_PYRAMID_LEN);
    if (which == 0) {
        /* lh_scores, or with a byte's choice lh_scores_qkv (the one a dilated plan takes) */
        int qkv = source != 0;
        call = qkv ? "lh_scores_qkv" : "lh_scores";
        in[0] = input(s.q, a.fill), in[1] = input(s.kv, a.fill), in[2] = input(s.kv, a.fill);
        out[0] = fz_buf(s.scores_q), out[1] = fz_buf(s.scores_k);
        st = qkv ? lh_scores_qkv(p, arg(&in[0], 0, &a), arg(&in[1], 1, &a), arg(&in[2], 4, &a),
                                 arg(&out[0], 2, &a), arg(&out[1], 3, &a), ws_ptr, stream_of(&a))
                 : lh_scores(p, arg(&in[0], 0, &a), arg(&in[1], 1, &a), arg(&out[0], 2, &a),
                             arg(&out[1], 3, &a), ws_ptr, stream_of(&a));
    } else if (which == 1) {
        call = "lh_select";
        in[0] = input(s.scores_q, a.fill), in[1] = input(s.scores_k, a.fill);
        out[0] = fz_buf(s.rows);
        st = lh_select(p, arg(&in[0], 0, &a), arg(&in[1], 1, &a), arg(&out[0], 2, &a), ws_ptr,
                       stream_of(&a));
    } else if (which == 2) {
        call = "lh_gather";
        in[0] = input(s.q, a.fill), in[1] = input(s.kv, a.fill), in[2] = input(s.kv, a.fill);
        idx = fz_buf(s.rows);
        fill_indices(sl, &idx, source, s_total);
        out[0] = fz_buf(s.sel), out[1] = fz_buf(s.sel), out[2] = fz_buf(s.sel);
        st = lh_gather(p, arg(&in[0], 0, &a), arg(&in[1], 1, &a), arg(&in[2], 2, &a),
                       arg(&idx, 3, &a), arg(&out[0], 4, &a), arg(&out[1], 5, &a),
                       arg(&out[2], 6, &a), ws_ptr, stream_of(&a));
    } else {
        call = "lh_scatter";
        idx = fz_buf(s.rows);
        fill_indices(sl, &idx, source, s_total);
        in[0] = input(s.sel, a.fill), out[0] = fz_buf(s.q);
        st = lh_scatter(p, arg(&idx, 0, &a), arg(&in[0], 1, &a), arg(&out[0], 2, &a), ws_ptr,
                        stream_of(&a));
    }
    fz_check_status(st, call);
    fz_check_canary(&ws, "workspace", call);
    fz_check_canary(&idx, "indices", call);
    for (int i = 0; i < 3; i++) {
        fz_check_canary(&in[i], "an input", call);
        fz_check_canary(&out[i], "an output", call);
        if (st != LH_OK && out[i].base && !fz_poisoned(&out[i]))
            fz_fail("a failing call wrote an output", call);
    }
    if (st == LH_OK && which == 1) {
        const int32_t *x = (const int32_t *)out[0].base;
        for (size_t i = 0; i < out[0].bytes / 4; i++)
            if (x[i] < 0 || x[i] >= s_total) fz_fail("a position outside the pyramid", call);
        fz_buf_free(&sl->indices);
        sl->indices = out[0];
        out[0].base = NULL;
    }
    for (int i = 0; i < 3; i++) fz_buf_free(&in[i]), fz_buf_free(&out[i]);
    fz_buf_free(&idx);
    fz_buf_free(&ws);
}

/* ---- the attention step --------------------------------------------------------------------- */

static void op_attention(slot *sl, reader *r) {
    sizes s;
    int backward = fz_u8(r) & 1;
    flags a = read_flags(r);
    lh_plan *p = runnable(sl, &s, "lh_attention_forward");
    if (!p) return;
    const char *call = backward ? "lh_attention_backward" : "lh_attention_forward";
    buf x[4] = {input(s.sel, a.fill), input(s.sel, a.fill), input(s.sel, a.fill),
                input(s.sel, a.fill)};   /* q, k, v, and o or do */
    buf lse = input(s.rows, a.fill), ws = fz_buf(s.attn_ws);
    buf o[3] = {fz_buf(s.sel), fz_buf(s.sel), fz_buf(s.sel)};
    fz_fill_random(&ws);
    lh_status st;
    if (!backward) {
        buf olse = fz_buf(s.rows);
        st = lh_attention_forward(p, arg(&x[0], 0, &a), arg(&x[1], 1, &a), arg(&x[2], 2, &a),
                                  arg(&o[0], 3, &a), arg(&olse, 4, &a), arg(&ws, 5, &a),
                                  stream_of(&a));
        fz_check_status(st, call);
        fz_check_canary(&olse, "lse", call);
        if (st != LH_OK && !fz_poisoned(&olse)) fz_fail("a failing call wrote lse", call);
        fz_buf_free(&olse);
    } else {
        st = lh_attention_backward(p, arg(&x[0], 0, &a), arg(&x[1], 1, &a), arg(&x[2], 2, &a),
                                   arg(&x[3], 3, &a), arg(&lse, 4, &a), x[3].base,
                                   arg(&o[0], 5, &a), arg(&o[1], 6, &a), arg(&o[2], 7, &a),
                                   ws.base, stream_of(&a));
        fz_check_status(st, call);
    }
    fz_check_canary(&ws, "workspace", call);
    fz_check_canary(&lse, "lse", call);
    for (int i = 0; i < 4; i++) fz_check_canary(&x[i], "an input", call);
    for (int i = 0; i < 3; i++) {
        fz_check_canary(&o[i], "an output", call);
        if (st != LH_OK && !fz_poisoned(&o[i])) fz_fail("a failing call wrote an output", call);
    }
    for (int i = 0; i < 4; i++) fz_buf_free(&x[i]);
    for (int i = 0; i < 3; i++) fz_buf_free(&o[i]);
    fz_buf_free(&lse);
    fz_buf_free(&ws);
}

/* ---- plans, rings, contexts ------------------------------------------------------------------ */

static void op_ring(fz_state *fs, slot *sl, reader *r) {
    int which = fz_u8(r) % 4, rank = (int)(fz_u8(r) % 4) - 1;
    if (!fs->ring1) fz_check_status(lh_ring_create_local(1, &fs->ring1), "lh_ring_create_local");
    if (!fs->ring2) fz_check_status(lh_ring_create_local(2, &fs->ring2), "lh_ring_create_local");
    if (which < 2) {
        lh_status st = lh_plan_set_ring(sl->plan, which ? fs->ring2 : fs->ring1, rank);
        fz_check_status(st, "lh_plan_set_ring");
        return;
    }
    /* destroying a ring that live plans are bound to is refused; an unused one goes */
    lh_ring **ring = which == 2 ? &fs->ring1 : &fs->ring2;
    lh_status st = lh_ring_destroy(*ring);
    fz_check_status(st, "lh_ring_destroy");
    if (st == LH_OK) *ring = NULL;
}

static void op_context(fz_state *fs, reader *r) {
    int option = (int)(fz_u8(r) % 4) - 1;
    int64_t value = fz_value_i64(r);
    /* the thread count goes to the context no plan uses: runs keep one thread (fuzz_abi.c) */
    lh_context *ctx = option == LH_CONTEXT_NUM_THREADS ? fs->scratch : fs->ctx;
    fz_check_status(lh_context_set_i64(ctx, (lh_context_option)option, value), "lh_context_set_i64");
    char text[8] = {0};
    for (int i = 0; i < 7; i++) text[i] = (char)(32 + fz_u8(r) % 95);
    fz_check_status(lh_context_set_str(ctx, (lh_context_option)option, value & 1 ? text : NULL),
                    "lh_context_set_str");
}

static void op_misc(fz_state *fs, reader *r) {
    int what = fz_u8(r) % 4;
    int64_t value = fz_value_i64(r);
    if (what == 0) {
        if (!lh_status_string((lh_status)value) || !lh_version_string() || !lh_last_error())
            fz_fail("a NULL string", "lh_status_string");
    } else if (what == 1) {
        lh_context *c = NULL;
        /* CPU, AUTO's CPU or an unknown backend: never a GPU context */
        lh_backend b = (lh_backend)(value % 4 == 2 || value == 0 ? 1 : value);
        lh_status st = lh_context_create(b, (int)value, &c);
        fz_check_status(st, "lh_context_create");
        if (st == LH_OK) fz_check_status(lh_context_destroy(c), "lh_context_destroy");
    } else if (what == 2) {
        lh_ring *ring = NULL;
        lh_status st = lh_ring_create_local((int)value, value & 1 ? &ring : NULL);
        fz_check_status(st, "lh_ring_create_local");
        if (ring) fz_check_status(lh_ring_destroy(ring), "lh_ring_destroy");
    } else {
        /* a context with live plans cannot be destroyed */
        int live = 0;
        for (int i = 0; i < FUZZ_SLOTS; i++) live += fs->s[i].plan != NULL;
        if (!live) return;
        lh_status st = lh_context_destroy(fs->ctx);
        fz_check_status(st, "lh_context_destroy");
        if (st != LH_ERROR_BAD_STATE) fz_fail("a context with live plans was destroyed", "lh_context_destroy");
    }
}

static void op_query(slot *sl, reader *r) {
    int what = fz_u8(r) % 4, key = (int)(fz_u8(r) % 16) - 1;
    int64_t v = 0;
    double d = 0;
    lh_status st;
    if (what == 0) st = lh_plan_get_i64(sl->plan, (lh_query)key, &v);
    else if (what == 1) st = lh_plan_get_param_i64(sl->plan, (lh_param)key, &v);
    else if (what == 2) st = lh_plan_get_param_f64(sl->plan, (lh_param)key, &d);
    else st = lh_plan_get_stage_ms(sl->plan, (lh_stage)key, &d);
    fz_check_status(st, "a query");
}

void fz_run_op(fz_state *fs, reader *r) {
    int op = fz_u8(r) % OP_COUNT;
    slot *sl = slot_of(fs, r);
    lh_status st;
    switch (op) {
    case OP_CREATE:
        if (fz_u8(r) & 0x80) {
            st = lh_plan_create(fs->ctx, NULL);
            fz_check_status(st, "lh_plan_create");
            if (st != LH_ERROR_NULL_POINTER) fz_fail("NULL out_plan accepted", "lh_plan_create");
        } else if (!sl->plan) {
            fz_check_status(lh_plan_create(fs->ctx, &sl->plan), "lh_plan_create");
            sl->finalized = 0;
            sl->hooks = 0;
        }
        return;
    case OP_DESTROY:
        fz_check_status(lh_plan_destroy(sl->plan), "lh_plan_destroy");
        fz_slot_drop(sl);
        sl->plan = NULL;
        sl->finalized = 0;
        return;
    case OP_SET_I64: {
        int key = (int)(fz_u8(r) % 18) - 1;   /* -1 and 16: unknown */
        fz_check_status(lh_plan_set_i64(sl->plan, (lh_param)key, fz_value_i64(r)), "lh_plan_set_i64");
        return;
    }
    case OP_SET_F64: {
        int key = (int)(fz_u8(r) % 16) - 1;
        key = key == 0 ? LH_PARAM_SOFTMAX_SCALE : key;
        fz_check_status(lh_plan_set_f64(sl->plan, (lh_param)key, fz_value_f64(r)), "lh_plan_set_f64");
        return;
    }
    case OP_FINALIZE:
        st = lh_plan_finalize(sl->plan);
        fz_check_status(st, "lh_plan_finalize");
        if (st == LH_OK) sl->finalized = 1;
        return;
    case OP_FORWARD: op_forward(sl, r); return;
    case OP_BACKWARD: op_backward(fs, sl, r); return;
    case OP_STAGE: op_stage(sl, r); return;
    case OP_ATTENTION: op_attention(sl, r); return;
    case OP_HOOKS: {
        int kind = fz_u8(r) % 5;
        lh_attention_forward_hook f = kind ? fz_forward_hook : NULL;
        lh_attention_backward_hook b = kind && kind < 4 ? fz_backward_hook : NULL;
        st = lh_plan_set_attention_hooks(sl->plan, f, b, (void *)(intptr_t)kind);
        fz_check_status(st, "lh_plan_set_attention_hooks");
        if (st == LH_OK) sl->hooks = kind;
        return;
    }
    case OP_RING: op_ring(fs, sl, r); return;
    case OP_CONTEXT: op_context(fs, r); return;
    case OP_MISC: op_misc(fs, r); return;
    default: op_query(sl, r); return;
    }
}
