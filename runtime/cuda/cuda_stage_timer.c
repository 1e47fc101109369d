/* cuda_stage_timer.c - see cuda_stage_timer.h. */
#include "cuda_stage_timer.h"

#include <stdlib.h>

lh_status cuda_stage_timer_create(const lh_cu_api *cu, cuda_stage_timer **out) {
    cuda_stage_timer *t = calloc(1, sizeof *t);
    if (!t) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "allocating the stage timer failed");
    t->cu = cu;
    lh_status st = LH_OK;
    for (int s = 0; s < LH_STAGE_COUNT && st == LH_OK; s++) {
        st = lh_cu_check(cu->EventCreate(&t->start[s], CU_EVENT_DEFAULT),
                         "creating a stage timing event (cuEventCreate)");
        if (st == LH_OK)
            st = lh_cu_check(cu->EventCreate(&t->end[s], CU_EVENT_DEFAULT),
                             "creating a stage timing event (cuEventCreate)");
    }
    if (st != LH_OK) {
        cuda_stage_timer_destroy(t);
        return st;
    }
    *out = t;
    return LH_OK;
}

void cuda_stage_timer_destroy(cuda_stage_timer *t) {
    if (!t) return;
    for (int s = 0; s < LH_STAGE_COUNT; s++) {
        if (t->start[s]) t->cu->EventDestroy(t->start[s]);
        if (t->end[s]) t->cu->EventDestroy(t->end[s]);
    }
    free(t);
}

lh_status cuda_stage_timer_open(cuda_stage_timer *t, lh_stage first, lh_stage last,
                                CUstream stream) {
    if (!t) return LH_OK;
    for (int s = first; s <= (int)last; s++) t->recorded[s] = false;
    CUstreamCaptureStatus cs = CU_STREAM_CAPTURE_STATUS_NONE;
    lh_status st = lh_cu_check(t->cu->StreamIsCapturing(stream, &cs),
                               "asking whether the stream is being captured (cuStreamIsCapturing)");
    t->capturing = cs != CU_STREAM_CAPTURE_STATUS_NONE;
    return st;
}

lh_status cuda_stage_begin(cuda_stage_timer *t, lh_stage stage, CUstream stream) {
    if (!t || t->capturing) return LH_OK;
    return lh_cu_check(t->cu->EventRecord(t->start[stage], stream),
                       "recording a stage timing event (cuEventRecord)");
}

lh_status cuda_stage_end(cuda_stage_timer *t, lh_stage stage, CUstream stream) {
    if (!t || t->capturing) return LH_OK;
    lh_status st = lh_cu_check(t->cu->EventRecord(t->end[stage], stream),
                               "recording a stage timing event (cuEventRecord)");
    t->recorded[stage] = st == LH_OK;
    return st;
}

lh_status cuda_stage_timer_ms(cuda_stage_timer *t, lh_stage stage, const char *name,
                              double *out_ms) {
    if (!t->recorded[stage])
        return lh_fail(LH_ERROR_BAD_STATE,
                       "stage %s did not run in the plan's most recent %s (or that call was "
                       "captured into a CUDA graph, which is not timed)",
                       name, stage <= LH_STAGE_SCATTER ? "lh_forward" : "lh_backward");
    lh_status st = lh_cu_check(t->cu->EventSynchronize(t->end[stage]),
                               "waiting for a stage timing event (cuEventSynchronize)");
    float ms = 0.0f;
    if (st == LH_OK)
        st = lh_cu_check(t->cu->EventElapsedTime(&ms, t->start[stage], t->end[stage]),
                         "reading a stage time (cuEventElapsedTime)");
    if (st == LH_OK) *out_ms = (double)ms;
    return st;
}
