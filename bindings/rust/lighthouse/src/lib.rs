//! Safe Rust API of liblighthouse: Lighthouse attention (and dense causal attention) as one
//! forward and one backward call.
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
//! Handles: [`Context`] and [`Plan`] free their C handles on drop; a plan borrows its context.
//! Threading: both are `Send`, neither is `Sync` (the C handles are not locked):
//!
//! ```compile_fail
//! fn shared<T: Sync>() {}
//! shared::<lighthouse::Plan<'static>>();
//! ```
//! ```compile_fail
//! fn shared<T: Sync>() {}
//! shared::<lighthouse::Context>();
//! ```
//!
//! A [`Ring`] (context parallelism) is `Send` and `Sync`: the ranks of a local ring share it
//! from their own threads, each with its own plan bound to it, which stays `Send`:
//!
//! ```
//! fn shared<T: Sync + Send>() {}
//! fn moved<T: Send>() {}
//! shared::<lighthouse::Ring<'static>>();
//! moved::<lighthouse::Plan<'static>>();
//! ```
//!
//! GPU plans take device pointers and a `CUstream` through the `unsafe` `*_raw` entry points;
//! CPU plans also take `f32` slices whose lengths are checked against the plan.

mod context;
mod error;
mod hooks;
mod host;
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
pub use plan::{Plan, PlanBuilder, PlanInfo};
pub use ring::{NcclUniqueId, Ring, RingKind, NCCL_UNIQUE_ID_BYTES};
pub use types::{Backend, Dtype, Layout, Mode, Stage};

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
