/* test_ring_safety.c - a local ring under misuse, on the CPU backend: any value of
 * LIGHTHOUSE_RING_TIMEOUT_S either works or is refused with a sentence (never a deadlock), a rank
 * has one plan (a second is refused at lh_plan_set_ring), a rendezvous counts ranks rather than
 * arrivals, and ranks whose plans differ fail with LH_ERROR_COMMUNICATION and a sentence that
 * names the difference even where every buffer has the same size, also where attention hooks run
 * a ring of their own. A forward that fails in its ring (a peer absent, a peer's hook failing
 * mid-way) leaves saved and out as they were (poisoned before the call).
 *
 * A watchdog ends the program if a ring hangs: a deadlock is a failure here, not a timeout of
 * the test runner. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lighthouse.h"
#include "test_util.h"

static lh_context *ctx;
static uint64_t seed;

static void setup(void) {
    unsetenv("LIGHTHOUSE_RING_TIMEOUT_S");
    ck_assert_int_eq(lh_context_create(LH_BACKEND_CPU, 0, &ctx), LH_OK);
    ck_assert_int_eq(lh_context_set_i64(ctx, LH_CONTEXT_NUM_THREADS, 1), LH_OK);
}
static void *hook_ws[2];
static void teardown(void) {
    for (int r = 0; r < 2; r++) free(hook_ws[r]), hook_ws[r] = NULL;
    ck_assert_int_eq(lh_context_destroy(ctx), LH_OK);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "test_ring_safety: a ring did not finish within the watchdog's "
                              "limit (deadlock)\n";
    if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
    _exit(2);
}

/* Starts (seconds > 0) or stops (0) the watchdog. */
static void watchdog(unsigned seconds) {
    signal(SIGALRM, on_alarm);
    alarm(seconds);
}

static void assert_message_has(const char *msg, const char *needle) {
    ck_assert_msg(strstr(msg, needle) != NULL, "message \"%s\" lacks \"%s\"", msg, needle);
}

/* A small configuration: Lighthouse chunks of 512 tokens with TOPK/(2W) = 128 on W = 2. */
typedef struct ring_cfg {
    int64_t heads, head_dim, levels, pooling, mode, layout;
    double scale;   /* 0: the default */
    int hooks;      /* 0: none; HOOK_STEP: hooks that run the built-in step; HOOK_FAIL: a forward
                       hook that fails without writing; HOOK_OWN: hooks that run a ring of their
                       own (here: none at all, they meet no rendezvous and write zeros) */
} ring_cfg;

enum { HOOK_STEP = 1, HOOK_FAIL = 2, HOOK_OWN = 3 };

/* hook_ws: the attention workspace of a hook that runs the built-in step, by rank. */

static lh_status step_forward(void *u, lh_plan *plan, const void *q, const void *k, const void *v,
                              void *o, float *lse, void *stream) {
    return lh_attention_forward(plan, q, k, v, o, lse, hook_ws[(intptr_t)u], stream);
}

static lh_status failing_forward(void *u, lh_plan *plan, const void *q, const void *k,
                                 const void *v, void *o, float *lse, void *stream) {
    (void)u, (void)plan, (void)q, (void)k, (void)v, (void)o, (void)lse, (void)stream;
    return LH_ERROR_INVALID_VALUE;
}

static lh_status own_forward(void *u, lh_plan *plan, const void *q, const void *k, const void *v,
                             void *o, float *lse, void *stream) {
    (void)u, (void)q, (void)k, (void)v, (void)stream;
    int64_t rows = 0, h = 0, d = 0;
    lh_plan_get_i64(plan, LH_QUERY_SUBSEQ_LEN, &rows);
    lh_plan_get_param_i64(plan, LH_PARAM_HEADS, &h);
    lh_plan_get_param_i64(plan, LH_PARAM_HEAD_DIM, &d);
    memset(o, 0, (size_t)(rows * h * d) * sizeof(float));
    memset(lse, 0, (size_t)(rows * h) * sizeof(float));
    return LH_OK;
}

