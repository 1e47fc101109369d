/*
 * cudnn_prefetch.h - the libraries cuDNN opens for its first attention graph, read into the page
 * cache on a thread of their own while the process does other things.
 *
 * On a machine that has not run cuDNN since it booted, a process's first attention plan waits for
 * the disk: cuDNN opens its engine, heuristics and run-time compiled engine libraries (about 335
 * MB), cuBLASLt (540 MB, opened by the precompiled engines) and NVRTC (110 MB) one after the other
 * as each step of its first graph needs them, and their pages come in through faults. A training
 * script creates its context and then spends seconds on its model and data before its first
 * plan: from the context's creation to that plan, those files are read here, in the order cuDNN
 * opens them, and what has been read is in memory when cuDNN maps it. When the first plan starts
 * on cuDNN the reading stops (lh_cudnn_prefetch_yield): beside cuDNN's own reads it would only
 * compete with them for the disk. Nothing is loaded or run here: bytes are read and dropped.
 */
#ifndef LH_CUDNN_PREFETCH_H
#define LH_CUDNN_PREFETCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cuda_driver.h"

#define LH_PREFETCH_MAX_FILES 8
#define LH_PREFETCH_PATH_MAX 1024

/* Where to look: what the process knows about its cuDNN and driver. */
typedef struct lh_prefetch_where {
    const char *cudnn_dir;   /* the directory of the loaded libcudnn.so.9 */
    const char *driver_dir;  /* the directory of the loaded libcuda.so.1, or NULL */
    int cuda_major;          /* the CUDA cuDNN was built for (cudnnGetCudartVersion): */
    int cuda_minor;          /* 13, 0 -> libcublasLt.so.13, libnvrtc-builtins.so.13.0; 0: none */
    bool jit_only;           /* CUDNN_LIB_CONFIG=GRAPH_JIT_ONLY: cuDNN opens neither its
                                precompiled engines nor cuBLASLt */
    const char *search_path; /* LD_LIBRARY_PATH, or NULL */
} lh_prefetch_where;

typedef struct lh_prefetch_files {
    int count;
    char path[LH_PREFETCH_MAX_FILES][LH_PREFETCH_PATH_MAX];
} lh_prefetch_files;

/* The files, in the order cuDNN opens them: the driver's PTX compiler (cuDNN's handle), cuDNN's
 * precompiled engines, heuristics and run-time compiled engines (its first operation graph),
 * cuBLASLt, NVRTC and NVRTC's builtins (its first heuristics and engine). Each is looked for in
 * cuDNN's directory, in the lib folders of the NVIDIA wheels beside it
 * (site-packages/nvidia/<package>/lib), in `search_path`, in the CUDA toolkit and in the system's
 * library folders; the first regular file found is taken, and one found nowhere is left out. */
void lh_prefetch_find(const lh_prefetch_where *where, lh_prefetch_files *out);

/* Reads the files through in order, asking the kernel for the next window of each ahead of the
 * reads, until `stop` (checked between blocks) is true. Returns the bytes read; unreadable files
 * are passed over. */
int64_t lh_prefetch_read(const lh_prefetch_files *files, const atomic_bool *stop);

/* Once per process, from the first CUDA context: loads cuDNN (lh_cudnn_try_load: silent, as the
 * plan that needs cuDNN reports its absence), finds its files, and starts a thread that reads
 * them. Never fails, never waits for the reading, and sets no error; the thread is joined when
 * the library is unloaded or the process exits, after at most one more block.
 * LIGHTHOUSE_PREFETCH_LIBRARIES=0 turns it off. */
void lh_cudnn_prefetch_begin(const lh_cu_api *cu);

/* Stops the reading for good: called when the process's first plan starts on cuDNN, which then
 * reads what it needs on demand. Reading whole files beside it would take the disk from those
 * reads (measured: 0.3-0.4 s slower, docs/compiler.md), where ahead of it, in the time a
 * training script spends between its context and its first plan, it saves them. */
void lh_cudnn_prefetch_yield(void);

#endif /* LH_CUDNN_PREFETCH_H */
