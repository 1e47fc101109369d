# Contexts and plans: C handles wrapped in mutable structs whose finalizers free them.
#
# Julia finalizes unreachable objects in no particular order, yet lh_context_destroy must come
# after every plan of the context is destroyed. So a context counts its live plans, and whoever
# comes last (the context's close/finalizer, or its last plan's) destroys the context handle.
#
# Finalizers may run on any thread, and lh_plan_create / lh_plan_destroy both update the C
# context's plan count without a lock, so each context serializes them with its own lock.

const BACKENDS = Dict(:auto => LH_BACKEND_AUTO, :cpu => LH_BACKEND_CPU, :cuda => LH_BACKEND_CUDA)
const DTYPES = Dict(:float32 => LH_DTYPE_FLOAT32, :float16 => LH_DTYPE_FLOAT16,
                    :bfloat16 => LH_DTYPE_BFLOAT16)
const LAYOUTS = Dict(:bnhd => LH_LAYOUT_BNHD, :bhnd => LH_LAYOUT_BHND)
const MODES = Dict(:lighthouse => LH_MODE_LIGHTHOUSE, :dense => LH_MODE_DENSE)
const SCORERS = Dict(:norm => LH_SCORER_NORM, :dilated => LH_SCORER_DILATED,
                     :external => LH_SCORER_EXTERNAL)

function lookup(table::Dict{Symbol,Cint}, what::AbstractString, key::Symbol)
    haskey(table, key) && return table[key]
    throw(LighthouseError(LH_ERROR_INVALID_VALUE,
                          "$what must be one of $(sort(collect(keys(table)))) (got :$key)"))
end
symbol_of(table::Dict{Symbol,Cint}, value::Integer) =
    something(findfirst(==(Cint(value)), table), Symbol("unknown_$value"))

# Live handles held by this package (for leak tests): contexts, plans.
const LIVE_CONTEXTS = Threads.Atomic{Int}(0)
const LIVE_PLANS = Threads.Atomic{Int}(0)
"(contexts, plans) created by this package and not yet destroyed."
live_handles() = (LIVE_CONTEXTS[], LIVE_PLANS[])

"""
    Context(backend = :cpu; device = 0)

A device (`:cuda`, ordinal `device`), the CPU (`:cpu`) or whichever is usable (`:auto`).
Freed by `close(ctx)` or by the garbage collector, after its last plan. Not for concurrent use
from several threads; different contexts and plans may run concurrently.
"""
mutable struct Context
    handle::Ptr{lh_context}
    backend::Symbol
    device::Int                     # the CUDA ordinal it was made for
    live_plans::Threads.Atomic{Int}
    closing::Threads.Atomic{Bool}   # close() was called (or the finalizer ran)
    destroyed::Threads.Atomic{Bool} # lh_context_destroy has been called
    lock::ReentrantLock             # held while a plan of it is created or destroyed

    function Context(backend::Symbol = :cpu; device::Integer = 0)
        raw = lookup(BACKENDS, "backend", backend)
        out = Ref{Ptr{lh_context}}(C_NULL)
        check(lh_context_create(raw, Cint(device), out))
        Threads.atomic_add!(LIVE_CONTEXTS, 1)
        ctx = new(out[], :unknown, Int(device), Threads.Atomic{Int}(0),
                  Threads.Atomic{Bool}(false), Threads.Atomic{Bool}(false), ReentrantLock())
        finalizer(close, ctx)
        actual = Ref{lh_backend}(0)
        check(lh_context_get_backend(ctx.handle, actual))
        ctx.backend = symbol_of(BACKENDS, actual[])
        return ctx
    end
end

Base.unsafe_convert(::Type{Ptr{lh_context}}, ctx::Context) = ctx.handle
Base.show(io::IO, ctx::Context) = print(io, "Lighthouse.Context(:", ctx.backend, ")")
backend(ctx::Context) = ctx.backend

function live_handle(ctx::Context)
    ctx.closing[] && throw(LighthouseError(LH_ERROR_BAD_STATE, "the context was closed"))
    return ctx.handle
end

# Destroys the context once it is closing and no plan is left; exactly once.
function release(ctx::Context)
    if ctx.closing[] && ctx.live_plans[] == 0 && !Threads.atomic_xchg!(ctx.destroyed, true)
        lh_context_destroy(ctx.handle)
        Threads.atomic_sub!(LIVE_CONTEXTS, 1)
    end
    return nothing
