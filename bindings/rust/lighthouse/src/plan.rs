//! Plan: one attention configuration, validated and compiled once, then run many times.
//! This file holds the builder (ring binding, hooks and kernel precompilation included) and the
//! handle; its sizes are in `info.rs`. The raw-pointer entry points (unsafe: any backend, device
//! pointers and a stream) are in `raw.rs`, the safe host-slice entry points in `host.rs`, those on
//! a framework's memory in `device.rs`.

use std::ffi::{c_void, CString};
use std::mem::ManuallyDrop;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lighthouse_sys as sys;

use crate::context::{c_path, Context};
use crate::error::{check, Error, Result, Status};
use crate::hooks::{self, AttentionBackwardCall, AttentionForwardCall, HookState};
use crate::host::HostBuffer;
pub use crate::info::PlanInfo;
use crate::ring::Ring;
use crate::types::{Backend, Dtype, Layout, Mode, Scorer, Stage};
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
/// finalizes the C plan. Unset parameters keep the library's defaults (lighthouse.h, lh_param),
/// except the dtype, which follows the backend: `BFloat16` on CUDA, `Float32` on the CPU (the
/// library's own default, fp32, is a dtype the CUDA backend does not run). Every configuration
/// error is reported by `build`, with the library's message.
pub struct PlanBuilder {
    context: Arc<Context>,
    ints: Vec<(sys::lh_param, &'static str, i64)>,
    sizes: Vec<(sys::lh_param, &'static str, usize)>,
    softmax_scale: Option<f64>,
    ring: Option<(Arc<Ring>, usize)>,
    hooks: Option<HookSetting>,
}

/// The hooks a builder will set: Rust closures, or C function pointers with their user data.
enum HookSetting {
    Closures(Box<HookState>),
    Raw {
        forward: sys::lh_attention_forward_hook,
        backward: sys::lh_attention_backward_hook,
        user_data: *mut c_void,
    },
}

impl std::fmt::Debug for PlanBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanBuilder")
            .field("ints", &self.ints)
            .field("sizes", &self.sizes)
            .field("softmax_scale", &self.softmax_scale)
            .field("ring", &self.ring)
            .field(
                "hooks",
                &self.hooks.as_ref().map(|h| match h {
                    HookSetting::Closures(_) => "closures",
                    HookSetting::Raw { .. } => "raw",
                }),
            )
            .finish()
    }
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

impl PlanBuilder {
    pub(crate) fn new(context: Arc<Context>) -> Self {
        PlanBuilder {
            context,
            ints: Vec::new(),
            sizes: Vec::new(),
            softmax_scale: None,
            ring: None,
            hooks: None,
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

    /// Element type; default `BFloat16` on a CUDA context, `Float32` (the CPU backend's only
    /// dtype) on the CPU.
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

    /// `true`: `saved` keeps only the selection, O_sel and the softmax statistics, and the
    /// backward gathers q/k/v of the sub-sequence again (less memory, one more read of q, k, v).
    /// Default `false`: the backward reuses the rows the forward gathered.
    pub fn recompute_subseq(mut self, recompute: bool) -> Self {
        self.ints.push((
            sys::LH_PARAM_RECOMPUTE_SUBSEQ,
            "recompute_subseq",
            recompute as i64,
        ));
        self
    }

    /// `true`: the CUDA backend records an event before and after each stage of every forward
    /// and backward, and `Plan::stage_ms` reads the times back (profiling; a few microseconds
    /// per call). The CPU backend and ring or hook plans refuse it at `build`. Default `false`.
    pub fn stage_timing(mut self, timing: bool) -> Self {
        self.ints
            .push((sys::LH_PARAM_STAGE_TIMING, "stage_timing", timing as i64));
        self
    }

    /// How the pyramid is ranked (Lighthouse mode); default `Scorer::Norm`. A dilated scorer
    /// also sets its dilation; `Scorer::External` plans run `Plan::forward_with_scores`.
    pub fn scorer(mut self, scorer: Scorer) -> Self {
        self.ints
            .push((sys::LH_PARAM_SCORER, "scorer", scorer.to_raw() as i64));
        if let Scorer::Dilated { dilation } = scorer {
            self.sizes
                .push((sys::LH_PARAM_DILATION, "dilation", dilation));
        }
        self
    }

    /// Softmax scale, > 0; default 1/sqrt(head_dim).
    pub fn softmax_scale(mut self, scale: f64) -> Self {
        self.softmax_scale = Some(scale);
        self
    }

    /// Binds the plan to rank `rank` of `ring` (context parallelism; for an NCCL ring, the
    /// communicator's own rank). `seq_len` stays the whole sequence; the plan's q, k, v, out and
    /// gradients become this rank's shard of `info().local_seq_len` tokens (chunk `rank`, then
    /// chunk `2*world-1-rank`). The plan keeps a clone of the `Arc`, so the ring outlives it.
    pub fn ring(mut self, ring: &Arc<Ring>, rank: usize) -> Self {
        self.ring = Some((Arc::clone(ring), rank));
        self
    }

    /// Replaces the library's attention step by Rust closures (a framework's own attention,
    /// its own ring...). `lh_forward` calls `forward` and `lh_backward` calls `backward` with an
    /// [`AttentionForwardCall`] / [`AttentionBackwardCall`]: the gathered chunk-major
    /// sub-sequence and the outputs to fill. The plan owns the closures. An `Err` the closure
    /// returns, or a panic (caught before it reaches C), makes that forward/backward fail with
    /// the closure's error (a panic: `Status::Internal` and the panic's message). The closures
    /// run on the thread that runs the plan, so they are `Send`; they are `'static` because the
    /// plan is (share state with them through an `Arc`).
    pub fn attention_hooks<F, B>(mut self, forward: F, backward: B) -> Self
    where
        F: FnMut(&mut AttentionForwardCall<'_>) -> Result<()> + Send + 'static,
        B: FnMut(&mut AttentionBackwardCall<'_>) -> Result<()> + Send + 'static,
    {
        self.hooks = Some(HookSetting::Closures(Box::new(HookState::new(
            Box::new(forward),
            Box::new(backward),
        ))));
        self
    }

    /// Sets C hooks directly (`lh_plan_set_attention_hooks`): both `Some`, or both `None` to
    /// clear them.
    ///
    /// # Safety
    /// The functions must follow the hook contract of lighthouse.h and never unwind; `user_data`
    /// must stay valid, and usable from whichever thread runs the plan, for the plan's lifetime.
    pub unsafe fn attention_hooks_raw(
        mut self,
        forward: sys::lh_attention_forward_hook,
        backward: sys::lh_attention_backward_hook,
        user_data: *mut c_void,
    ) -> Self {
        self.hooks = Some(HookSetting::Raw {
            forward,
            backward,
            user_data,
        });
        self
    }

    /// Creates the C plan, applies the parameters in the order they were set, and finalizes it.
    /// On any error the half-built plan is destroyed before returning.
    pub fn build(self) -> Result<Plan> {
        match self.run(Finish::Build)? {
            Outcome::Plan(plan) => Ok(*plan),
            _ => unreachable!("a build finalizes"),
        }
    }

    /// Compiles the GPU kernels that CUDA plans of these parameters load on `chip` ("sm_90" for
    /// H100/H200, "sm_100a" for B200) into the context's on-disk kernel cache, without a GPU
    /// and without finalizing (`lh_plan_precompile`): on a login node or in a container build,
    /// with a CPU context that has the training job's cache directory. Returns how many kernels
    /// were compiled now (the others were cached already). The dtype defaults to `BFloat16`, the
    /// CUDA default, on any context; `heads` and `head_dim` must be set. Fails with
    /// `Status::BadState` where the context's disk cache is disabled.
    pub fn precompile(self, chip: &str) -> Result<usize> {
        let chip = CString::new(chip).map_err(|_| {
            Error::new(
                Status::InvalidValue,
                format!("chip {chip:?} contains a NUL byte"),
            )
        })?;
        match self.run(Finish::Precompile(chip))? {
            Outcome::Compiled(count) => Ok(count),
            _ => unreachable!("a precompile compiles kernels only"),
        }
    }

    /// [`precompile`](PlanBuilder::precompile) for the GPU described in `device_path` (written
    /// on that GPU by [`Context::save_device`]), and with it cuDNN's attention plans, which
    /// building such a plan there would otherwise compile (seconds per sequence length):
    /// `lh_plan_precompile_device`. Needs no GPU; the cuDNN plans go into the context's cache
    /// directory beside the kernels. Unlike `precompile` it needs every parameter `build` needs
    /// (the attention plans depend on `seq_len`, `batch`, `topk`, the layout...) and runs
    /// `build`'s checks, with their errors; the dtype defaults to `BFloat16` as there.
    /// `Status::Io` where the file cannot be read, `Status::InvalidValue` where it is not a
    /// description or was written with another cuDNN version.
    pub fn precompile_device(self, device_path: impl AsRef<Path>) -> Result<Precompiled> {
        let path = c_path("device description path", device_path.as_ref())?;
        match self.run(Finish::PrecompileDevice(path))? {
            Outcome::Device(built) => Ok(built),
            _ => unreachable!("a device precompile neither finalizes nor stops at kernels"),
        }
    }

    /// Creates the C plan and applies the parameters, then finalizes it or precompiles for it.
    fn run(self, finish: Finish) -> Result<Outcome> {
        // Everything the builder holds outlives the guard below (locals drop in reverse order),
        // so a failing `?` destroys the half-built C plan while its ring is still alive, and
        // under the context's lock.
        let PlanBuilder {
            context,
            ints,
            sizes,
            softmax_scale,
            ring,
            hooks: hook_setting,
        } = self;
        let lock = context.lock();
        let mut raw = std::ptr::null_mut();
        // SAFETY: live context (held by the Arc), valid out pointer.
        check(unsafe { sys::lh_plan_create(context.as_raw(), &mut raw) })?;
        let raw = NonNull::new(raw).ok_or_else(|| {
            Error::new(
                Status::Internal,
                "lh_plan_create returned LH_OK and a NULL plan",
            )
        })?;
        // The guard owns the handle from here: every `?` below destroys it.
        let mut guard = RawPlan::adopt(raw);

        for &(param, name, value) in &sizes {
            let value = to_i64(name, value)?;
            // SAFETY: live, unfinalized plan owned by the guard.
            check(unsafe { sys::lh_plan_set_i64(guard.ptr(), param, value) })?;
        }
        let dtype_set = ints.iter().any(|&(p, _, _)| p == sys::LH_PARAM_DTYPE);
        let for_cuda = matches!(finish, Finish::Precompile(_) | Finish::PrecompileDevice(_))
            || context.backend() == Backend::Cuda;
        if !dtype_set && for_cuda {
            let bf16 = Dtype::BFloat16.to_raw() as i64;
            // SAFETY: as above.
            check(unsafe { sys::lh_plan_set_i64(guard.ptr(), sys::LH_PARAM_DTYPE, bf16) })?;
        }
        for &(param, _, value) in &ints {
            // SAFETY: as above.
            check(unsafe { sys::lh_plan_set_i64(guard.ptr(), param, value) })?;
        }
        if let Some(scale) = softmax_scale {
            // SAFETY: as above.
            check(unsafe {
                sys::lh_plan_set_f64(guard.ptr(), sys::LH_PARAM_SOFTMAX_SCALE, scale)
            })?;
        }
        if let Some((ring, rank)) = &ring {
            let rank = i32::try_from(*rank).map_err(|_| {
                Error::new(
                    Status::InvalidValue,
                    format!("rank = {rank} does not fit in a C int"),
                )
            })?;
            // SAFETY: as above; the plan keeps the ring's Arc, so the ring outlives it.
            check(unsafe { sys::lh_plan_set_ring(guard.ptr(), ring.as_raw(), rank) })?;
        }
        // The closures' state is owned through a raw pointer (the C plan holds it as user_data)
        // and freed by the guard after the C plan is destroyed.
        match hook_setting {
            Some(HookSetting::Closures(state)) => {
                let state = Box::into_raw(state);
                guard.hooks = state;
                // SAFETY: live, unfinalized plan; `state` lives as long as the C plan.
                check(unsafe {
                    sys::lh_plan_set_attention_hooks(
                        guard.ptr(),
                        Some(hooks::forward_trampoline),
                        Some(hooks::backward_trampoline),
                        state.cast(),
                    )
                })?;
            }
            Some(HookSetting::Raw {
                forward,
                backward,
                user_data,
            }) => {
                // SAFETY: the caller of attention_hooks_raw promised the hook contract.
                check(unsafe {
                    sys::lh_plan_set_attention_hooks(guard.ptr(), forward, backward, user_data)
                })?;
            }
            None => {}
        }
        if let Finish::Precompile(chip) = &finish {
            let mut compiled = 0i64;
            // SAFETY: live plan, NUL-terminated chip name and out pointer alive for the call;
            // the context's lock covers its options (the cache directory) being read.
            check(unsafe { sys::lh_plan_precompile(guard.ptr(), chip.as_ptr(), &mut compiled) })?;
            return Ok(Outcome::Compiled(usize::try_from(compiled).unwrap_or(0)));
        }
        if let Finish::PrecompileDevice(path) = &finish {
            // SAFETY: as for Finish::Precompile.
            let built = unsafe { precompile_device_raw(guard.ptr(), path) }?;
            return Ok(Outcome::Device(built));
        }
        // SAFETY: as above.
        check(unsafe { sys::lh_plan_finalize(guard.ptr()) })?;
        let info = PlanInfo::read(guard.ptr())?;
        if !guard.hooks.is_null() {
            // SAFETY: no hook runs before finalize, and none runs now (we hold the only handle).
            unsafe { (*guard.hooks).info = Some(info) };
        }
        drop(lock);

        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Outcome::Plan(Box::new(Plan {
            raw: ManuallyDrop::new(guard),
            _ring: ring.map(|(ring, _)| ring),
            context,
            info,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            workspace: None,
        })))
    }
}

/// What `PlanBuilder::run` does once the parameters are set.
enum Finish {
    Build,
    Precompile(CString),
    PrecompileDevice(CString),
}

enum Outcome {
    Plan(Box<Plan>),
    Compiled(usize),
    Device(Precompiled),
}

/// What [`PlanBuilder::precompile_device`] and [`Plan::precompile_device`] built now; what the
/// context's cache directory held already is not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Precompiled {
    /// GPU kernels compiled into the kernel cache.
    pub kernels: usize,
    /// cuDNN execution plans built into the plan store.
    pub cudnn_plans: usize,
}

/// `lh_plan_precompile_device` on `plan` with the description at `path`.
///
/// # Safety
/// `plan` is a live plan that no other thread uses during the call, and its context's lock is
/// held (the context's options, its cache directory, are read).
unsafe fn precompile_device_raw(plan: *mut sys::lh_plan, path: &CString) -> Result<Precompiled> {
    let (mut kernels, mut cudnn_plans) = (0i64, 0i64);
    // The caller's promise; NUL-terminated path and out pointers alive for the call.
    check(sys::lh_plan_precompile_device(
        plan,
        path.as_ptr(),
        &mut kernels,
        &mut cudnn_plans,
    ))?;
    Ok(Precompiled {
        kernels: usize::try_from(kernels).unwrap_or(0),
        cudnn_plans: usize::try_from(cudnn_plans).unwrap_or(0),
    })
}

/// Owns an `lh_plan` handle and destroys it on drop (also for plans that never finalized),
/// then the state of its hook closures, if any (the C plan may call them until it is gone).
/// Dropped only while its context's lock is held (see `Context::lock`).
struct RawPlan {
    raw: NonNull<sys::lh_plan>,
    /// From `Box::into_raw`, or NULL.
    hooks: *mut HookState,
}

impl RawPlan {
    fn adopt(raw: NonNull<sys::lh_plan>) -> RawPlan {
        LIVE_PLANS.fetch_add(1, Ordering::SeqCst);
        RawPlan {
            raw,
            hooks: std::ptr::null_mut(),
        }
    }

    fn ptr(&self) -> *mut sys::lh_plan {
        self.raw.as_ptr()
    }
}

impl Drop for RawPlan {
    fn drop(&mut self) {
        // SAFETY: live handle owned by self; destroy cannot fail on a valid handle.
        unsafe { sys::lh_plan_destroy(self.raw.as_ptr()) };
        LIVE_PLANS.fetch_sub(1, Ordering::SeqCst);
        if !self.hooks.is_null() {
            // SAFETY: made by Box::into_raw in build and freed only here, after the C plan that
            // could call back with it is gone.
            drop(unsafe { Box::from_raw(self.hooks) });
        }
    }
}

/// A finalized `lh_plan`, destroyed on drop. It owns an `Arc` of its context (and of its ring),
/// so it has no lifetime parameter and can live in a `'static` framework op.
///
/// Threading: `Send` but not `Sync`. The header says plans are not internally locked ("use one
/// plan from one thread at a time") while different plans may run concurrently, so a plan may
/// move to another thread but never be shared; every call that runs it takes `&mut self`. To
/// share one plan between threads, put it in a `Mutex` (as [`AttentionOp`](crate::AttentionOp)
/// does).
pub struct Plan {
    /// Dropped by `Plan::drop` under the context's lock, before the fields below.
    raw: ManuallyDrop<RawPlan>,
    /// The ring the plan is bound to, kept alive until the C plan is gone.
    _ring: Option<Arc<Ring>>,
    context: Arc<Context>,
    info: PlanInfo,
    /// Distinguishes plans, so `Saved` can refuse a buffer written by another plan.
    pub(crate) id: u64,
    /// Host workspace of the safe entry points, allocated on first use.
    pub(crate) workspace: Option<HostBuffer>,
}

// SAFETY: the header allows a plan to be used from any thread, one thread at a time; `Plan` is
// not `Sync` and all running calls take `&mut self`. What it changes of its context (the C
// context's plan count, in lh_plan_destroy) is changed under the context's lock. Hook closures
// are `Send`.
unsafe impl Send for Plan {}

impl Drop for Plan {
    fn drop(&mut self) {
        let _lock = self.context.lock();
        // SAFETY: dropped exactly once, here, under the plan lock as RawPlan requires.
        unsafe { ManuallyDrop::drop(&mut self.raw) };
    }
}

impl Plan {
    /// Parameters and sizes of this plan.
    pub fn info(&self) -> &PlanInfo {
        &self.info
    }

    /// The context the plan runs on.
    pub fn context(&self) -> &Arc<Context> {
        &self.context
    }

    /// A number that tells this plan from every other plan of this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// GPU milliseconds of `stage` in this plan's most recent forward (forward stages) or
    /// backward (backward stages); needs `stage_timing(true)`. Waits until the stage has
    /// finished on the GPU. An error (`Status::BadState`) for a stage that call did not run.
    pub fn stage_ms(&self, stage: Stage) -> Result<f64> {
        let mut ms = 0.0f64;
        // SAFETY: the handle is valid for `self`'s life; `ms` outlives the call.
        check(unsafe { sys::lh_plan_get_stage_ms(self.raw.ptr(), stage.to_raw(), &mut ms) })?;
        Ok(ms)
    }

    /// Compiles this plan's GPU kernels for `chip` into its context's disk cache (see
    /// [`PlanBuilder::precompile`], which needs no finalized plan); the number compiled now.
    pub fn precompile(&mut self, chip: &str) -> Result<usize> {
        let chip = CString::new(chip).map_err(|_| {
            Error::new(
                Status::InvalidValue,
                format!("chip {chip:?} contains a NUL byte"),
            )
        })?;
        let mut compiled = 0i64;
        let _lock = self.context.lock();
        // SAFETY: live plan (exclusive borrow), NUL-terminated chip name, valid out pointer.
        check(unsafe { sys::lh_plan_precompile(self.raw_ptr(), chip.as_ptr(), &mut compiled) })?;
        Ok(usize::try_from(compiled).unwrap_or(0))
    }

    /// This plan's GPU kernels and cuDNN attention plans for the GPU described in `device_path`
    /// into its context's cache directory (see [`PlanBuilder::precompile_device`], which needs
    /// no finalized plan).
    pub fn precompile_device(&mut self, device_path: impl AsRef<Path>) -> Result<Precompiled> {
        let path = c_path("device description path", device_path.as_ref())?;
        let _lock = self.context.lock();
        // SAFETY: live plan (exclusive borrow) and the context's lock held.
        unsafe { precompile_device_raw(self.raw_ptr(), &path) }
    }

    /// The raw handle, for calls this crate does not wrap. It stays owned by `self`.
    pub fn as_raw(&self) -> *mut sys::lh_plan {
        self.raw.ptr()
    }

    /// The C handle, for this crate's entry points.
    pub(crate) fn raw_ptr(&self) -> *mut sys::lh_plan {
        self.raw.ptr()
    }

    /// The result of a call that may have run a hook closure: the closure's own error (or
    /// panic) in place of the library's, which only says that the hook failed.
    pub(crate) fn with_hook_failure(&mut self, result: Result<()>) -> Result<()> {
        if self.raw.hooks.is_null() {
            return result;
        }
        // SAFETY: the hook state lives as long as the plan, and no hook runs now (`&mut self`).
        unsafe { (*self.raw.hooks).result_of(result) }
    }
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan").field("info", &self.info).finish()
    }
}
