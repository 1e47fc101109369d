"""The custom ops: lighthouse::attention_forward (q, k, v [, the caller's scores] -> out, saved) and
lighthouse::attention_backward (-> dq, dk, dv), with fake (meta) implementations and the
autograd formula that joins them.

Both run the library on the tensors' device and PyTorch's current stream; `saved` and the
workspaces are tensors from PyTorch's allocator made inside the op, so the ops allocate nothing
else, never synchronise the host, and can be captured in a CUDA graph (once the plan exists).
The forward returns `saved` as a second output (uint8, what the backward reads); autograd keeps
it. The fake implementations ask the same cached plan for its size, so tracing under
torch.compile also makes the plan, before any capture.
"""
from typing import Optional, Tuple

import torch

from . import _plans
from .distributed import ring_by_id

Tensor = torch.Tensor


def _config(q, k, v, mode, levels, pooling, topk, scorer, layout, softmax_scale, recompute, ring):
    rank = ring_by_id(ring)
    cfg = _plans.config(q, k, v, mode=mode, levels=levels, pooling=pooling, topk=topk, scorer=scorer,
                        layout=layout, softmax_scale=softmax_scale, recompute=recompute,
                        world=1 if rank is None else rank.world)
    if rank is not None and torch.device(rank.device) != q.device:
        raise ValueError(f"the ring rank is on {rank.device}, the tensors on {q.device}")
    return cfg, _plans.plan(cfg, q.device, rank)


def _contiguous(*tensors):
    return [t if t is None or t.is_contiguous() else t.contiguous() for t in tensors]


def _check_scores(plan, q, scorer, scores_q, scores_k):
    """The caller's scores: given exactly when the scorer is "external", fp32 on q's device, of
    the plan's [C, B, H(kv), S_total] (C = 1 may be left out)."""
    if scorer != "external":
        if scores_q is not None or scores_k is not None:
            raise ValueError(f"score tensors are taken by scorer='external' only (scorer is {scorer!r})")
        return None, None
    if scores_q is None or scores_k is None:
        raise ValueError("scorer='external' needs both score tensors (scores_q, scores_k)")
    info = plan.info
    out = []
    for name, t, shape in (("scores_q", scores_q, info.forward_scores_q_shape),
                           ("scores_k", scores_k, info.forward_scores_k_shape)):
        if t.dim() == 3 and info.chunks == 1:
            t = t.unsqueeze(0)
        if tuple(t.shape) != shape or t.dtype != torch.float32 or t.device != q.device:
            raise ValueError(f"{name} must be float32 {list(shape[1:]) if info.chunks == 1 else list(shape)} "
                             f"([C, B, heads, S_total] on a ring) on {q.device}, got {list(t.shape)} "
                             f"{t.dtype} on {t.device}")
        out.append(t)
    return out


@torch.library.custom_op("lighthouse::attention_forward", mutates_args=())
def attention_forward(q: Tensor, k: Tensor, v: Tensor, mode: str, levels: int, pooling: int, topk: int,
                      scorer: str, layout: str, softmax_scale: Optional[float], recompute: bool, ring: int,
                      scores_q: Optional[Tensor] = None,
                      scores_k: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    q, k, v = _contiguous(q, k, v)
    _, plan = _config(q, k, v, mode, levels, pooling, topk, scorer, layout, softmax_scale, recompute, ring)
    scores_q, scores_k = _contiguous(*_check_scores(plan, q, scorer, scores_q, scores_k))
    info = plan.info
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    saved = torch.empty(info.saved_bytes, dtype=torch.uint8, device=q.device)
    workspace = _plans.buffer(info.fwd_workspace_bytes, q.device)
    ws, stream = None if workspace is None else workspace.data_ptr(), _plans.stream_of(q.device)
    with plan.lock:
        if scores_q is None:
            plan.forward_raw(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), saved.data_ptr(), ws, stream)
        else:
            plan.forward_with_scores_raw(q.data_ptr(), k.data_ptr(), v.data_ptr(), scores_q.data_ptr(),
                                         scores_k.data_ptr(), out.data_ptr(), saved.data_ptr(), ws, stream)
    return out, saved


@attention_forward.register_fake
def _(q, k, v, mode, levels, pooling, topk, scorer, layout, softmax_scale, recompute, ring, scores_q=None,
      scores_k=None):
    _, plan = _config(q, k, v, mode, levels, pooling, topk, scorer, layout, softmax_scale, recompute, ring)
    _check_scores(plan, q, scorer, scores_q, scores_k)
    return q.new_empty(q.shape), q.new_empty(plan.info.saved_bytes, dtype=torch.uint8)


@torch.library.custom_op("lighthouse::attention_backward", mutates_args=())
def attention_backward(q: Tensor, k: Tensor, v: Tensor, out: Optional[Tensor], dout: Tensor, saved: Tensor,
                       mode: str, levels: int, pooling: int, topk: int, scorer: str, layout: str,
                       softmax_scale: Optional[float], recompute: bool, ring: int) -> Tuple[Tensor, Tensor, Tensor]:
    q, k, v, out, dout = _contiguous(q, k, v, out, dout)
    _, plan = _config(q, k, v, mode, levels, pooling, topk, scorer, layout, softmax_scale, recompute, ring)
    info = plan.info
    if dout.shape != q.shape or dout.dtype != q.dtype or dout.device != q.device:
        raise ValueError(f"dout must be like q {tuple(q.shape)} {q.dtype} on {q.device}, got "
                         f"{tuple(dout.shape)} {dout.dtype} on {dout.device}")
    if saved.dtype != torch.uint8 or saved.numel() != info.saved_bytes or saved.device != q.device:
        raise ValueError(f"saved must be the forward's uint8 tensor of {info.saved_bytes} bytes on {q.device}")
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    workspace = _plans.buffer(info.bwd_workspace_bytes, q.device)
    with plan.lock:
        plan.backward_raw(q.data_ptr(), k.data_ptr(), v.data_ptr(), None if out is None else out.data_ptr(),
                          dout.data_ptr(), saved.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
                          None if workspace is None else workspace.data_ptr(), _plans.stream_of(q.device))
    return dq, dk, dv


@attention_backward.register_fake
def _(q, k, v, out, dout, saved, mode, levels, pooling, topk, scorer, layout, softmax_scale, recompute, ring):
    _config(q, k, v, mode, levels, pooling, topk, scorer, layout, softmax_scale, recompute, ring)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, mode, *rest = inputs
    rest = rest[:-2]  # the caller's scores (external scorer) are not needed again
    out, saved = output
    ctx.config = (mode, *rest)
    # Lighthouse mode's backward reads only `saved`; dense mode reads the output too.
    ctx.save_for_backward(q, k, v, out if mode == "dense" else None, saved)


def _backward(ctx, dout, _dsaved):
    q, k, v, out, saved = ctx.saved_tensors
    dq, dk, dv = torch.ops.lighthouse.attention_backward(q, k, v, out, dout, saved, *ctx.config)
    # Scores carry no gradient (docs/spec.md section 10): none flows into the caller's.
    return (dq, dk, dv) + (None,) * (len(ctx.config) + 2)


attention_forward.register_autograd(_backward, setup_context=_setup_context)
