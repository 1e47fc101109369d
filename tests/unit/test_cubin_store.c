/* test_cubin_store.c - the store of our kernels' machine code (runtime/cuda/cuda_cubin_store.c)
 * without a GPU: a fake driver stands in for libcuda (its linker hands back a made-up cubin with
 * NUL bytes in it, and scribbles over it when the linker is destroyed), and the records go
 * through a real kernel cache in a temporary directory. What is checked: a kernel is linked,
 * loaded from the copy of its cubin and stored once, restored by a later cache without linking,
 * made again for another driver version; a damaged, refused or unwritable record, a linker that
 * fails or is missing, and a store that is off all end in a loaded kernel (from its PTX where
 * nothing else works); a directory that cannot be written is not linked for; and a PTX the
 * driver refuses is the one error reported. */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cuda_cubin_store.h"
#include "runtime.h"

static const char kernel_ptx[] = ".version 8.6\n.target sm_90\n.visible .entry k() { ret; }\n";
static const char *const kernel_entries[] = {"k"};
static const lhc_kernel kernel = {.ptx = kernel_ptx,
                                  .ptx_size = sizeof kernel_ptx - 1,
                                  .num_entries = 1,
                                  .entries = kernel_entries,
                                  .key = "0123456789abcdef0123456789abcdef"};
/* An ELF header's first bytes, then NULs and more: a payload that is not text. */
static const unsigned char fake_cubin[] = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0,
                                           'c',  'u', 'b', 'i', 'n', 0, 0x90, 0, 0xff, 7};

/* ---- the fake driver ------------------------------------------------------------------- */

static struct {
    int driver_version;
    int links_created, links_destroyed, links_completed;
    int cubin_loads, ptx_loads, foreign_images;
    int fail_link_create, fail_link_complete, refuse_cubins, refuse_ptx;
} fake;

typedef struct fake_link {
    unsigned char *image; /* the linker's own buffer: valid until the state is destroyed */
    int added_ptx;
} fake_link;

static CUresult fake_driver_version(int *v) {
    *v = fake.driver_version;
    return CUDA_SUCCESS;
}

static CUresult fake_error_name(CUresult r, const char **name) {
    *name = r == CUDA_ERROR_INVALID_PTX ? "CUDA_ERROR_INVALID_PTX" : "CUDA_ERROR_FAKE";
    return CUDA_SUCCESS;
}

static CUresult fake_link_create(unsigned int n, CUjit_option *o, void **v, CUlinkState *state) {
    (void)n, (void)o, (void)v;
    if (fake.fail_link_create) return CUDA_ERROR_INVALID_CONTEXT;
    fake_link *l = calloc(1, sizeof *l);
    fake.links_created++;
    *state = (CUlinkState)l;
    return CUDA_SUCCESS;
}

