/*
 * compiler.h - the kernel compiler: MLIR kernel templates -> PTX text, through a kernel cache.
 *
 * What it offers the runtime (the whole interface; plain C types, lh_status for errors):
 *
 *   lhc_cache *cache;                                   // one per context
 *   lhc_cache_create(&cache);                           // memory cache + default disk cache
 *   lhc_cache_set_dir(cache, dir_or_NULL);              // LH_CONTEXT_CACHE_DIR ("" = default)
 *   lhc_cache_set_disk_enabled(cache, 0 or 1);          // LH_CONTEXT_CACHE_ENABLED
 *
 *   // at plan finalize: which kernels a configuration needs, with their constants
 *   lhc_kernel_request req[LHC_MAX_PLAN_KERNELS]; int n;
 *   lhc_plan_kernels(&(lhc_plan_params){.pooling = 4, .levels = 3, .head_dim = 128,
 *                                       .dtype = "bf16"}, req, &n);
 *   for (i < n) {
 *       const lhc_kernel *k;
 *       lhc_compile(cache, req[i].kernel, req[i].constants, "sm_90", &k);
 *       // k->ptx: NUL-terminated PTX for cuModuleLoadDataEx; k->entries[0..k->num_entries-1]:
 *       // the .entry names for cuModuleGetFunction; req[i].block_threads / tokens_per_block:
 *       // launch geometry (see kernels_mlir/<kernel>.mlir for arguments and grid).
 *   }
 *   lhc_cache_destroy(cache);                           // after every plan that used it
 *
 * lhc_compile(cache, NAME, CONSTANTS, CHIP, &kernel):
 *   - NAME: a kernel template of kernels_mlir/ ("scores", "scatter", ...).
 *   - CONSTANTS: specialisation constants as "KEY=VALUE KEY=VALUE ..." (space separated, any
 *     order). Every {{...}} placeholder of the template must be covered and every key must be
 *     used by the template, so a misspelt key is an error instead of a silent default.
 *   - CHIP: "sm_90" (H100/H200), "sm_100a" (B200); any "sm_NN[a]" that LLVM's NVPTX knows.
 *   - Looks in the cache's memory first, then on disk, and only then runs MLIR; a fresh result
 *     is written to disk (atomically) and kept in memory. The returned lhc_kernel is owned by
 *     the cache and stays valid, unchanged, until lhc_cache_destroy.
 *   - Errors: LH_ERROR_INVALID_VALUE (unknown kernel, bad constants), LH_ERROR_COMPILE (MLIR or
 *     LLVM rejected the kernel or the chip; the message carries MLIR's diagnostic),
 *     LH_ERROR_BACKEND_UNAVAILABLE (built with LH_WITH_COMPILER=OFF),
 *     LH_ERROR_OUT_OF_HOST_MEMORY. A disk cache that cannot be read or written is not an error:
 *     the kernel is compiled and kept in memory (lhc_cache_stats counts it).
 *
 * Thread safety: one cache may be used from several threads; different kernels compile
 * concurrently, also in one cache, and a thread asking for a kernel that another is compiling
 * waits for it (MLIR runs once). Several processes may share one cache directory.
 *
 * A plan's kernels at once: lhc_compile_requests(cache, req, n, "sm_90", threads, out, &failed)
 * compiles them on several threads (see there).
 */
#ifndef LH_COMPILER_H
#define LH_COMPILER_H

#include <stddef.h>
#include <stdint.h>

#include "lighthouse.h" /* lh_status only */

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the library was built with the MLIR compiler (LH_WITH_COMPILER=ON), else 0. */
int lhc_available(void);

/* ---- compiling --------------------------------------------------------------------------- */

typedef struct lhc_cache lhc_cache;

typedef struct lhc_kernel {
    const char *ptx;              /* NUL-terminated PTX text */
    size_t ptx_size;              /* strlen(ptx) */
    int num_entries;              /* kernel entry points in the PTX */
    const char *const *entries;   /* their names, for cuModuleGetFunction */
    const char *key;              /* the cache key (32 hex digits): names this PTX for this chip */
} lhc_kernel;

lh_status lhc_compile(lhc_cache *cache, const char *kernel, const char *constants,
                      const char *chip, const lhc_kernel **out);

/* ---- the cache (one per context) --------------------------------------------------------- */

/* A cache with the disk part enabled at the default directory: $LIGHTHOUSE_CACHE_DIR, else
 * $XDG_CACHE_HOME/liblighthouse, else $HOME/.cache/liblighthouse (created on first write). */
lh_status lhc_cache_create(lhc_cache **out);
void lhc_cache_destroy(lhc_cache *cache);                  /* NULL is a no-op */
/* NULL or "" restores the default. Copies `dir`. LH_ERROR_INVALID_VALUE if too long. */
lh_status lhc_cache_set_dir(lhc_cache *cache, const char *dir);
void lhc_cache_set_disk_enabled(lhc_cache *cache, int enabled);
/* The directory the disk cache uses now ("" when none can be determined). */
const char *lhc_cache_dir(const lhc_cache *cache);

