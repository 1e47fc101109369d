# Kernel precompilation (lh_plan_precompile): the GPU kernels of CUDA plans compiled into a
# context's disk cache without a GPU, e.g. from a CPU context on a login node.

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
    lock(ctx.lock) do   # the plan's creation and destruction change the context
        out = Ref{Ptr{lh_plan}}(C_NULL)
        check(lh_plan_create(live_handle(ctx), out))
        try
            for (param, value) in params
                value === nothing || check(lh_plan_set_i64(out[], param, Int64(value)))
            end
            check(lh_plan_precompile(out[], chip, compiled))
        finally
            lh_plan_destroy(out[])
        end
    end
    return Int(compiled[])
end
