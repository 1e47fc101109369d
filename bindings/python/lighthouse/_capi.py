"""The C ABI of liblighthouse (ffi/include/lighthouse.h) as ctypes declarations.

One entry of FUNCTIONS per header function, with the header's return and argument types; enums
are c_int aliases carrying the header's names and handles are opaque structures. ctypes has no
const pointers, so constness is not spelled here. tests/bindings/check_bindings.py (ctest) reads
this file (it does not import it) and checks every declaration, constant and callback type
against the header. `bind(cdll)` sets argtypes/restype on a loaded library.
"""
from ctypes import CFUNCTYPE, POINTER, Structure, c_char_p, c_double, c_float, c_int, c_int32, c_int64, c_void_p

# ---- types -------------------------------------------------------------------------------------

lh_status = c_int
lh_backend = c_int
lh_dtype = c_int
lh_layout = c_int
lh_mode = c_int
lh_scorer = c_int
lh_param = c_int
lh_stage = c_int
lh_query = c_int
lh_context_option = c_int


class lh_context(Structure):
    """Opaque: a context handle is only ever a POINTER(lh_context)."""


class lh_plan(Structure):
    """Opaque: a plan handle is only ever a POINTER(lh_plan)."""


class lh_ring(Structure):
    """Opaque: a ring handle is only ever a POINTER(lh_ring)."""


# Callback typedefs (hooks.py makes them from Python callables).
lh_attention_forward_hook = CFUNCTYPE(
    lh_status, c_void_p, POINTER(lh_plan), c_void_p, c_void_p, c_void_p, c_void_p,
    POINTER(c_float), c_void_p)
lh_attention_backward_hook = CFUNCTYPE(
    lh_status, c_void_p, POINTER(lh_plan), c_void_p, c_void_p, c_void_p, c_void_p,
    POINTER(c_float), c_void_p, c_void_p, c_void_p, c_void_p, c_void_p)

# ---- constants ---------------------------------------------------------------------------------

LH_VERSION_MAJOR = 0
LH_VERSION_MINOR = 1
LH_VERSION_PATCH = 0
LH_VERSION_NUMBER = LH_VERSION_MAJOR * 10000 + LH_VERSION_MINOR * 100 + LH_VERSION_PATCH
LH_MAX_LEVELS = 8

LH_OK = 0
LH_ERROR_NULL_POINTER = 1
LH_ERROR_INVALID_VALUE = 2
LH_ERROR_HEADS_MISMATCH = 3
LH_ERROR_POOLING = 4
LH_ERROR_TOPK = 5
LH_ERROR_SEQ_DIVISIBILITY = 6
LH_ERROR_TILE_TOO_SMALL = 7
LH_ERROR_LEVELS = 8
LH_ERROR_UNSUPPORTED_DTYPE = 9
LH_ERROR_UNSUPPORTED = 10
LH_ERROR_BAD_STATE = 11
LH_ERROR_OUT_OF_HOST_MEMORY = 12
LH_ERROR_OUT_OF_DEVICE_MEMORY = 13
LH_ERROR_BACKEND_UNAVAILABLE = 14
LH_ERROR_BAD_POINTER = 15
LH_ERROR_COMPILE = 16
LH_ERROR_DEVICE = 17
LH_ERROR_CUDNN = 18
LH_ERROR_COMMUNICATION = 19
LH_ERROR_IO = 20
LH_ERROR_INTERNAL = 21

LH_BACKEND_AUTO = 0
LH_BACKEND_CPU = 1
LH_BACKEND_CUDA = 2

LH_DTYPE_FLOAT32 = 0
LH_DTYPE_FLOAT16 = 1
LH_DTYPE_BFLOAT16 = 2

LH_LAYOUT_BNHD = 0
LH_LAYOUT_BHND = 1

LH_MODE_LIGHTHOUSE = 0
LH_MODE_DENSE = 1

LH_PARAM_BATCH = 0
LH_PARAM_SEQ_LEN = 1
LH_PARAM_HEADS = 2
LH_PARAM_KV_HEADS = 3
LH_PARAM_HEAD_DIM = 4
LH_PARAM_DTYPE = 5
LH_PARAM_LAYOUT = 6
LH_PARAM_LEVELS = 7
LH_PARAM_POOLING = 8
LH_PARAM_TOPK = 9
LH_PARAM_MODE = 10
LH_PARAM_SOFTMAX_SCALE = 11
LH_PARAM_RECOMPUTE_SUBSEQ = 12
LH_PARAM_STAGE_TIMING = 13
LH_PARAM_SCORER = 14
LH_PARAM_DILATION = 15

LH_SCORER_NORM = 0
LH_SCORER_DILATED = 1
LH_SCORER_EXTERNAL = 2

LH_STAGE_SCORES = 0
LH_STAGE_SELECT = 1
LH_STAGE_GATHER = 2
LH_STAGE_ATTENTION_FORWARD = 3
LH_STAGE_SCATTER = 4
LH_STAGE_REGATHER = 5
LH_STAGE_GATHER_DOUT = 6
LH_STAGE_ATTENTION_BACKWARD = 7
LH_STAGE_POOL_GRAD = 8
LH_STAGE_COUNT = 9

