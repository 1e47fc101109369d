# Forward, backward and the stage entry points.
#
# `unsafe_*!` take raw pointers (device pointers for a CUDA plan, e.g. from CuArrays, plus the
# CUstream); the caller keeps the memory alive (GC.@preserve) and sized as `info(plan)` says.
# The `Array` methods are for CPU plans: lengths are checked, the workspace belongs to the plan,
# and `saved` is a `Saved` that only `forward!` fills.
#
# Memory order: a Julia Array is column-major, so an array of size (D, H, N, B) is, byte for
# byte, the library's C-order [B, N, H, D] (layout :bnhd); (D, N, H, B) is [B, H, N, D] (:bhnd).

"Any pointer-like value (Ptr, CuPtr, CUstream, nothing) as the `void *` the ABI takes."
rawptr(::Nothing) = C_NULL
rawptr(p::Ptr) = Ptr{Cvoid}(p)
function rawptr(p)
    isbitstype(typeof(p)) && sizeof(p) == sizeof(Ptr{Cvoid}) ||
        throw(ArgumentError("expected a pointer, got a $(typeof(p))"))
    return reinterpret(Ptr{Cvoid}, p)
end

"""
    unsafe_forward!(plan, q, k, v, out, saved, workspace; stream = C_NULL)

`lh_forward` on raw pointers. With CUDA.jl:
`GC.@preserve q k v out saved ws unsafe_forward!(plan, pointer(q), pointer(k), pointer(v),
pointer(out), pointer(saved), pointer(ws); stream = CUDA.stream().handle)`.
"""
unsafe_forward!(plan::Plan, q, k, v, out, saved, workspace; stream = C_NULL) =
    check_run(plan, lh_forward(live_handle(plan), rawptr(q), rawptr(k), rawptr(v), rawptr(out), rawptr(saved),
                     rawptr(workspace), rawptr(stream)))

"""
    unsafe_forward_with_scores!(plan, q, k, v, scores_q, scores_k, out, saved, workspace; stream = C_NULL)

`lh_forward_with_scores` on raw pointers, for plans made with `scorer = :external`: the caller's
fp32 scores, scores_q [C, B, H, S_total] and scores_k [C, B, Hkv, S_total] (C = chunks, every
level filled in), rank the pyramid in place of a scorer. They carry no gradient: the backward is
`unsafe_backward!` as for every scorer.
"""
unsafe_forward_with_scores!(plan::Plan, q, k, v, scores_q, scores_k, out, saved, workspace;
                            stream = C_NULL) =
    check_run(plan, lh_forward_with_scores(live_handle(plan), rawptr(q), rawptr(k), rawptr(v),
                                           Ptr{Cfloat}(rawptr(scores_q)),
                                           Ptr{Cfloat}(rawptr(scores_k)), rawptr(out),
                                           rawptr(saved), rawptr(workspace), rawptr(stream)))

"`lh_backward` on raw pointers; `out` may be `C_NULL` in Lighthouse mode."
unsafe_backward!(plan::Plan, q, k, v, out, dout, saved, dq, dk, dv, workspace; stream = C_NULL) =
    check_run(plan, lh_backward(live_handle(plan), rawptr(q), rawptr(k), rawptr(v), rawptr(out), rawptr(dout),
                      rawptr(saved), rawptr(dq), rawptr(dk), rawptr(dv), rawptr(workspace),
                      rawptr(stream)))

"`lh_scores` on raw pointers (fp32 scores [B, H, S_total] and [B, Hkv, S_total])."
unsafe_scores!(plan::Plan, q, k, scores_q, scores_k, workspace; stream = C_NULL) =
    check(lh_scores(live_handle(plan), rawptr(q), rawptr(k), Ptr{Cfloat}(rawptr(scores_q)),
                    Ptr{Cfloat}(rawptr(scores_k)), rawptr(workspace), rawptr(stream)))