static lh_status no_backward(void *u, lh_plan *plan, const void *q, const void *k, const void *v,
                             const void *o, const float *lse, const void *dO, void *dq, void *dk,
                             void *dv, void *stream) {
    (void)u, (void)plan, (void)q, (void)k, (void)v, (void)o, (void)lse, (void)dO, (void)dq;
    (void)dk, (void)dv, (void)stream;
    return LH_ERROR_INVALID_VALUE;
}

static const ring_cfg base = {.heads = 2, .head_dim = 16, .levels = 3, .pooling = 2,
                              .mode = LH_MODE_LIGHTHOUSE, .layout = LH_LAYOUT_BNHD};

/* The message of make_plan's failing step (lh_plan_destroy clears the library's own). */
static char plan_msg[1024];

static lh_status make_plan(const ring_cfg *c, lh_ring *ring, int rank, lh_plan **out) {
    lh_plan *plan = NULL;
    *out = NULL;
    ck_assert_int_eq(lh_plan_create(ctx, &plan), LH_OK);
    const struct { lh_param p; int64_t v; } params[] = {
        {LH_PARAM_SEQ_LEN, 2048},           {LH_PARAM_HEADS, c->heads},
        {LH_PARAM_HEAD_DIM, c->head_dim},   {LH_PARAM_LEVELS, c->levels},
        {LH_PARAM_POOLING, c->pooling},     {LH_PARAM_TOPK, 512},
        {LH_PARAM_MODE, c->mode},           {LH_PARAM_LAYOUT, c->layout}};
    lh_status st = LH_OK;
    for (size_t i = 0; i < sizeof params / sizeof params[0] && st == LH_OK; i++)
        st = lh_plan_set_i64(plan, params[i].p, params[i].v);
    if (st == LH_OK && c->scale > 0) st = lh_plan_set_f64(plan, LH_PARAM_SOFTMAX_SCALE, c->scale);
    if (st == LH_OK) st = lh_plan_set_ring(plan, ring, rank);
    lh_attention_forward_hook fwd[] = {NULL, step_forward, failing_forward, own_forward};
    if (st == LH_OK && c->hooks)
        st = lh_plan_set_attention_hooks(plan, fwd[c->hooks], no_backward,
                                         (void *)(intptr_t)rank);
    if (st == LH_OK) st = lh_plan_finalize(plan);
    if (st == LH_OK && c->hooks == HOOK_STEP) {
        int64_t bytes = 0;
        lh_plan_get_i64(plan, LH_QUERY_ATTENTION_WORKSPACE_BYTES, &bytes);
        free(hook_ws[rank]);
        hook_ws[rank] = malloc((size_t)(bytes > 0 ? bytes : 1));
    }
    if (st != LH_OK) {
        snprintf(plan_msg, sizeof plan_msg, "%s", lh_last_error());
        ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
        return st;
    }
    *out = plan;
    return LH_OK;
}

/* One rank's call: lh_forward of its plan on its own buffers. */
#define POISON 0xA5

typedef struct rank_call {
    lh_plan *plan;
    float *q, *k, *v, *out;
    void *saved, *ws;
    size_t saved_bytes, out_bytes;
    lh_status st;
    char msg[1024];
} rank_call;

static int64_t get(lh_plan *plan, lh_query q) {
    int64_t v = 0;
    ck_assert_int_eq(lh_plan_get_i64(plan, q, &v), LH_OK);
    return v;
}

static void *zalloc(int64_t bytes) {
    size_t n = (size_t)(bytes > 0 ? bytes : 1);
    void *p = aligned_alloc(64, (n + 63) / 64 * 64);
    ck_assert_ptr_nonnull(p);
    memset(p, 0, (n + 63) / 64 * 64);
    return p;
}

