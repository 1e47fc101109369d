//! Rings: the ranks that share one sequence for context parallelism (lighthouse.h, docs/spec.md
//! section 8). A plan binds to one rank of a ring with [`PlanBuilder::ring`] and keeps an `Arc`
//! of it, so the C rule "destroy bound plans before the ring" holds by construction.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use lighthouse_sys as sys;

use crate::context::Context;
use crate::error::{check, Error, Result, Status};
use crate::LIVE_RINGS;

#[allow(unused_imports)] // for the doc links
use crate::plan::PlanBuilder;

/// Bytes of an NCCL unique id.
pub const NCCL_UNIQUE_ID_BYTES: usize = sys::NCCL_UNIQUE_ID_BYTES;

/// An NCCL unique id from [`Context::nccl_unique_id`]: one rank makes it and sends the bytes to
/// the others (by whatever means the program has), which all pass it to [`Ring::nccl_from_id`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NcclUniqueId(pub [u8; NCCL_UNIQUE_ID_BYTES]);

impl std::fmt::Debug for NcclUniqueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NcclUniqueId({:02x?}..)", &self.0[..8])
    }
}

/// What a ring runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingKind {
    /// Ranks inside this process, one thread per rank (`lh_ring_create_local`).
    Local,
    /// An NCCL communicator (`lh_ring_create_nccl`, `lh_ring_create_nccl_from_id`).
    Nccl,
}

/// An `lh_ring`, shared behind an [`Arc`] and destroyed when the last reference goes (the plans
/// bound to it hold one, so it outlives them). An NCCL ring holds an `Arc` of the context it was
/// made on, which it must not outlive.
///
/// Threading: `Send` and `Sync`. The ranks of a local ring run from different threads at the same
/// time, each with its own plan bound to the one ring; the C side locks what they share (the
/// rendezvous and the binding, `runtime/ring_local.c` and `lh_plan_set_ring`; the count of bound
/// plans is atomic). Plans bound to it stay `Send`.
pub struct Ring {
    raw: NonNull<sys::lh_ring>,
    kind: RingKind,
    world: Option<usize>,
    /// Dropped after the C ring (Drop runs first).
    _context: Option<Arc<Context>>,
}

// SAFETY: see the type's documentation: the library locks a ring's shared state internally, and
// a ring has no thread affinity.
unsafe impl Send for Ring {}
// SAFETY: as above; every method takes `&self` and only passes the handle to the library.
unsafe impl Sync for Ring {}

/// Takes ownership of a handle a create call returned with LH_OK.
fn adopt(
    raw: *mut sys::lh_ring,
    kind: RingKind,
    world: Option<usize>,
    context: Option<Arc<Context>>,
) -> Result<Arc<Ring>> {
    let raw = NonNull::new(raw).ok_or_else(|| {
        Error::new(
            Status::Internal,
            "a ring create call returned LH_OK and a NULL ring",
        )
    })?;
    LIVE_RINGS.fetch_add(1, Ordering::SeqCst);
    Ok(Arc::new(Ring {
        raw,
        kind,
        world,
        _context: context,
    }))
}

fn to_c_int(name: &str, value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| {
        Error::new(
            Status::InvalidValue,
            format!("{name} = {value} does not fit in a C int"),
        )
    })
}

impl Ring {
    /// A ring of `world` ranks inside this process. Each rank's plan must be run from its own
    /// thread, all ranks at the same time (they meet inside `lh_forward` / `lh_backward`).
    pub fn local(world: usize) -> Result<Arc<Ring>> {
        let world_c = to_c_int("world", world)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid out pointer; nothing is kept on error.
        check(unsafe { sys::lh_ring_create_local(world_c, &mut raw) })?;
        adopt(raw, RingKind::Local, Some(world), None)
    }

    /// A ring over the caller's NCCL communicator (CUDA contexts); world and rank come from it.
    ///
    /// # Safety
    /// `nccl_comm` must be a live `ncclComm_t` of the context's device that outlives the ring and
    /// is not used by other code while plans bound to the ring run.
    pub unsafe fn nccl(context: &Arc<Context>, nccl_comm: *mut c_void) -> Result<Arc<Ring>> {
        let mut raw = std::ptr::null_mut();
        // Reads only what never changes of the context (its backend and device state).
        check(sys::lh_ring_create_nccl(
            context.as_raw(),
            nccl_comm,
            &mut raw,
        ))?;
        adopt(raw, RingKind::Nccl, None, Some(Arc::clone(context)))
    }

    /// A ring over an NCCL communicator the library creates from `id` (and destroys with the
    /// ring). Collective: every rank calls it at the same time with its own `rank`. It does not
    /// take the context's lock (a collective must not wait on another thread's use of it).
    pub fn nccl_from_id(
        context: &Arc<Context>,
        id: &NcclUniqueId,
        rank: usize,
        world: usize,
    ) -> Result<Arc<Ring>> {
        let (rank_c, world_c) = (to_c_int("rank", rank)?, to_c_int("world", world)?);
        let mut raw = std::ptr::null_mut();
        // SAFETY: live context, a 128-byte id, valid out pointer.
        check(unsafe {
            sys::lh_ring_create_nccl_from_id(
                context.as_raw(),
                id.0.as_ptr().cast(),
                rank_c,
                world_c,
                &mut raw,
            )
        })?;
        adopt(raw, RingKind::Nccl, Some(world), Some(Arc::clone(context)))
    }

    pub fn kind(&self) -> RingKind {
        self.kind
    }

    /// Ranks of the ring, when known here (a ring over a caller's communicator takes its world
    /// from the communicator: read `PlanInfo::world` of a plan bound to it).
    pub fn world(&self) -> Option<usize> {
        self.world
    }

    /// The raw handle, for calls this crate does not wrap. It stays owned by `self`.
    pub fn as_raw(&self) -> *mut sys::lh_ring {
        self.raw.as_ptr()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: live handle; every plan bound to it held an Arc of it and is already gone, so
        // the library's "plans first" rule (LH_ERROR_BAD_STATE otherwise) holds.
        unsafe { sys::lh_ring_destroy(self.raw.as_ptr()) };
        LIVE_RINGS.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("kind", &self.kind)
            .field("world", &self.world)
            .finish()
    }
}

impl Context {
    /// A new NCCL unique id (CUDA contexts) for [`Ring::nccl_from_id`].
    pub fn nccl_unique_id(&self) -> Result<NcclUniqueId> {
        let mut id = NcclUniqueId([0; NCCL_UNIQUE_ID_BYTES]);
        // It may load NCCL into the context's backend state: serialized like other changes.
        let _lock = self.lock();
        // SAFETY: live context, 128 writable bytes.
        check(unsafe { sys::lh_nccl_get_unique_id(self.as_raw(), id.0.as_mut_ptr().cast()) })?;
        Ok(id)
    }
}
