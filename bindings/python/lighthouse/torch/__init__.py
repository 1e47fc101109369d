"""lighthouse.torch: Lighthouse attention as a differentiable PyTorch op.

    from lighthouse.torch import attention
    out = attention(q, k, v)                      # q [B, N, H, D], k/v [B, N, Hkv, D]
    out = attention(q, k, v, mode="dense")        # plain causal attention, same tensors

The op is registered with torch.library (lighthouse::attention_forward / _backward, with fake
implementations and an autograd formula), so it runs in eager mode, under
torch.compile(fullgraph=True) without graph breaks, and inside CUDA-graph capture. It runs on
the tensors' device (CUDA: float16/bfloat16 on torch.cuda.current_stream(); CPU: float32 on the
library's reference backend). Plans are cached per configuration and device.
"""
import os

import torch

from . import _ops  # noqa: F401  (registers the custom ops)
from . import _plans
from .distributed import RingRank, local_ring, nccl_ring, shard_sequence, unshard_sequence

__all__ = ["RingRank", "attention", "clear_cache", "get_plan", "local_ring", "nccl_ring", "selection",
           "shard_sequence", "unshard_sequence"]


def _library_identity(path):
    """The loaded library's file (size, modification time) and version, as a string."""
    from .. import version_string
    if not os.path.exists(path):  # a name the system loader resolved: find the mapped file
        try:
            with open("/proc/self/maps") as maps:
                path = next((line.split()[-1] for line in maps if "liblighthouse" in line), path)
        except OSError:
            pass
    try:
        st = os.stat(path)
        return f"liblighthouse-{version_string()}-{st.st_size}-{st.st_mtime_ns}"
    except OSError:
        return f"liblighthouse-{version_string()}-{path}"


def _tag_compile_caches():
    """Graphs that torch.compile keeps on disk record the size of `saved` that the loaded library
    reported when they were traced. Adding the library's identity to torch.compile's cache key
    keeps a rebuilt or upgraded library from reusing graphs made with another one's sizes."""
    try:
        from .._loader import load
        identity = _library_identity(load().path)
    except Exception:  # no library yet: the first call says why
        return
    tag = torch.compiler.config.cache_key_tag
    if identity not in tag:
        torch.compiler.config.cache_key_tag = f"{tag};{identity}" if tag else identity


_tag_compile_caches()


def _scorer_spec(scorer):
    """The scorer keyword as the ops carry it: (name, scores_q, scores_k). "norm" and "dilated"
    (dilation 4), ("dilated", d), or a pair of fp32 score tensors (scores_q, scores_k) for the
    caller's own scorer (docs/spec.md section 10)."""
    if isinstance(scorer, str):
        return ("dilated:4" if scorer == "dilated" else scorer), None, None
    if isinstance(scorer, tuple) and len(scorer) == 2:
        if scorer[0] == "dilated" and isinstance(scorer[1], int) and not isinstance(scorer[1], bool):
            return f"dilated:{scorer[1]}", None, None
        if isinstance(scorer[0], torch.Tensor) and isinstance(scorer[1], torch.Tensor):
            return "external", scorer[0], scorer[1]
        if isinstance(scorer[0], str):
            return scorer[0], None, None
    raise TypeError(f"scorer must be 'norm', 'dilated', ('dilated', dilation) or a pair of score "
                    f"tensors (scores_q, scores_k); got {type(scorer).__name__}")


