//! Plan: one attention configuration, validated and compiled once, then run many times.
//! This file holds the builder, the plan's sizes and the raw-pointer entry points (unsafe: any
//! backend, device pointers and a stream). The safe host-slice entry points are in `host.rs`.

use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use lighthouse_sys as sys;

use crate::context::Context;
use crate::error::{check, Error, Result, Status};
use crate::host::HostBuffer;
use crate::types::{Backend, Dtype, Layout, Mode};
use crate::LIVE_PLANS;

/// Converts a size to the ABI's int64_t, naming the parameter when it does not fit.
pub(crate) fn to_i64(name: &str, value: usize) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        Error::new(
            Status::InvalidValue,
            format!("{name} = {value} does not fit in int64_t"),
        )
    })
}

/// Collects plan parameters with typed setters; [`build`](PlanBuilder::build) creates, sets and
/// finalizes the C plan. Unset parameters keep the library's defaults (lighthouse.h, lh_param).
/// Every configuration error is reported by `build`, with the library's message.
#[derive(Debug, Clone)]
pub struct PlanBuilder<'ctx> {
    context: &'ctx Context,
    ints: Vec<(sys::lh_param, &'static str, i64)>,
    sizes: Vec<(sys::lh_param, &'static str, usize)>,
    softmax_scale: Option<f64>,
}

macro_rules! size_setter {
    ($(#[$doc:meta])* $name:ident, $param:path) => {
        $(#[$doc])*
        pub fn $name(mut self, value: usize) -> Self {
            self.sizes.push(($param, stringify!($name), value));
            self
        }
    };
}

impl<'ctx> PlanBuilder<'ctx> {
    pub(crate) fn new(context: &'ctx Context) -> Self {
        PlanBuilder {
            context,
            ints: Vec::new(),
            sizes: Vec::new(),
            softmax_scale: None,
        }
    }

    size_setter!(/// B, default 1.
                 batch, sys::LH_PARAM_BATCH);
    size_setter!(/// N, required.
                 seq_len, sys::LH_PARAM_SEQ_LEN);
    size_setter!(/// H (query heads), required.
                 heads, sys::LH_PARAM_HEADS);
    size_setter!(/// Hkv (key/value heads), H % Hkv == 0; default H.
                 kv_heads, sys::LH_PARAM_KV_HEADS);
    size_setter!(/// D, required.
                 head_dim, sys::LH_PARAM_HEAD_DIM);
    size_setter!(/// L, pyramid levels (level 0 included), 2..=8; default 3.
                 levels, sys::LH_PARAM_LEVELS);
    size_setter!(/// p, a power of two in 2..=64; default 4.
                 pooling, sys::LH_PARAM_POOLING);
    size_setter!(/// A multiple of 128; default 2048.
                 topk, sys::LH_PARAM_TOPK);

    /// Element type; default `Float32` (the CPU backend's only dtype).
    pub fn dtype(mut self, dtype: Dtype) -> Self {
        self.ints
            .push((sys::LH_PARAM_DTYPE, "dtype", dtype.to_raw() as i64));
        self
    }

    /// Tensor layout; default `Bnhd`.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.ints
            .push((sys::LH_PARAM_LAYOUT, "layout", layout.to_raw() as i64));
        self
    }

    /// Lighthouse or dense attention; default `Lighthouse`.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.ints
            .push((sys::LH_PARAM_MODE, "mode", mode.to_raw() as i64));
        self
    }

    /// Softmax scale, > 0; default 1/sqrt(head_dim).
    pub fn softmax_scale(mut self, scale: f64) -> Self {
        self.softmax_scale = Some(scale);
        self
    }

    /// Creates the C plan, applies the parameters in the order they were set, and finalizes it.
    /// On any error the half-built plan is destroyed before returning.
    pub fn build(self) -> Result<Plan<'ctx>> {
        // Declared first so it is released last: a failing `?` below drops `guard` under it.
        let _lock = self.context.lock_plans();
        let mut raw = std::ptr::null_mut();
        // SAFETY: live context (borrowed for 'ctx), valid out pointer.
        check(unsafe { sys::lh_plan_create(self.context.as_raw(), &mut raw) })?;
        let raw = NonNull::new(raw).ok_or_else(|| {
            Error::new(
                Status::Internal,
                "lh_plan_create returned LH_OK and a NULL plan",
            )
        })?;
        // The guard owns the handle from here: every `?` below destroys it.
        let guard = RawPlan::adopt(raw);

        for &(param, name, value) in &self.sizes {
            let value = to_i64(name, value)?;
            // SAFETY: live, unfinalized plan owned by the guard.
            check(unsafe { sys::lh_plan_set_i64(guard.ptr(), param, value) })?;
        }
        for &(param, _, value) in &self.ints {
            // SAFETY: as above.
            check(unsafe { sys::lh_plan_set_i64(guard.ptr(), param, value) })?;
        }
        if let Some(scale) = self.softmax_scale {
            // SAFETY: as above.
            check(unsafe {
                sys::lh_plan_set_f64(guard.ptr(), sys::LH_PARAM_SOFTMAX_SCALE, scale)
            })?;
        }
        // SAFETY: as above.
        check(unsafe { sys::lh_plan_finalize(guard.ptr()) })?;
        let info = PlanInfo::read(guard.ptr())?;

        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Plan {
            raw: ManuallyDrop::new(guard),
            context: self.context,
            info,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            workspace: None,
        })
    }
}

