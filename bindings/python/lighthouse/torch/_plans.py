"""Contexts and plans for the PyTorch layer: one context per device, one finalized plan per
configuration, device and ring rank, made on first use and kept (lh_plan_finalize compiles
kernels and builds cuDNN graphs: it must not run per call, nor inside CUDA-graph capture)."""
import dataclasses
import math
import threading

import torch

from .. import _capi
from ..context import Context
from ..errors import error
from ..plan import Plan

_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
LAYOUTS = ("bnhd", "bhnd")
MODES = ("lighthouse", "dense")

# Scorers of docs/spec.md section 10 as the ops carry them: "norm", "dilated:<d>" (the dilated
# scorer with its dilation) and "external" (the caller's score tensors). The loaded library
# decides which it has: libraries older than lh_forward_with_scores have the norm scorer only.
SPEC_SCORERS = ("norm", "dilated", "external")


def library_scorers():
    """The scorers the loaded library runs."""
    from .._loader import has
    return SPEC_SCORERS if has("lh_forward_with_scores") else ("norm",)


def scorer_keywords(scorer):
    """The plan keywords of an op's scorer string: "dilated:8" -> scorer="dilated", dilation=8."""
    name, _, dilation = scorer.partition(":")
    return {"scorer": name, "dilation": int(dilation)} if dilation else {"scorer": name}


def check_scorer(scorer):
    scorer = scorer.partition(":")[0]
    if scorer in library_scorers():
        return
    from .. import library_path, version_string
    if scorer in SPEC_SCORERS:
        raise error(_capi.LH_ERROR_UNSUPPORTED,
                    f"scorer {scorer!r} is not available in the loaded liblighthouse {version_string()} "
                    f"({library_path()[0]}), which has {', '.join(map(repr, library_scorers()))}")
    raise ValueError(f"unknown scorer {scorer!r}: docs/spec.md section 10 names "
                     f"{', '.join(map(repr, SPEC_SCORERS))}; the loaded library has "
                     f"{', '.join(map(repr, library_scorers()))}")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a plan depends on besides the device and the ring."""
    batch: int
    seq_len: int        # the whole sequence (the shards' total on a ring)
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    layout: str
    levels: int
    pooling: int
    topk: int
    mode: str
    softmax_scale: float    # NaN: the library's default, 1/sqrt(head_dim)
    recompute: bool
    scorer: str         # "norm", "dilated:<d>" or "external"


def shapes(q, k, v, layout):
    """(B, N, H, Hkv, D) of q, k, v in `layout`; a mismatch the library cannot see (it takes one
    size per dimension) is refused here with a sentence."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must have 4 dimensions ({layout}), got shape {tuple(t.shape)}")
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise TypeError(f"q, k, v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.device != k.device or q.device != v.device:
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.dtype not in _DTYPES:
        raise TypeError(f"dtype {q.dtype} is not one of the library's dtypes "
                        f"(torch.float32 on the CPU, torch.float16 / torch.bfloat16 on CUDA)")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have one shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if layout == "bnhd":
        (b, n, h, d), (bk, nk, hkv, dk) = q.shape, k.shape
        want = f"[B, N, Hkv, D] = [{b}, {n}, Hkv, {d}]"
    else:
        (b, h, n, d), (bk, hkv, nk, dk) = q.shape, k.shape
        want = f"[B, Hkv, N, D] = [{b}, Hkv, {n}, {d}]"
    if (bk, nk, dk) != (b, n, d):
        raise ValueError(f"k has shape {tuple(k.shape)}; with q of shape {tuple(q.shape)} ({layout}) it must be {want}")
    return int(b), int(n), int(h), int(hkv), int(d)


def config(q, k, v, *, mode, levels, pooling, topk, scorer, layout, softmax_scale, recompute, world):
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    check_scorer(scorer)
    b, n, h, hkv, d = shapes(q, k, v, layout)
    return Config(batch=b, seq_len=n * world, heads=h, kv_heads=hkv, head_dim=d, dtype=_DTYPES[q.dtype],
                  layout=layout, levels=int(levels), pooling=int(pooling), topk=int(topk), mode=mode,
                  softmax_scale=math.nan if softmax_scale is None else float(softmax_scale),
                  recompute=bool(recompute), scorer=scorer)


_lock = threading.Lock()
_contexts = {}
_plans = {}


def device_key(device):
    device = torch.device(device)
    if device.type == "cpu":
        return ("cpu", 0)
    if device.type == "cuda":
        return ("cuda", device.index if device.index is not None else torch.cuda.current_device())
    raise ValueError(f"lighthouse runs on CPU and CUDA tensors, not on {device.type} "
                     f"(meta tensors: trace under torch._subclasses.FakeTensorMode on the real device)")


def context(device):
    """The context of `device` (made on first use, kept)."""
    key = device_key(device)
    with _lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = Context(key[0], key[1])
            _contexts[key] = ctx
        return ctx


def plan(cfg, device, ring=None):
    """The finalized plan of `cfg` on `device` (bound to `ring`, a RingRank, if given)."""
    key = (cfg, device_key(device), None if ring is None else ring.id)
    found = _plans.get(key)
    if found is not None:
        return found
    if key[1][0] == "cuda" and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            "lighthouse.torch: no plan exists yet for this configuration, and making one (kernel "
            "compilation, cuDNN graphs) cannot happen during CUDA-graph capture: run the same call "
            "once before capturing (the usual warm-up)")
    if ring is not None and ring.is_local:
        # A rank of a local ring has one live plan at a time (lh_plan_set_ring): a new
        # configuration replaces the rank's cached one, which goes once no call uses it.
        drop_plans(ring.id)
    ctx = context(device) if ring is None else ring.context
    made = Plan(ctx, batch=cfg.batch, seq_len=cfg.seq_len, heads=cfg.heads, kv_heads=cfg.kv_heads,
                head_dim=cfg.head_dim, dtype=cfg.dtype, layout=cfg.layout, levels=cfg.levels,
                pooling=cfg.pooling, topk=cfg.topk, mode=cfg.mode,
                softmax_scale=None if math.isnan(cfg.softmax_scale) else cfg.softmax_scale,
                recompute_subseq=cfg.recompute, **scorer_keywords(cfg.scorer),
                ring=None if ring is None else ring.ring, rank=None if ring is None else ring.rank)
    with _lock:
        return _plans.setdefault(key, made)


def drop_plans(ring_id=None):
    """Forgets cached plans (all, or those of one ring rank); they are destroyed once no call
    uses them any more."""
    with _lock:
        for key in [k for k in _plans if ring_id is None or k[2] == ring_id]:
            del _plans[key]


def clear():
    """Forgets every cached plan and context (frees their device memory once unused)."""
    with _lock:
        _plans.clear()
        _contexts.clear()


def stream_of(device):
    """The CUstream of PyTorch's current stream on `device` (None: the CPU backend's NULL)."""
    if device.type != "cuda":
        return None
    return torch.cuda.current_stream(device).cuda_stream


def buffer(nbytes, device):
    """A workspace from PyTorch's allocator (None when the library needs none)."""
    if nbytes == 0:
        return None
    return torch.empty(nbytes, dtype=torch.uint8, device=device)
