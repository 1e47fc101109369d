//! Attention hooks: a framework's own attention step (its own ring, say) in place of the
//! library's, called by `lh_forward` / `lh_backward` with the gathered chunk-major sub-sequence.
//!
//! The safe API takes Rust closures, which the plan owns; C calls them through the
//! `extern "C"` trampolines below with the closures' state as `user_data`. A panic must not
//! unwind into C, so the trampolines catch it and return `LH_ERROR_INTERNAL`; the closure's own
//! `Err` is returned as its status. Either way the forward/backward call that ran the hook then
//! returns that error with the closure's message (or the panic's), not the library's.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use lighthouse_sys as sys;

use crate::error::{check, Error, Result, Status};
use crate::host::HostBuffer;
use crate::plan::PlanInfo;
use crate::types::{Backend, Dtype};

/// The forward hook's closure.
pub type ForwardHookFn = dyn FnMut(&mut AttentionForwardCall<'_>) -> Result<()> + Send;
/// The backward hook's closure.
pub type BackwardHookFn = dyn FnMut(&mut AttentionBackwardCall<'_>) -> Result<()> + Send;

/// What the plan owns for its hooks; `user_data` points at it. Boxed by the plan and freed only
/// after the C plan is destroyed, so the library never calls back into freed memory.
pub(crate) struct HookState {
    forward: Box<ForwardHookFn>,
    backward: Box<BackwardHookFn>,
    /// The plan's sizes (set once finalize succeeded; hooks only run after that).
    pub(crate) info: Option<PlanInfo>,
    /// Host workspace for `run_library` inside a hook (the plan's own is in use by the caller).
    workspace: Option<HostBuffer>,
    /// What the hook of the current call failed with, returned by that call.
    failure: Option<Error>,
}

impl HookState {
    pub(crate) fn new(forward: Box<ForwardHookFn>, backward: Box<BackwardHookFn>) -> Self {
        HookState {
            forward,
            backward,
            info: None,
            workspace: None,
            failure: None,
        }
    }

    /// The error of a run call: the hook's own failure if a hook failed, else the library's.
    pub(crate) fn result_of(&mut self, result: Result<()>) -> Result<()> {
        match (self.failure.take(), result) {
            (Some(failure), Err(_)) => Err(failure),
            (_, result) => result,
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

/// Runs a hook closure without letting a panic cross the C boundary.
fn guarded(
    state: &mut HookState,
    which: &str,
    run: impl FnOnce(&mut HookState) -> Result<()>,
) -> sys::lh_status {
    state.failure = None;
    let outcome = catch_unwind(AssertUnwindSafe(|| run(&mut *state)));
    let failure = match outcome {
        Ok(Ok(())) => return sys::LH_OK,
        Ok(Err(error)) => error,
        Err(payload) => Error::new(
            Status::Internal,
            format!(
                "the attention {which} hook panicked: {}",
                panic_message(&*payload)
            ),
        ),
    };
    let code = failure.code();
    state.failure = Some(failure);
    // A closure must not report success through an error value: keep the status an error.
    if code == sys::LH_OK {
        sys::LH_ERROR_INTERNAL
    } else {
        code
    }
}

fn missing_info(which: &str) -> Error {
    Error::new(
        Status::Internal,
        format!("the attention {which} hook ran before the plan was finalized"),
    )
}

pub(crate) unsafe extern "C" fn forward_trampoline(
    user_data: *mut c_void,
    plan: *mut sys::lh_plan,
    q_sel: *const c_void,
    k_sel: *const c_void,
    v_sel: *const c_void,
    o_sel: *mut c_void,
    lse: *mut f32,
    stream: *mut c_void,
) -> sys::lh_status {
    // SAFETY: user_data is the plan's HookState, alive while the C plan exists; the plan runs on
    // one thread at a time (it is not Sync), so no other reference to it is in use.
    let state = &mut *(user_data as *mut HookState);
    guarded(state, "forward", |state| {
        let info = state.info.ok_or_else(|| missing_info("forward"))?;
        let mut call = AttentionForwardCall {
            plan,
            info,
            q_sel,
            k_sel,
            v_sel,
            o_sel,
            lse,
            stream,
            workspace: &mut state.workspace,
        };
        (state.forward)(&mut call)
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe extern "C" fn backward_trampoline(
    user_data: *mut c_void,
    plan: *mut sys::lh_plan,
    q_sel: *const c_void,
    k_sel: *const c_void,
    v_sel: *const c_void,
    o_sel: *const c_void,
    lse: *const f32,
    do_sel: *const c_void,
    dq_sel: *mut c_void,
    dk_sel: *mut c_void,
    dv_sel: *mut c_void,
    stream: *mut c_void,
) -> sys::lh_status {
    // SAFETY: as in forward_trampoline.
    let state = &mut *(user_data as *mut HookState);
    guarded(state, "backward", |state| {
        let info = state.info.ok_or_else(|| missing_info("backward"))?;
        let mut call = AttentionBackwardCall {
            plan,
            info,
            q_sel,
            k_sel,
            v_sel,
            o_sel,
            lse,
            do_sel,
            dq_sel,
            dk_sel,
            dv_sel,
            stream,
            workspace: &mut state.workspace,
        };
        (state.backward)(&mut call)
    })
}

/// A host workspace of the attention step for a CPU f32 plan (NULL when it needs none).
fn host_attention_workspace(
    info: &PlanInfo,
    slot: &mut Option<HostBuffer>,
    what: &str,
) -> Result<*mut c_void> {
    require_host(info, what)?;
    if info.attention_workspace_bytes == 0 {
        return Ok(ptr::null_mut());
    }
    Ok(slot
        .get_or_insert_with(|| HostBuffer::new(info.attention_workspace_bytes))
        .as_mut_ptr())
}

fn require_host(info: &PlanInfo, what: &str) -> Result<()> {
    if info.backend != Backend::Cpu || info.dtype != Dtype::Float32 {
        return Err(Error::new(
            Status::Unsupported,
            format!(
                "{what} needs a CPU float32 plan (this one is {:?} {:?}): use the raw pointers",
                info.backend, info.dtype
            ),
        ));
    }
    Ok(())
}

/// One call of the forward hook: the plan and its chunk-major sub-sequence, [C, B, H, S_c, D]
/// in the plan's dtype, on the plan's backend (device pointers on CUDA). The hook must fill
/// `o_sel` and `lse` ([C, B, H, S_c] fp32) completely, in order on `stream`.
pub struct AttentionForwardCall<'a> {
    plan: *mut sys::lh_plan,
    info: PlanInfo,
    pub q_sel: *const c_void,
    pub k_sel: *const c_void,
    pub v_sel: *const c_void,
    pub o_sel: *mut c_void,
    pub lse: *mut f32,
    /// The plan's stream (a `CUstream`; NULL on the CPU).
    pub stream: *mut c_void,
    workspace: &'a mut Option<HostBuffer>,
}

impl AttentionForwardCall<'_> {
    /// Sizes of the plan (`chunks`, `subseq_len`, ... say the shapes).
    pub fn info(&self) -> &PlanInfo {
        &self.info
    }

    /// The plan's raw handle (valid during the call), for `lh_plan_get_i64` and the like.
    pub fn plan_raw(&self) -> *mut sys::lh_plan {
        self.plan
    }

    /// The library's own attention step (`lh_attention_forward`) on this call's buffers: what
    /// runs when no hook is set.
    ///
    /// # Safety
    /// `workspace` is `info().attention_workspace_bytes` bytes on the plan's backend (16-byte
    /// aligned; NULL when that is 0), valid until the work queued on `stream` is done.
    pub unsafe fn run_library_raw(&mut self, workspace: *mut c_void) -> Result<()> {
        check(sys::lh_attention_forward(
            self.plan,
            self.q_sel,
            self.k_sel,
            self.v_sel,
            self.o_sel,
            self.lse,
            workspace,
            self.stream,
        ))
    }

    /// [`run_library_raw`](Self::run_library_raw) for a CPU plan, with a host workspace the
    /// hook state keeps.
    pub fn run_library(&mut self) -> Result<()> {
        let workspace = host_attention_workspace(&self.info, self.workspace, "run_library")?;
        // SAFETY: CPU plan: the library's own host buffers of this call and a host workspace of
        // the plan's size.
        unsafe { self.run_library_raw(workspace) }
    }

    /// The buffers as slices (CPU float32 plans): inputs, then the outputs to fill.
    #[allow(clippy::type_complexity)]
    pub fn host(&mut self) -> Result<(&[f32], &[f32], &[f32], &mut [f32], &mut [f32])> {
        require_host(&self.info, "host()")?;
        let (sel, lse) = (self.info.selected_len(), self.info.lse_len());
        // SAFETY: on a CPU plan the library passes host buffers of these sizes, valid for the
        // call; the outputs are distinct from the inputs and from each other.
        unsafe {
            Ok((
                std::slice::from_raw_parts(self.q_sel.cast(), sel),
                std::slice::from_raw_parts(self.k_sel.cast(), sel),
                std::slice::from_raw_parts(self.v_sel.cast(), sel),
                std::slice::from_raw_parts_mut(self.o_sel.cast(), sel),
                std::slice::from_raw_parts_mut(self.lse, lse),
            ))
        }
    }
}

/// One call of the backward hook: as [`AttentionForwardCall`], plus `do_sel` (the gradient of
/// `o_sel`); the hook fills `dq_sel`, `dk_sel`, `dv_sel` (per query head) completely.
pub struct AttentionBackwardCall<'a> {
    plan: *mut sys::lh_plan,
    info: PlanInfo,
    pub q_sel: *const c_void,
    pub k_sel: *const c_void,
    pub v_sel: *const c_void,
    pub o_sel: *const c_void,
    pub lse: *const f32,
    pub do_sel: *const c_void,
    pub dq_sel: *mut c_void,
    pub dk_sel: *mut c_void,
    pub dv_sel: *mut c_void,
    pub stream: *mut c_void,
    workspace: &'a mut Option<HostBuffer>,
}

impl AttentionBackwardCall<'_> {
    pub fn info(&self) -> &PlanInfo {
        &self.info
    }

    pub fn plan_raw(&self) -> *mut sys::lh_plan {
        self.plan
    }

    /// The library's own attention backward (`lh_attention_backward`) on this call's buffers.
    ///
    /// # Safety
    /// As [`AttentionForwardCall::run_library_raw`].
    pub unsafe fn run_library_raw(&mut self, workspace: *mut c_void) -> Result<()> {
        check(sys::lh_attention_backward(
            self.plan,
            self.q_sel,
            self.k_sel,
            self.v_sel,
            self.o_sel,
            self.lse,
            self.do_sel,
            self.dq_sel,
            self.dk_sel,
            self.dv_sel,
            workspace,
            self.stream,
        ))
    }

    /// [`run_library_raw`](Self::run_library_raw) for a CPU plan.
    pub fn run_library(&mut self) -> Result<()> {
        let workspace = host_attention_workspace(&self.info, self.workspace, "run_library")?;
        // SAFETY: as in AttentionForwardCall::run_library.
        unsafe { self.run_library_raw(workspace) }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The trampolines on their own (the library calls them the same way): statuses, the
    //! closure's error kept for the caller, panics stopped at the boundary.
    use super::*;
    use crate::types::{Layout, Mode};

    pub(crate) fn info() -> PlanInfo {
        PlanInfo {
            batch: 1,
            seq_len: 4,
            heads: 1,
            kv_heads: 1,
            head_dim: 2,
            dtype: Dtype::Float32,
            layout: Layout::Bnhd,
            mode: Mode::Dense,
            levels: 2,
            pooling: 2,
            topk: 128,
            softmax_scale: 1.0,
            backend: Backend::Cpu,
            subseq_len: 4,
            pyramid_len: 4,
            saved_bytes: 0,
            fwd_workspace_bytes: 0,
            bwd_workspace_bytes: 0,
            stage_workspace_bytes: 0,
            local_seq_len: 4,
            chunks: 1,
            attention_workspace_bytes: 0,
            world: 1,
            rank: 0,
        }
    }

    fn call_forward(state: &mut HookState, o: &mut [f32; 8], lse: &mut [f32; 4]) -> sys::lh_status {
        let q = [1f32; 8];
        // SAFETY: user_data is a live HookState; the buffers have the sizes `info()` says.
        unsafe {
            forward_trampoline(
                (state as *mut HookState).cast(),
                ptr::null_mut(),
                q.as_ptr().cast(),
                q.as_ptr().cast(),
                q.as_ptr().cast(),
                o.as_mut_ptr().cast(),
                lse.as_mut_ptr(),
                ptr::null_mut(),
            )
        }
    }

    fn state(
        forward: impl FnMut(&mut AttentionForwardCall<'_>) -> Result<()> + Send + 'static,
    ) -> HookState {
        let mut s = HookState::new(Box::new(forward), Box::new(|_| Ok(())));
        s.info = Some(info());
        s
    }

    #[test]
    fn a_hook_that_succeeds_fills_its_outputs() {
        let mut s = state(|call| {
            let (q, _, _, o, lse) = call.host()?;
            o.copy_from_slice(q);
            lse.fill(2.0);
            Ok(())
        });
        let (mut o, mut lse) = ([0f32; 8], [0f32; 4]);
        assert_eq!(call_forward(&mut s, &mut o, &mut lse), sys::LH_OK);
        assert_eq!((o, lse), ([1f32; 8], [2f32; 4]));
        assert_eq!(s.result_of(Ok(())), Ok(()));
    }

    #[test]
    fn a_hook_error_is_its_status_and_replaces_the_library_message() {
        let mut s = state(|_| Err(Error::new(Status::Communication, "peer gone")));
        let (mut o, mut lse) = ([0f32; 8], [0f32; 4]);
        assert_eq!(
            call_forward(&mut s, &mut o, &mut lse),
            sys::LH_ERROR_COMMUNICATION
        );
        let library = Err(Error::new(
            Status::Communication,
            "lh_forward: the hook failed",
        ));
        let got = s.result_of(library).unwrap_err();
        assert_eq!(
            (got.status(), got.message()),
            (Status::Communication, "peer gone")
        );
        // Consumed: the next call reports the library's own result.
        assert_eq!(s.result_of(Ok(())), Ok(()));
    }

    #[test]
    fn a_panic_stops_at_the_boundary() {
        let mut s = state(|_| panic!("boom {}", 7));
        let (mut o, mut lse) = ([0f32; 8], [0f32; 4]);
        assert_eq!(
            call_forward(&mut s, &mut o, &mut lse),
            sys::LH_ERROR_INTERNAL
        );
        let got = s
            .result_of(Err(Error::new(Status::Internal, "library text")))
            .unwrap_err();
        assert_eq!(got.status(), Status::Internal);
        assert!(
            got.message().contains("forward hook panicked: boom 7"),
            "{}",
            got.message()
        );
    }

    #[test]
    fn a_hook_before_finalize_is_refused() {
        let mut s = state(|_| Ok(()));
        s.info = None;
        let (mut o, mut lse) = ([0f32; 8], [0f32; 4]);
        assert_eq!(
            call_forward(&mut s, &mut o, &mut lse),
            sys::LH_ERROR_INTERNAL
        );
    }
}