static void call_init(rank_call *c, lh_plan *plan) {
    memset(c, 0, sizeof *c);
    c->plan = plan;
    int64_t n = get(plan, LH_QUERY_LOCAL_SEQ_LEN), h = 0, d = 0;
    ck_assert_int_eq(lh_plan_get_param_i64(plan, LH_PARAM_HEADS, &h), LH_OK);
    ck_assert_int_eq(lh_plan_get_param_i64(plan, LH_PARAM_HEAD_DIM, &d), LH_OK);
    size_t elems = (size_t)(n * h * d);
    float **f[] = {&c->q, &c->k, &c->v, &c->out};
    for (size_t i = 0; i < 4; i++) {
        *f[i] = zalloc((int64_t)(elems * sizeof(float)));
        test_fill_uniform(*f[i], elems, 1.0f, &seed);
    }
    c->saved_bytes = (size_t)get(plan, LH_QUERY_SAVED_BYTES);
    c->out_bytes = elems * sizeof(float);
    c->saved = zalloc((int64_t)c->saved_bytes);
    memset(c->saved, POISON, c->saved_bytes);
    memset(c->out, POISON, c->out_bytes);
    c->ws = zalloc(get(plan, LH_QUERY_FWD_WORKSPACE_BYTES));
}

/* The number of bytes of buf that are not the poison. */
static size_t written(const void *buf, size_t bytes) {
    size_t n = 0;
    for (size_t i = 0; i < bytes; i++) n += ((const unsigned char *)buf)[i] != POISON;
    return n;
}

/* A failed call wrote neither out nor saved (the no-partial-write rule). */
static void assert_untouched(const rank_call *c, const char *what) {
    size_t s = written(c->saved, c->saved_bytes), o = written(c->out, c->out_bytes);
    ck_assert_msg(s == 0 && o == 0, "%s: a failed forward wrote %zu of %zu bytes of saved and %zu "
                  "of out", what, s, c->saved_bytes, o);
}

static void call_free(rank_call *c) {
    void *p[] = {c->q, c->k, c->v, c->out, c->saved, c->ws};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
}

static void *call_main(void *arg) {
    rank_call *c = arg;
    c->st = lh_forward(c->plan, c->q, c->k, c->v, c->out, c->saved, c->ws, NULL);
    snprintf(c->msg, sizeof c->msg, "%s", lh_last_error());
    return NULL;
}

/* Runs the calls concurrently, each on its own thread. */
static void run_calls(rank_call *calls, int n) {
    pthread_t th[8];
    for (int i = 0; i < n; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, call_main, &calls[i]), 0);
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
}

/* Rank 0 runs a, rank 1 runs b on one ring of two; returns the statuses and messages. */
static void run_pair(const ring_cfg *a, const ring_cfg *b, rank_call calls[2]) {
    lh_ring *ring = NULL;
    ck_assert_int_eq(lh_ring_create_local(2, &ring), LH_OK);
    lh_plan *p0 = NULL, *p1 = NULL;
    ck_assert_msg(make_plan(a, ring, 0, &p0) == LH_OK, "%s", plan_msg);
    ck_assert_msg(make_plan(b, ring, 1, &p1) == LH_OK, "%s", plan_msg);
    call_init(&calls[0], p0);
    call_init(&calls[1], p1);
    watchdog(120);
    run_calls(calls, 2);
    watchdog(0);
    for (int r = 0; r < 2; r++)
        if (calls[r].st != LH_OK) assert_untouched(&calls[r], "run_pair");
    call_free(&calls[0]);
    call_free(&calls[1]);
    ck_assert_int_eq(lh_plan_destroy(p0), LH_OK);
    ck_assert_int_eq(lh_plan_destroy(p1), LH_OK);
    ck_assert_int_eq(lh_ring_destroy(ring), LH_OK);
}

/* ---- LIGHTHOUSE_RING_TIMEOUT_S ------------------------------------------------------------ */

