"""The lifetime of a C handle: destroyed when the Python object goes, or earlier by close()."""
import ctypes


class Handle:
    """Subclasses set `_handle` (a ctypes pointer) and `_destroy` (the lh_*_destroy function,
    kept on the object so that it still works while the interpreter shuts down), and may extend
    close() to drop what the handle kept alive."""

    _kind = "handle"
    _handle = None

    @property
    def handle(self):
        """The raw ctypes pointer (for the functions of lighthouse._capi)."""
        if not self._handle:
            raise ValueError(f"this {self._kind} is closed")
        return self._handle

    def _release(self):
        handle, self._handle = self._handle, type(self._handle)()
        return handle

    def close(self):
        """Destroys the C object now; the library refuses (BadStateError) while others use it."""
        if self._handle:
            from .errors import check
            check(self._destroy(self._handle))
            self._release()

    def __del__(self):
        if self._handle:
            self._destroy(self._release())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def null(handle_type):
    """A NULL POINTER(handle_type), to receive a handle from an lh_*_create function."""
    return ctypes.POINTER(handle_type)()