"`lh_scores_qkv` on raw pointers: the plan's scorer (`v` is read by `scorer = :dilated`)."
unsafe_scores_qkv!(plan::Plan, q, k, v, scores_q, scores_k, workspace; stream = C_NULL) =
    check(lh_scores_qkv(live_handle(plan), rawptr(q), rawptr(k), rawptr(v),
                        Ptr{Cfloat}(rawptr(scores_q)), Ptr{Cfloat}(rawptr(scores_k)),
                        rawptr(workspace), rawptr(stream)))

"`lh_select` on raw pointers (Int32 indices [B, H, S_sel])."
unsafe_select!(plan::Plan, scores_q, scores_k, indices, workspace; stream = C_NULL) =
    check(lh_select(live_handle(plan), Ptr{Cfloat}(rawptr(scores_q)), Ptr{Cfloat}(rawptr(scores_k)),
                    Ptr{Int32}(rawptr(indices)), rawptr(workspace), rawptr(stream)))

"`lh_gather` on raw pointers (q_sel, k_sel, v_sel [B, H, S_sel, D])."
unsafe_gather!(plan::Plan, q, k, v, indices, q_sel, k_sel, v_sel, workspace; stream = C_NULL) =
    check(lh_gather(live_handle(plan), rawptr(q), rawptr(k), rawptr(v), Ptr{Int32}(rawptr(indices)),
                    rawptr(q_sel), rawptr(k_sel), rawptr(v_sel), rawptr(workspace), rawptr(stream)))

"`lh_scatter` on raw pointers (o_sel [B, H, S_sel, D] to out in the plan's layout)."
unsafe_scatter!(plan::Plan, indices, o_sel, out, workspace; stream = C_NULL) =
    check(lh_scatter(live_handle(plan), Ptr{Int32}(rawptr(indices)), rawptr(o_sel), rawptr(out),
                     rawptr(workspace), rawptr(stream)))

# ---- CPU plans: Arrays ---------------------------------------------------------------------------

"""
What `forward!` keeps for `backward!`: make it with `Saved(plan)` (host memory, for CPU plans) or
`Saved(plan, CuVector{UInt8})` (device memory, with CUDA.jl). `backward!` refuses one that no
successful `forward!` of the same plan wrote, so the library never reads garbage.
"""
mutable struct Saved{A<:AbstractVector{UInt8}}
    data::A               # Julia and CUDA.jl align array data to at least 16 bytes, as the ABI asks
    written_by::UInt64
end
Saved(plan::Plan) = Saved(zeros(UInt8, plan.info.saved_bytes), UInt64(0))
Saved(plan::Plan, ::Type{A}) where {A<:AbstractVector{UInt8}} =
    Saved(A(undef, plan.info.saved_bytes), UInt64(0))

function written_by_plan(saved::Saved, plan::Plan)
    saved.written_by == plan.id || throw(LighthouseError(LH_ERROR_BAD_STATE,
        "saved was not written by a successful forward! of this plan"))
end

# Julia shapes of each tensor for the plan's layout (column-major of the C shape).
# On a ring the tensors are this rank's shard of local_seq_len tokens (seq_len without a ring).
q_shape(i::PlanInfo) = i.layout == :bnhd ? (i.head_dim, i.heads, i.local_seq_len, i.batch) :
                                          (i.head_dim, i.local_seq_len, i.heads, i.batch)
kv_shape(i::PlanInfo) = i.layout == :bnhd ? (i.head_dim, i.kv_heads, i.local_seq_len, i.batch) :
                                           (i.head_dim, i.local_seq_len, i.kv_heads, i.batch)
scores_q_shape(i::PlanInfo) = (i.pyramid_len, i.heads, i.batch)
scores_k_shape(i::PlanInfo) = (i.pyramid_len, i.kv_heads, i.batch)
indices_shape(i::PlanInfo) = (i.subseq_len, i.heads, i.batch)
selected_shape(i::PlanInfo) = (i.head_dim, i.subseq_len, i.heads, i.batch)

