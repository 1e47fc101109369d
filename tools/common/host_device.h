/*
 * host_device.h - memory for programs built on the public ABI (demo, benchmark, GPU tests):
 * host memory for the CPU backend, device memory through the CUDA driver (loaded with dlopen so
 * the programs build and run on machines without a GPU stack), plus fp32 <-> bf16/fp16 rounding.
 */
#ifndef LH_TOOLS_HOST_DEVICE_H
#define LH_TOOLS_HOST_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "lighthouse.h"

/* Makes the primary context of `device` current on this thread; 0 on success. */
int hd_gpu_init(int device);
/* A buffer on the backend's side: device memory for CUDA, host memory for CPU. NULL on failure. */
void *hd_alloc(lh_backend backend, size_t bytes);
void hd_free(lh_backend backend, void *ptr);
/* Copies between host and the backend's side (a plain memcpy for the CPU backend). */
int hd_upload(lh_backend backend, void *dst, const void *src, size_t bytes);
int hd_download(lh_backend backend, void *dst, const void *src, size_t bytes);
int hd_memset(lh_backend backend, void *dst, int byte, size_t bytes);
int hd_synchronize(lh_backend backend);

/* Rounds fp32 values to `dtype` in place (round to nearest even), so that a reference computed
 * in fp32 sees exactly the inputs the GPU sees. */
void hd_round_to(lh_dtype dtype, float *x, size_t n);
/* Converts fp32 to the dtype's bytes (fp32: copy) and back. */
void hd_encode(lh_dtype dtype, const float *src, void *dst, size_t n);
void hd_decode(lh_dtype dtype, const void *src, float *dst, size_t n);

/* GPU timing on the legacy default stream (the stream the tools pass as NULL): hd_event_record
 * marks a point, hd_event_elapsed_ms waits for the later one and returns the milliseconds
 * between them. Events come from a small pool; hd_gpu_init must have succeeded. */
typedef struct hd_event hd_event;
hd_event *hd_event_create(void);
void hd_event_destroy(hd_event *event);
int hd_event_record(hd_event *event);
float hd_event_elapsed_ms(hd_event *start, hd_event *end);
/* Device-to-device copy on the default stream (asynchronous). */
int hd_copy_d2d(void *dst, const void *src, size_t bytes);
/* The device's name ("" without a GPU). */
const char *hd_gpu_name(void);

/* Seconds on a monotonic clock. */
double hd_now(void);

#endif
