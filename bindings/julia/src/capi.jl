# The C ABI of liblighthouse (ffi/include/lighthouse.h), one ccall per function.
#
# Every ccall goes through a function pointer looked up at run time (`libsym`), so the library
# named by ENV["LIGHTHOUSE_LIB"] or the `library` preference when the package is first used is
# the one that runs, with no recompilation (a `(:name, lib)` ccall would bake the library in at
# precompile time). C enums are Cint aliases carrying the header's names, handles are opaque.
# tests/bindings/check_bindings.py (ctest) checks every ccall here against the header.

# ---- types -------------------------------------------------------------------------------------

const lh_status = Cint
const lh_backend = Cint
const lh_dtype = Cint
const lh_layout = Cint
const lh_mode = Cint
const lh_scorer = Cint
const lh_param = Cint
const lh_query = Cint
const lh_stage = Cint
const lh_context_option = Cint
const lh_context = Cvoid
const lh_plan = Cvoid
const lh_ring = Cvoid
# Callback typedefs: C function pointers, made with @cfunction (see hooks.jl).
const lh_attention_forward_hook = Ptr{Cvoid}
const lh_attention_backward_hook = Ptr{Cvoid}

# ---- constants ---------------------------------------------------------------------------------

const LH_VERSION_MAJOR = 0
const LH_VERSION_MINOR = 1
const LH_VERSION_PATCH = 0
const LH_VERSION_NUMBER = LH_VERSION_MAJOR * 10000 + LH_VERSION_MINOR * 100 + LH_VERSION_PATCH
const LH_MAX_LEVELS = 8

const LH_OK = Cint(0)
const LH_ERROR_NULL_POINTER = Cint(1)
const LH_ERROR_INVALID_VALUE = Cint(2)
const LH_ERROR_HEADS_MISMATCH = Cint(3)
const LH_ERROR_POOLING = Cint(4)
const LH_ERROR_TOPK = Cint(5)
const LH_ERROR_SEQ_DIVISIBILITY = Cint(6)
const LH_ERROR_TILE_TOO_SMALL = Cint(7)
const LH_ERROR_LEVELS = Cint(8)
const LH_ERROR_UNSUPPORTED_DTYPE = Cint(9)
const LH_ERROR_UNSUPPORTED = Cint(10)
const LH_ERROR_BAD_STATE = Cint(11)
const LH_ERROR_OUT_OF_HOST_MEMORY = Cint(12)
const LH_ERROR_OUT_OF_DEVICE_MEMORY = Cint(13)
const LH_ERROR_BACKEND_UNAVAILABLE = Cint(14)
const LH_ERROR_BAD_POINTER = Cint(15)
const LH_ERROR_COMPILE = Cint(16)
const LH_ERROR_DEVICE = Cint(17)
const LH_ERROR_CUDNN = Cint(18)
const LH_ERROR_COMMUNICATION = Cint(19)
const LH_ERROR_IO = Cint(20)
const LH_ERROR_INTERNAL = Cint(21)

const LH_BACKEND_AUTO = Cint(0)
const LH_BACKEND_CPU = Cint(1)
const LH_BACKEND_CUDA = Cint(2)

const LH_DTYPE_FLOAT32 = Cint(0)
const LH_DTYPE_FLOAT16 = Cint(1)
const LH_DTYPE_BFLOAT16 = Cint(2)

const LH_LAYOUT_BNHD = Cint(0)
const LH_LAYOUT_BHND = Cint(1)

const LH_MODE_LIGHTHOUSE = Cint(0)
const LH_MODE_DENSE = Cint(1)