/// Owns an `lh_plan` handle and destroys it on drop (also for plans that never finalized).
/// Dropped only while its context's plan lock is held (see `Context::lock_plans`).
struct RawPlan(NonNull<sys::lh_plan>);

impl RawPlan {
    fn adopt(raw: NonNull<sys::lh_plan>) -> RawPlan {
        LIVE_PLANS.fetch_add(1, Ordering::SeqCst);
        RawPlan(raw)
    }

    fn ptr(&self) -> *mut sys::lh_plan {
        self.0.as_ptr()
    }
}

impl Drop for RawPlan {
    fn drop(&mut self) {
        // SAFETY: live handle owned by self; destroy cannot fail on a valid handle.
        unsafe { sys::lh_plan_destroy(self.0.as_ptr()) };
        LIVE_PLANS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The parameters (after defaults) and buffer sizes of a finalized plan. Sizes are in elements
/// unless the name says bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanInfo {
    pub batch: usize,
    pub seq_len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub dtype: Dtype,
    pub layout: Layout,
    pub mode: Mode,
    pub levels: usize,
    pub pooling: usize,
    pub topk: usize,
    pub softmax_scale: f64,
    pub backend: Backend,
    /// S_sel: entries kept per (batch, head); N in dense mode.
    pub subseq_len: usize,
    /// S_total: pyramid entries per (batch, head); N in dense mode.
    pub pyramid_len: usize,
    pub saved_bytes: usize,
    pub fwd_workspace_bytes: usize,
    pub bwd_workspace_bytes: usize,
    pub stage_workspace_bytes: usize,
}

impl PlanInfo {
    fn read(plan: *const sys::lh_plan) -> Result<PlanInfo> {
        let param = |p: sys::lh_param| -> Result<i64> {
            let mut value = 0;
            // SAFETY: live plan, valid out pointer.
            check(unsafe { sys::lh_plan_get_param_i64(plan, p, &mut value) })?;
            Ok(value)
        };
        let query = |q: sys::lh_query| -> Result<i64> {
            let mut value = 0;
            // SAFETY: live finalized plan, valid out pointer.
            check(unsafe { sys::lh_plan_get_i64(plan, q, &mut value) })?;
            Ok(value)
        };
        let size = |value: i64, what: &str| -> Result<usize> {
            usize::try_from(value).map_err(|_| {
                Error::new(
                    Status::Internal,
                    format!("the library reported {what} = {value}"),
                )
            })
        };
        let mut scale = 0.0;
        // SAFETY: live plan, valid out pointer.
        check(unsafe {
            sys::lh_plan_get_param_f64(plan, sys::LH_PARAM_SOFTMAX_SCALE, &mut scale)
        })?;
        Ok(PlanInfo {
            batch: size(param(sys::LH_PARAM_BATCH)?, "batch")?,
            seq_len: size(param(sys::LH_PARAM_SEQ_LEN)?, "seq_len")?,
            heads: size(param(sys::LH_PARAM_HEADS)?, "heads")?,
            kv_heads: size(param(sys::LH_PARAM_KV_HEADS)?, "kv_heads")?,
            head_dim: size(param(sys::LH_PARAM_HEAD_DIM)?, "head_dim")?,
            dtype: Dtype::from_raw(param(sys::LH_PARAM_DTYPE)? as sys::lh_dtype)?,
            layout: Layout::from_raw(param(sys::LH_PARAM_LAYOUT)? as sys::lh_layout)?,
            mode: Mode::from_raw(param(sys::LH_PARAM_MODE)? as sys::lh_mode)?,
            levels: size(param(sys::LH_PARAM_LEVELS)?, "levels")?,
            pooling: size(param(sys::LH_PARAM_POOLING)?, "pooling")?,
            topk: size(param(sys::LH_PARAM_TOPK)?, "topk")?,
            softmax_scale: scale,
            backend: Backend::from_raw(query(sys::LH_QUERY_BACKEND)? as sys::lh_backend)?,
            subseq_len: size(query(sys::LH_QUERY_SUBSEQ_LEN)?, "SUBSEQ_LEN")?,
            pyramid_len: size(query(sys::LH_QUERY_PYRAMID_LEN)?, "PYRAMID_LEN")?,
            saved_bytes: size(query(sys::LH_QUERY_SAVED_BYTES)?, "SAVED_BYTES")?,
            fwd_workspace_bytes: size(
                query(sys::LH_QUERY_FWD_WORKSPACE_BYTES)?,
                "FWD_WORKSPACE_BYTES",
            )?,
            bwd_workspace_bytes: size(
                query(sys::LH_QUERY_BWD_WORKSPACE_BYTES)?,
                "BWD_WORKSPACE_BYTES",
            )?,
            stage_workspace_bytes: size(
                query(sys::LH_QUERY_STAGE_WORKSPACE_BYTES)?,
                "STAGE_WORKSPACE_BYTES",
            )?,
        })
    }

