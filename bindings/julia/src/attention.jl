# Context parallelism and the attention step: Ring constructors, binding a plan to a ring,
# attention hooks (C trampolines made with @cfunction) and lh_attention_forward / _backward.

function Ring(world::Integer)
    out = Ref{Ptr{lh_ring}}(C_NULL)
    check(lh_ring_create_local(Cint(world), out))
    return Ring(out[], world, :local, nothing)
end

function Ring(ctx::Context, nccl_comm)
    out = Ref{Ptr{lh_ring}}(C_NULL)
    check(lh_ring_create_nccl(live_handle(ctx), rawptr(nccl_comm), out))
    return Ring(out[], ring_world(out[]), :nccl, ctx)
end

function Ring(ctx::Context, unique_id::AbstractVector{UInt8}, rank::Integer, world::Integer)
    length(unique_id) == NCCL_UNIQUE_ID_BYTES || throw(LighthouseError(LH_ERROR_INVALID_VALUE,
        "an NCCL unique id has $NCCL_UNIQUE_ID_BYTES bytes (got $(length(unique_id)))"))
    id = Vector{UInt8}(unique_id)
    out = Ref{Ptr{lh_ring}}(C_NULL)
    GC.@preserve id check(lh_ring_create_nccl_from_id(live_handle(ctx), pointer(id), Cint(rank),
                                                      Cint(world), out))
    return Ring(out[], world, :nccl, ctx)
end

# The world of an NCCL ring comes from the communicator; the ABI has no ring query, so a plan
# bound to it reports it (info(plan).world). Until then it is unknown (0).
ring_world(::Ptr{lh_ring}) = 0

const NCCL_UNIQUE_ID_BYTES = 128

"""
    nccl_unique_id(ctx) -> Vector{UInt8}

A new 128-byte NCCL unique id (CUDA contexts): one rank makes it and shares it with the others,
which pass it to `Ring(ctx, id, rank, world)`.
"""
function nccl_unique_id(ctx::Context)
    id = zeros(UInt8, NCCL_UNIQUE_ID_BYTES)
    GC.@preserve id check(lh_nccl_get_unique_id(live_handle(ctx), pointer(id)))
    return id
end

Base.unsafe_convert(::Type{Ptr{lh_ring}}, ring::Ring) = ring.handle
Base.show(io::IO, ring::Ring) = print(io, "Lighthouse.Ring(:", ring.kind, ", world = ", ring.world, ")")
live_rings() = LIVE_RINGS[]

"""
    close(ring::Ring)

Frees the ring now, or as soon as its last plan is freed. Idempotent.
"""
function Base.close(ring::Ring)
    ring.closing[] = true
    release(ring)
end

# Destroys the ring once it is closing and no plan is left; exactly once. An NCCL ring then lets
# go of its context.
function release(ring::Ring)
    if ring.closing[] && ring.live_plans[] == 0 && !Threads.atomic_xchg!(ring.destroyed, true)
        lh_ring_destroy(ring.handle)
        Threads.atomic_sub!(LIVE_RINGS, 1)
        ctx = ring.context
        if ctx !== nothing
            Threads.atomic_sub!(ctx.live_plans, 1)
            release(ctx)
        end
    end
    return nothing
end

function live_handle(ring::Ring)
    ring.closing[] && throw(LighthouseError(LH_ERROR_BAD_STATE, "the ring was closed"))
    return ring.handle
end

# Called by the Plan constructor before finalize, under the context's lock.
function bind_ring!(plan::Plan, ring::Ring, rank::Integer)
    check(lh_plan_set_ring(plan.handle, live_handle(ring), Cint(rank)))
    Threads.atomic_add!(ring.live_plans, 1)
    plan.ring = ring
    return plan
end