START_TEST(timeout_values_never_deadlock) {
    /* Values that mean "wait as long as it takes": a healthy ring must simply finish. */
    const char *long_waits[] = {"inf", "Infinity", "1e19", "1e300", "9223372036854775807"};
    for (size_t i = 0; i < sizeof long_waits / sizeof long_waits[0]; i++) {
        ck_assert_int_eq(setenv("LIGHTHOUSE_RING_TIMEOUT_S", long_waits[i], 1), 0);
        rank_call calls[2];
        run_pair(&base, &base, calls);
        printf("  LIGHTHOUSE_RING_TIMEOUT_S=%s: %s, %s\n", long_waits[i],
               lh_status_string(calls[0].st), lh_status_string(calls[1].st));
        ck_assert_msg(calls[0].st == LH_OK && calls[1].st == LH_OK, "%s: %s / %s", long_waits[i],
                      calls[0].msg, calls[1].msg);
    }
    /* Values that are no number of seconds: refused at finalize, with the variable's name. */
    const char *bad[] = {"nan", "-5", "0", "-inf", "soon", "12s", " "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(setenv("LIGHTHOUSE_RING_TIMEOUT_S", bad[i], 1), 0);
        lh_ring *ring = NULL;
        lh_plan *plan = NULL;
        ck_assert_int_eq(lh_ring_create_local(2, &ring), LH_OK);
        lh_status st = make_plan(&base, ring, 0, &plan);
        printf("  LIGHTHOUSE_RING_TIMEOUT_S=\"%s\": %s: %s\n", bad[i], lh_status_string(st),
               plan_msg);
        ck_assert_int_eq(st, LH_ERROR_INVALID_VALUE);
        assert_message_has(plan_msg, "LIGHTHOUSE_RING_TIMEOUT_S");
        ck_assert_int_eq(lh_ring_destroy(ring), LH_OK);
    }
    /* A short limit still ends a ring whose peer never comes. */
    ck_assert_int_eq(setenv("LIGHTHOUSE_RING_TIMEOUT_S", "0.25", 1), 0);
    lh_ring *ring = NULL;
    lh_plan *p0 = NULL, *p1 = NULL;
    ck_assert_int_eq(lh_ring_create_local(2, &ring), LH_OK);
    ck_assert_int_eq(make_plan(&base, ring, 0, &p0), LH_OK);
    ck_assert_int_eq(make_plan(&base, ring, 1, &p1), LH_OK);
    rank_call alone;
    call_init(&alone, p0);
    watchdog(60);
    run_calls(&alone, 1);
    watchdog(0);
    printf("  rank 1 absent, limit 0.25 s: %s: %s\n", lh_status_string(alone.st), alone.msg);
    ck_assert_int_eq(alone.st, LH_ERROR_COMMUNICATION);
    assert_message_has(alone.msg, "0.25 s");
    assert_untouched(&alone, "rank 1 absent");
    call_free(&alone);
    ck_assert_int_eq(lh_plan_destroy(p0), LH_OK);
    ck_assert_int_eq(lh_plan_destroy(p1), LH_OK);
    ck_assert_int_eq(lh_ring_destroy(ring), LH_OK);
    ck_assert_int_eq(unsetenv("LIGHTHOUSE_RING_TIMEOUT_S"), 0);
}
END_TEST

/* ---- one plan per rank ---------------------------------------------------------------------- */

