/* test_compiler_util.h - what the modes of test_compiler share. */
#ifndef LH_TEST_COMPILER_UTIL_H
#define LH_TEST_COMPILER_UTIL_H

#include <check.h>

#include "compiler.h"

/* Entry points of the other modes; each returns the process exit status (77 = skipped). */
int run_matrix(void);
int run_timing(void);
int run_gpu(void);
int run_ptx(void);

/* The kernel descriptors against the templates (test_compiler_kernels.c). */
TCase *kernels_tcase(void);

/* A fresh empty directory under $TMPDIR (or /tmp); `out` receives its path. 0 on success. */
int make_temp_dir(char *out, size_t cap);
/* Removes the files of a directory made by make_temp_dir, then the directory. */
void remove_temp_dir(const char *dir);

/* The tests of whom the disk cache trusts (test_cache_safety.c). */
TCase *cache_safety_tcase(void);

/* A plan's kernels side by side, and one cache serving several threads (test_compile_requests.c). */
TCase *compile_requests_tcase(void);

/* The request for `kernel` among those of lhc_plan_kernels; NULL if absent. */
const lhc_kernel_request *find_request(const lhc_kernel_request *req, int n, const char *kernel);

#endif
