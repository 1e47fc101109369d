/*
 * test_compiler.c - the kernel compiler: templates, the kernel cache, and clean errors.
 * (Other modes of this program: see CMakeLists.txt.)
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compiler_internal.h"
#include "runtime.h"
#include "test_compiler_util.h"

/* A small kernel (D = 64) keeps each compile short. */
#define SCATTER_CONSTANTS "DTYPE=bf16 D=64 P=4 L=3 THREADS=256 RUN=4 TOKENS=128"

int make_temp_dir(char *out, size_t cap) {
    const char *tmp = getenv("TMPDIR");
    snprintf(out, cap, "%s/lhc-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    return mkdtemp(out) ? 0 : -1;
}

void remove_temp_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* Number of files in `dir` whose name ends with `suffix`; `first` receives one of their paths. */
static int count_files(const char *dir, const char *suffix, char *first, size_t cap) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    size_t sl = strlen(suffix);
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l >= sl && !strcmp(e->d_name + l - sl, suffix)) {
            if (n++ == 0 && first) snprintf(first, cap, "%s/%s", dir, e->d_name);
        }
    }
    closedir(d);
    return n;
}

static lhc_cache *cache_at(const char *dir) {
    lhc_cache *c = NULL;
    ck_assert_int_eq(lhc_cache_create(&c), LH_OK);
    ck_assert_int_eq(lhc_cache_set_dir(c, dir), LH_OK);
    return c;
}

static char *compile_copy(lhc_cache *c, const char *kernel, const char *constants, const char *chip) {
    const lhc_kernel *k = NULL;
    lh_status st = lhc_compile(c, kernel, constants, chip, &k);
    ck_assert_msg(st == LH_OK, "compile %s failed: %s", kernel, lh_error_message());
    ck_assert_uint_eq(strlen(k->ptx), k->ptx_size);
    return strdup(k->ptx);
}

const lhc_kernel_request *find_request(const lhc_kernel_request *req, int n, const char *kernel) {
    for (int i = 0; i < n; i++)
        if (!strcmp(req[i].kernel, kernel)) return &req[i];
    return NULL;
}

/* ---- templates --------------------------------------------------------------------------- */

START_TEST(constants_parse_sorted_and_checked) {
    lhc_constants c;
    ck_assert_int_eq(lhc_constants_parse(" P=4 D=128, DTYPE=bf16 ", &c), LH_OK);
    ck_assert_int_eq(c.count, 3);
    ck_assert_str_eq(c.key[0], "D");
    ck_assert_str_eq(c.key[1], "DTYPE");
    ck_assert_str_eq(c.value[1], "bf16");
    ck_assert_str_eq(c.key[2], "P");
    ck_assert_int_eq(lhc_constants_parse("", &c), LH_OK);
    ck_assert_int_eq(c.count, 0);
    ck_assert_int_eq(lhc_constants_parse("P=4 P=2", &c), LH_ERROR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "twice"));
    ck_assert_int_eq(lhc_constants_parse("p=4", &c), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lhc_constants_parse("P=", &c), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lhc_constants_parse("P=\"x\"", &c), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lhc_constants_parse("P=4}", &c), LH_ERROR_INVALID_VALUE);
}
END_TEST

START_TEST(template_expressions) {
    lhc_constants c;
    ck_assert_int_eq(lhc_constants_parse("X=3 Y=16 S=bf16", &c), LH_OK);
    char *out = NULL;
    ck_assert_int_eq(lhc_template_expand("t", "a {{X}} b {{ X * 2 + 1 }} c {{log2(Y)}} {{min(X, Y)}} "
                                              "{{max(X,Y) / (X - 1)}} {{Y % 5}} {{S}}", NULL, 0, &c, c.count, &out),
                     LH_OK);
    ck_assert_str_eq(out, "a 3 b 7 c 4 3 8 1 bf16");
    free(out);

    ck_assert_int_eq(lhc_template_expand("t", "{{X}} {{S}}", NULL, 0, &c, c.count, &out), LH_ERROR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "Y"));
    ck_assert_int_eq(lhc_template_expand("t", "{{X}} {{Y}} {{S}} {{Z}}", NULL, 0, &c, c.count, &out), LH_ERROR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "Z"));
    ck_assert_int_eq(lhc_template_expand("t", "{{X / (Y - 16)}} {{S}}", NULL, 0, &c, 0, &out), LH_ERROR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "zero"));
    ck_assert_int_eq(lhc_template_expand("t", "{{S + 1}}", NULL, 0, &c, 0, &out), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lhc_template_expand("t", "{{X * 9223372036854775807}}", NULL, 0, &c, 0, &out), LH_ERROR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "overflows"));
    ck_assert_int_eq(lhc_template_expand("t", "{{99999999999999999999}}", NULL, 0, &c, 0, &out), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lhc_template_expand("t", "line\n{{X", NULL, 0, &c, 0, &out), LH_ERROR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "line 2"));
}
END_TEST

