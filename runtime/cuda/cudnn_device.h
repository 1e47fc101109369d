/*
 * cudnn_device.h - a GPU described in text, so that cuDNN's execution plans can be built for it
 * on a machine without it (without any GPU, though with the NVIDIA driver's library: cuDNN has
 * the driver compile its engines' PTX; cuda_precompile.c).
 *
 * Why: cuDNN compiles its attention engines at run time, per sequence length; on a machine whose
 * driver has never compiled them that is seconds of a plan's start-up (docs/compiler.md, "A
 * machine's first plan"). Since cuDNN 9.11 a device-properties descriptor can be written out as
 * text on the GPU and read back elsewhere, and the heuristics and execution plans built for it
 * there; the finalized plans then go into the plan store (cudnn_plan_store.h) like plans built on
 * the GPU, and a GPU of that description restores them in milliseconds.
 *
 * The description (lh_context_save_device writes it):
 *     LHDEV1\n
 *     name <the GPU's name, as the CUDA driver reports it>\n
 *     sm <10 * major + minor>\n
 *     cudnn <cudnnGetVersion() of the library that wrote it>\n
 *     <cuDNN's JSON representation of the device properties>
 * The name and compute capability are the plan store's identity of the GPU; the cuDNN version
 * is checked against the one that builds (a plan is restored only by the cuDNN that made it).
 */
#ifndef LH_CUDNN_DEVICE_H
#define LH_CUDNN_DEVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "cudnn_api.h"

#define LH_DEVICE_NAME_CAP 128

typedef struct lh_device_text {
    char name[LH_DEVICE_NAME_CAP];
    int sm;
    size_t cudnn_version;
    const char *properties;  /* cuDNN's JSON, pointing into the parsed text */
} lh_device_text;

/* The description's text (malloc'd) from its parts; NULL when out of memory or a part is
 * unfit (a name with a newline, empty properties). */
char *lh_device_text_encode(const char *name, int sm, size_t cudnn_version,
                            const char *properties);
/* Parses a description: LH_OK with *out (pointing into `text`), else LH_ERROR_INVALID_VALUE
 * with a sentence that says what is wrong with it. Needs no cuDNN. */
lh_status lh_device_text_parse(const char *text, lh_device_text *out);

/* The properties of `device` (a CUDA ordinal, its context current) as cuDNN's JSON, malloc'd in
 * *out_json. Needs the GPU. */
lh_status lh_cudnn_device_properties(const lh_cudnn_api *dnn, int device, char **out_json);

/* A finalized device-properties descriptor read from a parsed description, for
 * lh_gb_init_for_device; the caller destroys it with dnn->BackendDestroyDescriptor. Refuses a
 * description written by another cuDNN version. */
lh_status lh_cudnn_device_open(const lh_cudnn_api *dnn, const lh_device_text *text,
                               cudnnBackendDescriptor_t *out);

#endif /* LH_CUDNN_DEVICE_H */