const LH_PARAM_BATCH = Cint(0)
const LH_PARAM_SEQ_LEN = Cint(1)
const LH_PARAM_HEADS = Cint(2)
const LH_PARAM_KV_HEADS = Cint(3)
const LH_PARAM_HEAD_DIM = Cint(4)
const LH_PARAM_DTYPE = Cint(5)
const LH_PARAM_LAYOUT = Cint(6)
const LH_PARAM_LEVELS = Cint(7)
const LH_PARAM_POOLING = Cint(8)
const LH_PARAM_TOPK = Cint(9)
const LH_PARAM_MODE = Cint(10)
const LH_PARAM_SOFTMAX_SCALE = Cint(11)
const LH_PARAM_RECOMPUTE_SUBSEQ = Cint(12)
const LH_PARAM_STAGE_TIMING = Cint(13)
const LH_PARAM_SCORER = Cint(14)
const LH_PARAM_DILATION = Cint(15)

const LH_SCORER_NORM = Cint(0)
const LH_SCORER_DILATED = Cint(1)
const LH_SCORER_EXTERNAL = Cint(2)

const LH_STAGE_SCORES = Cint(0)
const LH_STAGE_SELECT = Cint(1)
const LH_STAGE_GATHER = Cint(2)
const LH_STAGE_ATTENTION_FORWARD = Cint(3)
const LH_STAGE_SCATTER = Cint(4)
const LH_STAGE_REGATHER = Cint(5)
const LH_STAGE_GATHER_DOUT = Cint(6)
const LH_STAGE_ATTENTION_BACKWARD = Cint(7)
const LH_STAGE_POOL_GRAD = Cint(8)
const LH_STAGE_COUNT = Cint(9)

const LH_QUERY_SUBSEQ_LEN = Cint(0)
const LH_QUERY_PYRAMID_LEN = Cint(1)
const LH_QUERY_SAVED_BYTES = Cint(2)
const LH_QUERY_FWD_WORKSPACE_BYTES = Cint(3)
const LH_QUERY_BWD_WORKSPACE_BYTES = Cint(4)
const LH_QUERY_STAGE_WORKSPACE_BYTES = Cint(5)
const LH_QUERY_BACKEND = Cint(6)
const LH_QUERY_LOCAL_SEQ_LEN = Cint(7)
const LH_QUERY_CHUNKS = Cint(8)
const LH_QUERY_ATTENTION_WORKSPACE_BYTES = Cint(9)
const LH_QUERY_WORLD = Cint(10)
const LH_QUERY_RANK = Cint(11)
const LH_QUERY_SETUP_KERNELS_US = Cint(12)
const LH_QUERY_SETUP_CUDNN_HANDLE_US = Cint(13)
const LH_QUERY_SETUP_CUDNN_GRAPH_US = Cint(14)
const LH_QUERY_SETUP_CUDNN_HEURISTICS_US = Cint(15)
const LH_QUERY_SETUP_CUDNN_PLAN_US = Cint(16)
const LH_QUERY_SETUP_CUDNN_REUSED = Cint(17)

const LH_CONTEXT_NUM_THREADS = Cint(0)
const LH_CONTEXT_CACHE_ENABLED = Cint(1)
const LH_CONTEXT_CACHE_DIR = Cint(2)

# ---- loading -----------------------------------------------------------------------------------

"""
    library_path()

The library to load (a path or a name): `ENV["LIGHTHOUSE_LIB"]` for this session, else the
project's `library` preference (see `set_library_path!`), else `"liblighthouse"` from the
system's library path.
"""
library_path() = get(ENV, "LIGHTHOUSE_LIB",
                     Preferences.load_preference(@__MODULE__, "library", "liblighthouse"))

"""
    set_library_path!(path)

Stores `path` as the active project's `library` preference (in its LocalPreferences.toml), so
that sessions of this project load that library; `nothing` removes the preference. A session
that has already loaded the library keeps it (its handles belong to it): the new path applies
from the next session on. `ENV["LIGHTHOUSE_LIB"]` still takes precedence.
"""
function set_library_path!(path::Union{AbstractString,Nothing})
    if path === nothing
        Preferences.delete_preferences!(@__MODULE__, "library"; force = true)
    else
        Preferences.set_preferences!(@__MODULE__, "library" => String(path); force = true)
    end
    return library_path()
