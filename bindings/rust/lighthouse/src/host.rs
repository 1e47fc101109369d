//! The safe entry points of a CPU plan: host slices instead of raw pointers, every length checked
//! against the plan before the library sees it, the workspace owned by the plan, and `saved`
//! wrapped in a type that only forward can fill.

use std::ffi::c_void;
use std::ptr;

use crate::error::{Error, Result, Status};
use crate::plan::{Plan, PlanInfo};
use crate::types::{Backend, Dtype};

/// The alignment the ABI asks of `saved` and workspaces.
const ALIGN: usize = 16;

#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Chunk([u8; ALIGN]);

/// Zeroed host memory aligned to 16 bytes.
#[derive(Clone)]
pub struct HostBuffer {
    chunks: Vec<Chunk>,
    bytes: usize,
}

impl HostBuffer {
    pub fn new(bytes: usize) -> HostBuffer {
        HostBuffer {
            chunks: vec![Chunk([0; ALIGN]); (bytes + ALIGN - 1) / ALIGN],
            bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `chunks` holds at least `bytes` initialized bytes; Chunk has no padding.
        unsafe { std::slice::from_raw_parts(self.chunks.as_ptr().cast::<u8>(), self.bytes) }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in as_bytes, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.chunks.as_mut_ptr().cast::<u8>(), self.bytes) }
    }

    /// The whole f32 values the buffer holds (an fp32 tensor a CPU plan wrote).
    pub fn as_f32(&self) -> &[f32] {
        // SAFETY: 16-byte aligned, initialized, every bit pattern is an f32; whole values only.
        unsafe { std::slice::from_raw_parts(self.chunks.as_ptr().cast::<f32>(), self.bytes / 4) }
    }

    /// As [`as_f32`](HostBuffer::as_f32), to write.
    pub fn as_f32_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in as_f32, borrowed mutably.
        unsafe {
            std::slice::from_raw_parts_mut(self.chunks.as_mut_ptr().cast::<f32>(), self.bytes / 4)
        }
    }

    pub(crate) fn as_ptr(&self) -> *const c_void {
        self.chunks.as_ptr().cast()
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut c_void {
        self.chunks.as_mut_ptr().cast()
    }
}

impl std::fmt::Debug for HostBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostBuffer({} bytes)", self.bytes)
    }
}

/// What forward keeps for backward. Only [`Plan::forward`] writes it and [`Plan::backward`]
/// refuses one that no forward of the same plan wrote, so the library never reads garbage.
#[derive(Debug, Clone)]
pub struct Saved {
    buffer: HostBuffer,
    written_by: Option<u64>,
}

impl Saved {
    /// The bytes forward wrote (for inspection or checkpointing).
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_bytes()
    }
}

fn wrong_len(what: &str, got: usize, want: usize, rule: &str) -> Error {
    Error::new(
        Status::InvalidValue,
        format!("{what} has {got} elements but the plan needs {rule} = {want}"),
    )
}

/// Checks that every index is a pyramid position, so a bad index can never make the library
/// read or write outside the caller's buffers (the C ABI trusts indices it is given).
fn expect_positions(indices: &[i32], pyramid_len: usize) -> Result<()> {
    match indices.iter().position(|&i| i < 0 || i as usize >= pyramid_len) {
        None => Ok(()),
        Some(at) => Err(Error::new(
            Status::InvalidValue,
            format!("indices[{at}] = {} is not a pyramid position (0 <= index < S_total = {pyramid_len})",
                    indices[at]),
        )),
    }
}

/// Checks that a slice holds exactly the elements the plan expects.
fn expect_len(what: &str, got: usize, want: usize, rule: &str) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(wrong_len(what, got, want, rule))
    }
}

