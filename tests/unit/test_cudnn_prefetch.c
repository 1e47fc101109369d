/* test_cudnn_prefetch.c - the read-ahead of cuDNN's libraries without a GPU
 * (runtime/cuda/cudnn_prefetch.c): which files it finds where, in which order, and that reading
 * them counts every byte, passes over what it cannot open, stops when told, and that starting it
 * sets no error, stopping it is harmless, and both survive a fork. */
#define _GNU_SOURCE
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cudnn_prefetch.h"

static char root[256];

static void make_dirs(const char *rel) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0700);
            *p = '/';
        }
    mkdir(path, 0700);
}

/* A file of `bytes` bytes at root/rel. */
static void make_file(const char *rel, size_t bytes) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    static char chunk[1 << 16];
    for (size_t left = bytes; left > 0;) {
        size_t n = left < sizeof chunk ? left : sizeof chunk;
        ck_assert_uint_eq(fwrite(chunk, 1, n, f), n);
        left -= n;
    }
    fclose(f);
}

static const char *at(const char *rel) {
    static char buf[4][512];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, 512, "%s/%s", root, rel);
    return b;
}

/* The wheels' layout: cuDNN in nvidia/cudnn/lib, the CUDA libraries in nvidia/cu13/lib. */
static void setup(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/lh-prefetch-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(root));
    make_dirs("site/nvidia/cudnn/lib");
    make_dirs("site/nvidia/cu13/lib");
    make_dirs("driver");
    make_dirs("elsewhere");
    make_file("driver/libnvidia-ptxjitcompiler.so.1", 10);
    make_file("site/nvidia/cudnn/lib/libcudnn_engines_precompiled.so.9", 20);
    make_file("site/nvidia/cudnn/lib/libcudnn_heuristic.so.9", 30);
    make_file("site/nvidia/cudnn/lib/libcudnn_engines_runtime_compiled.so.9", 40);
    make_file("site/nvidia/cu13/lib/libcublasLt.so.13", 50);
    make_file("site/nvidia/cu13/lib/libnvrtc.so.13", 60);
    make_file("site/nvidia/cu13/lib/libnvrtc-builtins.so.13.0", 70);
}

static void teardown(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    ck_assert_int_eq(system(cmd), 0);
}

static lh_prefetch_where wheels(void) {
    lh_prefetch_where w = {.cudnn_dir = at("site/nvidia/cudnn/lib"),
                           .driver_dir = at("driver"),
                           .cuda_major = 13,
                           .cuda_minor = 0};
    return w;
}

/* The path of file i ends with `tail`. */
static void ck_tail(const lh_prefetch_files *f, int i, const char *tail) {
    ck_assert_int_lt(i, f->count);
    size_t n = strlen(f->path[i]), t = strlen(tail);
    ck_assert_msg(n >= t && strcmp(f->path[i] + n - t, tail) == 0, "file %d is %s, not ...%s", i,
                  f->path[i], tail);
}

START_TEST(finds_in_open_order) {
    lh_prefetch_where w = wheels();
    lh_prefetch_files f;
    lh_prefetch_find(&w, &f);
    ck_assert_int_eq(f.count, 7);
    ck_tail(&f, 0, "driver/libnvidia-ptxjitcompiler.so.1");
    ck_tail(&f, 1, "cudnn/lib/libcudnn_engines_precompiled.so.9");
    ck_tail(&f, 2, "cudnn/lib/libcudnn_heuristic.so.9");
    ck_tail(&f, 3, "cudnn/lib/libcudnn_engines_runtime_compiled.so.9");
    /* the wheels' copy, not a toolkit's that the system folders may also hold */
    ck_tail(&f, 4, "cu13/lib/libcublasLt.so.13");
    ck_tail(&f, 5, "cu13/lib/libnvrtc.so.13");
    ck_tail(&f, 6, "cu13/lib/libnvrtc-builtins.so.13.0");
}
END_TEST

START_TEST(jit_only_leaves_out_precompiled_and_cublaslt) {
    lh_prefetch_where w = wheels();
    w.jit_only = true;
    lh_prefetch_files f;
    lh_prefetch_find(&w, &f);
    ck_assert_int_eq(f.count, 5);
    for (int i = 0; i < f.count; i++) {
        ck_assert_ptr_null(strstr(f.path[i], "precompiled"));
        ck_assert_ptr_null(strstr(f.path[i], "cublasLt"));
    }
}
END_TEST