end

"""
    close(ctx::Context)

Frees the context now, or as soon as its last plan is freed. Idempotent.
"""
function Base.close(ctx::Context)
    ctx.closing[] = true
    release(ctx)
end

set_num_threads!(ctx::Context, n::Integer) =
    check(lh_context_set_i64(live_handle(ctx), LH_CONTEXT_NUM_THREADS, Int64(n)))
set_cache_enabled!(ctx::Context, enabled::Bool) =
    check(lh_context_set_i64(live_handle(ctx), LH_CONTEXT_CACHE_ENABLED, Int64(enabled)))
set_cache_dir!(ctx::Context, dir::AbstractString) =
    check(lh_context_set_str(live_handle(ctx), LH_CONTEXT_CACHE_DIR, dir))

"""
Parameters (after defaults) and buffer sizes of a finalized plan. Tensor sizes in elements.
"""
struct PlanInfo
    batch::Int
    seq_len::Int
    heads::Int
    kv_heads::Int
    head_dim::Int
    dtype::Symbol
    layout::Symbol
    mode::Symbol
    levels::Int
    pooling::Int
    topk::Int
    softmax_scale::Float64
    backend::Symbol
    subseq_len::Int       # S_sel
    pyramid_len::Int      # S_total
    saved_bytes::Int
    fwd_workspace_bytes::Int
    bwd_workspace_bytes::Int
    stage_workspace_bytes::Int
    local_seq_len::Int    # tokens of this rank's q/k/v: seq_len / world (seq_len without a ring)
    chunks::Int           # C: 2 on a ring, else 1
    attention_workspace_bytes::Int
    world::Int            # ranks of the plan's ring (1 without one)
    rank::Int             # this plan's rank (0 without a ring)
end

"""
    Plan(ctx; seq_len, heads, head_dim, batch, kv_heads, dtype, layout, levels, pooling, topk,
         mode, softmax_scale, recompute_subseq, stage_timing, ring, rank, attention_hooks)

One attention configuration, validated and compiled by `lh_plan_finalize`. Keywords left out
keep the library's defaults (batch 1, kv_heads = heads, :bnhd, levels 3, pooling 4, topk 2048,
:lighthouse, 1/sqrt(head_dim)), except `dtype`, which follows the backend: :bfloat16 on a :cuda
context, :float32 on the CPU (the library's own default, fp32, runs on the CPU only). `dtype` is
:float32/:float16/:bfloat16, `layout` :bnhd/:bhnd, `mode` :lighthouse/:dense.
`recompute_subseq = true` makes `saved` smaller: the backward then gathers the sub-sequence's
q/k/v again instead of reusing the forward's (default false). `stage_timing = true` (CUDA plans
without a ring or hooks) records CUDA events around each stage of every call, for `stage_ms`.
`scorer` ranks the pyramid: :norm (default), :dilated (with `dilation`, default 4; needs
kv_heads == heads) or :external (the caller's scores, given to `unsafe_forward_with_scores!`).
Use a plan from one thread at a time.

`ring = r::Ring, rank = i` binds the plan to rank `i` of a context-parallel ring (`seq_len` is then
the whole sequence and the plan's tensors are this rank's shard of `info(plan).local_seq_len`
tokens). `attention_hooks = AttentionHooks(fwd, bwd)` replaces the library's attention step by
Julia functions (see `AttentionHooks`). The plan keeps its ring and hooks alive.
"""
mutable struct Plan
    handle::Ptr{lh_plan}
    context::Context
    info::PlanInfo
    workspace::Vector{UInt8}   # host workspace of the Array entry points (CPU plans)
    id::UInt64
    ring::Union{Nothing,Ring}            # released (ring_release) after the plan is destroyed
    hooks::Union{Nothing,AttentionHooks} # rooted here: the C plan holds a pointer to it

    function Plan(ctx::Context; seq_len::Integer, heads::Integer, head_dim::Integer,
                  batch = nothing, kv_heads = nothing, dtype = nothing, layout = nothing,
                  levels = nothing, pooling = nothing, topk = nothing, mode = nothing,
                  softmax_scale = nothing, recompute_subseq = nothing, stage_timing = nothing,
                  scorer = nothing, dilation = nothing, ring::Union{Nothing,Ring} = nothing, rank::Integer = 0,
                  attention_hooks::Union{Nothing,AttentionHooks} = nothing)
        dtype === nothing && ctx.backend == :cuda && (dtype = :bfloat16)
        local plan   # try blocks open a scope of their own
        lock(ctx.lock)
        try
            out = Ref{Ptr{lh_plan}}(C_NULL)
            check(lh_plan_create(live_handle(ctx), out))
            Threads.atomic_add!(LIVE_PLANS, 1)
            Threads.atomic_add!(ctx.live_plans, 1)
            plan = new(out[], ctx, PLACEHOLDER_INFO, UInt8[], UInt64(0), nothing, nothing)
            finalizer(finalize_plan, plan)
            try
                ring === nothing || bind_ring!(plan, ring, rank)
                attention_hooks === nothing || set_hooks!(plan, attention_hooks)
                configure!(plan, seq_len, heads, head_dim, batch, kv_heads, dtype, layout, levels,
                           pooling, topk, mode, softmax_scale, recompute_subseq;
                           stage_timing = stage_timing, scorer = scorer, dilation = dilation)
            catch
                close(plan)  # free it now rather than at the next GC
                # The hooks may be given to another plan now.
                attention_hooks === nothing || attention_hooks.plan !== plan ||
                    (attention_hooks.plan = nothing)
                rethrow()
            end
        finally
            unlock(ctx.lock)
        end
        plan.id = Threads.atomic_add!(NEXT_PLAN_ID, UInt64(1))
        return plan
    end