/// Checks the lengths of one plan's per-chunk scores: [B, H, S_total] and [B, Hkv, S_total].
fn expect_scores_len(info: &PlanInfo, scores_q: usize, scores_k: usize) -> Result<()> {
    expect_len("scores_q", scores_q, info.scores_q_len(), "B*H*S_total")?;
    expect_len("scores_k", scores_k, info.scores_k_len(), "B*Hkv*S_total")
}

const Q_RULE: &str = "B*N_local*H*D";
const KV_RULE: &str = "B*N_local*Hkv*D";
const ATT_RULE: &str = "C*B*H*S_c*D";
const SEL_RULE: &str = "B*H*S_sel*D";

impl Plan {
    /// Refuses host slices for a plan that does not run on the CPU in fp32.
    fn require_host_f32(&self) -> Result<PlanInfo> {
        let info = *self.info();
        if info.backend != Backend::Cpu {
            return Err(Error::new(
                Status::Unsupported,
                format!(
                    "host slices need a CPU plan, this one runs on {:?}: use forward_device / \
                     backward_device (or an AttentionOp) with device memory and a stream",
                    info.backend
                ),
            ));
        }
        if info.dtype != Dtype::Float32 {
            return Err(Error::new(
                Status::UnsupportedDtype,
                format!(
                    "host slices are f32 but the plan's dtype is {:?}",
                    info.dtype
                ),
            ));
        }
        Ok(info)
    }

    /// The plan's host workspace (large enough for every entry point), or NULL when none is
    /// needed, as the ABI allows.
    fn host_workspace(&mut self) -> *mut c_void {
        let info = self.info();
        let bytes = info
            .fwd_workspace_bytes
            .max(info.bwd_workspace_bytes)
            .max(info.stage_workspace_bytes)
            .max(info.attention_workspace_bytes);
        if bytes == 0 {
            return ptr::null_mut();
        }
        self.workspace
            .get_or_insert_with(|| HostBuffer::new(bytes))
            .as_mut_ptr()
    }

    /// A `saved` buffer of the size this plan's forward writes.
    pub fn new_saved(&self) -> Saved {
        Saved {
            buffer: HostBuffer::new(self.info().saved_bytes),
            written_by: None,
        }
    }

    /// out = attention(q, k, v) on host slices (CPU plan). q and out have B*N*H*D elements, k and
    /// v B*N*Hkv*D, in the plan's layout.
    pub fn forward(
        &mut self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
        saved: &mut Saved,
    ) -> Result<()> {
        self.host_forward(q, k, v, None, out, saved)
    }

