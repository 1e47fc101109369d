/*
 * cuda_cubin_store.h - our kernels' machine code kept in the kernel cache beside their PTX.
 *
 * Why: loading PTX makes the CUDA driver compile it for the GPU, 0.3-0.7 s for a plan's kernels,
 * and the driver keeps what it made only in its own per-user cache (~/.nv/ComputeCache). A fresh
 * machine, or a job's container started afresh, has an empty one, while the kernel cache's
 * directory is often one that lasts (a shared file system, a volume, a cache built ahead of
 * time). So a kernel is compiled by the driver's linker instead (cuLinkComplete hands back the
 * machine code, a cubin), loaded from that cubin, and the cubin is written into the kernel cache
 * as a record; a later process loads the record and the driver compiles nothing.
 *
 * Identity (cuda_cubin_identity): the kernel's cache key (its PTX and chip), the chip, and the
 * driver's version, whose compiler made the code. The driver checks a cubin's architecture
 * when it loads it, and the record's checksum catches damage; a record the driver refuses is
 * made again and replaced.
 *
 * Never an error: where the linker is missing or fails, or the record cannot be written, the
 * kernel loads from its PTX as before (a directory that cannot be written is not linked for at
 * all: linking bypasses the driver's own cache, which may hold the kernel) (lh_cu_module_load, whose error is the one reported when
 * that fails too). Off where the context's disk cache is off (LH_CONTEXT_CACHE_ENABLED = 0);
 * on only with LIGHTHOUSE_KERNEL_CUBIN_STORE=1 until it has been measured on a GPU.
 */
#ifndef LH_CUDA_CUBIN_STORE_H
#define LH_CUDA_CUBIN_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "compiler.h"
#include "cuda_module.h"

/* Where one kernel's module came from. */
typedef enum cuda_cubin_outcome {
    CUDA_CUBIN_UNUSED = 0, /* loaded from its PTX: no store, or the linker failed */
    CUDA_CUBIN_RESTORED,   /* loaded from a cubin of the kernel cache: nothing compiled */
    CUDA_CUBIN_STORED,     /* compiled by the driver's linker, loaded, and the cubin written */
    CUDA_CUBIN_UNSTORED    /* compiled by the linker and loaded; the record could not be written */
} cuda_cubin_outcome;

/* Whether the store is asked for: LIGHTHOUSE_KERNEL_CUBIN_STORE=1 (read at each call). */
bool cuda_cubin_store_wanted(void);

/* The record's identity text for kernel `k` compiled for `chip` by a driver of version
 * `driver_version` (cuDriverGetVersion). False where it does not fit `cap`. */
bool cuda_cubin_identity(const lhc_kernel *k, const char *chip, int driver_version, char *out,
                         size_t cap);

/* Loads kernel `k` (PTX for `chip`) into the current context: from its cubin in `store` where
 * the driver accepts it, else through the driver's linker (writing the cubin into `store`), else
 * from the PTX. `store` NULL, or a cache whose disk part is off: from the PTX alone, as
 * lh_cu_module_load. `outcome` may be NULL. */
lh_status cuda_cubin_load(const lh_cu_api *cu, lhc_cache *store, const lhc_kernel *k,
                          const char *chip, lh_cu_module *out, cuda_cubin_outcome *outcome);

#endif /* LH_CUDA_CUBIN_STORE_H */