function set_hooks!(plan::Plan, hooks::AttentionHooks)
    hooks.plan === nothing || throw(LighthouseError(LH_ERROR_BAD_STATE,
        "these AttentionHooks are already set on another plan: make one per plan"))
    hooks.plan = plan
    plan.hooks = hooks   # roots `hooks` for as long as the C plan may call back with it
    fwd = @cfunction(lh_attention_forward_hook_trampoline, lh_status,
                     (Ptr{Cvoid}, Ptr{lh_plan}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid},
                      Ptr{Cfloat}, Ptr{Cvoid}))
    bwd = @cfunction(lh_attention_backward_hook_trampoline, lh_status,
                     (Ptr{Cvoid}, Ptr{lh_plan}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid},
                      Ptr{Cfloat}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}))
    check(lh_plan_set_attention_hooks(plan.handle, fwd, bwd, pointer_from_objref(hooks)))
    return plan
end

# A hook's result as an lh_status: nothing is LH_OK, an integer is passed on.
hook_status(::Nothing) = LH_OK
hook_status(status::Integer) = Cint(status)
hook_status(other) = error("an attention hook returned $(typeof(other)); return nothing or an lh_status")

# The trampolines: C calls them with the AttentionHooks as user_data. Nothing may be thrown
# through C, so every exception is caught, kept for the Julia caller, and reported as
# LH_ERROR_INTERNAL.
function lh_attention_forward_hook_trampoline(user_data::Ptr{Cvoid}, ::Ptr{lh_plan},
        q_sel::Ptr{Cvoid}, k_sel::Ptr{Cvoid}, v_sel::Ptr{Cvoid}, o_sel::Ptr{Cvoid},
        lse::Ptr{Cfloat}, stream::Ptr{Cvoid})::Cint
    hooks = unsafe_pointer_to_objref(user_data)::AttentionHooks
    try
        return hook_status(hooks.forward(hooks.plan, q_sel, k_sel, v_sel, o_sel, lse, stream))
    catch err
        hooks.error = err
        return LH_ERROR_INTERNAL
    end
end

function lh_attention_backward_hook_trampoline(user_data::Ptr{Cvoid}, ::Ptr{lh_plan},
        q_sel::Ptr{Cvoid}, k_sel::Ptr{Cvoid}, v_sel::Ptr{Cvoid}, o_sel::Ptr{Cvoid},
        lse::Ptr{Cfloat}, do_sel::Ptr{Cvoid}, dq_sel::Ptr{Cvoid}, dk_sel::Ptr{Cvoid},
        dv_sel::Ptr{Cvoid}, stream::Ptr{Cvoid})::Cint
    hooks = unsafe_pointer_to_objref(user_data)::AttentionHooks
    try
        return hook_status(hooks.backward(hooks.plan, q_sel, k_sel, v_sel, o_sel, lse, do_sel,
                                          dq_sel, dk_sel, dv_sel, stream))
    catch err
        hooks.error = err
        return LH_ERROR_INTERNAL
    end
end

# The status of lh_forward / lh_backward: an exception a hook threw is rethrown as it was,
# otherwise any error becomes a LighthouseError.
function check_run(plan::Plan, status::Cint)
    hooks = plan.hooks
    if hooks !== nothing && hooks.error !== nothing
        err = hooks.error
        hooks.error = nothing
        throw(err)
    end
    check(status)
end

# ---- the attention step ------------------------------------------------------------------------

"Julia size of the chunk-major sub-sequence tensors: (D, S_c, H, B, C) == C's [C, B, H, S_c, D]."
attention_shape(i::PlanInfo) = (i.head_dim, i.subseq_len ÷ i.chunks, i.heads, i.batch, i.chunks)
"Julia size of lse: (S_c, H, B, C) == C's [C, B, H, S_c]."
lse_shape(i::PlanInfo) = (i.subseq_len ÷ i.chunks, i.heads, i.batch, i.chunks)