static CUresult fake_link_add(CUlinkState state, CUjitInputType type, void *data, size_t size,
                              const char *name, unsigned int n, CUjit_option *o, void **v) {
    (void)name, (void)n, (void)o, (void)v;
    fake_link *l = (fake_link *)state;
    /* The PTX with its NUL, as the driver's documentation asks of text input. */
    l->added_ptx = type == CU_JIT_INPUT_PTX && size == sizeof kernel_ptx &&
                   memcmp(data, kernel_ptx, size) == 0;
    return l->added_ptx ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

static CUresult fake_link_complete(CUlinkState state, void **cubin, size_t *size) {
    fake_link *l = (fake_link *)state;
    if (fake.fail_link_complete || !l->added_ptx) return CUDA_ERROR_INVALID_PTX;
    l->image = malloc(sizeof fake_cubin);
    memcpy(l->image, fake_cubin, sizeof fake_cubin);
    fake.links_completed++;
    *cubin = l->image;
    *size = sizeof fake_cubin;
    return CUDA_SUCCESS;
}

static CUresult fake_link_destroy(CUlinkState state) {
    fake_link *l = (fake_link *)state;
    if (l->image) memset(l->image, 0xaa, sizeof fake_cubin); /* a copy kept too long shows */
    free(l->image);
    free(l);
    fake.links_destroyed++;
    return CUDA_SUCCESS;
}

static CUresult fake_module_load(CUmodule *module, const void *image, unsigned int n,
                                 CUjit_option *options, void **values) {
    if (memcmp(image, fake_cubin, 4) == 0) {
        if (memcmp(image, fake_cubin, sizeof fake_cubin) != 0) {
            fake.foreign_images++;
            return CUDA_ERROR_INVALID_IMAGE;
        }
        if (fake.refuse_cubins) return CUDA_ERROR_INVALID_IMAGE;
        fake.cubin_loads++;
    } else {
        if (strcmp(image, kernel_ptx) != 0) {
            fake.foreign_images++;
            return CUDA_ERROR_INVALID_IMAGE;
        }
        if (fake.refuse_ptx) {
            for (unsigned int i = 0; i < n; i++)
                if (options[i] == CU_JIT_ERROR_LOG_BUFFER)
                    snprintf(values[i], 64, "line 3: made-up syntax error");
            return CUDA_ERROR_INVALID_PTX;
        }
        fake.ptx_loads++;
    }
    *module = (CUmodule)(uintptr_t)0x1000;
    return CUDA_SUCCESS;
}

static lh_cu_api fake_api(void) {
    return (lh_cu_api){.DriverGetVersion = fake_driver_version,
                       .GetErrorName = fake_error_name,
                       .ModuleLoadDataEx = fake_module_load,
                       .LinkCreate = fake_link_create,
                       .LinkAddData = fake_link_add,
                       .LinkComplete = fake_link_complete,
                       .LinkDestroy = fake_link_destroy};
}

/* ---- fixture ---------------------------------------------------------------------------- */

static char dir[256];

static void setup(void) {
    memset(&fake, 0, sizeof fake);
    fake.driver_version = 13000;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/lh-cubin-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    chmod(dir, 0700);
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st, (void)type, (void)ftw;
    return remove(path);
}

static void teardown(void) { nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS); }

static lhc_cache *cache_at(const char *where) {
    lhc_cache *c = NULL;
    ck_assert_int_eq(lhc_cache_create(&c), LH_OK);
    ck_assert_int_eq(lhc_cache_set_dir(c, where), LH_OK);
    return c;
}

/* The cubin records in the directory, and the path of the last one found. */
static int count_records(char *last, size_t cap) {
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strncmp(e->d_name, "cubin-", 6) == 0 && strstr(e->d_name, ".lhk")) {
            n++;
            if (last) snprintf(last, cap, "%s/%s", dir, e->d_name);
        }
    if (d) closedir(d);
    return n;
}

static cuda_cubin_outcome load(const lh_cu_api *cu, lhc_cache *store) {
    lh_cu_module m = {0};
    cuda_cubin_outcome outcome = CUDA_CUBIN_STORED + 100;
    lh_clear_error();
    lh_status st = cuda_cubin_load(cu, store, &kernel, "sm_90", &m, &outcome);
    ck_assert_msg(st == LH_OK, "cuda_cubin_load: %s", lh_error_message());
    ck_assert_ptr_nonnull(m.module);
    ck_assert_str_eq(lh_error_message(), ""); /* what it passed over is nobody's error */
    ck_assert_int_eq(fake.foreign_images, 0);
    ck_assert_int_eq(fake.links_created, fake.links_destroyed);
    return outcome;
}

/* ---- tests ------------------------------------------------------------------------------ */

START_TEST(stored_once_then_restored) {
    lh_cu_api cu = fake_api();
    lhc_cache *a = cache_at(dir);
    ck_assert_int_eq(load(&cu, a), CUDA_CUBIN_STORED);
    ck_assert_int_eq(fake.links_completed, 1);
    ck_assert_int_eq(fake.cubin_loads, 1);
    ck_assert_int_eq(fake.ptx_loads, 0);
    ck_assert_int_eq(count_records(NULL, 0), 1);
    lhc_cache_destroy(a);

    lhc_cache *b = cache_at(dir); /* a later process */
    ck_assert_int_eq(load(&cu, b), CUDA_CUBIN_RESTORED);
    ck_assert_int_eq(load(&cu, b), CUDA_CUBIN_RESTORED);
    ck_assert_int_eq(fake.links_created, 1);
    ck_assert_int_eq(fake.cubin_loads, 3);
    ck_assert_int_eq(fake.ptx_loads, 0);
    lhc_cache_destroy(b);
}
END_TEST

