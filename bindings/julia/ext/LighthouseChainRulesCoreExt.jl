# The reverse rule of Lighthouse.attention, loaded with ChainRulesCore (which Zygote, Flux and
# Lux load): the forward keeps `saved` in the pullback's closure, the pullback runs the
# library's backward. The plan is configuration, not a differentiable input.
module LighthouseChainRulesCoreExt

using ChainRulesCore
using Lighthouse
using Lighthouse: Plan

function ChainRulesCore.rrule(::typeof(Lighthouse.attention), plan::Plan, q::AbstractArray,
                              k::AbstractArray, v::AbstractArray)
    out, saved = Lighthouse.attention_forward(plan, q, k, v)
    function attention_pullback(dout)
        d = unthunk(dout)
        d isa AbstractZero &&
            return (NoTangent(), NoTangent(), ZeroTangent(), ZeroTangent(), ZeroTangent())
        dq, dk, dv = Lighthouse.attention_backward(plan, q, k, v, out, d, saved)
        return (NoTangent(), NoTangent(), dq, dk, dv)
    end
    return out, attention_pullback
end

end # module
