/*
 * cuda_stage_timer.h - CUDA events around the stages of a plan's forward and backward
 * (LH_PARAM_STAGE_TIMING), read back by lh_plan_get_stage_ms.
 *
 * A call opens its stages with cuda_stage_timer_open (which forgets what an earlier call of
 * the same direction recorded), then brackets each stage with cuda_stage_begin / _end. Every
 * function takes a NULL timer as "timing is off" and does nothing, so the pipelines call them
 * unconditionally. A call on a stream that is being captured into a CUDA graph records nothing:
 * an event recorded during capture is a dependency inside the graph, not a timestamp.
 */
#ifndef LH_CUDA_STAGE_TIMER_H
#define LH_CUDA_STAGE_TIMER_H

#include <stdbool.h>

#include "cuda_driver.h"

typedef struct cuda_stage_timer {
    const lh_cu_api *cu;
    CUevent start[LH_STAGE_COUNT], end[LH_STAGE_COUNT];
    bool recorded[LH_STAGE_COUNT]; /* both events of the stage are on a stream */
    bool capturing;                /* the open call's stream is being captured: record nothing */
} cuda_stage_timer;

/* The events are created in the current context, which must stay current for every call. */
lh_status cuda_stage_timer_create(const lh_cu_api *cu, cuda_stage_timer **out);
void cuda_stage_timer_destroy(cuda_stage_timer *t);

/* A forward (stages first..last) or backward begins on `stream`. */
lh_status cuda_stage_timer_open(cuda_stage_timer *t, lh_stage first, lh_stage last,
                                CUstream stream);
lh_status cuda_stage_begin(cuda_stage_timer *t, lh_stage stage, CUstream stream);
lh_status cuda_stage_end(cuda_stage_timer *t, lh_stage stage, CUstream stream);

/* Waits for the stage's end event and returns the time between its events. */
lh_status cuda_stage_timer_ms(cuda_stage_timer *t, lh_stage stage, const char *name,
                              double *out_ms);

#endif