/* {{include NAME}}: shared pieces expanded in place with the kernel's constants; unknown pieces,
 * cycles and repeated pieces are errors that name the piece and the line. */
START_TEST(template_includes) {
    static const lhc_template pieces[] = {
        {"twice", "x{{X * 2}}"},
        {"outer", "[{{include twice}}|{{S}}]"},
        {"loop_a", "a\n{{include loop_b}}"},
        {"loop_b", "b\n{{include loop_a}}"},
        {"broken", "line 1\n{{W}}"},
    };
    const int count = (int)(sizeof pieces / sizeof pieces[0]);
    lhc_constants c;
    ck_assert_int_eq(lhc_constants_parse("X=3 S=bf16", &c), LH_OK);
    char *out = NULL;
    /* constants used only inside a piece count as used */
    ck_assert_int_eq(lhc_template_expand("t", "<{{ include outer }}>", pieces, count, &c, c.count, &out), LH_OK);
    ck_assert_str_eq(out, "<[x6|bf16]>");
    free(out);

    ck_assert_int_eq(lhc_template_expand("t", "{{X}}\n{{include nope}} {{S}}", pieces, count, &c, c.count, &out),
                     LH_ERROR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "kernel t, line 2: {{include nope}} names no shared piece"));
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "twice, outer"));
    ck_assert_int_eq(lhc_template_expand("t", "{{include loop_a}}", pieces, count, &c, 0, &out),
                     LH_ERROR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(),
                                 "kernel t, shared piece loop_b, line 2: {{include loop_a}} is a cycle "
                                 "(loop_a -> loop_b -> loop_a)"));
    ck_assert_int_eq(lhc_template_expand("t", "{{include twice}} {{include outer}}", pieces, count, &c, 0, &out),
                     LH_ERROR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "shared piece outer, line 1: {{include twice}} includes "
                                                     "that shared piece a second time"));
    ck_assert_int_eq(lhc_template_expand("t", "{{include broken}}", pieces, count, &c, 0, &out),
                     LH_ERROR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "kernel t, shared piece broken, line 2: placeholder {{W}} "
                                                     "names a constant that was not given"));
    ck_assert_int_eq(lhc_template_expand("t", "{{include Twice}}", pieces, count, &c, 0, &out),
                     LH_ERROR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "needs the name of a shared piece"));
    /* a constant no text uses is still an error when only pieces are included */
    ck_assert_int_eq(lhc_template_expand("t", "{{include twice}}", pieces, count, &c, c.count, &out),
                     LH_ERROR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "no constant named S"));
    /* no pieces at all */
    ck_assert_int_eq(lhc_template_expand("t", "{{include twice}}", NULL, 0, &c, 0, &out), LH_ERROR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "holds: none"));
}
END_TEST

START_TEST(templates_embedded_and_plan_kernels) {
    ck_assert_int_ge(lhc_template_count(), 2);
    ck_assert_ptr_nonnull(lhc_template_source("scores"));
    ck_assert_ptr_nonnull(lhc_template_source("scatter"));
    ck_assert_ptr_null(lhc_template_source("nope"));
    ck_assert_ptr_null(lhc_template_name(-1));

    lhc_kernel_request req[LHC_MAX_PLAN_KERNELS];
    int n = 0;
    lhc_plan_params pp = {.pooling = 4, .levels = 3, .head_dim = 128, .dtype = "bf16"};
    ck_assert_int_eq(lhc_plan_kernels(&pp, req, &n), LH_OK);
    ck_assert_int_ge(n, 2);
    const lhc_kernel_request *pyr = find_request(req, n, "scores");
    ck_assert_ptr_nonnull(pyr);
    ck_assert_ptr_nonnull(find_request(req, n, "scatter"));
    ck_assert_int_eq(pyr->block_threads, 256);
    ck_assert_int_eq(pyr->tokens_per_block, 512);
    for (int i = 0; i < n; i++) /* every kernel a plan names exists */
        ck_assert_msg(lhc_template_source(req[i].kernel) != NULL, "no template %s", req[i].kernel);
    pp.head_dim = 96;
    ck_assert_int_eq(lhc_plan_kernels(&pp, req, &n), LH_ERROR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "96"));
    pp.head_dim = 128;
    pp.dtype = "f32";
    ck_assert_int_eq(lhc_plan_kernels(&pp, req, &n), LH_ERROR_UNSUPPORTED);
    pp.dtype = "f16";
    pp.pooling = 3;
    ck_assert_int_eq(lhc_plan_kernels(&pp, req, &n), LH_ERROR_UNSUPPORTED);
}
END_TEST

