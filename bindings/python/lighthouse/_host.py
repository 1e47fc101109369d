"""The plan's entry points on numpy arrays (CPU backend): shapes, dtype and contiguity are
checked before the library is called, outputs are allocated when not given, and the plan keeps
one host workspace for all its calls. numpy is imported on first use, so the rest of the package
works without it."""
import ctypes

from . import _capi

_ALIGN = 64  # the CPU backend's region alignment (docs/memory.md); the ABI asks for 16


class HostBuffer:
    """`nbytes` of host memory starting on an `align`-byte boundary, without numpy: `address`."""

    def __init__(self, nbytes, align=_ALIGN):
        self._raw = (ctypes.c_char * (nbytes + align))()
        self.address = ctypes.addressof(self._raw) + (-ctypes.addressof(self._raw)) % align
        self.nbytes = nbytes


def _np():
    try:
        import numpy
    except ImportError as e:
        raise ImportError("the array entry points of lighthouse need numpy "
                          "(the *_raw entry points do not)") from e
    return numpy


def aligned_empty(shape, dtype, align=_ALIGN):
    """An uninitialised C-ordered array whose data starts on an `align`-byte boundary."""
    np = _np()
    dtype = np.dtype(dtype)
    count = 1
    for s in shape:
        count *= int(s)
    raw = np.empty(count * dtype.itemsize + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


def _checked(name, a, shape, dtype, writable=False):
    np = _np()
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.dtype(dtype):
        raise TypeError(f"{name} has dtype {a.dtype}, the plan needs {np.dtype(dtype)}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, the plan needs {tuple(shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous (use numpy.ascontiguousarray)")
    if writable and not a.flags.writeable:
        raise ValueError(f"{name} is read-only but is written")
    return a.ctypes.data


class HostMethods:
    """Mixed into Plan: the array forms of its *_raw entry points."""

    def _host_dtype(self):
        info = self.info
        if int(info.backend) != _capi.LH_BACKEND_CPU:
            raise ValueError("numpy arrays run on the CPU backend; this plan is on "
                             f"{info.backend.name}: pass device addresses to the *_raw methods")
        return "float32"  # the CPU backend's only dtype (lh_plan_finalize refuses others)

    def _workspace(self):
        info = self.info
        need = max(info.fwd_workspace_bytes, info.bwd_workspace_bytes, info.stage_workspace_bytes,
                   info.attention_workspace_bytes)
        if need == 0:
            return None
        if self._host_workspace is None or self._host_workspace.nbytes < need:
            self._host_workspace = HostBuffer(need)
        return self._host_workspace.address

    def _out(self, name, a, shape, dtype):
        if a is None:
            return aligned_empty(shape, dtype)
        _checked(name, a, shape, dtype, writable=True)
        return a

    def new_saved(self):
        """A buffer of saved_bytes for forward to write and backward to read."""
        return aligned_empty((self.info.saved_bytes,), "uint8")

    def forward(self, q, k, v, out=None, saved=None):
        """-> (out, saved): attention of q, k, v, and what backward needs."""
        dt, i = self._host_dtype(), self.info
        args = (_checked("q", q, i.q_shape, dt), _checked("k", k, i.kv_shape, dt), _checked("v", v, i.kv_shape, dt))
        out = self._out("out", out, i.q_shape, dt)
        saved = self._out("saved", saved, (i.saved_bytes,), "uint8")
        self.forward_raw(*args, out.ctypes.data, saved.ctypes.data, self._workspace())
        return out, saved

    def forward_with_scores(self, q, k, v, scores_q, scores_k, out=None, saved=None):
        """-> (out, saved) of an EXTERNAL plan: the caller's fp32 scores, [C,B,H,S_total] and
        [C,B,Hkv,S_total] (info.forward_scores_*_shape), rank the pyramid; no gradient flows into
        them (backward is the same for every scorer)."""
        dt, i = self._host_dtype(), self.info
        args = (_checked("q", q, i.q_shape, dt), _checked("k", k, i.kv_shape, dt), _checked("v", v, i.kv_shape, dt),
                _checked("scores_q", scores_q, i.forward_scores_q_shape, "float32"),
                _checked("scores_k", scores_k, i.forward_scores_k_shape, "float32"))
        out = self._out("out", out, i.q_shape, dt)
        saved = self._out("saved", saved, (i.saved_bytes,), "uint8")
        self.forward_with_scores_raw(*args, out.ctypes.data, saved.ctypes.data, self._workspace())
        return out, saved

    def backward(self, q, k, v, out, dout, saved, dq=None, dk=None, dv=None):
        """-> (dq, dk, dv): gradients of sum(out * dout). `out` may be None in Lighthouse mode."""
        dt, i = self._host_dtype(), self.info
        args = (_checked("q", q, i.q_shape, dt), _checked("k", k, i.kv_shape, dt), _checked("v", v, i.kv_shape, dt),
                None if out is None else _checked("out", out, i.q_shape, dt), _checked("dout", dout, i.q_shape, dt),
                _checked("saved", saved, (i.saved_bytes,), "uint8"))
        dq = self._out("dq", dq, i.q_shape, dt)
        dk = self._out("dk", dk, i.kv_shape, dt)
        dv = self._out("dv", dv, i.kv_shape, dt)
        self.backward_raw(*args, dq.ctypes.data, dk.ctypes.data, dv.ctypes.data, self._workspace())
        return dq, dk, dv

    def scores(self, q, k, scores_q=None, scores_k=None):
        """-> (scores_q [B,H,S_total], scores_k [B,Hkv,S_total]), fp32 norm scores."""
        dt, i = self._host_dtype(), self.info
        args = (_checked("q", q, i.q_shape, dt), _checked("k", k, i.kv_shape, dt))
        sq = self._out("scores_q", scores_q, i.scores_q_shape, "float32")
        sk = self._out("scores_k", scores_k, i.scores_k_shape, "float32")
        self.scores_raw(*args, sq.ctypes.data, sk.ctypes.data, self._workspace())
        return sq, sk

    def scores_qkv(self, q, k, v, scores_q=None, scores_k=None):
        """-> (scores_q, scores_k): the plan's own scorer (NORM or DILATED), what forward ranks
        with."""
        dt, i = self._host_dtype(), self.info
        args = (_checked("q", q, i.q_shape, dt), _checked("k", k, i.kv_shape, dt), _checked("v", v, i.kv_shape, dt))
        sq = self._out("scores_q", scores_q, i.scores_q_shape, "float32")
        sk = self._out("scores_k", scores_k, i.scores_k_shape, "float32")
        self.scores_qkv_raw(*args, sq.ctypes.data, sk.ctypes.data, self._workspace())
        return sq, sk

    def select(self, scores_q, scores_k, indices=None):
        """-> indices [B,H,S_sel] int32: the pyramid positions selected, in sub-sequence order."""
        i = self.info
        self._host_dtype()
        args = (_checked("scores_q", scores_q, i.scores_q_shape, "float32"),
                _checked("scores_k", scores_k, i.scores_k_shape, "float32"))
        indices = self._out("indices", indices, i.indices_shape, "int32")
        self.select_raw(*args, indices.ctypes.data, self._workspace())
        return indices

    def gather(self, q, k, v, indices, q_sel=None, k_sel=None, v_sel=None):
        """-> (q_sel, k_sel, v_sel) [B,H,S_sel,D]: the sub-sequence."""
        dt, i = self._host_dtype(), self.info
        args = (_checked("q", q, i.q_shape, dt), _checked("k", k, i.kv_shape, dt), _checked("v", v, i.kv_shape, dt),
                _checked("indices", indices, i.indices_shape, "int32"))
        outs = [self._out(n, a, i.selected_shape, dt) for n, a in (("q_sel", q_sel), ("k_sel", k_sel), ("v_sel", v_sel))]
        self.gather_raw(*args, *(o.ctypes.data for o in outs), self._workspace())
        return tuple(outs)

    def scatter(self, indices, o_sel, out=None):
        """-> out: o_sel scattered back to full length (every element written)."""
        dt, i = self._host_dtype(), self.info
        args = (_checked("indices", indices, i.indices_shape, "int32"), _checked("o_sel", o_sel, i.selected_shape, dt))
        out = self._out("out", out, i.q_shape, dt)
        self.scatter_raw(*args, out.ctypes.data, self._workspace())
        return out

    def attention_forward(self, q_sel, k_sel, v_sel, o_sel=None, lse=None):
        """-> (o_sel, lse): the attention step on chunk-major [C,B,H,S_c,D] tensors."""
        dt, i = self._host_dtype(), self.info
        args = [_checked(n, a, i.attention_shape, dt) for n, a in (("q_sel", q_sel), ("k_sel", k_sel), ("v_sel", v_sel))]
        o_sel = self._out("o_sel", o_sel, i.attention_shape, dt)
        lse = self._out("lse", lse, i.lse_shape, "float32")
        self.attention_forward_raw(*args, o_sel.ctypes.data, lse.ctypes.data, self._workspace())
        return o_sel, lse

    def attention_backward(self, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel=None, dk_sel=None, dv_sel=None):
        """-> (dq_sel, dk_sel, dv_sel) of the attention step (dk/dv per query head)."""
        dt, i = self._host_dtype(), self.info
        shape = i.attention_shape
        args = [_checked(n, a, shape, dt) for n, a in (("q_sel", q_sel), ("k_sel", k_sel), ("v_sel", v_sel), ("o_sel", o_sel))]
        args.append(_checked("lse", lse, i.lse_shape, "float32"))
        args.append(_checked("do_sel", do_sel, shape, dt))
        outs = [self._out(n, a, shape, dt) for n, a in (("dq_sel", dq_sel), ("dk_sel", dk_sel), ("dv_sel", dv_sel))]
        self.attention_backward_raw(*args, *(o.ctypes.data for o in outs), self._workspace())
        return tuple(outs)