LH_QUERY_SUBSEQ_LEN = 0
LH_QUERY_PYRAMID_LEN = 1
LH_QUERY_SAVED_BYTES = 2
LH_QUERY_FWD_WORKSPACE_BYTES = 3
LH_QUERY_BWD_WORKSPACE_BYTES = 4
LH_QUERY_STAGE_WORKSPACE_BYTES = 5
LH_QUERY_BACKEND = 6
LH_QUERY_LOCAL_SEQ_LEN = 7
LH_QUERY_CHUNKS = 8
LH_QUERY_ATTENTION_WORKSPACE_BYTES = 9
LH_QUERY_WORLD = 10
LH_QUERY_RANK = 11
LH_QUERY_SETUP_KERNELS_US = 12
LH_QUERY_SETUP_CUDNN_HANDLE_US = 13
LH_QUERY_SETUP_CUDNN_GRAPH_US = 14
LH_QUERY_SETUP_CUDNN_HEURISTICS_US = 15
LH_QUERY_SETUP_CUDNN_PLAN_US = 16
LH_QUERY_SETUP_CUDNN_REUSED = 17

LH_CONTEXT_NUM_THREADS = 0
LH_CONTEXT_CACHE_ENABLED = 1
LH_CONTEXT_CACHE_DIR = 2

# ---- functions: (name, return type, argument types) --------------------------------------------

_ctx, _plan, _ring = POINTER(lh_context), POINTER(lh_plan), POINTER(lh_ring)
_f32, _i32 = POINTER(c_float), POINTER(c_int32)

FUNCTIONS = (
    ("lh_version_number", c_int, ()),
    ("lh_version_string", c_char_p, ()),
    ("lh_status_string", c_char_p, (lh_status,)),
    ("lh_last_error", c_char_p, ()),
    ("lh_context_create", lh_status, (lh_backend, c_int, POINTER(POINTER(lh_context)))),
    ("lh_context_destroy", lh_status, (_ctx,)),
    ("lh_context_get_backend", lh_status, (_ctx, POINTER(lh_backend))),
    ("lh_context_set_i64", lh_status, (_ctx, lh_context_option, c_int64)),
    ("lh_context_set_str", lh_status, (_ctx, lh_context_option, c_char_p)),
    ("lh_context_save_device", lh_status, (_ctx, c_char_p)),
    ("lh_plan_create", lh_status, (_ctx, POINTER(POINTER(lh_plan)))),
    ("lh_plan_destroy", lh_status, (_plan,)),
    ("lh_plan_set_i64", lh_status, (_plan, lh_param, c_int64)),
    ("lh_plan_set_f64", lh_status, (_plan, lh_param, c_double)),
    ("lh_plan_get_param_i64", lh_status, (_plan, lh_param, POINTER(c_int64))),
    ("lh_plan_get_param_f64", lh_status, (_plan, lh_param, POINTER(c_double))),
    ("lh_plan_finalize", lh_status, (_plan,)),
    ("lh_plan_get_i64", lh_status, (_plan, lh_query, POINTER(c_int64))),
    ("lh_plan_get_stage_ms", lh_status, (_plan, lh_stage, POINTER(c_double))),
    ("lh_plan_precompile", lh_status, (_plan, c_char_p, POINTER(c_int64))),
    ("lh_plan_precompile_device", lh_status, (_plan, c_char_p, POINTER(c_int64), POINTER(c_int64))),
    ("lh_forward", lh_status,
     (_plan, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p)),
    ("lh_forward_with_scores", lh_status,
     (_plan, c_void_p, c_void_p, c_void_p, _f32, _f32, c_void_p, c_void_p, c_void_p, c_void_p)),
    ("lh_backward", lh_status,
     (_plan, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p,
      c_void_p, c_void_p, c_void_p)),
    ("lh_scores", lh_status, (_plan, c_void_p, c_void_p, _f32, _f32, c_void_p, c_void_p)),
    ("lh_scores_qkv", lh_status,
     (_plan, c_void_p, c_void_p, c_void_p, _f32, _f32, c_void_p, c_void_p)),
    ("lh_select", lh_status, (_plan, _f32, _f32, _i32, c_void_p, c_void_p)),
    ("lh_gather", lh_status,
     (_plan, c_void_p, c_void_p, c_void_p, _i32, c_void_p, c_void_p, c_void_p, c_void_p,
      c_void_p)),
    ("lh_scatter", lh_status, (_plan, _i32, c_void_p, c_void_p, c_void_p, c_void_p)),
    ("lh_attention_forward", lh_status,
     (_plan, c_void_p, c_void_p, c_void_p, c_void_p, _f32, c_void_p, c_void_p)),
    ("lh_attention_backward", lh_status,
     (_plan, c_void_p, c_void_p, c_void_p, c_void_p, _f32, c_void_p, c_void_p, c_void_p,
      c_void_p, c_void_p, c_void_p)),
    ("lh_ring_create_local", lh_status, (c_int, POINTER(POINTER(lh_ring)))),
    ("lh_ring_create_nccl", lh_status, (_ctx, c_void_p, POINTER(POINTER(lh_ring)))),
    ("lh_nccl_get_unique_id", lh_status, (_ctx, c_void_p)),
    ("lh_ring_create_nccl_from_id", lh_status,
     (_ctx, c_void_p, c_int, c_int, POINTER(POINTER(lh_ring)))),
    ("lh_ring_destroy", lh_status, (_ring,)),
    ("lh_plan_set_ring", lh_status, (_plan, _ring, c_int)),
    ("lh_plan_set_attention_hooks", lh_status,
     (_plan, lh_attention_forward_hook, lh_attention_backward_hook, c_void_p)),
)


def bind(cdll):
    """Sets argtypes/restype of every function the library exports; returns the names it lacks
    (a library older than these declarations)."""
    missing = []
    for name, restype, argtypes in FUNCTIONS:
        try:
            fn = getattr(cdll, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = list(argtypes)
    return missing