# An array must have the plan's element count; a 4-D (or 3-D) one must also have its shape, which
# catches a transposed or wrongly permuted array before it is misread.
function expect(name::String, a::AbstractArray, shape::Tuple)
    if length(a) != prod(shape) || (ndims(a) == length(shape) && size(a) != shape)
        throw(LighthouseError(LH_ERROR_INVALID_VALUE,
              "$name has size $(size(a)) but the plan needs $(prod(shape)) elements, as $shape " *
              "in Julia's column-major order"))
    end
end

function host_plan(plan::Plan)
    i = plan.info
    i.backend == :cpu || throw(LighthouseError(LH_ERROR_UNSUPPORTED,
        "Arrays need a CPU plan, this one runs on :$(i.backend): use the unsafe_* entry points " *
        "with device pointers and a stream"))
    i.dtype == :float32 || throw(LighthouseError(LH_ERROR_UNSUPPORTED_DTYPE,
        "Arrays of Float32 need a :float32 plan, this one is :$(i.dtype)"))
    return i
end

function host_workspace(plan::Plan)
    i = plan.info
    bytes = max(i.fwd_workspace_bytes, i.bwd_workspace_bytes, i.stage_workspace_bytes,
                i.attention_workspace_bytes)
    bytes == 0 && return C_NULL
    length(plan.workspace) < bytes && (plan.workspace = zeros(UInt8, bytes))
    return pointer(plan.workspace)
end

function expect_positions(indices::Array{Int32}, pyramid_len::Int)
    at = findfirst(i -> i < 0 || i >= pyramid_len, indices)
    at === nothing || throw(LighthouseError(LH_ERROR_INVALID_VALUE,
        "indices[$at] = $(indices[at]) is not a pyramid position (0 <= index < S_total = $pyramid_len)"))
end

"""
    forward!(plan, q, k, v, out, saved::Saved; scores = nothing)

out = attention(q, k, v) for a CPU plan. Arrays are Float32 of size (D, H, N, B) for q and out,
(D, Hkv, N, B) for k and v (layout :bnhd), or flat vectors of the same length. A plan made with
`scorer = :external` takes its scores: `scores = (sq, sk)` of size (S_total, H, B, C) and
(S_total, Hkv, B, C), C = `info(plan).chunks` (no gradient flows into them).
"""
function forward!(plan::Plan, q::Array{Float32}, k::Array{Float32}, v::Array{Float32},
                  out::Array{Float32}, saved::Saved{Vector{UInt8}};
                  scores::Union{Nothing,Tuple{Array{Float32},Array{Float32}}} = nothing)
    i = host_plan(plan)
    expect("q", q, q_shape(i)); expect("k", k, kv_shape(i)); expect("v", v, kv_shape(i))
    expect("out", out, q_shape(i))
    length(saved.data) == i.saved_bytes || throw(LighthouseError(LH_ERROR_INVALID_VALUE,
        "saved has $(length(saved.data)) bytes but the plan needs $(i.saved_bytes): use Saved(plan)"))
    if scores !== nothing   # a plan with scorer = :external: every local chunk's pyramid
        expect("scores[1]", scores[1], (scores_q_shape(i)..., i.chunks))
        expect("scores[2]", scores[2], (scores_k_shape(i)..., i.chunks))
    end
    saved.written_by = 0
    GC.@preserve q k v out saved plan scores begin
        if scores === nothing
            unsafe_forward!(plan, pointer(q), pointer(k), pointer(v), pointer(out),
                            pointer(saved.data), host_workspace(plan))
        else
            unsafe_forward_with_scores!(plan, pointer(q), pointer(k), pointer(v),
                                        pointer(scores[1]), pointer(scores[2]), pointer(out),
                                        pointer(saved.data), host_workspace(plan))
        end
    end
    saved.written_by = plan.id
    return out
end