"""
    unsafe_attention_forward!(plan, q_sel, k_sel, v_sel, o_sel, lse, workspace; stream = C_NULL)

`lh_attention_forward` on raw pointers: the library's own attention step (ring attention on a
ring) on chunk-major sub-sequences; workspace of `info(plan).attention_workspace_bytes`.
"""
unsafe_attention_forward!(plan::Plan, q_sel, k_sel, v_sel, o_sel, lse, workspace; stream = C_NULL) =
    check(lh_attention_forward(live_handle(plan), rawptr(q_sel), rawptr(k_sel), rawptr(v_sel),
                               rawptr(o_sel), Ptr{Cfloat}(rawptr(lse)), rawptr(workspace),
                               rawptr(stream)))

"`lh_attention_backward` on raw pointers (dk_sel, dv_sel per query head)."
unsafe_attention_backward!(plan::Plan, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel, dk_sel,
                           dv_sel, workspace; stream = C_NULL) =
    check(lh_attention_backward(live_handle(plan), rawptr(q_sel), rawptr(k_sel), rawptr(v_sel),
                                rawptr(o_sel), Ptr{Cfloat}(rawptr(lse)), rawptr(do_sel),
                                rawptr(dq_sel), rawptr(dk_sel), rawptr(dv_sel), rawptr(workspace),
                                rawptr(stream)))

# A separate host workspace: a hook may run the attention step while lh_forward uses the plan's.
function attention_workspace(plan::Plan)
    bytes = plan.info.attention_workspace_bytes
    bytes == 0 && return UInt8[]
    return zeros(UInt8, bytes)
end

"""
    attention_forward!(plan, q_sel, k_sel, v_sel, o_sel, lse)

The attention step of a CPU plan on Float32 arrays of `attention_shape(info(plan))` (lse:
`lse_shape`). Returns `(o_sel, lse)`.
"""
function attention_forward!(plan::Plan, q_sel::Array{Float32}, k_sel::Array{Float32},
                            v_sel::Array{Float32}, o_sel::Array{Float32}, lse::Array{Float32})
    i = host_plan(plan)
    sel = attention_shape(i)
    expect("q_sel", q_sel, sel); expect("k_sel", k_sel, sel); expect("v_sel", v_sel, sel)
    expect("o_sel", o_sel, sel); expect("lse", lse, lse_shape(i))
    ws = attention_workspace(plan)
    GC.@preserve q_sel k_sel v_sel o_sel lse ws plan begin
        unsafe_attention_forward!(plan, pointer(q_sel), pointer(k_sel), pointer(v_sel),
                                  pointer(o_sel), pointer(lse), isempty(ws) ? C_NULL : pointer(ws))
    end
    return o_sel, lse
end

"""
    attention_backward!(plan, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel, dk_sel, dv_sel)

Gradients of the attention step of a CPU plan. Returns `(dq_sel, dk_sel, dv_sel)`.
"""
function attention_backward!(plan::Plan, q_sel::Array{Float32}, k_sel::Array{Float32},
                             v_sel::Array{Float32}, o_sel::Array{Float32}, lse::Array{Float32},
                             do_sel::Array{Float32}, dq_sel::Array{Float32},
                             dk_sel::Array{Float32}, dv_sel::Array{Float32})
    i = host_plan(plan)
    sel = attention_shape(i)
    for (name, a) in (("q_sel", q_sel), ("k_sel", k_sel), ("v_sel", v_sel), ("o_sel", o_sel),
                      ("do_sel", do_sel), ("dq_sel", dq_sel), ("dk_sel", dk_sel), ("dv_sel", dv_sel))
        expect(name, a, sel)
    end
    expect("lse", lse, lse_shape(i))
    ws = attention_workspace(plan)
    GC.@preserve q_sel k_sel v_sel o_sel lse do_sel dq_sel dk_sel dv_sel ws plan begin
        unsafe_attention_backward!(plan, pointer(q_sel), pointer(k_sel), pointer(v_sel),
                                   pointer(o_sel), pointer(lse), pointer(do_sel), pointer(dq_sel),
                                   pointer(dk_sel), pointer(dv_sel),
                                   isempty(ws) ? C_NULL : pointer(ws))
    end
    return dq_sel, dk_sel, dv_sel
end