START_TEST(another_driver_makes_its_own) {
    lh_cu_api cu = fake_api();
    lhc_cache *c = cache_at(dir);
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_STORED);
    fake.driver_version = 13010;
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_STORED);
    ck_assert_int_eq(count_records(NULL, 0), 2);
    fake.driver_version = 13000;
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_RESTORED);
    ck_assert_int_eq(fake.links_created, 2);
    lhc_cache_destroy(c);
}
END_TEST

START_TEST(identity_names_kernel_chip_and_driver) {
    char a[256], b[256];
    ck_assert(cuda_cubin_identity(&kernel, "sm_90", 13000, a, sizeof a));
    ck_assert_ptr_nonnull(strstr(a, kernel.key));
    ck_assert_ptr_nonnull(strstr(a, "sm_90"));
    ck_assert_ptr_nonnull(strstr(a, "13000"));
    ck_assert(cuda_cubin_identity(&kernel, "sm_100a", 13000, b, sizeof b));
    ck_assert_str_ne(a, b);
    ck_assert(!cuda_cubin_identity(&kernel, "sm_90", 13000, a, 16)); /* does not fit */
    lhc_kernel keyless = kernel;
    keyless.key = NULL;
    ck_assert(!cuda_cubin_identity(&keyless, "sm_90", 13000, a, sizeof a));
}
END_TEST

START_TEST(damaged_record_is_made_again) {
    lh_cu_api cu = fake_api();
    lhc_cache *c = cache_at(dir);
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_STORED);
    char path[600];
    ck_assert_int_eq(count_records(path, sizeof path), 1);
    FILE *f = fopen(path, "r+b"); /* the payload's last byte: the checksum no longer holds */
    ck_assert_ptr_nonnull(f);
    fseek(f, -1, SEEK_END);
    fputc(0x55, f);
    fclose(f);
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_STORED);
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_RESTORED);
    ck_assert_int_eq(fake.links_created, 2);
    ck_assert_int_eq(fake.ptx_loads, 0);
    lhc_cache_destroy(c);
}
END_TEST

START_TEST(refused_cubins_fall_back_to_ptx) {
    lh_cu_api cu = fake_api();
    lhc_cache *c = cache_at(dir);
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_STORED);
    fake.refuse_cubins = 1; /* the record and a fresh link alike */
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_UNUSED);
    ck_assert_int_eq(fake.ptx_loads, 1);
    ck_assert_int_eq(fake.links_created, 2);
    fake.refuse_cubins = 0;
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_RESTORED);
    lhc_cache_destroy(c);
}
END_TEST

START_TEST(linker_failures_fall_back_to_ptx) {
    lh_cu_api cu = fake_api();
    lhc_cache *c = cache_at(dir);
    fake.fail_link_complete = 1;
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_UNUSED);
    ck_assert_int_eq(fake.links_created, 1); /* and destroyed: checked in load() */
    fake.fail_link_complete = 0;
    fake.fail_link_create = 1;
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_UNUSED);
    fake.fail_link_create = 0;
    lh_cu_api no_linker = fake_api(); /* a driver without the four symbols */
    no_linker.LinkCreate = NULL;
    no_linker.LinkAddData = NULL;
    no_linker.LinkComplete = NULL;
    no_linker.LinkDestroy = NULL;
    ck_assert_int_eq(load(&no_linker, c), CUDA_CUBIN_UNUSED);
    ck_assert_int_eq(fake.ptx_loads, 3);
    ck_assert_int_eq(count_records(NULL, 0), 0);
    lhc_cache_destroy(c);
}
END_TEST

START_TEST(no_store_loads_ptx) {
    lh_cu_api cu = fake_api();
    ck_assert_int_eq(load(&cu, NULL), CUDA_CUBIN_UNUSED);
    lhc_cache *c = cache_at(dir);
    lhc_cache_set_disk_enabled(c, 0);
    ck_assert(!lhc_cache_records_enabled(c));
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_UNUSED);
    ck_assert_int_eq(fake.links_created, 0);
    ck_assert_int_eq(fake.ptx_loads, 2);
    lh_cu_module m = {0}; /* the outcome is optional */
    ck_assert_int_eq(cuda_cubin_load(&cu, NULL, &kernel, "sm_90", &m, NULL), LH_OK);
    lhc_cache_destroy(c);
}
END_TEST

