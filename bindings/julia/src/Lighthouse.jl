"""
Lighthouse.jl: Julia bindings of liblighthouse (Lighthouse attention and dense causal attention
behind a stable C ABI). The library is loaded from ENV["LIGHTHOUSE_LIB"], else the project's
`library` preference (`set_library_path!`), else "liblighthouse" on the system's library path.

Arrays: Julia is column-major, so a (D, H, N, B) Array is the library's [B, N, H, D].
`attention(plan, q, k, v)` is differentiable once ChainRulesCore is loaded (Zygote, Flux, Lux),
and takes CuArrays once CUDA is loaded (package extensions in ext/).
"""
module Lighthouse

using Libdl
using Preferences

include("capi.jl")
include("errors.jl")
include("ring.jl")
include("handles.jl")
include("run.jl")
include("attention.jl")
include("functional.jl")
include("precompile.jl")

export Context, Plan, PlanInfo, Saved, LighthouseError, info, backend, live_handles, stage_ms
export forward!, backward!, scores!, select!, gather!, scatter!
export unsafe_forward!, unsafe_backward!, unsafe_scores!, unsafe_select!, unsafe_gather!,
       unsafe_scatter!, unsafe_forward_with_scores!, unsafe_scores_qkv!
export set_num_threads!, set_cache_enabled!, set_cache_dir!, set_library_path!
export attention, attention_forward, attention_backward, precompile_kernels, save_device,
       precompile_device
export Ring, AttentionHooks, nccl_unique_id, attention_forward!, attention_backward!,
       unsafe_attention_forward!, unsafe_attention_backward!, attention_shape, lse_shape

__init__() = reset_library!()

"The loaded library's version as a VersionNumber."
version() = VersionNumber(unsafe_string(lh_version_string()))

"Whether the loaded library is the version these bindings were written against."
version_matches() = lh_version_number() == LH_VERSION_NUMBER

end # module
