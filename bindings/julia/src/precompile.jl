# Kernel precompilation (lh_plan_precompile): the GPU kernels of CUDA plans compiled into a
# context's disk cache without a GPU, e.g. from a CPU context on a login node. For a GPU
# described in a file (lh_context_save_device, lh_plan_precompile_device), cuDNN's attention
# plans are built there too.

# Calls `f` with a temporary plan of `ctx`, its parameters `ints` ((lh_param, value or nothing)
# pairs) and `softmax_scale` set but not finalized, and destroys the plan afterwards. The
# context's lock is held throughout: the plan's creation and destruction change the context.
function with_unfinalized_plan(f, ctx::Context, ints, softmax_scale = nothing)
    lock(ctx.lock) do
        out = Ref{Ptr{lh_plan}}(C_NULL)
        check(lh_plan_create(live_handle(ctx), out))
        try
            for (param, value) in ints
                value === nothing || check(lh_plan_set_i64(out[], param, Int64(value)))
            end
            softmax_scale === nothing ||
                check(lh_plan_set_f64(out[], LH_PARAM_SOFTMAX_SCALE, Float64(softmax_scale)))
            return f(out[])
        finally
            lh_plan_destroy(out[])
        end
    end
end

"""
    precompile_kernels(ctx, chip = "sm_90"; heads, head_dim, kv_heads, dtype = :bfloat16,
                       levels, pooling, mode) -> Int

Compiles the kernels that CUDA plans with these parameters load on `chip` ("sm_90" for
H100/H200, "sm_100a" for B200) into `ctx`'s on-disk kernel cache (`set_cache_dir!`), so that
building such a plan on that GPU later reads them instead of compiling. Needs no GPU: `ctx` may
be a CPU context. Returns how many kernels were compiled now (the others were cached already).
Keywords left out keep the library's defaults; `dtype` is :bfloat16 (the CUDA default) or
:float16.
"""
function precompile_kernels(ctx::Context, chip::AbstractString = "sm_90"; heads::Integer,
                            head_dim::Integer, kv_heads = nothing, dtype::Symbol = :bfloat16,
                            levels = nothing, pooling = nothing, mode = nothing)
    params = ((LH_PARAM_HEADS, heads), (LH_PARAM_HEAD_DIM, head_dim),
              (LH_PARAM_KV_HEADS, kv_heads), (LH_PARAM_LEVELS, levels),
              (LH_PARAM_POOLING, pooling), (LH_PARAM_DTYPE, lookup(DTYPES, "dtype", dtype)),
              (LH_PARAM_MODE, mode === nothing ? nothing : lookup(MODES, "mode", mode)))
    compiled = Ref{Int64}(0)
    with_unfinalized_plan(ctx, params) do plan
        check(lh_plan_precompile(plan, chip, compiled))
    end
    return Int(compiled[])
end

"""
    save_device(ctx, path)

Writes a description of `ctx`'s GPU to `path` (a few kB of text: its name, compute capability
and cuDNN's device properties), for `precompile_device` on a machine without that GPU. Needs a
:cuda context (a LighthouseError with status LH_ERROR_UNSUPPORTED otherwise) and cuDNN 9.11 or
later.
"""
function save_device(ctx::Context, path::AbstractString)
    check(lh_context_save_device(live_handle(ctx), path))
    return nothing
end

"""
    precompile_device(ctx, device_path; seq_len, heads, head_dim, batch, kv_heads,
                      dtype = :bfloat16, layout, levels, pooling, topk, mode, softmax_scale,
                      recompute_subseq, scorer, dilation) -> (kernels = Int, cudnn_plans = Int)
    precompile_device(plan::Plan, device_path) -> (kernels = Int, cudnn_plans = Int)

`precompile_kernels` for the GPU described at `device_path` (written on that GPU by
`save_device`), and with it cuDNN's attention plans, which building such a plan there would
otherwise compile (seconds per sequence length). Needs no GPU: `ctx` may be a CPU context; the
cuDNN plans go into its cache directory beside the kernels. Unlike `precompile_kernels` it needs
every parameter a `Plan` needs (the attention plans depend on seq_len, batch, topk, layout...),
checked as `Plan` checks them. The second form does the same for a built plan. Returns how many
kernels and cuDNN plans were built now (the others were cached already).
"""
function precompile_device(ctx::Context, device_path::AbstractString; seq_len::Integer,
                           heads::Integer, head_dim::Integer, batch = nothing, kv_heads = nothing,
                           dtype::Symbol = :bfloat16, layout = nothing, levels = nothing,
                           pooling = nothing, topk = nothing, mode = nothing,
                           softmax_scale = nothing, recompute_subseq = nothing, scorer = nothing,
                           dilation = nothing)
    params = ((LH_PARAM_SEQ_LEN, seq_len), (LH_PARAM_HEADS, heads),
              (LH_PARAM_HEAD_DIM, head_dim), (LH_PARAM_BATCH, batch),
              (LH_PARAM_KV_HEADS, kv_heads), (LH_PARAM_LEVELS, levels),
              (LH_PARAM_POOLING, pooling), (LH_PARAM_TOPK, topk),
              (LH_PARAM_DTYPE, lookup(DTYPES, "dtype", dtype)),
              (LH_PARAM_LAYOUT, layout === nothing ? nothing : lookup(LAYOUTS, "layout", layout)),
              (LH_PARAM_MODE, mode === nothing ? nothing : lookup(MODES, "mode", mode)),
              (LH_PARAM_RECOMPUTE_SUBSEQ,
               recompute_subseq === nothing ? nothing : (Bool(recompute_subseq) ? 1 : 0)),
              (LH_PARAM_SCORER, scorer === nothing ? nothing : lookup(SCORERS, "scorer", scorer)),
              (LH_PARAM_DILATION, dilation))
    return with_unfinalized_plan(ctx, params, softmax_scale) do plan
        precompile_device_handle(plan, device_path)
    end
end

precompile_device(plan::Plan, device_path::AbstractString) =
    precompile_device_handle(live_handle(plan), device_path)

function precompile_device_handle(handle::Ptr{lh_plan}, device_path::AbstractString)
    kernels = Ref{Int64}(0)
    cudnn_plans = Ref{Int64}(0)
    check(lh_plan_precompile_device(handle, device_path, kernels, cudnn_plans))
    return (kernels = Int(kernels[]), cudnn_plans = Int(cudnn_plans[]))
end