START_TEST(default_cache_dir_follows_environment) {
    char dir[1024];
    setenv("LIGHTHOUSE_CACHE_DIR", "/x/lh", 1);
    setenv("XDG_CACHE_HOME", "/x/xdg", 1);
    setenv("HOME", "/x/home", 1);
    lhc_default_cache_dir(dir, sizeof dir);
    ck_assert_str_eq(dir, "/x/lh");
    unsetenv("LIGHTHOUSE_CACHE_DIR");
    lhc_default_cache_dir(dir, sizeof dir);
    ck_assert_str_eq(dir, "/x/xdg/liblighthouse");
    unsetenv("XDG_CACHE_HOME");
    lhc_default_cache_dir(dir, sizeof dir);
    ck_assert_str_eq(dir, "/x/home/.cache/liblighthouse");
    lhc_cache *c = NULL;
    ck_assert_int_eq(lhc_cache_create(&c), LH_OK);
    ck_assert_str_eq(lhc_cache_dir(c), "/x/home/.cache/liblighthouse");
    ck_assert_int_eq(lhc_cache_set_dir(c, "/y"), LH_OK);
    ck_assert_str_eq(lhc_cache_dir(c), "/y");
    ck_assert_int_eq(lhc_cache_set_dir(c, ""), LH_OK);
    ck_assert_str_eq(lhc_cache_dir(c), "/x/home/.cache/liblighthouse");
    lhc_cache_destroy(c);
}
END_TEST

/* ---- the cache --------------------------------------------------------------------------- */

static char dir[1024];

static void dir_setup(void) { ck_assert_int_eq(make_temp_dir(dir, sizeof dir), 0); }
static void dir_teardown(void) { remove_temp_dir(dir); }

START_TEST(miss_compiles_and_stores_hit_runs_no_mlir) {
    lhc_cache *c = cache_at(dir);
    int64_t runs = lhc_mlir_compile_count();
    const lhc_kernel *k1 = NULL, *k2 = NULL;
    ck_assert_int_eq(lhc_compile(c, "scatter", SCATTER_CONSTANTS, "sm_90", &k1), LH_OK);
    ck_assert_int_eq(lhc_mlir_compile_count(), runs + 1);
    ck_assert_int_eq(count_files(dir, ".lhk", NULL, 0), 1);
    ck_assert_int_eq(k1->num_entries, 1);
    ck_assert_str_eq(k1->entries[0], "lh_scatter");
    ck_assert_ptr_nonnull(strstr(k1->ptx, ".target sm_90"));

    /* same constants in another order: a memory hit, the very same kernel */
    ck_assert_int_eq(lhc_compile(c, "scatter", "TOKENS=128 RUN=4 THREADS=256 L=3 P=4 D=64 DTYPE=bf16", "sm_90", &k2),
                     LH_OK);
    ck_assert_ptr_eq(k1, k2);
    lhc_cache_stats s;
    lhc_cache_get_stats(c, &s);
    ck_assert_int_eq(s.compiles, 1);
    ck_assert_int_eq(s.memory_hits, 1);

    /* a new cache (a new context, or a new process) loads it from disk without MLIR */
    lhc_cache *c2 = cache_at(dir);
    ck_assert_int_eq(lhc_compile(c2, "scatter", SCATTER_CONSTANTS, "sm_90", &k2), LH_OK);
    ck_assert_int_eq(lhc_mlir_compile_count(), runs + 1);
    ck_assert_str_eq(k1->ptx, k2->ptx);
    ck_assert_int_eq(k2->num_entries, 1);
    ck_assert_str_eq(k2->entries[0], "lh_scatter");
    lhc_cache_get_stats(c2, &s);
    ck_assert_int_eq(s.disk_hits, 1);
    ck_assert_int_eq(s.compiles, 0);
    lhc_cache_destroy(c2);
    lhc_cache_destroy(c);
}
END_TEST