end

const LIB_LOCK = ReentrantLock()
const LIB_HANDLE = Ref{Ptr{Cvoid}}(C_NULL)
# name => address, published once and never mutated afterwards, so reading it needs no lock
# (finalizers, which must not wait on a lock, call lh_plan_destroy through it).
const SYMBOL_TABLE = Ref{Union{Nothing,Dict{Symbol,Ptr{Cvoid}}}}(nothing)

const FUNCTIONS = (
    :lh_version_number, :lh_version_string, :lh_status_string, :lh_last_error,
    :lh_context_create, :lh_context_destroy, :lh_context_get_backend, :lh_context_set_i64,
    :lh_context_set_str, :lh_context_save_device, :lh_plan_create, :lh_plan_destroy,
    :lh_plan_set_i64, :lh_plan_set_f64, :lh_plan_get_param_i64, :lh_plan_get_param_f64,
    :lh_plan_finalize, :lh_plan_get_i64,
    :lh_plan_get_stage_ms, :lh_plan_precompile, :lh_plan_precompile_device,
    :lh_forward, :lh_forward_with_scores, :lh_backward, :lh_scores, :lh_scores_qkv, :lh_select, :lh_gather, :lh_scatter,
    :lh_attention_forward, :lh_attention_backward, :lh_ring_create_local, :lh_ring_create_nccl,
    :lh_nccl_get_unique_id, :lh_ring_create_nccl_from_id, :lh_ring_destroy, :lh_plan_set_ring,
    :lh_plan_set_attention_hooks,
)

# Opens the library and resolves every function once (first use, any thread).
function load_library!()
    lock(LIB_LOCK) do
        table = SYMBOL_TABLE[]
        table === nothing || return table
        handle = Libdl.dlopen(library_path())
        table = Dict{Symbol,Ptr{Cvoid}}()
        for name in FUNCTIONS
            address = Libdl.dlsym(handle, name; throw_error = false)
            address === nothing || (table[name] = address)
        end
        LIB_HANDLE[] = handle
        SYMBOL_TABLE[] = table
        return table
    end
end

# The address of `name`; a function the loaded library lacks fails here, naming it.
function libsym(name::Symbol)
    table = SYMBOL_TABLE[]
    table === nothing && (table = load_library!())
    address = get(table, name, C_NULL)
    address == C_NULL || return address
    return Libdl.dlsym(LIB_HANDLE[], name)   # throws: the library is older than these bindings
end

# Precompiled images must not carry a handle of the compiling process.
function reset_library!()
    SYMBOL_TABLE[] = nothing
    LIB_HANDLE[] = C_NULL
end

# ---- functions ---------------------------------------------------------------------------------

lh_version_number() = ccall(libsym(:lh_version_number), Cint, ())
lh_version_string() = ccall(libsym(:lh_version_string), Cstring, ())
lh_status_string(status) = ccall(libsym(:lh_status_string), Cstring, (lh_status,), status)
lh_last_error() = ccall(libsym(:lh_last_error), Cstring, ())

lh_context_create(backend, device, out_context) =
    ccall(libsym(:lh_context_create), lh_status, (lh_backend, Cint, Ref{Ptr{lh_context}}),
          backend, device, out_context)
lh_context_destroy(context) =
    ccall(libsym(:lh_context_destroy), lh_status, (Ptr{lh_context},), context)
lh_context_get_backend(context, out_backend) =
    ccall(libsym(:lh_context_get_backend), lh_status, (Ptr{lh_context}, Ref{lh_backend}),
          context, out_backend)
lh_context_set_i64(context, option, value) =
    ccall(libsym(:lh_context_set_i64), lh_status, (Ptr{lh_context}, lh_context_option, Int64),
          context, option, value)
