/* test_plan_cache.c - the context's cache of SDPA plans without a GPU: which shapes share a key,
 * and how the cache holds, releases, evicts and drops its values (runtime/plan_cache.c,
 * cuda_sdpa_key in runtime/cuda/cuda_sdpa.c); and how dense attention on tensors past 2^31
 * elements is cut into cuDNN calls (cuda_sdpa_split); and the records of the disk store of cuDNN
 * execution plans (test_plan_record.c). */
#include <check.h>
#include <stdlib.h>

#include "cuda_sdpa.h"
#include "plan_cache.h"
#include "test_plan_record.h"

static int destroyed[LH_PLAN_CACHE_CAPACITY + 8];
static void count_destroy(void *value) { destroyed[(intptr_t)value]++; }
static void *val(int i) { return (void *)(intptr_t)i; }

static lh_plan_key key_of(int i) {
    lh_plan_key k = {{0}};
    k.w[0] = i;
    k.w[LH_PLAN_KEY_WORDS - 1] = 7;
    return k;
}

static void reset(void) {
    for (size_t i = 0; i < sizeof destroyed / sizeof destroyed[0]; i++) destroyed[i] = 0;
}

START_TEST(cache_hit_miss_release) {
    reset();
    lh_plan_cache c;
    lh_plan_cache_init(&c, count_destroy);
    lh_plan_key a = key_of(1), b = key_of(2);
    ck_assert_ptr_null(lh_plan_cache_acquire(&c, &a));
    ck_assert(lh_plan_cache_insert(&c, &a, val(1)));
    ck_assert_ptr_eq(lh_plan_cache_acquire(&c, &a), val(1)); /* held twice now */
    ck_assert_ptr_null(lh_plan_cache_acquire(&c, &b));
    ck_assert(lh_plan_cache_release(&c, val(1)));
    ck_assert(lh_plan_cache_release(&c, val(1)));
    ck_assert(!lh_plan_cache_release(&c, val(1))); /* no holder left */
    ck_assert(!lh_plan_cache_release(&c, val(3))); /* never cached: the caller owns it */
    /* released values stay for the next plan */
    ck_assert_ptr_eq(lh_plan_cache_acquire(&c, &a), val(1));
    ck_assert_int_eq(destroyed[1], 0);
    lh_plan_cache_clear(&c);
    ck_assert_int_eq(destroyed[1], 1);
}
END_TEST

START_TEST(cache_full_evicts_least_recent_released) {
    reset();
    lh_plan_cache c;
    lh_plan_cache_init(&c, count_destroy);
    for (int i = 0; i < LH_PLAN_CACHE_CAPACITY; i++) {
        lh_plan_key k = key_of(i);
        ck_assert(lh_plan_cache_insert(&c, &k, val(i)));
    }
    lh_plan_key extra = key_of(LH_PLAN_CACHE_CAPACITY);
    /* every value held: nothing can go, the new value is not kept */
    ck_assert(!lh_plan_cache_insert(&c, &extra, val(LH_PLAN_CACHE_CAPACITY)));
    ck_assert(lh_plan_cache_release(&c, val(5)));
    ck_assert(lh_plan_cache_release(&c, val(9)));
    lh_plan_key k9 = key_of(9);
    ck_assert_ptr_eq(lh_plan_cache_acquire(&c, &k9), val(9)); /* 9 used again: 5 is older */
    ck_assert(lh_plan_cache_release(&c, val(9)));
    ck_assert(lh_plan_cache_insert(&c, &extra, val(LH_PLAN_CACHE_CAPACITY)));
    ck_assert_int_eq(destroyed[5], 1);
    ck_assert_int_eq(destroyed[9], 0);
    lh_plan_key k5 = key_of(5);
    ck_assert_ptr_null(lh_plan_cache_acquire(&c, &k5));
    ck_assert_ptr_eq(lh_plan_cache_acquire(&c, &extra), val(LH_PLAN_CACHE_CAPACITY));
    lh_plan_cache_clear(&c);
    for (int i = 0; i <= LH_PLAN_CACHE_CAPACITY; i++) ck_assert_int_eq(destroyed[i], 1);
}
END_TEST

static lh_sdpa_shape base_shape(void) {
    lh_sdpa_shape s = {.b = 2, .h = 16, .hkv = 4, .s = 24576, .d = 128,
                       .dtype = LH_DTYPE_BFLOAT16, .scale = 0.088388347648318, .full = false};
    lh_sdpa_layout_strides(false, 16, 24576, 128, s.q_strides);
    lh_sdpa_layout_strides(false, 4, 24576, 128, s.kv_strides);
    return s;
}

