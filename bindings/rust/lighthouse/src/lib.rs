//! Safe Rust API of liblighthouse: Lighthouse attention (and dense causal attention) as one
//! forward and one backward call, on host slices, on a framework's device memory, or as an
//! autograd op.
//!
//! ```no_run
//! use lighthouse::{Context, Result};
//!
//! fn main() -> Result<()> {
//!     let ctx = Context::cpu()?;
//!     let mut plan = ctx.plan().seq_len(2048).heads(2).head_dim(32)
//!         .levels(2).pooling(4).topk(128).build()?;
//!     let n = plan.info().q_len();            // B*N*H*D, layout [B, N, H, D]
//!     let (q, k, v) = (vec![0.1f32; n], vec![0.2f32; n], vec![0.3f32; n]);
//!     let mut out = vec![0f32; n];
//!     let mut saved = plan.new_saved();
//!     plan.forward(&q, &k, &v, &mut out, &mut saved)?;
//!     let dout = vec![1f32; n];
//!     let (mut dq, mut dk, mut dv) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
//!     plan.backward(&q, &k, &v, Some(&out), &dout, &saved, &mut dq, &mut dk, &mut dv)?;
//!     Ok(())
//! }
//! ```
//!
//! Three levels, each on the one below:
//! - [`AttentionOp`]: forward returns the output and a [`ForwardState`] that owns `saved`
//!   (memory from your [`Allocator`]); backward takes the state. For autograd frameworks.
//! - [`Plan::forward_device`] / [`Plan::backward_device`]: any memory that implements
//!   [`DeviceMemory`] (a framework's device storage, in a few lines), on a [`Stream`], every
//!   buffer checked against the plan (length, device, alignment, dtype) before C sees it.
//!   [`Plan::forward`] / [`Plan::backward`] are the same on `f32` host slices for CPU plans.
//! - `unsafe` `*_raw` entry points: raw pointers, one per C function.
//!
//! Ownership: constructors return `Arc<Context>` and `Arc<Ring>`; a [`Plan`] holds an `Arc` of
//! its context (and ring), so it has no lifetime parameter and the C rule "destroy plans before
//! their context and ring" holds by construction. Handles free themselves on drop.
//!
//! Threading (lighthouse.h: handles are not internally locked; use one plan from one thread at
//! a time; different plans and contexts may be used concurrently):
//! - [`Context`]: `Send + Sync`. Changes of the context (option setters, creating, finalizing
//!   and destroying its plans) take its lock; plans of one context run concurrently.
//! - [`Plan`]: `Send`, not `Sync`: it moves between threads, and every call that runs it takes
//!   `&mut self`. Share one through a `Mutex`, as [`AttentionOp`] (`Send + Sync`) does.
//! - [`Ring`]: `Send + Sync` (the C side locks what its ranks share).
//!
//! ```
//! fn shared<T: Send + Sync + 'static>() {}
//! fn moved<T: Send + 'static>() {}
//! shared::<std::sync::Arc<lighthouse::Context>>();
//! shared::<std::sync::Arc<lighthouse::Ring>>();
//! shared::<lighthouse::AttentionOp<lighthouse::HostAllocator>>();
//! moved::<lighthouse::Plan>();
//! // A context in a static, and a struct that owns a plan (and so its context):
//! static CONTEXT: std::sync::OnceLock<std::sync::Arc<lighthouse::Context>> =
//!     std::sync::OnceLock::new();
//! struct MyOp { plan: std::sync::Mutex<lighthouse::Plan> }
//! shared::<MyOp>();
//! ```
//! ```compile_fail
//! fn shared<T: Sync>() {}
//! shared::<lighthouse::Plan>();
//! ```
//!
//! The dtype a builder leaves unset follows the backend: `BFloat16` on CUDA, `Float32` on the
//! CPU (the library's own default, fp32, is a dtype only the CPU backend runs).

mod context;
mod device;
mod error;
mod hooks;
mod host;
mod info;
mod memory;
mod op;
mod plan;
mod raw;
mod ring;
mod types;

use std::sync::atomic::{AtomicUsize, Ordering};

pub use context::Context;
pub use error::{status_string, Error, Result, Status};
pub use hooks::{AttentionBackwardCall, AttentionForwardCall};
pub use host::{HostBuffer, Saved};
pub use lighthouse_sys as sys;
pub use memory::{Device, DeviceMemory, Stream};
pub use op::{Allocator, AttentionOp, BufferKind, ForwardState, Gradients, HostAllocator};
pub use plan::{Plan, PlanBuilder, PlanInfo, Precompiled};
pub use ring::{NcclUniqueId, Ring, RingKind, NCCL_UNIQUE_ID_BYTES};
pub use types::{Backend, Dtype, Layout, Mode, Scorer, Stage};

/// Contexts and plans created through this crate and not yet destroyed.
static LIVE_CONTEXTS: AtomicUsize = AtomicUsize::new(0);
static LIVE_PLANS: AtomicUsize = AtomicUsize::new(0);
static LIVE_RINGS: AtomicUsize = AtomicUsize::new(0);

/// How many C handles this crate holds right now: (contexts, plans). Each create that succeeded
/// counts up and each destroy in `Drop` counts down, so leak tests can assert a return to zero.
pub fn live_handles() -> (usize, usize) {
    (
        LIVE_CONTEXTS.load(Ordering::SeqCst),
        LIVE_PLANS.load(Ordering::SeqCst),
    )
}

/// How many rings this crate holds right now (created and not yet destroyed).
pub fn live_rings() -> usize {
    LIVE_RINGS.load(Ordering::SeqCst)
}

/// The loaded library's version as MAJOR*10000 + MINOR*100 + PATCH.
pub fn version_number() -> i32 {
    // SAFETY: no arguments, no preconditions.
    unsafe { sys::lh_version_number() }
}

/// The loaded library's version as "MAJOR.MINOR.PATCH".
pub fn version_string() -> String {
    // SAFETY: returns static storage, never NULL.
    unsafe { error::cstr_to_string(sys::lh_version_string()) }
}

/// Whether the loaded library is the version these bindings were written against.
pub fn version_matches() -> bool {
    version_number() == sys::LH_VERSION_NUMBER
}
