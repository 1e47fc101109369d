/* api_misc.c - version, status names and the last-error accessor. */
#include "ffi_internal.h"

#define LH_STR2(x) #x
#define LH_STR(x) LH_STR2(x)

LH_API int lh_version_number(void) { return LH_VERSION_NUMBER; }

LH_API const char *lh_version_string(void) {
    return LH_STR(LH_VERSION_MAJOR) "." LH_STR(LH_VERSION_MINOR) "." LH_STR(LH_VERSION_PATCH);
}

LH_API const char *lh_status_string(lh_status status) {
    switch (status) {
    case LH_OK: return "LH_OK";
    case LH_ERROR_NULL_POINTER: return "LH_ERROR_NULL_POINTER";
    case LH_ERROR_INVALID_VALUE: return "LH_ERROR_INVALID_VALUE";
    case LH_ERROR_HEADS_MISMATCH: return "LH_ERROR_HEADS_MISMATCH";
    case LH_ERROR_POOLING: return "LH_ERROR_POOLING";
    case LH_ERROR_TOPK: return "LH_ERROR_TOPK";
    case LH_ERROR_SEQ_DIVISIBILITY: return "LH_ERROR_SEQ_DIVISIBILITY";
    case LH_ERROR_TILE_TOO_SMALL: return "LH_ERROR_TILE_TOO_SMALL";
    case LH_ERROR_LEVELS: return "LH_ERROR_LEVELS";
    case LH_ERROR_UNSUPPORTED_DTYPE: return "LH_ERROR_UNSUPPORTED_DTYPE";
    case LH_ERROR_UNSUPPORTED: return "LH_ERROR_UNSUPPORTED";
    case LH_ERROR_BAD_STATE: return "LH_ERROR_BAD_STATE";
    case LH_ERROR_OUT_OF_HOST_MEMORY: return "LH_ERROR_OUT_OF_HOST_MEMORY";
    case LH_ERROR_OUT_OF_DEVICE_MEMORY: return "LH_ERROR_OUT_OF_DEVICE_MEMORY";
    case LH_ERROR_BACKEND_UNAVAILABLE: return "LH_ERROR_BACKEND_UNAVAILABLE";
    case LH_ERROR_BAD_POINTER: return "LH_ERROR_BAD_POINTER";
    case LH_ERROR_COMPILE: return "LH_ERROR_COMPILE";
    case LH_ERROR_DEVICE: return "LH_ERROR_DEVICE";
    case LH_ERROR_CUDNN: return "LH_ERROR_CUDNN";
    case LH_ERROR_COMMUNICATION: return "LH_ERROR_COMMUNICATION";
    case LH_ERROR_IO: return "LH_ERROR_IO";
    case LH_ERROR_INTERNAL: return "LH_ERROR_INTERNAL";
    }
    return "LH_ERROR_UNKNOWN_STATUS";
}

LH_API const char *lh_last_error(void) { return lh_error_message(); }