static bool same(const lh_sdpa_shape *a, const lh_sdpa_shape *b) {
    lh_plan_key ka, kb;
    cuda_sdpa_key(a, &ka);
    cuda_sdpa_key(b, &kb);
    for (int i = 0; i < LH_PLAN_KEY_WORDS; i++)
        if (ka.w[i] != kb.w[i]) return false;
    return true;
}

START_TEST(sdpa_key_names_every_field) {
    unsetenv("LIGHTHOUSE_CUDNN_SDPA_BWD");
    lh_sdpa_shape a = base_shape(), b = base_shape();
    ck_assert(same(&a, &b));
    lh_sdpa_shape v[12];
    for (int i = 0; i < 12; i++) v[i] = base_shape();
    v[0].b = 1;
    v[1].h = 32;
    v[2].hkv = 16;
    v[3].s = 24577;
    v[4].d = 64;
    v[5].dtype = LH_DTYPE_FLOAT16;
    v[6].scale = 0.1;
    v[7].full = true;
    lh_sdpa_layout_strides(true, 16, 24576, 128, v[8].q_strides); /* BNHD */
    lh_sdpa_layout_strides(true, 4, 24576, 128, v[9].kv_strides);
    v[10].q_strides[0] += 8;
    v[11].kv_strides[1] += 8;
    for (int i = 0; i < 12; i++) ck_assert_msg(!same(&a, &v[i]), "variant %d shares a key", i);
    /* the backward graph chosen by the environment is part of what is built */
    setenv("LIGHTHOUSE_CUDNN_SDPA_BWD", "accum", 1);
    lh_plan_key with_env, without;
    cuda_sdpa_key(&a, &with_env);
    unsetenv("LIGHTHOUSE_CUDNN_SDPA_BWD");
    cuda_sdpa_key(&a, &without);
    bool differ = false;
    for (int i = 0; i < LH_PLAN_KEY_WORDS; i++) differ = differ || with_env.w[i] != without.w[i];
    ck_assert(differ);
}
END_TEST

START_TEST(dense_split_pieces) {
    int64_t nb = 0, nh = 0;
    const int64_t m = 1 << 20, big = 2228224; /* 2M + 128K tokens */
    /* fits whole */
    ck_assert(cuda_sdpa_split(true, 2, 8, 2, 16384, 128, &nb, &nh));
    ck_assert(nb == 2 && nh == 8);
    /* [B, S, H, D]: whole sequences only */
    ck_assert(cuda_sdpa_split(true, 4, 8, 8, m, 128, &nb, &nh)); /* 2^30 per sequence */
    ck_assert(nb == 1 && nh == 8);
    ck_assert(cuda_sdpa_split(true, 6, 8, 8, m / 2, 128, &nb, &nh)); /* 2^29: 3 of 6 fit */
    ck_assert(nb == 3 && nh == 8);
    ck_assert(!cuda_sdpa_split(true, 1, 8, 8, big, 128, &nb, &nh));
    /* [B, H, S, D]: head groups where one sequence is too large */
    ck_assert(cuda_sdpa_split(false, 1, 8, 8, big, 128, &nb, &nh));
    ck_assert(nb == 1 && nh == 4); /* 8 heads: 2.3e9; 4: 1.1e9 (7 does not divide 8) */
    ck_assert(cuda_sdpa_split(false, 2, 32, 8, m, 128, &nb, &nh)); /* GQA 4:1 */
    ck_assert(nb == 1 && nh == 8); /* 16 heads are exactly 2^31: too many */
    ck_assert(!cuda_sdpa_split(false, 1, 4, 1, 16 * m, 128, &nb, &nh)); /* one group of 4: 2^33 */
    ck_assert(!cuda_sdpa_split(false, 1, 1, 1, 16 * m, 128, &nb, &nh)); /* one head: 2^31 */
}
END_TEST

int main(void) {
    Suite *s = suite_create("plan_cache");
    TCase *tc = tcase_create("cache");
    tcase_add_test(tc, cache_hit_miss_release);
    tcase_add_test(tc, cache_full_evicts_least_recent_released);
    tcase_add_test(tc, sdpa_key_names_every_field);
    tcase_add_test(tc, dense_split_pieces);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, plan_record_tcase());
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
