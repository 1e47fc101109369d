/*
 * mlir_stub.c - the compiler's MLIR step in a library built with LH_WITH_COMPILER=OFF.
 *
 * The cache and the templates still link, so the runtime needs no #ifdef, but nothing is ever
 * compiled (and "none" in the cache key keeps PTX of real builds apart): lhc_compile fails with
 * LH_ERROR_BACKEND_UNAVAILABLE and the CUDA backend reports that kernels cannot be built.
 */
#include "compiler_internal.h"
#include "runtime.h"

int lhc_available(void) { return 0; }
int64_t lhc_mlir_compile_count(void) { return 0; }
const char *lhc_llvm_version(void) { return "none"; }
const char *lhc_pipeline_text(void) { return "none"; }

lh_status lhc_mlir_to_ptx(const char *kernel, const char *mlir_text, const char *chip, char **ptx) {
    (void)mlir_text;
    (void)ptx;
    return lh_fail(LH_ERROR_BACKEND_UNAVAILABLE,
                   "kernel %s for %s cannot be compiled: liblighthouse was built without its kernel "
                   "compiler (LH_WITH_COMPILER=OFF)", kernel, chip);
}
