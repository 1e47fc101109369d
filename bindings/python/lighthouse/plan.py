"""Plan: one attention configuration, validated and compiled once, then run many times.

Parameters are keyword arguments; those left out keep the library's defaults (lighthouse.h,
lh_param). Every configuration error is raised by the constructor (lh_plan_finalize), with the
library's sentence. The *_raw methods take addresses (ints: device pointers on CUDA, host
pointers on the CPU) and a stream (a CUstream as an int, or None); the numpy methods of
_host.HostMethods take arrays (CPU backend).
"""
import ctypes
import dataclasses
import enum
import os
import threading

from . import _capi
from ._handle import Handle, null
from ._host import HostMethods
from ._loader import function
from .context import Backend, Context, _enum
from .errors import check


class Dtype(enum.IntEnum):
    FLOAT32 = _capi.LH_DTYPE_FLOAT32
    FLOAT16 = _capi.LH_DTYPE_FLOAT16
    BFLOAT16 = _capi.LH_DTYPE_BFLOAT16


class Layout(enum.IntEnum):
    BNHD = _capi.LH_LAYOUT_BNHD  # [batch, seq, heads, head_dim]
    BHND = _capi.LH_LAYOUT_BHND  # [batch, heads, seq, head_dim]


class Mode(enum.IntEnum):
    LIGHTHOUSE = _capi.LH_MODE_LIGHTHOUSE
    DENSE = _capi.LH_MODE_DENSE


class Scorer(enum.IntEnum):
    """Where the scores that rank the pyramid come from (docs/spec.md section 10)."""
    NORM = _capi.LH_SCORER_NORM          # ||q[t]||, ||k[t]||: the default
    DILATED = _capi.LH_SCORER_DILATED    # norms of attention on `dilation` strided sequences
    EXTERNAL = _capi.LH_SCORER_EXTERNAL  # the caller's scores, given to forward_with_scores


class Stage(enum.IntEnum):
    SCORES = _capi.LH_STAGE_SCORES
    SELECT = _capi.LH_STAGE_SELECT
    GATHER = _capi.LH_STAGE_GATHER
    ATTENTION_FORWARD = _capi.LH_STAGE_ATTENTION_FORWARD
    SCATTER = _capi.LH_STAGE_SCATTER
    REGATHER = _capi.LH_STAGE_REGATHER
    GATHER_DOUT = _capi.LH_STAGE_GATHER_DOUT
    ATTENTION_BACKWARD = _capi.LH_STAGE_ATTENTION_BACKWARD
    POOL_GRAD = _capi.LH_STAGE_POOL_GRAD


# keyword -> (lh_param, how the value is turned into the int64 the library takes)
_INT_PARAMS = {
    "batch": (_capi.LH_PARAM_BATCH, int),
    "seq_len": (_capi.LH_PARAM_SEQ_LEN, int),
    "heads": (_capi.LH_PARAM_HEADS, int),
    "kv_heads": (_capi.LH_PARAM_KV_HEADS, int),
    "head_dim": (_capi.LH_PARAM_HEAD_DIM, int),
    "dtype": (_capi.LH_PARAM_DTYPE, lambda v: int(_enum(Dtype, v, "dtype"))),
    "layout": (_capi.LH_PARAM_LAYOUT, lambda v: int(_enum(Layout, v, "layout"))),
    "levels": (_capi.LH_PARAM_LEVELS, int),
    "pooling": (_capi.LH_PARAM_POOLING, int),
    "topk": (_capi.LH_PARAM_TOPK, int),
    "mode": (_capi.LH_PARAM_MODE, lambda v: int(_enum(Mode, v, "mode"))),
    "recompute_subseq": (_capi.LH_PARAM_RECOMPUTE_SUBSEQ, lambda v: int(bool(v))),
    "stage_timing": (_capi.LH_PARAM_STAGE_TIMING, lambda v: int(bool(v))),
    "scorer": (_capi.LH_PARAM_SCORER, lambda v: int(_enum(Scorer, v, "scorer"))),
    "dilation": (_capi.LH_PARAM_DILATION, int),
}
_PARAM_NAMES = {param: name for name, (param, _) in _INT_PARAMS.items()}