/* Damages the single entry of `dir` with `damage`, then checks that a new cache rejects it,
 * recompiles the same PTX and leaves a valid entry behind. */
static void check_damage_detected(void (*damage)(const char *path)) {
    lhc_cache *c = cache_at(dir);
    char *original = compile_copy(c, "scatter", SCATTER_CONSTANTS, "sm_90");
    lhc_cache_destroy(c);
    char path[4096];
    ck_assert_int_eq(count_files(dir, ".lhk", path, sizeof path), 1);
    damage(path);

    int64_t runs = lhc_mlir_compile_count();
    c = cache_at(dir);
    char *again = compile_copy(c, "scatter", SCATTER_CONSTANTS, "sm_90");
    lhc_cache_stats s;
    lhc_cache_get_stats(c, &s);
    ck_assert_int_eq(s.disk_rejects, 1);
    ck_assert_int_eq(s.compiles, 1);
    ck_assert_int_eq(lhc_mlir_compile_count(), runs + 1);
    ck_assert_str_eq(original, again);
    lhc_cache_destroy(c);

    c = cache_at(dir); /* the rewritten entry is whole again */
    free(again);
    again = compile_copy(c, "scatter", SCATTER_CONSTANTS, "sm_90");
    lhc_cache_get_stats(c, &s);
    ck_assert_int_eq(s.disk_hits, 1);
    ck_assert_str_eq(original, again);
    lhc_cache_destroy(c);
    free(original);
    free(again);
}

static void flip_one_byte(const char *path) {
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    off_t size = lseek(fd, 0, SEEK_END);
    char ch;
    ck_assert_int_eq(pread(fd, &ch, 1, size / 2), 1);
    ch ^= 0x20;
    ck_assert_int_eq(pwrite(fd, &ch, 1, size / 2), 1);
    close(fd);
}

static void truncate_half(const char *path) {
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(truncate(path, st.st_size / 2), 0);
}

static void truncate_to_header(const char *path) { ck_assert_int_eq(truncate(path, 20), 0); }

static void empty_file(const char *path) { ck_assert_int_eq(truncate(path, 0), 0); }

START_TEST(corrupt_entry_detected_and_recompiled) { check_damage_detected(flip_one_byte); }
END_TEST
START_TEST(truncated_entry_detected_and_recompiled) {
    check_damage_detected(truncate_half);
}
END_TEST
START_TEST(header_only_entry_detected_and_recompiled) {
    check_damage_detected(truncate_to_header);
}
END_TEST
START_TEST(empty_entry_detected_and_recompiled) { check_damage_detected(empty_file); }
END_TEST

START_TEST(changed_constant_or_chip_misses) {
    lhc_cache *c = cache_at(dir);
    char *a = compile_copy(c, "scatter", SCATTER_CONSTANTS, "sm_90");
    char *b = compile_copy(c, "scatter", "DTYPE=bf16 D=64 P=2 L=3 THREADS=256 RUN=4 TOKENS=128", "sm_90");
    char *d = compile_copy(c, "scatter", SCATTER_CONSTANTS, "sm_100a");
    lhc_cache_stats s;
    lhc_cache_get_stats(c, &s);
    ck_assert_int_eq(s.compiles, 3);
    ck_assert_int_eq(count_files(dir, ".lhk", NULL, 0), 3);
    ck_assert_str_ne(a, b);
    ck_assert_ptr_nonnull(strstr(d, ".target sm_100a"));
    free(a);
    free(b);
    free(d);
    lhc_cache_destroy(c);
}
END_TEST

START_TEST(disabled_disk_cache_writes_nothing) {
    lhc_cache *c = cache_at(dir);
    lhc_cache_set_disk_enabled(c, 0);
    free(compile_copy(c, "scatter", SCATTER_CONSTANTS, "sm_90"));
    ck_assert_int_eq(count_files(dir, "", NULL, 0), 2); /* "." and ".." only */
    lhc_cache_destroy(c);
}
END_TEST

START_TEST(unwritable_directory_still_compiles) {
    lhc_cache *c = cache_at("/proc/liblighthouse-cannot-exist");
    free(compile_copy(c, "scatter", SCATTER_CONSTANTS, "sm_90"));
    lhc_cache_stats s;
    lhc_cache_get_stats(c, &s);
    ck_assert_int_eq(s.compiles, 1);
    ck_assert_int_eq(s.disk_errors, 1);
    lhc_cache_destroy(c);
}
END_TEST