START_TEST(one_plan_per_rank) {
    lh_ring *ring = NULL;
    lh_plan *a = NULL, *b = NULL, *c = NULL;
    ck_assert_int_eq(lh_ring_create_local(2, &ring), LH_OK);
    ck_assert_int_eq(make_plan(&base, ring, 0, &a), LH_OK);
    ck_assert_int_eq(make_plan(&base, ring, 0, &b), LH_ERROR_INVALID_VALUE);
    printf("  a second plan for rank 0: %s\n", plan_msg);
    assert_message_has(plan_msg, "rank 0");
    assert_message_has(plan_msg, "already");
    ck_assert_int_eq(make_plan(&base, ring, 1, &b), LH_OK);
    /* a plan that failed to bind holds no rank; a destroyed plan frees its rank */
    ck_assert_int_eq(lh_plan_destroy(a), LH_OK);
    ck_assert_int_eq(make_plan(&base, ring, 0, &c), LH_OK);
    ck_assert_int_eq(lh_plan_destroy(b), LH_OK);
    ck_assert_int_eq(lh_plan_destroy(c), LH_OK);
    ck_assert_int_eq(lh_ring_destroy(ring), LH_OK);
}
END_TEST

START_TEST(rendezvous_counts_ranks_not_arrivals) {
    /* Rank 0's plan called from two threads at once (which the header forbids), rank 1 absent:
     * the rendezvous must see rank 0 twice, not two ranks, and fail both calls. */
    lh_ring *ring = NULL;
    lh_plan *p0 = NULL, *p1 = NULL;
    ck_assert_int_eq(lh_ring_create_local(2, &ring), LH_OK);
    ck_assert_int_eq(make_plan(&base, ring, 0, &p0), LH_OK);
    ck_assert_int_eq(make_plan(&base, ring, 1, &p1), LH_OK);
    rank_call calls[2];
    call_init(&calls[0], p0);
    call_init(&calls[1], p0);
    watchdog(120);
    run_calls(calls, 2);
    watchdog(0);
    for (int i = 0; i < 2; i++) {
        printf("  thread %d: %s: %s\n", i, lh_status_string(calls[i].st), calls[i].msg);
        ck_assert_int_eq(calls[i].st, LH_ERROR_COMMUNICATION);
    }
    /* at least the second arrival says why */
    ck_assert_msg(strstr(calls[0].msg, "twice") || strstr(calls[1].msg, "twice"),
                  "neither message says that rank 0 arrived twice: \"%s\" / \"%s\"",
                  calls[0].msg, calls[1].msg);
    call_free(&calls[0]);
    call_free(&calls[1]);
    ck_assert_int_eq(lh_plan_destroy(p0), LH_OK);
    ck_assert_int_eq(lh_plan_destroy(p1), LH_OK);
    ck_assert_int_eq(lh_ring_destroy(ring), LH_OK);
}
END_TEST

/* ---- plans that differ ------------------------------------------------------------------- */

