# CuArray methods of Lighthouse.jl, loaded with CUDA.jl: forward! and backward! on device arrays,
# their workspaces allocated through CUDA.jl's pool and their work queued on the task's stream
# (CUDA.stream()), and the memory attention_forward / attention_backward use for CuArrays. The
# library checks every pointer (device memory of the plan's device, 16-byte aligned, long
# enough) and that the stream belongs to that device.
module LighthouseCUDAExt

using CUDA
using Lighthouse
using Lighthouse: LighthouseError, Plan, Saved, expect, kv_shape, q_shape, written_by_plan,
                  LH_ERROR_INVALID_VALUE, LH_ERROR_UNSUPPORTED, LH_ERROR_UNSUPPORTED_DTYPE

Lighthouse.saved_storage(::CuArray) = CuVector{UInt8}
Lighthouse.dense_like(::CuArray{T}, x::CuArray{T}) where {T} = x
Lighthouse.dense_like(::CuArray{T}, x::AbstractArray) where {T} = CuArray{T}(x)

# The Julia element type of each plan dtype, by name (BFloat16 comes from BFloat16s.jl or Core).
const ELTYPES = Dict(:float32 => :Float32, :float16 => :Float16, :bfloat16 => :BFloat16)

function device_plan(plan::Plan, ::Type{T}) where {T}
    i = Lighthouse.info(plan)
    i.backend == :cuda || throw(LighthouseError(LH_ERROR_UNSUPPORTED,
        "CuArrays need a :cuda plan, this one runs on :$(i.backend)"))
    nameof(T) == ELTYPES[i.dtype] || throw(LighthouseError(LH_ERROR_UNSUPPORTED_DTYPE,
        "the plan's dtype is :$(i.dtype) but the arrays hold $T"))
    return i
end

# A workspace from CUDA.jl's pool (nothing when none is needed); freed right after the call is
# queued, which is safe: CUDA.jl frees in the order of the task's stream.
workspace(bytes::Integer) = bytes == 0 ? nothing : CuVector{UInt8}(undef, bytes)
pointer_or_null(::Nothing) = C_NULL
pointer_or_null(a::CuArray) = pointer(a)
release(::Nothing) = nothing
release(a::CuArray) = CUDA.unsafe_free!(a)

"""
    forward!(plan, q::CuArray, k, v, out, saved::Saved{<:CuArray})

`forward!` on device arrays of the plan's element type, queued on `CUDA.stream()`; `saved` from
`Saved(plan, CuVector{UInt8})`.
"""
function Lighthouse.forward!(plan::Plan, q::CuArray{T}, k::CuArray{T}, v::CuArray{T},
                             out::CuArray{T}, saved::Saved{<:CuArray}) where {T}
    i = device_plan(plan, T)
    expect("q", q, q_shape(i)); expect("k", k, kv_shape(i)); expect("v", v, kv_shape(i))
    expect("out", out, q_shape(i))
    length(saved.data) >= i.saved_bytes || throw(LighthouseError(LH_ERROR_INVALID_VALUE,
        "saved has $(length(saved.data)) bytes but the plan needs $(i.saved_bytes)"))
    saved.written_by = 0
    ws = workspace(i.fwd_workspace_bytes)
    GC.@preserve q k v out saved ws begin
        Lighthouse.unsafe_forward!(plan, pointer(q), pointer(k), pointer(v), pointer(out),
                                   pointer(saved.data), pointer_or_null(ws);
                                   stream = CUDA.stream().handle)
    end
    release(ws)
    saved.written_by = plan.id
    return out
end

"""
    backward!(plan, q::CuArray, k, v, out, dout, saved::Saved{<:CuArray}, dq, dk, dv)

`backward!` on device arrays, queued on `CUDA.stream()`; `out` may be `nothing` in Lighthouse
mode.
"""
function Lighthouse.backward!(plan::Plan, q::CuArray{T}, k::CuArray{T}, v::CuArray{T},
                              out::Union{CuArray{T},Nothing}, dout::CuArray{T},
                              saved::Saved{<:CuArray}, dq::CuArray{T}, dk::CuArray{T},
                              dv::CuArray{T}) where {T}
    i = device_plan(plan, T)
    expect("q", q, q_shape(i)); expect("k", k, kv_shape(i)); expect("v", v, kv_shape(i))
    out === nothing || expect("out", out, q_shape(i))
    expect("dout", dout, q_shape(i)); expect("dq", dq, q_shape(i))
    expect("dk", dk, kv_shape(i)); expect("dv", dv, kv_shape(i))
    written_by_plan(saved, plan)
    ws = workspace(i.bwd_workspace_bytes)
    GC.@preserve q k v out dout saved dq dk dv ws begin
        Lighthouse.unsafe_backward!(plan, pointer(q), pointer(k), pointer(v),
                                    pointer_or_null(out), pointer(dout), pointer(saved.data),
                                    pointer(dq), pointer(dk), pointer(dv), pointer_or_null(ws);
                                    stream = CUDA.stream().handle)
    end
    release(ws)
    return dq, dk, dv
end

end # module