/* Two processes compile the same kernel into one directory at the same moment. */
START_TEST(two_processes_compile_the_same_kernel) {
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = fork();
        ck_assert_int_ge(kids[i], 0);
        if (kids[i] == 0) {
            char byte;
            close(go[1]);
            if (read(go[0], &byte, 1) != 0) _exit(3); /* wait until the parent closes the pipe */
            lhc_cache *c = NULL;
            const lhc_kernel *k = NULL;
            int ok = lhc_cache_create(&c) == LH_OK && lhc_cache_set_dir(c, dir) == LH_OK &&
                     lhc_compile(c, "scores",
                                 "DTYPE=f16 D=64 P=4 L=3 THREADS=256 SLICE=512 CHUNK=512 KPASS=1", "sm_90", &k) == LH_OK &&
                     strstr(k->ptx, ".entry lh_pyramid_scores") != NULL;
            lhc_cache_destroy(c);
            _exit(ok ? 0 : 1);
        }
    }
    close(go[0]);
    close(go[1]); /* both start now */
    for (int i = 0; i < 2; i++) {
        int status = 0;
        ck_assert_int_eq(waitpid(kids[i], &status, 0), kids[i]);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d failed", i);
    }
    ck_assert_int_eq(count_files(dir, ".lhk", NULL, 0), 1);
    ck_assert_int_eq(count_files(dir, ".tmp", NULL, 0), 0);
    lhc_cache *c = cache_at(dir);
    free(compile_copy(c, "scores", "DTYPE=f16 D=64 P=4 L=3 THREADS=256 SLICE=512 CHUNK=512 KPASS=1", "sm_90"));
    lhc_cache_stats s;
    lhc_cache_get_stats(c, &s);
    ck_assert_int_eq(s.disk_hits, 1);
    lhc_cache_destroy(c);
}
END_TEST

/* Threads of one context share its cache: one compile, one kernel object for all. */
static lhc_cache *shared_cache;
static void *compile_in_thread(void *arg) {
    const lhc_kernel **out = arg;
    if (lhc_compile(shared_cache, "scatter", SCATTER_CONSTANTS, "sm_90", out) != LH_OK) *out = NULL;
    return NULL;
}

START_TEST(threads_share_one_cache) {
    shared_cache = cache_at(dir);
    pthread_t threads[4];
    const lhc_kernel *got[4] = {0};
    for (int i = 0; i < 4; i++) ck_assert_int_eq(pthread_create(&threads[i], NULL, compile_in_thread, &got[i]), 0);
    for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
    for (int i = 0; i < 4; i++) {
        ck_assert_ptr_nonnull(got[i]);
        ck_assert_ptr_eq(got[i], got[0]);
    }
    lhc_cache_stats s;
    lhc_cache_get_stats(shared_cache, &s);
    ck_assert_int_eq(s.compiles, 1);
    ck_assert_int_eq(s.memory_hits, 3);
    lhc_cache_destroy(shared_cache);
}
END_TEST

/* ---- errors ------------------------------------------------------------------------------ */

START_TEST(malformed_source_reports_mlir_diagnostic) {
    char *ptx = NULL;
    lh_status st = lhc_mlir_to_ptx("broken", "module {\n  gpu.module @m {\n    %x = arith.constant : i32\n", "sm_90", &ptx);
    ck_assert_int_eq(st, LH_ERROR_COMPILE);
    ck_assert_ptr_null(ptx);
    const char *m = lh_error_message();
    ck_assert_msg(strstr(m, "kernel broken") != NULL, "message: %s", m);
    ck_assert_msg(strstr(m, "could not parse") != NULL, "message: %s", m);
    ck_assert_msg(strstr(m, "expected") != NULL || strstr(m, "custom op") != NULL, "no MLIR diagnostic in: %s", m);

    /* well-formed MLIR that cannot be lowered: the pass pipeline's diagnostic comes back */
    st = lhc_mlir_to_ptx("unlowerable",
                         "module attributes {gpu.container_module} {\n"
                         "gpu.module @m [#nvvm.target<chip = \"sm_90\">] {\n"
                         "  gpu.func @f(%p: memref<?xf32>) kernel {\n"
                         "    %c = arith.constant 0 : index\n"
                         "    %v = memref.load %p[%c] : memref<?xf32>\n"
                         "    %s = math.sqrt %v : f32\n"
                         "    memref.store %s, %p[%c] : memref<?xf32>\n"
                         "    gpu.return\n  }\n}\n}\n",
                         "sm_90", &ptx);
    ck_assert_int_eq(st, LH_ERROR_COMPILE);
    ck_assert_msg(strstr(lh_error_message(), "unlowerable for sm_90") != NULL, "%s", lh_error_message());
}
END_TEST

