//! The raw-pointer entry points of a plan (unsafe: any backend, device pointers and a stream),
//! one per C function. The safe host-slice entry points are in `host.rs`.

use std::ffi::c_void;

use lighthouse_sys as sys;

use crate::error::{check, Result};
use crate::plan::Plan;

impl Plan {
    /// `lh_forward` on raw pointers.
    ///
    /// # Safety
    /// Pointers must be of the plan's backend (device pointers of its device for CUDA, host
    /// pointers for CPU), hold the sizes `info()` reports (`saved`: `saved_bytes`, workspace:
    /// `fwd_workspace_bytes`, both 16-byte aligned), and stay valid until the work queued on
    /// `stream` (a `CUstream`, or NULL) is done; no other access may race with it.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn forward_raw(
        &mut self,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        out: *mut c_void,
        saved: *mut c_void,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> Result<()> {
        let result = check(sys::lh_forward(
            self.raw_ptr(),
            q,
            k,
            v,
            out,
            saved,
            workspace,
            stream,
        ));
        self.with_hook_failure(result)
    }

    /// `lh_forward_with_scores` on raw pointers: the forward of a `Scorer::External` plan with
    /// the caller's fp32 scores, scores_q [C, B, H, S_total] and scores_k [C, B, Hkv, S_total].
    ///
    /// # Safety
    /// As [`forward_raw`](Plan::forward_raw); the scores are readable for their sizes.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn forward_with_scores_raw(
        &mut self,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        scores_q: *const f32,
        scores_k: *const f32,
        out: *mut c_void,
        saved: *mut c_void,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> Result<()> {
        let result = check(sys::lh_forward_with_scores(
            self.raw_ptr(),
            q,
            k,
            v,
            scores_q,
            scores_k,
            out,
            saved,
            workspace,
            stream,
        ));
        self.with_hook_failure(result)
    }

    /// `lh_backward` on raw pointers. `out` may be NULL in Lighthouse mode.
    ///
    /// # Safety
    /// As [`forward_raw`](Plan::forward_raw); `saved` must be what this plan's forward wrote for
    /// the same q, k, v, and workspace is `bwd_workspace_bytes`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn backward_raw(
        &mut self,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        out: *const c_void,
        dout: *const c_void,
        saved: *const c_void,
        dq: *mut c_void,
        dk: *mut c_void,
        dv: *mut c_void,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> Result<()> {
        let result = check(sys::lh_backward(
            self.raw_ptr(),
            q,
            k,
            v,
            out,
            dout,
            saved,
            dq,
            dk,
            dv,
            workspace,
            stream,
        ));
        self.with_hook_failure(result)
    }

    /// `lh_attention_forward` on raw pointers: the library's own attention step (ring attention
    /// on a ring), whatever hooks are set. q_sel, k_sel, v_sel, o_sel are [C, B, H, S_c, D] in
    /// the plan's dtype (chunk-major; `info().chunks`, `info().chunk_subseq_len()`), lse is
    /// [C, B, H, S_c] fp32.
    ///
    /// # Safety
    /// As [`forward_raw`](Plan::forward_raw); workspace is `attention_workspace_bytes`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn attention_forward_raw(
        &mut self,
        q_sel: *const c_void,
        k_sel: *const c_void,
        v_sel: *const c_void,
        o_sel: *mut c_void,
        lse: *mut f32,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> Result<()> {
        check(sys::lh_attention_forward(
            self.raw_ptr(),
            q_sel,
            k_sel,
            v_sel,
            o_sel,
            lse,
            workspace,
            stream,
        ))
    }

    /// `lh_attention_backward` on raw pointers: dq_sel, dk_sel, dv_sel [C, B, H, S_c, D] (dk_sel
    /// and dv_sel per query head, not summed over GQA groups) from do_sel.
    ///
    /// # Safety
    /// As [`attention_forward_raw`](Plan::attention_forward_raw); o_sel and lse are what the
    /// attention forward wrote for the same inputs.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn attention_backward_raw(
        &mut self,
        q_sel: *const c_void,
        k_sel: *const c_void,
        v_sel: *const c_void,
        o_sel: *const c_void,
        lse: *const f32,
        do_sel: *const c_void,
        dq_sel: *mut c_void,
        dk_sel: *mut c_void,
        dv_sel: *mut c_void,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> Result<()> {
        check(sys::lh_attention_backward(
            self.raw_ptr(),
            q_sel,
            k_sel,
            v_sel,
            o_sel,
            lse,
            do_sel,
            dq_sel,
            dk_sel,
            dv_sel,
            workspace,
            stream,
        ))
    }

    /// `lh_scores_qkv` on raw pointers: the plan's scorer (v may be NULL for `Scorer::Norm`).
    ///
    /// # Safety
    /// As [`forward_raw`](Plan::forward_raw), workspace `stage_workspace_bytes`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn scores_qkv_raw(
        &mut self,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        scores_q: *mut f32,
        scores_k: *mut f32,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> Result<()> {
        check(sys::lh_scores_qkv(
            self.raw_ptr(),
            q,
            k,
            v,
            scores_q,
            scores_k,
            workspace,
            stream,
        ))
    }

    /// `lh_scores` on raw pointers (scores are fp32 [B, H, S_total] and [B, Hkv, S_total]).
    ///
    /// # Safety
    /// As [`forward_raw`](Plan::forward_raw), workspace `stage_workspace_bytes`.
    pub unsafe fn scores_raw(
        &mut self,
        q: *const c_void,
        k: *const c_void,
        scores_q: *mut f32,
        scores_k: *mut f32,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> Result<()> {
        check(sys::lh_scores(
            self.raw_ptr(),
            q,
            k,
            scores_q,
            scores_k,
            workspace,
            stream,
        ))
    }

    /// `lh_select` on raw pointers (indices are int32 [B, H, S_sel]).
    ///
    /// # Safety
    /// As [`scores_raw`](Plan::scores_raw).
    pub unsafe fn select_raw(
        &mut self,
        scores_q: *const f32,
        scores_k: *const f32,
        indices: *mut i32,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> Result<()> {
        check(sys::lh_select(
            self.raw_ptr(),
            scores_q,
            scores_k,
            indices,
            workspace,
            stream,
        ))
    }

    /// `lh_gather` on raw pointers (q_sel, k_sel, v_sel are [B, H, S_sel, D]).
    ///
    /// # Safety
    /// As [`scores_raw`](Plan::scores_raw); indices must come from `select` of this plan.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gather_raw(
        &mut self,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        indices: *const i32,
        q_sel: *mut c_void,
        k_sel: *mut c_void,
        v_sel: *mut c_void,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> Result<()> {
        check(sys::lh_gather(
            self.raw_ptr(),
            q,
            k,
            v,
            indices,
            q_sel,
            k_sel,
            v_sel,
            workspace,
            stream,
        ))
    }

    /// `lh_scatter` on raw pointers (o_sel is [B, H, S_sel, D], out is in the plan's layout).
    ///
    /// # Safety
    /// As [`gather_raw`](Plan::gather_raw).
    pub unsafe fn scatter_raw(
        &mut self,
        indices: *const i32,
        o_sel: *const c_void,
        out: *mut c_void,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> Result<()> {
        check(sys::lh_scatter(
            self.raw_ptr(),
            indices,
            o_sel,
            out,
            workspace,
            stream,
        ))
    }
}