/* Records other than kernels kept in the same directory, under the same rules (whom it trusts,
 * regular files opened without blocking, atomic writes, a checksum): the CUDA backend's
 * serialised cuDNN execution plans (runtime/cuda/cudnn_plan_record.c). `name` names the kind
 * of record (letters, digits, '-'); the file's key hashes `identity`, the text that says
 * everything the record depends on. Both do nothing while the cache's disk part is disabled.
 * Read: 1 with a malloc'd NUL-terminated payload, 0 when absent, disabled, damaged or not
 * trusted (a record is only ever an optimisation). Write: 0 when written, -1 otherwise. */
int lhc_cache_record_read(lhc_cache *cache, const char *name, const char *identity,
                          char **payload, size_t *size);
int lhc_cache_record_write(lhc_cache *cache, const char *name, const char *identity,
                           const char *payload, size_t size);
/* A record whose payload is bytes rather than text (the CUDA backend's machine code of its
 * kernels, runtime/cuda/cuda_cubin_store.c): NUL bytes allowed, one NUL appended after `size`.
 * Written with lhc_cache_record_write, which takes any bytes. */
int lhc_cache_record_read_bytes(lhc_cache *cache, const char *name, const char *identity,
                                char **payload, size_t *size);
/* 1 when records are read and written now (the disk part is on and has a directory). */
int lhc_cache_records_enabled(lhc_cache *cache);
/* 1 when records are enabled and the directory can be written, or does not exist yet (a write
 * makes it): whether making a record only to keep it is worth its cost. A read-only directory
 * (a cache built ahead and mounted so) gives 0; writes can still fail later (a full disk). */
int lhc_cache_records_writable(lhc_cache *cache);

typedef struct lhc_cache_stats {
    int64_t memory_hits;   /* lhc_compile answered from memory */
    int64_t disk_hits;     /* answered from a valid disk entry */
    int64_t compiles;      /* MLIR ran */
    int64_t disk_rejects;  /* disk entries found corrupt or truncated (then recompiled) */
    int64_t disk_errors;   /* disk entries that could not be written */
    int64_t disk_unsafe;   /* entries or a directory refused: not a regular file, or owned or
                              writable by another user */
} lhc_cache_stats;
void lhc_cache_get_stats(const lhc_cache *cache, lhc_cache_stats *out);

/* ---- the kernels a plan needs ------------------------------------------------------------ */

#define LHC_MAX_PLAN_KERNELS 16
#define LHC_MAX_CONSTANTS_TEXT 512

typedef struct lhc_plan_params {
    int pooling;        /* p */
    int levels;         /* L */
    int head_dim;       /* D: a multiple of 8 with D/8 a power of two <= 32 (8..256) */
    const char *dtype;  /* "bf16" or "f16" */
    int group;          /* H / Hkv, fixed in pool_grad (the kernel that sums over a kv group);
                           0: the kernel reads it at run time, and needs more registers */
} lhc_plan_params;

typedef struct lhc_kernel_request {
    const char *kernel;                       /* template name, static storage */
    char constants[LHC_MAX_CONSTANTS_TEXT];   /* for lhc_compile */
    int block_threads;                        /* blockDim.x to launch with */
    int tokens_per_block;                     /* tokens one block covers (grid.x = ceil(N / it)) */
} lhc_kernel_request;

/* Fills `out` with the kernels of a Lighthouse forward pass for `params` and their constants
 * (block sizes chosen here, so the runtime and lighthouse-compile agree on the cache keys).
 * LH_ERROR_UNSUPPORTED with a sentence when the kernels cannot serve the parameters. */
lh_status lhc_plan_kernels(const lhc_plan_params *params, lhc_kernel_request out[LHC_MAX_PLAN_KERNELS],
                           int *count);

/* The kernel of ring attention (kernels_mlir/ring.mlir: merge, add, convert, pack) for context
 * parallelism; tokens_per_block = rows one block of the merge and pack kernels covers. */
lh_status lhc_ring_kernel(const char *dtype, int head_dim, lhc_kernel_request *out);

/* The kernels of req[0..count-1] for one chip, compiled side by side on up to `threads` threads,
 * the calling one among them (<= 0: one per online core; never more than count or
 * LHC_MAX_COMPILE_THREADS). out[i] is what
 * lhc_compile(cache, req[i].kernel, req[i].constants, chip, &out[i]) gives. A thread that cannot
 * be started leaves its share to the others. On failure: the status and message of the first
 * request, in order, that failed (a serial loop's answer), its index in *failed_index (may be
 * NULL; -1 on success), and no further request is started; out[] is then unspecified, and
 * what compiled stays in the cache. */
#define LHC_MAX_COMPILE_THREADS 64
lh_status lhc_compile_requests(lhc_cache *cache, const lhc_kernel_request *req, int count,
                               const char *chip, int threads, const lhc_kernel **out,
                               int *failed_index);

/* ---- the kernel templates ---------------------------------------------------------------- */

int lhc_template_count(void);
const char *lhc_template_name(int index);      /* NULL when out of range */
const char *lhc_template_source(const char *name); /* the .mlir text; NULL when unknown */

/* Every call into MLIR in this process (all caches); tests use it to prove a hit ran no MLIR. */
int64_t lhc_mlir_compile_count(void);

#ifdef __cplusplus
}
#endif

#endif /* LH_COMPILER_H */