lh_context_set_str(context, option, value) =
    ccall(libsym(:lh_context_set_str), lh_status, (Ptr{lh_context}, lh_context_option, Cstring),
          context, option, value)
lh_context_save_device(context, path) =
    ccall(libsym(:lh_context_save_device), lh_status, (Ptr{lh_context}, Cstring), context, path)

lh_plan_create(context, out_plan) =
    ccall(libsym(:lh_plan_create), lh_status, (Ptr{lh_context}, Ref{Ptr{lh_plan}}), context, out_plan)
lh_plan_destroy(plan) = ccall(libsym(:lh_plan_destroy), lh_status, (Ptr{lh_plan},), plan)
lh_plan_set_i64(plan, param, value) =
    ccall(libsym(:lh_plan_set_i64), lh_status, (Ptr{lh_plan}, lh_param, Int64), plan, param, value)
lh_plan_set_f64(plan, param, value) =
    ccall(libsym(:lh_plan_set_f64), lh_status, (Ptr{lh_plan}, lh_param, Cdouble), plan, param, value)
lh_plan_get_param_i64(plan, param, out_value) =
    ccall(libsym(:lh_plan_get_param_i64), lh_status, (Ptr{lh_plan}, lh_param, Ref{Int64}),
          plan, param, out_value)
lh_plan_get_param_f64(plan, param, out_value) =
    ccall(libsym(:lh_plan_get_param_f64), lh_status, (Ptr{lh_plan}, lh_param, Ref{Cdouble}),
          plan, param, out_value)
lh_plan_finalize(plan) = ccall(libsym(:lh_plan_finalize), lh_status, (Ptr{lh_plan},), plan)
lh_plan_get_i64(plan, query, out_value) =
    ccall(libsym(:lh_plan_get_i64), lh_status, (Ptr{lh_plan}, lh_query, Ref{Int64}),
          plan, query, out_value)
lh_plan_get_stage_ms(plan, stage, out_ms) =
    ccall(libsym(:lh_plan_get_stage_ms), lh_status, (Ptr{lh_plan}, lh_stage, Ref{Cdouble}),
          plan, stage, out_ms)
lh_plan_precompile(plan, chip, out_compiled) =
    ccall(libsym(:lh_plan_precompile), lh_status, (Ptr{lh_plan}, Cstring, Ref{Int64}),
          plan, chip, out_compiled)
lh_plan_precompile_device(plan, device_path, out_kernels, out_cudnn_plans) =
    ccall(libsym(:lh_plan_precompile_device), lh_status,
          (Ptr{lh_plan}, Cstring, Ref{Int64}, Ref{Int64}),
          plan, device_path, out_kernels, out_cudnn_plans)

lh_forward(plan, q, k, v, out, saved, workspace, stream) =
    ccall(libsym(:lh_forward), lh_status,
          (Ptr{lh_plan}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid},
           Ptr{Cvoid}),
          plan, q, k, v, out, saved, workspace, stream)
lh_forward_with_scores(plan, q, k, v, scores_q, scores_k, out, saved, workspace, stream) =
    ccall(libsym(:lh_forward_with_scores), lh_status,
          (Ptr{lh_plan}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cfloat}, Ptr{Cfloat}, Ptr{Cvoid},
           Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}),
          plan, q, k, v, scores_q, scores_k, out, saved, workspace, stream)
lh_backward(plan, q, k, v, out, dout, saved, dq, dk, dv, workspace, stream) =
    ccall(libsym(:lh_backward), lh_status,
          (Ptr{lh_plan}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid},
           Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}),
          plan, q, k, v, out, dout, saved, dq, dk, dv, workspace, stream)

lh_scores(plan, q, k, scores_q, scores_k, workspace, stream) =
    ccall(libsym(:lh_scores), lh_status,
          (Ptr{lh_plan}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cfloat}, Ptr{Cfloat}, Ptr{Cvoid}, Ptr{Cvoid}),
          plan, q, k, scores_q, scores_k, workspace, stream)
