# Rings (context parallelism) and attention hooks: the types. Plans refer to both, so they are
# defined before handles.jl; the functions that take a Plan are in attention.jl.
#
# A ring must outlive the plans bound to it (lh_ring_destroy refuses while one is alive), and an
# NCCL ring must go before its context. As for contexts, a ring counts its live plans and whoever
# comes last (close/finalizer of the ring, or its last plan's) destroys the handle; an NCCL ring
# counts as one more dependant of its context.

"""
    Ring(world)                                  # a ring of `world` ranks inside this process
    Ring(ctx, nccl_comm)                         # over the caller's ncclComm_t (CUDA contexts)
    Ring(ctx, unique_id, rank, world)            # over a communicator made from nccl_unique_id

Ranks of one sequence for context parallelism: bind one plan per rank with
`Plan(ctx; ring = r, rank = i, ...)`. A local ring's ranks must run concurrently, one task on its
own thread per rank (`Threads.@spawn`); the C side locks the ring. Freed by `close(r)` or the
garbage collector, after its last plan.
"""
mutable struct Ring
    handle::Ptr{lh_ring}
    world::Int
    kind::Symbol                        # :local or :nccl
    context::Union{Nothing,Context}     # an NCCL ring's context, kept alive by the ring
    live_plans::Threads.Atomic{Int}
    closing::Threads.Atomic{Bool}
    destroyed::Threads.Atomic{Bool}

    function Ring(handle::Ptr{lh_ring}, world::Integer, kind::Symbol, ctx)
        ring = new(handle, Int(world), kind, ctx, Threads.Atomic{Int}(0),
                   Threads.Atomic{Bool}(false), Threads.Atomic{Bool}(false))
        Threads.atomic_add!(LIVE_RINGS, 1)
        ctx === nothing || Threads.atomic_add!(ctx.live_plans, 1)
        finalizer(close, ring)
        return ring
    end
end

const LIVE_RINGS = Threads.Atomic{Int}(0)

"""
    AttentionHooks(forward, backward)

A framework's own attention step in place of the library's, for `Plan(ctx; attention_hooks = h)`.
`lh_forward` calls `forward(plan, q_sel, k_sel, v_sel, o_sel, lse, stream)` and `lh_backward`
calls `backward(plan, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel, dk_sel, dv_sel, stream)`,
with the `Plan` and raw pointers (`Ptr{Cvoid}`, `lse::Ptr{Float32}`) to the chunk-major
sub-sequence: (D, S_c, H, B, C) in Julia's order, lse (S_c, H, B, C) (see `attention_shape`). A
hook fills its outputs completely and returns `nothing` (LH_OK) or an `lh_status` code, which
forward!/backward! then report. A hook may call `unsafe_attention_forward!` / `_backward!` on the
plan (the library's own step).

Julia exceptions must not cross the C boundary: the trampolines catch whatever a hook throws,
return `LH_ERROR_INTERNAL` to the library, and the `forward!`/`backward!`/`unsafe_*!` call that
ran the hook rethrows the original exception once the library has returned. One
`AttentionHooks` belongs to one plan.
"""
mutable struct AttentionHooks
    forward::Any
    backward::Any
    plan::Any        # the Plan it is set on (nothing until then)
    error::Any       # what a hook threw during the current call, or nothing
    AttentionHooks(forward, backward) = new(forward, backward, nothing, nothing)
end