/* func.func helpers are inlined wherever they are called (a gpu.func's own body, scf regions,
 * other helpers) and dropped: the PTX holds the kernel alone. A helper that calls itself is a
 * clean error. */
START_TEST(helpers_are_inlined_and_dropped) {
    static const char head[] =
        "module attributes {gpu.container_module} {\n"
        "gpu.module @m [#nvvm.target<chip = \"sm_90\">] {\n"
        "  func.func private @twice(%x: i64) -> i64 {\n"
        "    %y = arith.addi %x, %x : i64\n"
        "    return %y : i64\n"
        "  }\n"
        "  func.func private @unused() {\n"
        "    return\n"
        "  }\n";
    static const char helper_calls_helper[] =
        "  func.func private @four(%x: i64) -> i64 {\n"
        "    %y = func.call @twice(%x) : (i64) -> i64\n"
        "    %z = func.call @twice(%y) : (i64) -> i64\n"
        "    return %z : i64\n"
        "  }\n";
    static const char kernel[] =
        "  gpu.func @lh_f(%p: !llvm.ptr<1>, %n: i64) kernel {\n"
        "    %c0 = arith.constant 0 : i64\n"
        "    %a = func.call @four(%n) : (i64) -> i64\n"
        "    %pos = arith.cmpi sgt, %a, %c0 : i64\n"
        "    scf.if %pos {\n"
        "      %b = func.call @twice(%a) : (i64) -> i64\n"
        "      llvm.store %b, %p : i64, !llvm.ptr<1>\n"
        "    }\n"
        "    gpu.return\n  }\n}\n}\n";
    char text[4096];
    snprintf(text, sizeof text, "%s%s%s", head, helper_calls_helper, kernel);
    char *ptx = NULL;
    ck_assert_msg(lhc_mlir_to_ptx("helpers", text, "sm_90", &ptx) == LH_OK, "%s", lh_error_message());
    ck_assert_ptr_nonnull(strstr(ptx, ".entry lh_f"));
    ck_assert_ptr_null(strstr(ptx, ".func"));  /* no helper left behind, no call */
    ck_assert_ptr_null(strstr(ptx, "call"));
    free(ptx);

    static const char recursive[] =
        "  func.func private @four(%x: i64) -> i64 {\n"
        "    %y = func.call @four(%x) : (i64) -> i64\n"
        "    return %y : i64\n"
        "  }\n";
    snprintf(text, sizeof text, "%s%s%s", head, recursive, kernel);
    ck_assert_int_eq(lhc_mlir_to_ptx("recursive", text, "sm_90", &ptx), LH_ERROR_COMPILE);
    ck_assert_msg(strstr(lh_error_message(), "helper calls nest more than 16 deep") != NULL, "%s",
                  lh_error_message());
}
END_TEST

START_TEST(unknown_chip_is_a_clean_error) {
    lhc_cache *c = cache_at(dir);
    const lhc_kernel *k = NULL;
    ck_assert_int_eq(lhc_compile(c, "scatter", SCATTER_CONSTANTS, "sm_95", &k), LH_ERROR_COMPILE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "sm_95"));
    /* a chip LLVM knows but MLIR's NVVM target refuses: MLIR's own words */
    ck_assert_int_eq(lhc_compile(c, "scatter", SCATTER_CONSTANTS, "sm_12", &k), LH_ERROR_COMPILE);
    ck_assert_msg(strstr(lh_error_message(), "sm_20") != NULL || strstr(lh_error_message(), "sm_12") != NULL,
                  "%s", lh_error_message());
    ck_assert_int_eq(lhc_compile(c, "scatter", SCATTER_CONSTANTS, "gfx90a", &k), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lhc_compile(c, "scatter", SCATTER_CONSTANTS, "sm_90\"", &k), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(count_files(dir, ".lhk", NULL, 0), 0);
    lhc_cache_destroy(c);
}
END_TEST