lh_scores_qkv(plan, q, k, v, scores_q, scores_k, workspace, stream) =
    ccall(libsym(:lh_scores_qkv), lh_status,
          (Ptr{lh_plan}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cfloat}, Ptr{Cfloat}, Ptr{Cvoid},
           Ptr{Cvoid}),
          plan, q, k, v, scores_q, scores_k, workspace, stream)
lh_select(plan, scores_q, scores_k, indices, workspace, stream) =
    ccall(libsym(:lh_select), lh_status,
          (Ptr{lh_plan}, Ptr{Cfloat}, Ptr{Cfloat}, Ptr{Int32}, Ptr{Cvoid}, Ptr{Cvoid}),
          plan, scores_q, scores_k, indices, workspace, stream)
lh_gather(plan, q, k, v, indices, q_sel, k_sel, v_sel, workspace, stream) =
    ccall(libsym(:lh_gather), lh_status,
          (Ptr{lh_plan}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Int32}, Ptr{Cvoid}, Ptr{Cvoid},
           Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}),
          plan, q, k, v, indices, q_sel, k_sel, v_sel, workspace, stream)
lh_scatter(plan, indices, o_sel, out, workspace, stream) =
    ccall(libsym(:lh_scatter), lh_status,
          (Ptr{lh_plan}, Ptr{Int32}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}),
          plan, indices, o_sel, out, workspace, stream)

lh_attention_forward(plan, q_sel, k_sel, v_sel, o_sel, lse, workspace, stream) =
    ccall(libsym(:lh_attention_forward), lh_status,
          (Ptr{lh_plan}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cfloat}, Ptr{Cvoid},
           Ptr{Cvoid}),
          plan, q_sel, k_sel, v_sel, o_sel, lse, workspace, stream)
lh_attention_backward(plan, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel, dk_sel, dv_sel,
                      workspace, stream) =
    ccall(libsym(:lh_attention_backward), lh_status,
          (Ptr{lh_plan}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cfloat}, Ptr{Cvoid},
           Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}),
          plan, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel, dk_sel, dv_sel, workspace, stream)

lh_ring_create_local(world, out_ring) =
    ccall(libsym(:lh_ring_create_local), lh_status, (Cint, Ref{Ptr{lh_ring}}), world, out_ring)
lh_ring_create_nccl(context, nccl_comm, out_ring) =
    ccall(libsym(:lh_ring_create_nccl), lh_status, (Ptr{lh_context}, Ptr{Cvoid}, Ref{Ptr{lh_ring}}),
          context, nccl_comm, out_ring)
lh_nccl_get_unique_id(context, unique_id) =
    ccall(libsym(:lh_nccl_get_unique_id), lh_status, (Ptr{lh_context}, Ptr{Cvoid}),
          context, unique_id)
lh_ring_create_nccl_from_id(context, unique_id, rank, world, out_ring) =
    ccall(libsym(:lh_ring_create_nccl_from_id), lh_status,
          (Ptr{lh_context}, Ptr{Cvoid}, Cint, Cint, Ref{Ptr{lh_ring}}),
          context, unique_id, rank, world, out_ring)
lh_ring_destroy(ring) = ccall(libsym(:lh_ring_destroy), lh_status, (Ptr{lh_ring},), ring)
lh_plan_set_ring(plan, ring, rank) =
    ccall(libsym(:lh_plan_set_ring), lh_status, (Ptr{lh_plan}, Ptr{lh_ring}, Cint), plan, ring, rank)
lh_plan_set_attention_hooks(plan, forward, backward, user_data) =
    ccall(libsym(:lh_plan_set_attention_hooks), lh_status,
          (Ptr{lh_plan}, lh_attention_forward_hook, lh_attention_backward_hook, Ptr{Cvoid}),
          plan, forward, backward, user_data)