end

const NEXT_PLAN_ID = Threads.Atomic{UInt64}(1)
const PLACEHOLDER_INFO = PlanInfo(0, 0, 0, 0, 0, :unknown, :unknown, :unknown, 0, 0, 0, 0.0,
                                  :unknown, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

# Sets the parameters that were given, finalizes, reads the sizes back.
function configure!(plan::Plan, seq_len, heads, head_dim, batch, kv_heads, dtype, layout, levels,
                    pooling, topk, mode, softmax_scale, recompute_subseq = nothing;
                    stage_timing = nothing, scorer = nothing, dilation = nothing)
    ints = Any[(LH_PARAM_SEQ_LEN, seq_len), (LH_PARAM_HEADS, heads), (LH_PARAM_HEAD_DIM, head_dim),
               (LH_PARAM_BATCH, batch), (LH_PARAM_KV_HEADS, kv_heads), (LH_PARAM_LEVELS, levels),
               (LH_PARAM_POOLING, pooling), (LH_PARAM_TOPK, topk)]
    dtype === nothing || push!(ints, (LH_PARAM_DTYPE, lookup(DTYPES, "dtype", dtype)))
    layout === nothing || push!(ints, (LH_PARAM_LAYOUT, lookup(LAYOUTS, "layout", layout)))
    mode === nothing || push!(ints, (LH_PARAM_MODE, lookup(MODES, "mode", mode)))
    recompute_subseq === nothing ||
        push!(ints, (LH_PARAM_RECOMPUTE_SUBSEQ, Bool(recompute_subseq) ? 1 : 0))
    stage_timing === nothing ||
        push!(ints, (LH_PARAM_STAGE_TIMING, Bool(stage_timing) ? 1 : 0))
    scorer === nothing || push!(ints, (LH_PARAM_SCORER, lookup(SCORERS, "scorer", scorer)))
    push!(ints, (LH_PARAM_DILATION, dilation))
    for (param, value) in ints
        value === nothing || check(lh_plan_set_i64(plan.handle, param, Int64(value)))
    end
    softmax_scale === nothing ||
        check(lh_plan_set_f64(plan.handle, LH_PARAM_SOFTMAX_SCALE, Float64(softmax_scale)))
    check(lh_plan_finalize(plan.handle))
    plan.info = read_info(plan.handle)
    return plan
end

Base.unsafe_convert(::Type{Ptr{lh_plan}}, plan::Plan) = plan.handle
info(plan::Plan) = plan.info

const STAGES = Dict(:scores => LH_STAGE_SCORES, :select => LH_STAGE_SELECT,
                    :gather => LH_STAGE_GATHER, :attention_forward => LH_STAGE_ATTENTION_FORWARD,
                    :scatter => LH_STAGE_SCATTER, :regather => LH_STAGE_REGATHER,
                    :gather_dout => LH_STAGE_GATHER_DOUT,
                    :attention_backward => LH_STAGE_ATTENTION_BACKWARD,
                    :pool_grad => LH_STAGE_POOL_GRAD)

"""
    stage_ms(plan, stage::Symbol) -> Float64

GPU milliseconds of `stage` (:scores, :select, :gather, :attention_forward, :scatter, :regather,
:gather_dout, :attention_backward, :pool_grad) in the plan's most recent forward or backward; the
plan needs `stage_timing = true`. Waits until the stage has finished on the GPU.
"""
function stage_ms(plan::Plan, stage::Symbol)
    ms = Ref{Cdouble}(0.0)
    check(lh_plan_get_stage_ms(live_handle(plan), lookup(STAGES, "stage", stage), ms))
    return ms[]
end
Base.show(io::IO, plan::Plan) = print(io, "Lighthouse.Plan(", plan.info.backend == :unknown ? "unfinalized" : plan.info, ")")

"""
    close(plan::Plan)

Frees the plan now (and its context, if that was closed and this was its last plan). Idempotent.
"""
function Base.close(plan::Plan)
    lock(() -> destroy_locked(plan), plan.context.lock)
    release(plan.context)
    plan.ring === nothing || release(plan.ring)
end

# The finalizer: it may not wait for a lock (finalizers must not switch tasks), so when another
# thread holds the context's lock it re-registers itself and runs again at a later collection.
function finalize_plan(plan::Plan)
    ctx = plan.context
    if !trylock(ctx.lock)
        finalizer(finalize_plan, plan)
        return nothing
    end
    try
        destroy_locked(plan)
    finally
        unlock(ctx.lock)
    end
    release(ctx)
    plan.ring === nothing || release(plan.ring)
end

function destroy_locked(plan::Plan)
    handle = plan.handle
    handle == C_NULL && return nothing
    plan.handle = C_NULL
    lh_plan_destroy(handle)
    Threads.atomic_sub!(LIVE_PLANS, 1)
    Threads.atomic_sub!(plan.context.live_plans, 1)
    plan.ring === nothing || Threads.atomic_sub!(plan.ring.live_plans, 1)
    return nothing
end

function live_handle(plan::Plan)
    plan.handle == C_NULL && throw(LighthouseError(LH_ERROR_BAD_STATE, "the plan was closed"))
    return plan.handle
end

function read_info(handle::Ptr{lh_plan})
    value = Ref{Int64}(0)
    param(p) = (check(lh_plan_get_param_i64(handle, p, value)); Int(value[]))
    query(q) = (check(lh_plan_get_i64(handle, q, value)); Int(value[]))
    scale = Ref{Cdouble}(0)
    check(lh_plan_get_param_f64(handle, LH_PARAM_SOFTMAX_SCALE, scale))
    PlanInfo(param(LH_PARAM_BATCH), param(LH_PARAM_SEQ_LEN), param(LH_PARAM_HEADS),
             param(LH_PARAM_KV_HEADS), param(LH_PARAM_HEAD_DIM),
             symbol_of(DTYPES, param(LH_PARAM_DTYPE)), symbol_of(LAYOUTS, param(LH_PARAM_LAYOUT)),
             symbol_of(MODES, param(LH_PARAM_MODE)), param(LH_PARAM_LEVELS),
             param(LH_PARAM_POOLING), param(LH_PARAM_TOPK), scale[],
             symbol_of(BACKENDS, query(LH_QUERY_BACKEND)), query(LH_QUERY_SUBSEQ_LEN),
             query(LH_QUERY_PYRAMID_LEN), query(LH_QUERY_SAVED_BYTES),
             query(LH_QUERY_FWD_WORKSPACE_BYTES), query(LH_QUERY_BWD_WORKSPACE_BYTES),
             query(LH_QUERY_STAGE_WORKSPACE_BYTES), query(LH_QUERY_LOCAL_SEQ_LEN),
             query(LH_QUERY_CHUNKS), query(LH_QUERY_ATTENTION_WORKSPACE_BYTES),
             query(LH_QUERY_WORLD), query(LH_QUERY_RANK))
end
