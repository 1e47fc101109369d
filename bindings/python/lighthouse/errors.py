"""Statuses and exceptions: every failing call raises a LighthouseError carrying the status and
the sentence of lh_last_error() (what was wrong, the rule and the values).

The exception's class follows the status, and each class also derives from the built-in
exception a Python caller would expect (ValueError for a configuration the rules refuse,
MemoryError for an allocation that failed, ...), so `except ValueError` works as well as
`except lighthouse.TopkError`-style handling through `err.status`.
"""
import enum

from . import _capi
from ._loader import function


class Status(enum.IntEnum):
    """lh_status of lighthouse.h."""
    OK = _capi.LH_OK
    NULL_POINTER = _capi.LH_ERROR_NULL_POINTER
    INVALID_VALUE = _capi.LH_ERROR_INVALID_VALUE
    HEADS_MISMATCH = _capi.LH_ERROR_HEADS_MISMATCH
    POOLING = _capi.LH_ERROR_POOLING
    TOPK = _capi.LH_ERROR_TOPK
    SEQ_DIVISIBILITY = _capi.LH_ERROR_SEQ_DIVISIBILITY
    TILE_TOO_SMALL = _capi.LH_ERROR_TILE_TOO_SMALL
    LEVELS = _capi.LH_ERROR_LEVELS
    UNSUPPORTED_DTYPE = _capi.LH_ERROR_UNSUPPORTED_DTYPE
    UNSUPPORTED = _capi.LH_ERROR_UNSUPPORTED
    BAD_STATE = _capi.LH_ERROR_BAD_STATE
    OUT_OF_HOST_MEMORY = _capi.LH_ERROR_OUT_OF_HOST_MEMORY
    OUT_OF_DEVICE_MEMORY = _capi.LH_ERROR_OUT_OF_DEVICE_MEMORY
    BACKEND_UNAVAILABLE = _capi.LH_ERROR_BACKEND_UNAVAILABLE
    BAD_POINTER = _capi.LH_ERROR_BAD_POINTER
    COMPILE = _capi.LH_ERROR_COMPILE
    DEVICE = _capi.LH_ERROR_DEVICE
    CUDNN = _capi.LH_ERROR_CUDNN
    COMMUNICATION = _capi.LH_ERROR_COMMUNICATION
    IO = _capi.LH_ERROR_IO
    INTERNAL = _capi.LH_ERROR_INTERNAL


class LighthouseError(Exception):
    """A call of liblighthouse failed.

    status:  the Status (a plain int for a code newer than this binding)
    name:    the status's name from lh_status_string ("LH_ERROR_TOPK")
    message: lh_last_error()'s sentence (or the binding's own, for errors found before a call)
    """

    def __init__(self, status, name, message):
        super().__init__(f"{name}: {message}" if message else name)
        self.status = status
        self.name = name
        self.message = message

    def __reduce__(self):  # picklable (multiprocessing, torch.distributed) with its fields
        return (_rebuild, (type(self), int(self.status), self.name, self.message))


def _rebuild(cls, status, name, message):
    return cls(_as_status(status), name, message)


class InvalidArgumentError(LighthouseError, ValueError):
    """A size, enum value, pointer or rule of docs/spec.md that the library refuses."""


class UnsupportedError(LighthouseError, ValueError):
    """The backend cannot run this dtype, configuration or call."""


class BadStateError(LighthouseError, RuntimeError):
    """A call out of order (a setter after finalize, a stage time never recorded, ...)."""


class OutOfMemoryError(LighthouseError, MemoryError):
    """A host or device allocation failed (device: free memory and retry)."""


class BackendUnavailableError(LighthouseError, RuntimeError):
    """No such device, no driver, or a needed library (CUDA driver, cuDNN, NCCL) is missing."""


class DeviceError(LighthouseError, RuntimeError):
    """The kernel compiler, the CUDA driver or cuDNN reported an error."""


class CommunicationError(LighthouseError, RuntimeError):
    """NCCL or a ring transport reported an error (a rank that never arrived, say)."""


class LighthouseIOError(LighthouseError, OSError):
    """A file (the kernel cache) could not be read or written."""


class InternalError(LighthouseError, RuntimeError):
    """A bug in liblighthouse, or an exception raised inside an attention hook."""


_CLASS_OF = {
    Status.NULL_POINTER: InvalidArgumentError,
    Status.INVALID_VALUE: InvalidArgumentError,
    Status.HEADS_MISMATCH: InvalidArgumentError,
    Status.POOLING: InvalidArgumentError,
    Status.TOPK: InvalidArgumentError,
    Status.SEQ_DIVISIBILITY: InvalidArgumentError,
    Status.TILE_TOO_SMALL: InvalidArgumentError,
    Status.LEVELS: InvalidArgumentError,
    Status.BAD_POINTER: InvalidArgumentError,
    Status.UNSUPPORTED_DTYPE: UnsupportedError,
    Status.UNSUPPORTED: UnsupportedError,
    Status.BAD_STATE: BadStateError,
    Status.OUT_OF_HOST_MEMORY: OutOfMemoryError,
    Status.OUT_OF_DEVICE_MEMORY: OutOfMemoryError,
    Status.BACKEND_UNAVAILABLE: BackendUnavailableError,
    Status.COMPILE: DeviceError,
    Status.DEVICE: DeviceError,
    Status.CUDNN: DeviceError,
    Status.COMMUNICATION: CommunicationError,
    Status.IO: LighthouseIOError,
    Status.INTERNAL: InternalError,
}


def _as_status(code):
    try:
        return Status(code)
    except ValueError:
        return int(code)


def status_string(code):
    """lh_status_string: the status's fixed name ("LH_ERROR_TOPK")."""
    return function("lh_status_string")(int(code)).decode()


def last_error():
    """lh_last_error: the sentence of this thread's most recent failing call ("" after success)."""
    return function("lh_last_error")().decode(errors="replace")


def error(status, message):
    """The exception for `status` with `message` (the binding's own errors use it too)."""
    status = _as_status(status)
    return _CLASS_OF.get(status, LighthouseError)(status, status_string(status), message)


def check(code):
    """Raises the exception of a non-zero lh_status, with lh_last_error()'s sentence. Must run
    on the thread that made the call, before any other call of the library."""
    if code != _capi.LH_OK:
        message = last_error()
        raise error(code, message)
