"""Context: one device (or the CPU), its driver state and its kernel cache."""
import ctypes
import enum
import os

from . import _capi
from ._handle import Handle, null
from ._loader import function
from .errors import check


class Backend(enum.IntEnum):
    """lh_backend of lighthouse.h."""
    AUTO = _capi.LH_BACKEND_AUTO
    CPU = _capi.LH_BACKEND_CPU
    CUDA = _capi.LH_BACKEND_CUDA


def _enum(cls, value, what):
    """An enum member from a member, its int value or its name in any case ("cuda")."""
    if isinstance(value, str):
        try:
            return cls[value.upper()]
        except KeyError:
            names = ", ".join(repr(m.name.lower()) for m in cls)
            raise ValueError(f"{what} {value!r} is not one of {names}") from None
    try:
        return cls(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not one of {[m.value for m in cls]}") from None


class Context(Handle):
    """lh_context: `Context("cpu")`, `Context("cuda", device=1)` or `Context("auto")`.

    Plans made from a context keep it alive, so it is destroyed after its last plan (the C rule
    "destroy plans first" holds whatever order references are dropped in). close() releases it
    early once no plan uses it."""

    _kind = "Context"

    def __init__(self, backend="auto", device=0):
        backend = _enum(Backend, backend, "backend")
        handle = null(_capi.lh_context)
        check(function("lh_context_create")(int(backend), int(device), ctypes.byref(handle)))
        self._handle = handle
        self._destroy = function("lh_context_destroy")
        self.device = int(device)
        out = ctypes.c_int()
        check(function("lh_context_get_backend")(handle, ctypes.byref(out)))
        self.backend = Backend(out.value)

    def set_num_threads(self, threads):
        """CPU worker threads for plans finalized afterwards (the CPU backend's computation, the
        compilation of a CUDA plan's kernels); 0 = every online core."""
        check(function("lh_context_set_i64")(self.handle, _capi.LH_CONTEXT_NUM_THREADS, int(threads)))

    def set_cache_enabled(self, enabled):
        """Whether compiled kernels are kept on disk (default: yes)."""
        check(function("lh_context_set_i64")(self.handle, _capi.LH_CONTEXT_CACHE_ENABLED, int(bool(enabled))))

    def set_cache_dir(self, path):
        """The on-disk kernel cache (default $LIGHTHOUSE_CACHE_DIR, else the XDG cache)."""
        check(function("lh_context_set_str")(self.handle, _capi.LH_CONTEXT_CACHE_DIR, os.fsencode(path)))

    def save_device(self, path):
        """Writes a description of this context's GPU to `path` (a few kB of text), for
        lighthouse.precompile_device() on a machine without that GPU. CUDA contexts only (an
        UnsupportedError otherwise), with cuDNN 9.11 or later."""
        check(function("lh_context_save_device")(self.handle, os.fsencode(path)))

    def plan(self, **params):
        """A finalized Plan on this context; see Plan for the keywords."""
        from .plan import Plan
        return Plan(self, **params)

    def nccl_unique_id(self):
        """A new 128-byte NCCL unique id (CUDA contexts): one rank makes it, every rank passes it
        to Ring.nccl_from_id. An id serves one communicator."""
        buf = ctypes.create_string_buffer(128)
        check(function("lh_nccl_get_unique_id")(self.handle, buf))
        return buf.raw

    def __repr__(self):
        where = "cpu" if self.backend == Backend.CPU else f"cuda:{self.device}"
        return f"<lighthouse.Context {where}{'' if self._handle else ' closed'}>"