START_TEST(search_path_and_regular_files_only) {
    /* cuDNN somewhere else, found through the search path; a directory with a library's name and
     * the path list's empty and missing entries are passed over */
    make_dirs("elsewhere/libcudnn_heuristic.so.9");
    make_file("elsewhere/libcudnn_engines_runtime_compiled.so.9", 5);
    char list[700];
    snprintf(list, sizeof list, "::%s:%s:", at("missing"), at("elsewhere"));
    lh_prefetch_where w = {.search_path = list, .cuda_major = 99};
    lh_prefetch_files f;
    lh_prefetch_find(&w, &f);
    int found = 0;
    for (int i = 0; i < f.count; i++) {
        ck_assert_str_ne(f.path[i], at("elsewhere/libcudnn_heuristic.so.9"));
        found += strcmp(f.path[i], at("elsewhere/libcudnn_engines_runtime_compiled.so.9")) == 0;
    }
    ck_assert_int_eq(found, 1);
}
END_TEST

START_TEST(nothing_known_nothing_found) {
    lh_prefetch_where w = {.cuda_major = 99, .jit_only = true, .search_path = at("missing")};
    /* only cuDNN's own libraries can come from the system's folders here */
    lh_prefetch_files f;
    lh_prefetch_find(&w, &f);
    for (int i = 0; i < f.count; i++) ck_assert_ptr_nonnull(strstr(f.path[i], "libcudnn_"));
    ck_assert_int_le(f.count, 2);
}
END_TEST

START_TEST(reads_every_byte_and_passes_over_the_missing) {
    lh_prefetch_where w = wheels();
    lh_prefetch_files f;
    lh_prefetch_find(&w, &f);
    ck_assert_int_eq(f.count, 7);
    atomic_bool stop = false;
    ck_assert_int_eq(lh_prefetch_read(&f, &stop), 10 + 20 + 30 + 40 + 50 + 60 + 70);
    /* a file gone between finding and reading */
    ck_assert_int_eq(unlink(at("site/nvidia/cu13/lib/libnvrtc.so.13")), 0);
    ck_assert_int_eq(lh_prefetch_read(&f, &stop), 280 - 60);
    /* a file of many blocks, longer than the window asked for ahead */
    make_file("site/nvidia/cu13/lib/libcublasLt.so.13", (70u << 20) + 7);
    ck_assert_int_eq(lh_prefetch_read(&f, &stop), 280 - 60 - 50 + (70 << 20) + 7);
}
END_TEST

START_TEST(stops_when_told) {
    lh_prefetch_where w = wheels();
    lh_prefetch_files f;
    lh_prefetch_find(&w, &f);
    atomic_bool stop = true;
    ck_assert_int_eq(lh_prefetch_read(&f, &stop), 0);
}
END_TEST

static CUresult fake_init(unsigned int flags) {
    (void)flags;
    return CUDA_SUCCESS;
}

START_TEST(begin_sets_no_error_and_survives_fork) {
    lh_cu_api cu;
    memset(&cu, 0, sizeof cu);
    cu.Init = fake_init;
    lh_fail(LH_ERROR_INVALID_VALUE, "an earlier failure");
    /* with cuDNN installed the thread reads its libraries; without, nothing starts */
    lh_cudnn_prefetch_begin(&cu);
    lh_cudnn_prefetch_begin(&cu);
    ck_assert_str_eq(lh_error_message(), "an earlier failure");
    lh_cudnn_prefetch_yield(); /* as a first plan does; the thread ends within a block */
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) exit(0); /* runs the library's destructor, which must not join */
    int status = 0;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("cudnn_prefetch");
    TCase *tc = tcase_create("prefetch");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, finds_in_open_order);
    tcase_add_test(tc, jit_only_leaves_out_precompiled_and_cublaslt);
    tcase_add_test(tc, search_path_and_regular_files_only);
    tcase_add_test(tc, nothing_known_nothing_found);
    tcase_add_test(tc, reads_every_byte_and_passes_over_the_missing);
    tcase_add_test(tc, stops_when_told);
    tcase_add_test(tc, begin_sets_no_error_and_survives_fork);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