START_TEST(bad_constants_are_clean_errors) {
    lhc_cache *c = cache_at(dir);
    const lhc_kernel *k = NULL;
    ck_assert_int_eq(lhc_compile(c, "scatter", "DTYPE=bf16 P=4 L=3 THREADS=256 RUN=4 TOKENS=128", "sm_90", &k),
                     LH_ERROR_INVALID_VALUE);
    ck_assert_msg(strstr(lh_error_message(), "D") != NULL, "%s", lh_error_message());
    ck_assert_int_eq(lhc_compile(c, "scatter", SCATTER_CONSTANTS " FOO=1", "sm_90", &k), LH_ERROR_INVALID_VALUE);
    ck_assert_msg(strstr(lh_error_message(), "FOO") != NULL, "%s", lh_error_message());
    ck_assert_int_eq(lhc_compile(c, "nope", SCATTER_CONSTANTS, "sm_90", &k), LH_ERROR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "nope"));
    /* a value that makes the MLIR text invalid: MLIR's diagnostic comes back */
    ck_assert_int_eq(lhc_compile(c, "scatter", "DTYPE=f33 D=64 P=4 L=3 THREADS=256 RUN=4 TOKENS=128", "sm_90", &k),
                     LH_ERROR_COMPILE);
    ck_assert_msg(strstr(lh_error_message(), "f33") != NULL, "%s", lh_error_message());
    ck_assert_int_eq(lhc_compile(NULL, "scatter", SCATTER_CONSTANTS, "sm_90", &k), LH_ERROR_NULL_POINTER);
    lhc_cache_destroy(c);
}
END_TEST

START_TEST(without_compiler_compile_is_unavailable) {
    lhc_cache *c = cache_at(dir);
    const lhc_kernel *k = NULL;
    ck_assert_int_eq(lhc_compile(c, "scatter", SCATTER_CONSTANTS, "sm_90", &k), LH_ERROR_BACKEND_UNAVAILABLE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "LH_WITH_COMPILER=OFF"));
    lhc_cache_destroy(c);
}
END_TEST

static Suite *compiler_suite(void) {
    Suite *s = suite_create("compiler");
    TCase *t = tcase_create("templates");
    tcase_add_test(t, constants_parse_sorted_and_checked);
    tcase_add_test(t, template_expressions);
    tcase_add_test(t, template_includes);
    tcase_add_test(t, templates_embedded_and_plan_kernels);
    tcase_add_test(t, default_cache_dir_follows_environment);
    suite_add_tcase(s, t);
    suite_add_tcase(s, kernels_tcase());

    t = tcase_create("cache");
    tcase_add_checked_fixture(t, dir_setup, dir_teardown);
    tcase_set_timeout(t, 300);
    if (lhc_available()) {
        tcase_add_test(t, miss_compiles_and_stores_hit_runs_no_mlir);
        tcase_add_test(t, corrupt_entry_detected_and_recompiled);
        tcase_add_test(t, truncated_entry_detected_and_recompiled);
        tcase_add_test(t, header_only_entry_detected_and_recompiled);
        tcase_add_test(t, empty_entry_detected_and_recompiled);
        tcase_add_test(t, changed_constant_or_chip_misses);
        tcase_add_test(t, disabled_disk_cache_writes_nothing);
        tcase_add_test(t, unwritable_directory_still_compiles);
        tcase_add_test(t, two_processes_compile_the_same_kernel);
        tcase_add_test(t, threads_share_one_cache);
        tcase_add_test(t, malformed_source_reports_mlir_diagnostic);
        tcase_add_test(t, helpers_are_inlined_and_dropped);
        tcase_add_test(t, unknown_chip_is_a_clean_error);
        tcase_add_test(t, bad_constants_are_clean_errors);
    } else {
        tcase_add_test(t, without_compiler_compile_is_unavailable);
    }
    suite_add_tcase(s, t);
    if (lhc_available()) suite_add_tcase(s, cache_safety_tcase());
    suite_add_tcase(s, compile_requests_tcase());
    return s;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "matrix")) return run_matrix();
    if (argc > 1 && !strcmp(argv[1], "timing")) return run_timing();
    if (argc > 1 && !strcmp(argv[1], "gpu")) return run_gpu();
    if (argc > 1 && !strcmp(argv[1], "ptx")) return run_ptx();
    SRunner *sr = srunner_create(compiler_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