@dataclasses.dataclass(frozen=True)
class PlanInfo:
    """The configuration and sizes of a finalized plan (lh_plan_get_param_* / lh_plan_get_i64)."""
    batch: int
    seq_len: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: Dtype
    layout: Layout
    levels: int
    pooling: int
    topk: int
    mode: Mode
    softmax_scale: float
    recompute_subseq: bool
    scorer: Scorer
    dilation: int            # the dilated scorer's d (the library's default where unused)
    backend: Backend
    subseq_len: int          # S_sel (N in dense mode)
    pyramid_len: int         # S_total (N in dense mode)
    saved_bytes: int
    fwd_workspace_bytes: int
    bwd_workspace_bytes: int
    stage_workspace_bytes: int
    attention_workspace_bytes: int
    local_seq_len: int       # tokens of this rank's q/k/v (seq_len without a ring)
    chunks: int              # C: 2 on a ring, else 1
    world: int
    rank: int

    def _tokens(self, heads):
        b, n, d = self.batch, self.local_seq_len, self.head_dim
        return (b, n, heads, d) if self.layout == Layout.BNHD else (b, heads, n, d)

    @property
    def q_shape(self):
        """q, out, dout, dq in the plan's layout (this rank's shard on a ring)."""
        return self._tokens(self.heads)

    @property
    def kv_shape(self):
        """k, v, dk, dv."""
        return self._tokens(self.kv_heads)

    @property
    def scores_q_shape(self):
        return (self.batch, self.heads, self.pyramid_len)

    @property
    def scores_k_shape(self):
        return (self.batch, self.kv_heads, self.pyramid_len)

    @property
    def forward_scores_q_shape(self):
        """The scores an EXTERNAL plan's forward takes: [C, B, H, S_total], every local chunk."""
        return (self.chunks,) + self.scores_q_shape

    @property
    def forward_scores_k_shape(self):
        return (self.chunks,) + self.scores_k_shape

    @property
    def indices_shape(self):
        return (self.batch, self.heads, self.subseq_len)

    @property
    def selected_shape(self):
        """q_sel/k_sel/v_sel/o_sel of the stage entry points: [B, H, S_sel, D]."""
        return (self.batch, self.heads, self.subseq_len, self.head_dim)

    @property
    def attention_shape(self):
        """The attention step's chunk-major tensors: [C, B, H, S_c, D]."""
        return (self.chunks, self.batch, self.heads, self.subseq_len // self.chunks, self.head_dim)

    @property
    def lse_shape(self):
        """The attention step's log-sum-exp: [C, B, H, S_c] fp32."""
        return self.attention_shape[:4]


def _addr(x):
    """An address argument: None (NULL) or an int."""
    return None if x is None else ctypes.c_void_p(int(x))


_F32 = ctypes.POINTER(ctypes.c_float)
_I32 = ctypes.POINTER(ctypes.c_int32)


def _typed(x, pointer_type):
    """A typed pointer argument (float *, int32_t *) from None or an address."""
    return pointer_type() if x is None else ctypes.cast(ctypes.c_void_p(int(x)), pointer_type)


class Plan(HostMethods, Handle):
    """lh_plan. Keywords: batch, seq_len, heads, kv_heads, head_dim, dtype ("float32",
    "float16", "bfloat16"), layout ("bnhd", "bhnd"), levels, pooling, topk, mode ("lighthouse",
    "dense"), softmax_scale, recompute_subseq, stage_timing, scorer ("norm", "dilated",
    "external") and dilation (the dilated scorer's d, default 4); ring and rank (context
    parallelism, see Ring); attention_hooks (an AttentionHooks). Left out = the library's default.

    A plan is used by one thread at a time (lighthouse.h); `lock` is a threading.Lock that
    callers sharing a plan between threads hold around its calls."""

    _kind = "Plan"

    def __init__(self, context, *, ring=None, rank=None, attention_hooks=None, softmax_scale=None, **params):
        self._handle = _configured(context, params, softmax_scale)
        self._destroy = function("lh_plan_destroy")
        self.context = context       # kept alive by the plan (destroyed after it)
        self.ring = ring             # likewise
        self._hooks = attention_hooks
        self.lock = threading.Lock()
        self._host_workspace = None
        handle = self._handle
        try:
            if ring is not None:
                if rank is None:
                    rank = ring.rank
                if rank is None:
                    raise ValueError("a plan on a local ring needs rank=")
                check(function("lh_plan_set_ring")(handle, ring.handle, int(rank)))
            elif rank is not None:
                raise ValueError("rank= needs ring=")
            if attention_hooks is not None:
                attention_hooks._attach(self)
            check(function("lh_plan_finalize")(handle))
        except BaseException:
            self._destroy(self._release())
            if attention_hooks is not None:
                attention_hooks._detach(self)
            raise
        self.info = self._read_info()

    # ---- reading back ----

    def param(self, name):
        """A parameter's value as the library holds it (defaults applied), by keyword name."""
        if name == "softmax_scale":
            out = ctypes.c_double()
            check(function("lh_plan_get_param_f64")(self.handle, _capi.LH_PARAM_SOFTMAX_SCALE, ctypes.byref(out)))
            return out.value
        if name not in _INT_PARAMS:
            raise KeyError(f"unknown plan parameter {name!r}")
        out = ctypes.c_int64()
        check(function("lh_plan_get_param_i64")(self.handle, _INT_PARAMS[name][0], ctypes.byref(out)))
        return out.value

    def query(self, query):
        """lh_plan_get_i64 of an LH_QUERY_* value."""
        out = ctypes.c_int64()
        check(function("lh_plan_get_i64")(self.handle, int(query), ctypes.byref(out)))
        return out.value

    def _read_info(self):
        q = self.query
        return PlanInfo(
            batch=self.param("batch"), seq_len=self.param("seq_len"), heads=self.param("heads"),
            kv_heads=self.param("kv_heads"), head_dim=self.param("head_dim"),
            dtype=Dtype(self.param("dtype")), layout=Layout(self.param("layout")),
            levels=self.param("levels"), pooling=self.param("pooling"), topk=self.param("topk"),
            mode=Mode(self.param("mode")), softmax_scale=self.param("softmax_scale"),
            recompute_subseq=bool(self.param("recompute_subseq")),
            scorer=Scorer(self.param("scorer")), dilation=self.param("dilation"),
            backend=Backend(q(_capi.LH_QUERY_BACKEND)),
            subseq_len=q(_capi.LH_QUERY_SUBSEQ_LEN), pyramid_len=q(_capi.LH_QUERY_PYRAMID_LEN),
            saved_bytes=q(_capi.LH_QUERY_SAVED_BYTES),
            fwd_workspace_bytes=q(_capi.LH_QUERY_FWD_WORKSPACE_BYTES),
            bwd_workspace_bytes=q(_capi.LH_QUERY_BWD_WORKSPACE_BYTES),
            stage_workspace_bytes=q(_capi.LH_QUERY_STAGE_WORKSPACE_BYTES),
            attention_workspace_bytes=q(_capi.LH_QUERY_ATTENTION_WORKSPACE_BYTES),
            local_seq_len=q(_capi.LH_QUERY_LOCAL_SEQ_LEN), chunks=q(_capi.LH_QUERY_CHUNKS),
            world=q(_capi.LH_QUERY_WORLD), rank=q(_capi.LH_QUERY_RANK))

    def stage_ms(self, stage):
        """GPU time of `stage` (a Stage, its value or name) in the most recent forward/backward
        (needs stage_timing=True; waits until that stage has finished)."""
        out = ctypes.c_double()
        check(function("lh_plan_get_stage_ms")(self.handle, int(_enum(Stage, stage, "stage")), ctypes.byref(out)))
        return out.value

    def precompile(self, chip):
        """This plan's GPU kernels for `chip` into its context's disk cache (see precompile())."""
        return _precompile(self.handle, chip)

    def precompile_device(self, device_path):
        """This plan's GPU kernels and cuDNN attention plans for the GPU described at
        `device_path` into its context's disk cache (see precompile_device())."""
        return _precompile_device(self.handle, device_path)

    # ---- raw entry points: addresses and a stream ----

    def _run(self, name, *args):
        code = function(name)(self.handle, *args)
        if code != _capi.LH_OK and self._hooks is not None:
            self._hooks._raise_pending()
        check(code)

    def forward_raw(self, q, k, v, out, saved, workspace=None, stream=None):
        """lh_forward on addresses: saved_bytes at `saved`, fwd_workspace_bytes at `workspace`."""
        self._run("lh_forward", _addr(q), _addr(k), _addr(v), _addr(out), _addr(saved),
                  _addr(workspace), _addr(stream))

    def forward_with_scores_raw(self, q, k, v, scores_q, scores_k, out, saved, workspace=None,
                                stream=None):
        """lh_forward_with_scores on addresses (an EXTERNAL plan): fp32 scores_q [C,B,H,S_total]
        and scores_k [C,B,Hkv,S_total] rank the pyramid in place of a scorer."""
        self._run("lh_forward_with_scores", _addr(q), _addr(k), _addr(v), _typed(scores_q, _F32),
                  _typed(scores_k, _F32), _addr(out), _addr(saved), _addr(workspace),
                  _addr(stream))

    def backward_raw(self, q, k, v, out, dout, saved, dq, dk, dv, workspace=None, stream=None):
        """lh_backward on addresses (`out` may be None in Lighthouse mode)."""
        self._run("lh_backward", _addr(q), _addr(k), _addr(v), _addr(out), _addr(dout), _addr(saved),
                  _addr(dq), _addr(dk), _addr(dv), _addr(workspace), _addr(stream))

    def scores_raw(self, q, k, scores_q, scores_k, workspace=None, stream=None):
        self._run("lh_scores", _addr(q), _addr(k), _typed(scores_q, _F32),
                  _typed(scores_k, _F32), _addr(workspace), _addr(stream))

    def scores_qkv_raw(self, q, k, v, scores_q, scores_k, workspace=None, stream=None):
        """lh_scores_qkv: the plan's scorer (v read by DILATED; None allowed for NORM)."""
        self._run("lh_scores_qkv", _addr(q), _addr(k), _addr(v), _typed(scores_q, _F32),
                  _typed(scores_k, _F32), _addr(workspace), _addr(stream))

    def select_raw(self, scores_q, scores_k, indices, workspace=None, stream=None):
        self._run("lh_select", _typed(scores_q, _F32), _typed(scores_k, _F32),
                  _typed(indices, _I32), _addr(workspace), _addr(stream))

    def gather_raw(self, q, k, v, indices, q_sel, k_sel, v_sel, workspace=None, stream=None):
        self._run("lh_gather", _addr(q), _addr(k), _addr(v), _typed(indices, _I32),
                  _addr(q_sel), _addr(k_sel), _addr(v_sel), _addr(workspace), _addr(stream))

    def scatter_raw(self, indices, o_sel, out, workspace=None, stream=None):
        self._run("lh_scatter", _typed(indices, _I32), _addr(o_sel), _addr(out),
                  _addr(workspace), _addr(stream))

    def attention_forward_raw(self, q_sel, k_sel, v_sel, o_sel, lse, workspace=None, stream=None):
        self._run("lh_attention_forward", _addr(q_sel), _addr(k_sel), _addr(v_sel), _addr(o_sel),
                  _typed(lse, _F32), _addr(workspace), _addr(stream))

    def attention_backward_raw(self, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel, dk_sel, dv_sel,
                               workspace=None, stream=None):
        self._run("lh_attention_backward", _addr(q_sel), _addr(k_sel), _addr(v_sel), _addr(o_sel),
                  _typed(lse, _F32), _addr(do_sel), _addr(dq_sel), _addr(dk_sel),
                  _addr(dv_sel), _addr(workspace), _addr(stream))

    # ---- lifetime ----

    def close(self):
        """Destroys the plan now (it must not be running)."""
        super().close()
        self.context = self.ring = self._hooks = None

    def __repr__(self):
        if not self._handle:
            return "<lighthouse.Plan closed>"
        i = self.info
        return (f"<lighthouse.Plan {i.mode.name.lower()} {i.backend.name.lower()} {i.dtype.name.lower()} "
                f"{i.layout.name.lower()} B={i.batch} N={i.seq_len} H={i.heads} Hkv={i.kv_heads} "
                f"D={i.head_dim} L={i.levels} p={i.pooling} topk={i.topk} S_sel={i.subseq_len}"
                f"{f' rank {i.rank}/{i.world}' if i.world > 1 or self.ring is not None else ''}>")


def _configured(context, params, softmax_scale):
    """A new C plan of `context` with `params` set (not finalized); nothing leaks on failure."""
    if not isinstance(context, Context):
        raise TypeError(f"a plan needs a lighthouse.Context, got {type(context).__name__}")
    unknown = set(params) - set(_INT_PARAMS)
    if unknown:
        raise TypeError(f"unknown plan parameter(s) {sorted(unknown)}; known: "
                        f"{sorted(set(_INT_PARAMS) | {'softmax_scale', 'ring', 'rank', 'attention_hooks'})}")
    handle = null(_capi.lh_plan)
    check(function("lh_plan_create")(context.handle, ctypes.byref(handle)))
    try:
        for name, value in params.items():
            if value is not None:
                param, convert = _INT_PARAMS[name]
                check(function("lh_plan_set_i64")(handle, param, convert(value)))
        if softmax_scale is not None:
            check(function("lh_plan_set_f64")(handle, _capi.LH_PARAM_SOFTMAX_SCALE, float(softmax_scale)))
    except BaseException:
        function("lh_plan_destroy")(handle)
        raise
    return handle


def _precompile(handle, chip):
    compiled = ctypes.c_int64()
    check(function("lh_plan_precompile")(handle, str(chip).encode(), ctypes.byref(compiled)))
    return compiled.value


def precompile(context, chip, *, softmax_scale=None, **params):
    """Compiles the GPU kernels that CUDA plans with these parameters load on `chip` ("sm_90":
    H100/H200, "sm_100a": B200) into `context`'s on-disk kernel cache, without a GPU (a CPU
    context works), so that finalizing such a plan on that GPU later reads them. heads and
    head_dim are required; the kernels depend on dtype, levels, pooling, mode and the head
    counts. Returns how many kernels were compiled now (the others were cached already)."""
    handle = _configured(context, params, softmax_scale)
    try:
        return _precompile(handle, chip)
    finally:
        function("lh_plan_destroy")(handle)


def _precompile_device(handle, device_path):
    kernels, cudnn_plans = ctypes.c_int64(), ctypes.c_int64()
    check(function("lh_plan_precompile_device")(handle, os.fsencode(device_path), ctypes.byref(kernels),
                                                 ctypes.byref(cudnn_plans)))
    return kernels.value, cudnn_plans.value


def precompile_device(context, device_path, *, softmax_scale=None, **params):
    """precompile() for the GPU described at `device_path` (written there by
    Context.save_device()), and with it cuDNN's attention plans, which finalizing such a plan on
    that GPU would otherwise build (seconds per sequence length). Needs no GPU (a CPU context
    works); the plans go into `context`'s cache directory beside the kernels. Unlike precompile()
    it needs every parameter a plan needs (seq_len, batch, topk, layout... the attention plans
    depend on them), and checks them as finalizing would. Returns (kernels, cudnn_plans): how
    many of each were built now (the others were cached already)."""
    handle = _configured(context, params, softmax_scale)
    try:
        return _precompile_device(handle, device_path)
    finally:
        function("lh_plan_destroy")(handle)
