"""Attention hooks: a framework's own attention step (its own ring, say) in place of the
library's. lh_forward / lh_backward call them with the gathered chunk-major sub-sequence
([C, B, H, S_c, D], lse [C, B, H, S_c] fp32) on the plan's stream.

A Python exception must not cross the C boundary: the trampolines catch it, return
LH_ERROR_INTERNAL to the library, and the plan call that ran the hook re-raises the original
exception once the library has returned. A hook may instead return an int status (e.g.
lighthouse.Status.COMMUNICATION) to fail with it; None or 0 is success."""
import ctypes
import weakref

from . import _capi
from ._host import HostBuffer
from ._loader import function
from .errors import check, error


class _Call:
    """What a hook receives: the plan, the addresses of the step's tensors, the stream."""

    _inputs = ()
    _outputs = ()

    def __init__(self, plan, stream, pointers):
        self.plan = plan
        self.info = plan.info
        self.stream = stream
        for name, value in zip(self._inputs + self._outputs, pointers):
            setattr(self, name, value)

    def arrays(self):
        """numpy views of every tensor of the call (CPU plans: host memory, fp32), by name."""
        import numpy as np
        if int(self.info.backend) != _capi.LH_BACKEND_CPU:
            raise ValueError("arrays() needs a CPU plan: on CUDA the addresses are device memory")
        views = {}
        for name in self._inputs + self._outputs:
            shape = self.info.lse_shape if name == "lse" else self.info.attention_shape
            address = getattr(self, name)
            views[name] = np.ctypeslib.as_array(
                ctypes.cast(ctypes.c_void_p(address), ctypes.POINTER(ctypes.c_float)), shape)
        return views

    def _workspace(self, workspace):
        if workspace is not None:
            return workspace
        need = self.info.attention_workspace_bytes
        if need == 0:
            return None
        if int(self.info.backend) != _capi.LH_BACKEND_CPU:
            raise ValueError(f"run_library on a device plan needs workspace= ({need} bytes of device memory)")
        hooks = self.plan._hooks
        if hooks._workspace is None or hooks._workspace.nbytes < need:
            hooks._workspace = HostBuffer(need)
        return hooks._workspace.address


class AttentionForwardCall(_Call):
    _inputs = ("q_sel", "k_sel", "v_sel")
    _outputs = ("o_sel", "lse")

    def run_library(self, workspace=None):
        """The library's own attention step on this call's tensors (lh_attention_forward)."""
        self.plan.attention_forward_raw(self.q_sel, self.k_sel, self.v_sel, self.o_sel, self.lse,
                                        self._workspace(workspace), self.stream)


class AttentionBackwardCall(_Call):
    _inputs = ("q_sel", "k_sel", "v_sel", "o_sel", "lse", "do_sel")
    _outputs = ("dq_sel", "dk_sel", "dv_sel")

    def run_library(self, workspace=None):
        """The library's own attention backward on this call's tensors (lh_attention_backward)."""
        self.plan.attention_backward_raw(self.q_sel, self.k_sel, self.v_sel, self.o_sel, self.lse,
                                         self.do_sel, self.dq_sel, self.dk_sel, self.dv_sel,
                                         self._workspace(workspace), self.stream)


def _address(p):
    return ctypes.cast(p, ctypes.c_void_p).value or 0


class AttentionHooks:
    """forward(call: AttentionForwardCall) and backward(call: AttentionBackwardCall): fill
    call.o_sel and call.lse (backward: dq_sel, dk_sel, dv_sel) completely, on call.stream.
    One AttentionHooks serves one plan: pass it as Plan(..., attention_hooks=...)."""

    def __init__(self, forward, backward):
        self.forward = forward
        self.backward = backward
        self._plan = None
        self._pending = None
        self._workspace = None
        self._c_forward = _capi.lh_attention_forward_hook(self._forward_trampoline)
        self._c_backward = _capi.lh_attention_backward_hook(self._backward_trampoline)

    def _attach(self, plan):
        if self._plan is not None:
            raise ValueError("these AttentionHooks already serve another plan: make one per plan")
        check(function("lh_plan_set_attention_hooks")(plan.handle, self._c_forward, self._c_backward, None))
        # The plan holds the hooks (so the C function pointers outlive the C plan); the hooks
        # refer back to the plan only weakly through this attribute, cleared with it.
        self._plan = weakref.ref(plan)

    def _detach(self, plan):
        """The plan these hooks were attached to failed to finalize: they may serve another."""
        if self._plan is not None and self._plan() is plan:
            self._plan = None

    def _guarded(self, hook, call_type, args):
        self._pending = None
        try:
            plan = self._plan() if self._plan is not None else None
            if plan is None:
                raise RuntimeError("an attention hook ran for a plan that no longer exists")
            *pointers, stream = args
            result = hook(call_type(plan, _address(stream), [_address(p) for p in pointers]))
            code = 0 if result is None else int(result)
            if code != 0:
                which = "forward" if call_type is AttentionForwardCall else "backward"
                self._pending = error(code, f"the attention {which} hook returned status {code}")
            return code
        except BaseException as e:  # noqa: BLE001 - nothing may unwind into C
            self._pending = e
            return _capi.LH_ERROR_INTERNAL

    def _forward_trampoline(self, user_data, plan, q_sel, k_sel, v_sel, o_sel, lse, stream):
        return self._guarded(self.forward, AttentionForwardCall, (q_sel, k_sel, v_sel, o_sel, lse, stream))

    def _backward_trampoline(self, user_data, plan, q_sel, k_sel, v_sel, o_sel, lse, do_sel,
                             dq_sel, dk_sel, dv_sel, stream):
        return self._guarded(self.backward, AttentionBackwardCall,
                             (q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel, dk_sel, dv_sel, stream))

    def _raise_pending(self):
        """Called by the plan when a run failed: re-raises what a hook of this run failed with."""
        pending, self._pending = self._pending, None
        if pending is not None:
            raise pending