START_TEST(unwritable_directory_loads_ptx) {
    lh_cu_api cu = fake_api();
    char blocked[600];
    snprintf(blocked, sizeof blocked, "%s/file", dir); /* a file where a folder must be made */
    FILE *f = fopen(blocked, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    char under[700];
    snprintf(under, sizeof under, "%s/cache", blocked);
    lhc_cache *c = cache_at(under);
    ck_assert(lhc_cache_records_enabled(c));
    ck_assert(!lhc_cache_records_writable(c));
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_UNUSED); /* nothing linked only to be lost */
    ck_assert_int_eq(fake.links_created, 0);
    ck_assert_int_eq(fake.ptx_loads, 1);
    lhc_cache_destroy(c);
    snprintf(under, sizeof under, "%s/not-yet/made", dir); /* made by the first write */
    c = cache_at(under);
    ck_assert(lhc_cache_records_writable(c));
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_STORED);
    lhc_cache_destroy(c);
}
END_TEST

START_TEST(record_that_cannot_be_written) {
    lh_cu_api cu = fake_api();
    lhc_cache *c = cache_at(dir);
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_STORED);
    lhc_cache_destroy(c);
    char path[600], inside[700];
    ck_assert_int_eq(count_records(path, sizeof path), 1);
    /* A folder with a file in it where the record was: not read (not a regular file), and the
     * rename of a fresh record over it fails. */
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    snprintf(inside, sizeof inside, "%s/x", path);
    FILE *f = fopen(inside, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    c = cache_at(dir);
    ck_assert_int_eq(load(&cu, c), CUDA_CUBIN_UNSTORED);
    ck_assert_int_eq(fake.cubin_loads, 2);
    ck_assert_int_eq(fake.ptx_loads, 0);
    lhc_cache_destroy(c);
}
END_TEST

START_TEST(refused_ptx_is_the_error) {
    lh_cu_api cu = fake_api();
    lhc_cache *c = cache_at(dir);
    fake.fail_link_complete = 1;
    fake.refuse_ptx = 1;
    lh_cu_module m = {0};
    cuda_cubin_outcome outcome;
    lh_status st = cuda_cubin_load(&cu, c, &kernel, "sm_90", &m, &outcome);
    ck_assert_int_eq(st, LH_ERROR_COMPILE);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "made-up syntax error"));
    ck_assert_ptr_null(m.module);
    ck_assert_int_eq(outcome, CUDA_CUBIN_UNUSED);
    ck_assert_int_eq(fake.links_created, fake.links_destroyed);
    lhc_cache_destroy(c);
}
END_TEST

START_TEST(asked_for_by_the_environment) {
    unsetenv("LIGHTHOUSE_KERNEL_CUBIN_STORE");
    ck_assert(!cuda_cubin_store_wanted());
    setenv("LIGHTHOUSE_KERNEL_CUBIN_STORE", "0", 1);
    ck_assert(!cuda_cubin_store_wanted());
    setenv("LIGHTHOUSE_KERNEL_CUBIN_STORE", "1", 1);
    ck_assert(cuda_cubin_store_wanted());
    unsetenv("LIGHTHOUSE_KERNEL_CUBIN_STORE");
}
END_TEST

int main(void) {
    Suite *s = suite_create("cubin_store");
    TCase *tc = tcase_create("store");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, stored_once_then_restored);
    tcase_add_test(tc, another_driver_makes_its_own);
    tcase_add_test(tc, identity_names_kernel_chip_and_driver);
    tcase_add_test(tc, damaged_record_is_made_again);
    tcase_add_test(tc, refused_cubins_fall_back_to_ptx);
    tcase_add_test(tc, linker_failures_fall_back_to_ptx);
    tcase_add_test(tc, no_store_loads_ptx);
    tcase_add_test(tc, unwritable_directory_loads_ptx);
    tcase_add_test(tc, record_that_cannot_be_written);
    tcase_add_test(tc, refused_ptx_is_the_error);
    tcase_add_test(tc, asked_for_by_the_environment);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