    /// Elements of q, out, dout and dq: B*N*H*D.
    pub fn q_len(&self) -> usize {
        self.batch * self.seq_len * self.heads * self.head_dim
    }

    /// Elements of k, v, dk and dv: B*N*Hkv*D.
    pub fn kv_len(&self) -> usize {
        self.batch * self.seq_len * self.kv_heads * self.head_dim
    }

    /// Elements of scores_q [B, H, S_total].
    pub fn scores_q_len(&self) -> usize {
        self.batch * self.heads * self.pyramid_len
    }

    /// Elements of scores_k [B, Hkv, S_total].
    pub fn scores_k_len(&self) -> usize {
        self.batch * self.kv_heads * self.pyramid_len
    }

    /// Elements of indices [B, H, S_sel].
    pub fn indices_len(&self) -> usize {
        self.batch * self.heads * self.subseq_len
    }

    /// Elements of q_sel, k_sel, v_sel and o_sel [B, H, S_sel, D].
    pub fn selected_len(&self) -> usize {
        self.indices_len() * self.head_dim
    }
}

/// A finalized `lh_plan`, destroyed on drop. It borrows its context, so it cannot outlive it.
///
/// Threading: `Send` but not `Sync`. The header says plans are not internally locked ("use one
/// plan from one thread at a time") while different plans may run concurrently, so a plan may
/// move to another thread but never be shared; every call that runs it takes `&mut self`.
pub struct Plan<'ctx> {
    /// Dropped by `Plan::drop` under the context's plan lock.
    raw: ManuallyDrop<RawPlan>,
    context: &'ctx Context,
    info: PlanInfo,
    /// Distinguishes plans, so `Saved` can refuse a buffer written by another plan.
    pub(crate) id: u64,
    /// Host workspace of the safe entry points, allocated on first use.
    pub(crate) workspace: Option<HostBuffer>,
}

// SAFETY: the header allows a plan to be used from any thread, one thread at a time; `Plan` is
// not `Sync` and all running calls take `&mut self`. The one thing it touches of its (non-Sync)
// context from another thread is the C context inside lh_plan_destroy, and that happens under
// the context's Mutex, which also covers every plan creation of that context.
unsafe impl Send for Plan<'_> {}

impl Drop for Plan<'_> {
    fn drop(&mut self) {
        let _lock = self.context.lock_plans();
        // SAFETY: dropped exactly once, here, under the plan lock as RawPlan requires.
        unsafe { ManuallyDrop::drop(&mut self.raw) };
    }
}

impl<'ctx> Plan<'ctx> {
    /// Parameters and sizes of this plan.
    pub fn info(&self) -> &PlanInfo {
        &self.info
    }

    /// The raw handle, for calls this crate does not wrap. It stays owned by `self`.
    pub fn as_raw(&self) -> *mut sys::lh_plan {
        self.raw.ptr()
    }

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
        check(sys::lh_forward(
            self.raw.ptr(),
            q,
            k,
            v,
            out,
            saved,
            workspace,
            stream,
        ))
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
        check(sys::lh_backward(
            self.raw.ptr(),
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
            self.raw.ptr(),
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
            self.raw.ptr(),
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
            self.raw.ptr(),
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
            self.raw.ptr(),
            indices,
            o_sel,
            out,
            workspace,
            stream,
        ))
    }
}

impl std::fmt::Debug for Plan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan").field("info", &self.info).finish()
    }
}