START_TEST(ranks_with_different_plans_fail) {
    ring_cfg layout = base, scale = base, shape = base, pyramid = base, mode = base;
    layout.layout = LH_LAYOUT_BHND;
    scale.scale = 0.5;
    shape.heads = 4, shape.head_dim = 8;            /* H * D = 32 on both ranks */
    pyramid.pooling = 4, pyramid.levels = 2;        /* S_c = 128 + 128 * 4 = 128 + 2 * 128 * 2 */
    mode.mode = LH_MODE_DENSE;
    const struct { const ring_cfg *c; const char *names; } cases[] = {
        {&layout, "LAYOUT"}, {&scale, "SOFTMAX_SCALE"}, {&shape, "HEADS"},
        {&pyramid, "LEVELS"}, {&mode, "MODE"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rank_call calls[2];
        run_pair(&base, cases[i].c, calls);
        for (int r = 0; r < 2; r++) {
            printf("  %-13s rank %d: %s: %s\n", cases[i].names, r, lh_status_string(calls[r].st),
                   calls[r].msg);
            ck_assert_msg(calls[r].st == LH_ERROR_COMMUNICATION, "%s differs, rank %d: %s",
                          cases[i].names, r, lh_status_string(calls[r].st));
            assert_message_has(calls[r].msg, cases[i].names);
        }
    }
    /* the same configuration still runs */
    rank_call calls[2];
    run_pair(&base, &base, calls);
    ck_assert_msg(calls[0].st == LH_OK && calls[1].st == LH_OK, "%s / %s", calls[0].msg,
                  calls[1].msg);
}
END_TEST

START_TEST(failing_ring_leaves_saved_untouched) {
    /* Rank 1's forward hook fails after its stages while rank 0's hook runs the built-in ring:
     * rank 0 fails in the middle of its attention step, with its selection and sub-sequence
     * already computed, and must leave saved and out as they were. */
    ring_cfg step = base, fail = base;
    step.hooks = HOOK_STEP, fail.hooks = HOOK_FAIL;
    rank_call calls[2];
    run_pair(&step, &fail, calls);
    printf("  rank 0 (built-in step): %s: %s\n  rank 1 (failing hook): %s: %s\n",
           lh_status_string(calls[0].st), calls[0].msg, lh_status_string(calls[1].st),
           calls[1].msg);
    ck_assert_int_eq(calls[0].st, LH_ERROR_COMMUNICATION);
    ck_assert_int_eq(calls[1].st, LH_ERROR_INVALID_VALUE);
    assert_message_has(calls[0].msg, "hook returned LH_ERROR_INVALID_VALUE");
    /* run_pair asserted that neither failed call wrote saved or out */
}
END_TEST

START_TEST(hook_ranks_with_different_plans_fail) {
    /* Hooks that run a ring of their own never meet the library's rendezvous: the first call of
     * each plan compares the configurations anyway. */
    ring_cfg own = base, layout = base, scale = base, shape = base, pyramid = base;
    own.hooks = layout.hooks = scale.hooks = shape.hooks = pyramid.hooks = HOOK_OWN;
    layout.layout = LH_LAYOUT_BHND;
    scale.scale = 0.5;
    shape.heads = 4, shape.head_dim = 8;
    pyramid.pooling = 4, pyramid.levels = 2;
    const struct { const ring_cfg *c; const char *names; } cases[] = {
        {&layout, "LAYOUT"}, {&scale, "SOFTMAX_SCALE"}, {&shape, "HEADS"}, {&pyramid, "LEVELS"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rank_call calls[2];
        run_pair(&own, cases[i].c, calls);
        for (int r = 0; r < 2; r++) {
            printf("  hooks, %-13s rank %d: %s: %s\n", cases[i].names, r,
                   lh_status_string(calls[r].st), calls[r].msg);
            ck_assert_msg(calls[r].st == LH_ERROR_COMMUNICATION, "%s differs, rank %d: %s",
                          cases[i].names, r, lh_status_string(calls[r].st));
            assert_message_has(calls[r].msg, cases[i].names);
        }
    }
    /* equal plans with hooks run; a hook rank beside a built-in one is out of step only if
     * their rounds differ, which they do not */
    ring_cfg step = base;
    step.hooks = HOOK_STEP;
    const ring_cfg *pairs[][2] = {{&own, &own}, {&step, &base}};
    for (size_t i = 0; i < 2; i++) {
        rank_call calls[2];
        run_pair(pairs[i][0], pairs[i][1], calls);
        ck_assert_msg(calls[0].st == LH_OK && calls[1].st == LH_OK, "%s / %s", calls[0].msg,
                      calls[1].msg);
    }
}
END_TEST

int main(void) {
    seed = test_seed("test_ring_safety");
    unsetenv("LIGHTHOUSE_RING_TIMEOUT_S");
    Suite *s = suite_create("ring safety");
    TCase *tc = tcase_create("local ring");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, timeout_values_never_deadlock);
    tcase_add_test(tc, one_plan_per_rank);
    tcase_add_test(tc, rendezvous_counts_ranks_not_arrivals);
    tcase_add_test(tc, ranks_with_different_plans_fail);
    tcase_add_test(tc, failing_ring_leaves_saved_untouched);
    tcase_add_test(tc, hook_ranks_with_different_plans_fail);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
