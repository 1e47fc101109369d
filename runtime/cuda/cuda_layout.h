/*
 * cuda_layout.h - carving the caller's buffers (`saved`, the workspaces) into regions. Every
 * region starts a multiple of 256 bytes into its buffer, like cudaMalloc'd memory: cuDNN's
 * engines and the kernels' 16-byte vector loads are content with that.
 */
#ifndef LH_CUDA_LAYOUT_H
#define LH_CUDA_LAYOUT_H

#include <stdint.h>

#define LH_REGION_ALIGN 256

/* `bytes` rounded up to the region alignment. */
static inline int64_t lh_region_size(int64_t bytes) {
    return (bytes + LH_REGION_ALIGN - 1) / LH_REGION_ALIGN * LH_REGION_ALIGN;
}

/* Appends a region of `bytes` at *end and returns its offset. */
static inline int64_t lh_region(int64_t *end, int64_t bytes) {
    int64_t off = *end;
    *end = off + lh_region_size(bytes);
    return off;
}

#endif /* LH_CUDA_LAYOUT_H */