def attention(q, k, v, *, mode="lighthouse", levels=3, pooling=4, topk=2048, scorer="norm", layout="bnhd",
              softmax_scale=None, recompute=False, ring=None):
    """Causal attention of q, k, v through liblighthouse; returns `out`, shaped like q.

    q: [B, N, H, D] and k, v: [B, N, Hkv, D] with layout="bnhd" (the default), or
       [B, H, N, D] / [B, Hkv, N, D] with layout="bhnd"; H a multiple of Hkv (grouped-query).
       One dtype and device: float16 / bfloat16 on CUDA, float32 on the CPU. Under
       torch.autocast on CUDA the inputs are cast to the autocast dtype (as for SDPA).
    mode: "lighthouse" (pyramid, top-k selection, attention on the sub-sequence, scatter) or
       "dense" (plain causal attention over all N tokens; levels/pooling/topk are then unused).
    levels, pooling, topk: the pyramid (docs/spec.md); N must be a multiple of
       pooling**(levels-1) * topk/128, and the coarsest level must hold 128 entries per tile.
    scorer: how the pyramid is ranked (docs/spec.md section 10): "norm" (||q||, ||k||, the
       default); "dilated" or ("dilated", d) (norms of causal attention on d strided sequences,
       d = 4 by default; needs Hkv == H); or (scores_q, scores_k), the caller's own fp32 scores
       [B, H, S_total] and [B, Hkv, S_total] ([C, B, ..] on a ring: each rank's two chunks; see
       get_plan(...).info), every pyramid level filled in, e.g. from a learned scorer. Scores
       carry no gradient: none flows back into score tensors.
    softmax_scale: default 1/sqrt(D).
    recompute: keep only the selection and softmax statistics for backward and gather q, k, v
       again there (less memory, one more read of q, k, v; CUDA).
    ring: a RingRank (nccl_ring / local_ring): q, k, v are then this rank's shard
       (shard_sequence) and every rank of the ring makes the same call at once.

    Configuration errors raise a lighthouse.LighthouseError (a ValueError for refused sizes)
    carrying the library's sentence.
    """
    name, scores_q, scores_k = _scorer_spec(scorer)
    if name != "norm":
        _plans.check_scorer(name)
    if q.device.type == "cuda" and torch.is_autocast_enabled("cuda"):
        # like SDPA under autocast: the attention runs in the autocast dtype
        dtype = torch.get_autocast_dtype("cuda")
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    if q.dim() == 4 and not q.is_contiguous():
        q = q.contiguous()
    if k.dim() == 4 and not k.is_contiguous():
        k = k.contiguous()
    if v.dim() == 4 and not v.is_contiguous():
        v = v.contiguous()
    if scores_q is not None:
        scores_q, scores_k = scores_q.detach(), scores_k.detach()
    out, _saved = torch.ops.lighthouse.attention_forward(
        q, k, v, mode, levels, pooling, topk, name, layout,
        None if softmax_scale is None else float(softmax_scale), bool(recompute),
        0 if ring is None else ring.id, scores_q, scores_k)
    return out


def get_plan(q, k, v=None, *, mode="lighthouse", levels=3, pooling=4, topk=2048, scorer="norm", layout="bnhd",
             softmax_scale=None, recompute=False, ring=None):
    """The cached lighthouse.Plan that attention() runs for these tensors and keywords: its sizes
    (plan.info), or its raw entry points for a caller's own pipeline. Hold plan.lock around calls
    if other threads may use the same configuration."""
    cfg = _plans.config(q, k, k if v is None else v, mode=mode, levels=levels, pooling=pooling, topk=topk,
                        scorer=_scorer_spec(scorer)[0], layout=layout, softmax_scale=softmax_scale,
                        recompute=recompute, world=1 if ring is None else ring.world)
    return _plans.plan(cfg, q.device, ring)


def selection(q, k, v=None, *, levels=3, pooling=4, topk=2048, scorer="norm", layout="bnhd"):
    """The sub-sequence Lighthouse attention selects for q, k: int32 [B, H, S_sel], pyramid
    positions (level l entry i is at sum_{j<l} N/pooling**j + i) in sub-sequence order, from the
    library's scores and selection (lh_scores_qkv, lh_select) on the current stream; the dilated
    scorer also reads v, caller scores (scorer=(scores_q, scores_k)) are selected from as they
    are. Not differentiable; for analysis and tests."""
    name, given_q, given_k = _scorer_spec(scorer)
    if name.startswith("dilated") and v is None:
        raise ValueError("the dilated scorer reads v: selection(q, k, v, scorer=...)")
    plan = get_plan(q, k, v, levels=levels, pooling=pooling, topk=topk, scorer=scorer, layout=layout)
    info = plan.info
    q, k = q.contiguous(), k.contiguous()
    v = None if v is None else v.contiguous()
    if given_q is None:
        scores_q = torch.empty(info.scores_q_shape, dtype=torch.float32, device=q.device)
        scores_k = torch.empty(info.scores_k_shape, dtype=torch.float32, device=q.device)
    else:
        scores_q, scores_k = given_q.detach().contiguous(), given_k.detach().contiguous()
    indices = torch.empty(info.indices_shape, dtype=torch.int32, device=q.device)
    workspace = _plans.buffer(info.stage_workspace_bytes, q.device)
    ws = None if workspace is None else workspace.data_ptr()
    stream = _plans.stream_of(q.device)
    with plan.lock:
        if given_q is None:
            plan.scores_qkv_raw(q.data_ptr(), k.data_ptr(), None if v is None else v.data_ptr(),
                                scores_q.data_ptr(), scores_k.data_ptr(), ws, stream)
        plan.select_raw(scores_q.data_ptr(), scores_k.data_ptr(), indices.data_ptr(), ws, stream)
    return indices


def clear_cache():
    """Forgets every cached plan and context (their memory is freed once no call uses them).
    Ring ranks stay open."""
    _plans.clear()
