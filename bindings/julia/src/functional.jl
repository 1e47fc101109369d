# The functional form, for automatic differentiation: `attention` returns a new array, and the
# pair `attention_forward` / `attention_backward` carries what the backward needs in a `Saved`.
# These methods cover every array type that has `forward!` / `backward!` methods: Arrays here
# (CPU plans), CuArrays in the CUDA extension. The ChainRulesCore extension turns the pair into
# an `rrule` for `attention`, which Zygote, Flux and Lux use.

"""
    attention(plan, q, k, v) -> out

Lighthouse (or dense) causal attention of `q`, `k`, `v` as a new array like `q` (sizes as for
`forward!`). Differentiable with respect to `q`, `k`, `v` under Zygote, Flux and Lux (through
the ChainRulesCore extension). Arrays for CPU plans; CuArrays for CUDA plans once CUDA.jl is
loaded.
"""
attention(plan::Plan, q::AbstractArray, k::AbstractArray, v::AbstractArray) =
    first(attention_forward(plan, q, k, v))

"""
    attention_forward(plan, q, k, v) -> (out, saved)

`attention` that also returns the `Saved` its backward needs (memory of the arrays' kind).
"""
function attention_forward(plan::Plan, q::AbstractArray, k::AbstractArray, v::AbstractArray)
    out = similar(q)
    saved = Saved(plan, saved_storage(q))
    forward!(plan, q, k, v, out, saved)
    return out, saved
end

"""
    attention_backward(plan, q, k, v, out, dout, saved) -> (dq, dk, dv)

The gradients of `sum(out .* dout)` with respect to `q`, `k`, `v`, as new arrays; `saved` is
what `attention_forward` returned for the same `q`, `k`, `v`. `dout` may be any array of `out`'s
size (an AD system's cotangent: a `Fill`, a reshape...): it is made a dense array like `q` first.
"""
function attention_backward(plan::Plan, q::AbstractArray, k::AbstractArray, v::AbstractArray,
                            out::AbstractArray, dout::AbstractArray, saved::Saved)
    dq, dk, dv = similar(q), similar(k), similar(v)
    backward!(plan, q, k, v, out, dense_like(q, dout), saved, dq, dk, dv)
    return dq, dk, dv
end

# The storage of `saved` for arrays like `a`, and a cotangent as a dense array like `a`
# (the CUDA extension adds the CuArray methods).
saved_storage(::Array) = Vector{UInt8}
dense_like(::Array{T}, x::Array{T}) where {T} = x
dense_like(::Array{T}, x::AbstractArray) where {T} = Array{T}(x)