"""
    backward!(plan, q, k, v, out, dout, saved, dq, dk, dv)

Gradients of sum(out .* dout) for a CPU plan; `out` may be `nothing` in Lighthouse mode.
"""
function backward!(plan::Plan, q::Array{Float32}, k::Array{Float32}, v::Array{Float32},
                   out::Union{Array{Float32},Nothing}, dout::Array{Float32},
                   saved::Saved{Vector{UInt8}},
                   dq::Array{Float32}, dk::Array{Float32}, dv::Array{Float32})
    i = host_plan(plan)
    expect("q", q, q_shape(i)); expect("k", k, kv_shape(i)); expect("v", v, kv_shape(i))
    out === nothing || expect("out", out, q_shape(i))
    expect("dout", dout, q_shape(i)); expect("dq", dq, q_shape(i))
    expect("dk", dk, kv_shape(i)); expect("dv", dv, kv_shape(i))
    written_by_plan(saved, plan)
    GC.@preserve q k v out dout saved dq dk dv plan begin
        unsafe_backward!(plan, pointer(q), pointer(k), pointer(v),
                         out === nothing ? C_NULL : pointer(out), pointer(dout), pointer(saved.data),
                         pointer(dq), pointer(dk), pointer(dv), host_workspace(plan))
    end
    return dq, dk, dv
end

"Pyramid norm scores for a CPU plan: scores_q (S_total, H, B), scores_k (S_total, Hkv, B)."
function scores!(plan::Plan, q::Array{Float32}, k::Array{Float32}, scores_q::Array{Float32},
                 scores_k::Array{Float32})
    i = host_plan(plan)
    expect("q", q, q_shape(i)); expect("k", k, kv_shape(i))
    expect("scores_q", scores_q, scores_q_shape(i)); expect("scores_k", scores_k, scores_k_shape(i))
    GC.@preserve q k scores_q scores_k plan begin
        unsafe_scores!(plan, pointer(q), pointer(k), pointer(scores_q), pointer(scores_k),
                       host_workspace(plan))
    end
    return scores_q, scores_k
end

"Selection on given scores for a CPU plan: indices (S_sel, H, B), 0-based pyramid positions."
function select!(plan::Plan, scores_q::Array{Float32}, scores_k::Array{Float32},
                 indices::Array{Int32})
    i = host_plan(plan)
    expect("scores_q", scores_q, scores_q_shape(i)); expect("scores_k", scores_k, scores_k_shape(i))
    expect("indices", indices, indices_shape(i))
    GC.@preserve scores_q scores_k indices plan begin
        unsafe_select!(plan, pointer(scores_q), pointer(scores_k), pointer(indices),
                       host_workspace(plan))
    end
    return indices
end

"Gathers the sub-sequence for a CPU plan: q_sel, k_sel, v_sel of size (D, S_sel, H, B)."
function gather!(plan::Plan, q::Array{Float32}, k::Array{Float32}, v::Array{Float32},
                 indices::Array{Int32}, q_sel::Array{Float32}, k_sel::Array{Float32},
                 v_sel::Array{Float32})
    i = host_plan(plan)
    expect("q", q, q_shape(i)); expect("k", k, kv_shape(i)); expect("v", v, kv_shape(i))
    expect("indices", indices, indices_shape(i)); expect_positions(indices, i.pyramid_len)
    expect("q_sel", q_sel, selected_shape(i)); expect("k_sel", k_sel, selected_shape(i))
    expect("v_sel", v_sel, selected_shape(i))
    GC.@preserve q k v indices q_sel k_sel v_sel plan begin
        unsafe_gather!(plan, pointer(q), pointer(k), pointer(v), pointer(indices), pointer(q_sel),
                       pointer(k_sel), pointer(v_sel), host_workspace(plan))
    end
    return q_sel, k_sel, v_sel
end

"Scatters o_sel (D, S_sel, H, B) back to out (the plan's layout) for a CPU plan."
function scatter!(plan::Plan, indices::Array{Int32}, o_sel::Array{Float32}, out::Array{Float32})
    i = host_plan(plan)
    expect("indices", indices, indices_shape(i)); expect_positions(indices, i.pyramid_len)
    expect("o_sel", o_sel, selected_shape(i)); expect("out", out, q_shape(i))
    GC.@preserve indices o_sel out plan begin
        unsafe_scatter!(plan, pointer(indices), pointer(o_sel), pointer(out), host_workspace(plan))
    end
    return out
end
