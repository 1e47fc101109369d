"""lighthouse: Python bindings of liblighthouse (Lighthouse attention and dense causal attention
behind a stable C ABI), pure Python over ctypes.

    import lighthouse
    ctx = lighthouse.Context("cpu")
    plan = ctx.plan(seq_len=2048, heads=2, head_dim=32, levels=2, pooling=4, topk=128)
    out, saved = plan.forward(q, k, v)              # numpy float32 [B, N, H, D]
    dq, dk, dv = plan.backward(q, k, v, out, dout, saved)

The core needs neither numpy (only the array entry points do) nor PyTorch; `lighthouse.torch`
is the PyTorch layer (a differentiable custom op). The library is found through LIGHTHOUSE_LIB,
LIGHTHOUSE_LIB_DIR, pkg-config, then the system loader (see lighthouse._loader), on first use.
"""
from . import _capi
from ._host import aligned_empty
from ._loader import LibraryNotFoundError
from ._loader import has as has_function
from ._loader import load as _load
from .context import Backend, Context
from .errors import (BackendUnavailableError, BadStateError, CommunicationError, DeviceError, InternalError,
                     InvalidArgumentError, LighthouseError, LighthouseIOError, OutOfMemoryError, Status,
                     UnsupportedError, last_error, status_string)
from .hooks import AttentionBackwardCall, AttentionForwardCall, AttentionHooks
from .plan import Dtype, Layout, Mode, Plan, PlanInfo, Scorer, Stage, precompile, precompile_device
from .ring import Ring

__version__ = "%d.%d.%d" % (_capi.LH_VERSION_MAJOR, _capi.LH_VERSION_MINOR, _capi.LH_VERSION_PATCH)

MAX_LEVELS = _capi.LH_MAX_LEVELS


def version_number():
    """lh_version_number() of the loaded library (MAJOR*10000 + MINOR*100 + PATCH)."""
    return _load().cdll.lh_version_number()


def version_string():
    """lh_version_string() of the loaded library ("0.1.0")."""
    return _load().cdll.lh_version_string().decode()


def version_matches():
    """Whether the loaded library is the version these bindings were written against."""
    return version_number() == _capi.LH_VERSION_NUMBER


def library_path():
    """The library that was loaded and how it was found: (path or name, "LIGHTHOUSE_LIB" |
    "LIGHTHOUSE_LIB_DIR" | "bundled" | "pkg-config" | "system loader")."""
    loaded = _load()
    return loaded.path, loaded.how


__all__ = [
    "AttentionBackwardCall", "AttentionForwardCall", "AttentionHooks", "Backend", "BackendUnavailableError",
    "BadStateError", "CommunicationError", "Context", "DeviceError", "Dtype", "InternalError",
    "InvalidArgumentError", "Layout", "LibraryNotFoundError", "LighthouseError", "LighthouseIOError", "MAX_LEVELS",
    "Mode", "OutOfMemoryError", "Plan", "PlanInfo", "Ring", "Scorer", "Stage", "Status", "UnsupportedError", "aligned_empty",
    "has_function", "last_error", "library_path", "precompile", "precompile_device", "status_string",
    "version_matches", "version_number", "version_string",
]