    /// The forward of a `Scorer::External` plan on host slices (CPU plan): the caller's scores
    /// rank the pyramid in place of a scorer. scores_q is [C, B, H, S_total] and scores_k
    /// [C, B, Hkv, S_total] (`info().forward_scores_q_len()`, `_k_len()`), every level filled in;
    /// they carry no gradient (`backward` is the same for every scorer).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with_scores(
        &mut self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        scores_q: &[f32],
        scores_k: &[f32],
        out: &mut [f32],
        saved: &mut Saved,
    ) -> Result<()> {
        self.host_forward(q, k, v, Some((scores_q, scores_k)), out, saved)
    }

    fn host_forward(
        &mut self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        scores: Option<(&[f32], &[f32])>,
        out: &mut [f32],
        saved: &mut Saved,
    ) -> Result<()> {
        let info = self.require_host_f32()?;
        if let Some((sq, sk)) = scores {
            expect_len(
                "scores_q",
                sq.len(),
                info.forward_scores_q_len(),
                "C*B*H*S_total",
            )?;
            expect_len(
                "scores_k",
                sk.len(),
                info.forward_scores_k_len(),
                "C*B*Hkv*S_total",
            )?;
        }
        expect_len("q", q.len(), info.q_len(), Q_RULE)?;
        expect_len("k", k.len(), info.kv_len(), KV_RULE)?;
        expect_len("v", v.len(), info.kv_len(), KV_RULE)?;
        expect_len("out", out.len(), info.q_len(), Q_RULE)?;
        if saved.buffer.len() != info.saved_bytes {
            return Err(Error::new(
                Status::InvalidValue,
                format!(
                    "saved has {} bytes but the plan needs SAVED_BYTES = {}: make it with \
                         Plan::new_saved",
                    saved.buffer.len(),
                    info.saved_bytes
                ),
            ));
        }
        let workspace = self.host_workspace();
        // A failed forward leaves `saved` unusable for backward.
        saved.written_by = None;
        // SAFETY: host slices of the checked lengths, 16-byte aligned saved/workspace of the
        // plan's sizes, CPU plan so stream is NULL; all borrowed for the (synchronous) call.
        unsafe {
            match scores {
                Some((sq, sk)) => self.forward_with_scores_raw(
                    q.as_ptr().cast(),
                    k.as_ptr().cast(),
                    v.as_ptr().cast(),
                    sq.as_ptr(),
                    sk.as_ptr(),
                    out.as_mut_ptr().cast(),
                    saved.buffer.as_mut_ptr(),
                    workspace,
                    ptr::null_mut(),
                )?,
                None => self.forward_raw(
                    q.as_ptr().cast(),
                    k.as_ptr().cast(),
                    v.as_ptr().cast(),
                    out.as_mut_ptr().cast(),
                    saved.buffer.as_mut_ptr(),
                    workspace,
                    ptr::null_mut(),
                )?,
            }
        }
        saved.written_by = Some(self.id);
        Ok(())
    }

    /// dq, dk, dv of sum(out * dout) on host slices (CPU plan). `saved` must come from this
    /// plan's forward on the same q, k, v. `out` is read in dense mode only (None is fine in
    /// Lighthouse mode).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: Option<&[f32]>,
        dout: &[f32],
        saved: &Saved,
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
    ) -> Result<()> {
        let info = self.require_host_f32()?;
        expect_len("q", q.len(), info.q_len(), Q_RULE)?;
        expect_len("k", k.len(), info.kv_len(), KV_RULE)?;
        expect_len("v", v.len(), info.kv_len(), KV_RULE)?;
        if let Some(out) = out {
            expect_len("out", out.len(), info.q_len(), Q_RULE)?;
        }
        expect_len("dout", dout.len(), info.q_len(), Q_RULE)?;
        expect_len("dq", dq.len(), info.q_len(), Q_RULE)?;
        expect_len("dk", dk.len(), info.kv_len(), KV_RULE)?;
        expect_len("dv", dv.len(), info.kv_len(), KV_RULE)?;
        if saved.written_by != Some(self.id) {
            return Err(Error::new(
                Status::BadState,
                "saved was not written by a successful forward of this plan",
            ));
        }
        let workspace = self.host_workspace();
        let out_ptr = out.map_or(ptr::null(), |o| o.as_ptr().cast());
        // SAFETY: as in forward; `saved` holds what this plan's forward wrote.
        unsafe {
            self.backward_raw(
                q.as_ptr().cast(),
                k.as_ptr().cast(),
                v.as_ptr().cast(),
                out_ptr,
                dout.as_ptr().cast(),
                saved.buffer.as_ptr(),
                dq.as_mut_ptr().cast(),
                dk.as_mut_ptr().cast(),
                dv.as_mut_ptr().cast(),
                workspace,
                ptr::null_mut(),
            )
        }
    }

    /// Pyramid norm scores (CPU plan): scores_q [B, H, S_total], scores_k [B, Hkv, S_total].
    pub fn scores(
        &mut self,
        q: &[f32],
        k: &[f32],
        scores_q: &mut [f32],
        scores_k: &mut [f32],
    ) -> Result<()> {
        let info = self.require_host_f32()?;
        expect_len("q", q.len(), info.q_len(), Q_RULE)?;
        expect_len("k", k.len(), info.kv_len(), KV_RULE)?;
        expect_scores_len(&info, scores_q.len(), scores_k.len())?;
        let workspace = self.host_workspace();
        // SAFETY: checked host slices, CPU plan.
        unsafe {
            self.scores_raw(
                q.as_ptr().cast(),
                k.as_ptr().cast(),
                scores_q.as_mut_ptr(),
                scores_k.as_mut_ptr(),
                workspace,
                ptr::null_mut(),
            )
        }
    }

    /// The scores of the plan's scorer (CPU plan), what its forward ranks with: scores_q
    /// [B, H, S_total], scores_k [B, Hkv, S_total]. `v` is read by `Scorer::Dilated`.
    pub fn scores_qkv(
        &mut self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        scores_q: &mut [f32],
        scores_k: &mut [f32],
    ) -> Result<()> {
        let info = self.require_host_f32()?;
        expect_len("q", q.len(), info.q_len(), Q_RULE)?;
        expect_len("k", k.len(), info.kv_len(), KV_RULE)?;
        expect_len("v", v.len(), info.kv_len(), KV_RULE)?;
        expect_scores_len(&info, scores_q.len(), scores_k.len())?;
        let workspace = self.host_workspace();
        // SAFETY: checked host slices, CPU plan.
        unsafe {
            self.scores_qkv_raw(
                q.as_ptr().cast(),
                k.as_ptr().cast(),
                v.as_ptr().cast(),
                scores_q.as_mut_ptr(),
                scores_k.as_mut_ptr(),
                workspace,
                ptr::null_mut(),
            )
        }
    }

    /// Selection on caller scores (CPU plan): indices [B, H, S_sel] of pyramid positions.
    pub fn select(
        &mut self,
        scores_q: &[f32],
        scores_k: &[f32],
        indices: &mut [i32],
    ) -> Result<()> {
        let info = self.require_host_f32()?;
        expect_scores_len(&info, scores_q.len(), scores_k.len())?;
        expect_len("indices", indices.len(), info.indices_len(), "B*H*S_sel")?;
        let workspace = self.host_workspace();
        // SAFETY: checked host slices, CPU plan.
        unsafe {
            self.select_raw(
                scores_q.as_ptr(),
                scores_k.as_ptr(),
                indices.as_mut_ptr(),
                workspace,
                ptr::null_mut(),
            )
        }
    }

    /// Gathers the sub-sequence (CPU plan): q_sel, k_sel, v_sel [B, H, S_sel, D]. Every index
    /// must be a pyramid position (checked).
    #[allow(clippy::too_many_arguments)]
    pub fn gather(
        &mut self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        indices: &[i32],
        q_sel: &mut [f32],
        k_sel: &mut [f32],
        v_sel: &mut [f32],
    ) -> Result<()> {
        let info = self.require_host_f32()?;
        expect_len("q", q.len(), info.q_len(), Q_RULE)?;
        expect_len("k", k.len(), info.kv_len(), KV_RULE)?;
        expect_len("v", v.len(), info.kv_len(), KV_RULE)?;
        expect_len("indices", indices.len(), info.indices_len(), "B*H*S_sel")?;
        expect_positions(indices, info.pyramid_len)?;
        for (what, sel) in [("q_sel", &*q_sel), ("k_sel", &*k_sel), ("v_sel", &*v_sel)] {
            expect_len(what, sel.len(), info.selected_len(), SEL_RULE)?;
        }
        let workspace = self.host_workspace();
        // SAFETY: checked host slices, CPU plan.
        unsafe {
            self.gather_raw(
                q.as_ptr().cast(),
                k.as_ptr().cast(),
                v.as_ptr().cast(),
                indices.as_ptr(),
                q_sel.as_mut_ptr().cast(),
                k_sel.as_mut_ptr().cast(),
                v_sel.as_mut_ptr().cast(),
                workspace,
                ptr::null_mut(),
            )
        }
    }

    /// Scatters o_sel [B, H, S_sel, D] back to out (plan layout) (CPU plan).
    pub fn scatter(&mut self, indices: &[i32], o_sel: &[f32], out: &mut [f32]) -> Result<()> {
        let info = self.require_host_f32()?;
        expect_len("indices", indices.len(), info.indices_len(), "B*H*S_sel")?;
        expect_len("o_sel", o_sel.len(), info.selected_len(), SEL_RULE)?;
        expect_positions(indices, info.pyramid_len)?;
        expect_len("out", out.len(), info.q_len(), Q_RULE)?;
        let workspace = self.host_workspace();
        // SAFETY: checked host slices, CPU plan.
        unsafe {
            self.scatter_raw(
                indices.as_ptr(),
                o_sel.as_ptr().cast(),
                out.as_mut_ptr().cast(),
                workspace,
                ptr::null_mut(),
            )
        }
    }

    /// The attention step on host slices (CPU plan): q_sel, k_sel, v_sel, o_sel are
    /// [C, B, H, S_c, D] (`info().selected_len()` elements), lse [C, B, H, S_c]
    /// (`info().lse_len()`). Runs the library's own step (ring attention on a ring) even when
    /// hooks are set.
    pub fn attention_forward(
        &mut self,
        q_sel: &[f32],
        k_sel: &[f32],
        v_sel: &[f32],
        o_sel: &mut [f32],
        lse: &mut [f32],
    ) -> Result<()> {
        let info = self.require_host_f32()?;
        for (what, sel) in [
            ("q_sel", q_sel),
            ("k_sel", k_sel),
            ("v_sel", v_sel),
            ("o_sel", &*o_sel),
        ] {
            expect_len(what, sel.len(), info.selected_len(), ATT_RULE)?;
        }
        expect_len("lse", lse.len(), info.lse_len(), "C*B*H*S_c")?;
        let workspace = self.host_workspace();
        // SAFETY: checked host slices, CPU plan, the plan's host workspace.
        unsafe {
            self.attention_forward_raw(
                q_sel.as_ptr().cast(),
                k_sel.as_ptr().cast(),
                v_sel.as_ptr().cast(),
                o_sel.as_mut_ptr().cast(),
                lse.as_mut_ptr(),
                workspace,
                ptr::null_mut(),
            )
        }
    }

    /// Gradients of the attention step on host slices (CPU plan), shapes as in
    /// [`attention_forward`](Plan::attention_forward).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_backward(
        &mut self,
        q_sel: &[f32],
        k_sel: &[f32],
        v_sel: &[f32],
        o_sel: &[f32],
        lse: &[f32],
        do_sel: &[f32],
        dq_sel: &mut [f32],
        dk_sel: &mut [f32],
        dv_sel: &mut [f32],
    ) -> Result<()> {
        let info = self.require_host_f32()?;
        for (what, sel) in [
            ("q_sel", q_sel),
            ("k_sel", k_sel),
            ("v_sel", v_sel),
            ("o_sel", o_sel),
            ("do_sel", do_sel),
            ("dq_sel", &*dq_sel),
            ("dk_sel", &*dk_sel),
            ("dv_sel", &*dv_sel),
        ] {
            expect_len(what, sel.len(), info.selected_len(), ATT_RULE)?;
        }
        expect_len("lse", lse.len(), info.lse_len(), "C*B*H*S_c")?;
        let workspace = self.host_workspace();
        // SAFETY: checked host slices, CPU plan, the plan's host workspace.
        unsafe {
            self.attention_backward_raw(
                q_sel.as_ptr().cast(),
                k_sel.as_ptr().cast(),
                v_sel.as_ptr().cast(),
                o_sel.as_ptr().cast(),
                lse.as_ptr(),
                do_sel.as_ptr().cast(),
                dq_sel.as_mut_ptr().cast(),
                dk_sel.as_mut_ptr().cast(),
                dv_sel.as_mut_ptr().cast(),
                workspace,
                ptr::null_mut(),
            )
        }
    }
}
