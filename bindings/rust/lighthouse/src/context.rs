//! Context: one device (or the CPU) with its driver state and kernel cache.

use std::ffi::CString;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use lighthouse_sys as sys;

use crate::error::{check, Error, Result, Status};
use crate::memory::Device;
use crate::plan::PlanBuilder;
use crate::types::Backend;
use crate::LIVE_CONTEXTS;

/// An `lh_context`, shared behind an [`Arc`] and destroyed when the last reference goes.
///
/// Every constructor returns `Arc<Context>`: plans and NCCL rings hold a clone, so the context
/// outlives them (the C rule "destroy plans first") and a plan needs no borrowed lifetime. A
/// framework can keep one in a `static OnceLock<Arc<Context>>` or inside a `'static` op.
///
/// Threading: `Send + Sync`. The C handles are not locked (lighthouse.h: "use one plan from one
/// thread at a time; different plans and contexts may be used concurrently"), and the header
/// does not promise that two threads may change one context at once. So every call that changes
/// the C context or reads its options (the option setters, and the creation, finalization and
/// destruction of its plans) takes this context's lock; everything else that touches the context
/// (its backend, making a ring on it) only reads what never changes. Plans of one context run
/// concurrently on different threads without that lock, as the header allows.
pub struct Context {
    raw: NonNull<sys::lh_context>,
    backend: Backend,
    device: Device,
    lock: Mutex<()>,
}

// SAFETY: the C side keeps no thread affinity for a context (see the header's threading note).
unsafe impl Send for Context {}
// SAFETY: every `&self` method that changes the C context or reads its options holds `lock`
// (see the type's documentation); the rest read fields fixed at creation.
unsafe impl Sync for Context {}

impl Context {
    /// Creates a context on `backend`. `device` is the CUDA ordinal (ignored by the CPU backend).
    /// `Backend::Auto` picks CUDA when a usable GPU is present, else the CPU.
    pub fn new(backend: Backend, device: usize) -> Result<Arc<Context>> {
        let ordinal = i32::try_from(device).map_err(|_| {
            Error::new(
                Status::InvalidValue,
                format!("device = {device} does not fit in a C int"),
            )
        })?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `raw` is a valid out pointer; on error the library writes nothing we keep.
        check(unsafe { sys::lh_context_create(backend.to_raw(), ordinal, &mut raw) })?;
        let raw = NonNull::new(raw).ok_or_else(|| {
            Error::new(
                Status::Internal,
                "lh_context_create returned LH_OK and a NULL context",
            )
        })?;
        LIVE_CONTEXTS.fetch_add(1, Ordering::SeqCst);
        // From here on `Drop` frees the handle, on every path.
        let mut context = Context {
            raw,
            backend: Backend::Cpu,
            device: Device::Cpu,
            lock: Mutex::new(()),
        };
        let mut actual = 0;
        // SAFETY: the handle is live and `actual` is a valid out pointer.
        check(unsafe { sys::lh_context_get_backend(context.raw.as_ptr(), &mut actual) })?;
        context.backend = Backend::from_raw(actual)?;
        if context.backend == Backend::Cuda {
            context.device = Device::Cuda(device);
        }
        Ok(Arc::new(context))
    }

    /// A context on the CPU reference backend.
    pub fn cpu() -> Result<Arc<Context>> {
        Context::new(Backend::Cpu, 0)
    }

    /// A context on CUDA device `device`.
    pub fn cuda(device: usize) -> Result<Arc<Context>> {
        Context::new(Backend::Cuda, device)
    }

    /// The backend the context runs on (never `Auto`).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where its plans' memory must live: `Device::Cuda(ordinal)`, or `Device::Cpu`.
    pub fn device(&self) -> Device {
        self.device
    }

    /// CPU worker threads (the CPU backend's computation, and the compilation of a CUDA plan's
    /// kernels); 0 means all online cores. Takes effect for plans built afterwards.
    pub fn set_num_threads(&self, threads: usize) -> Result<()> {
        let value = crate::plan::to_i64("num_threads", threads)?;
        let _lock = self.lock();
        // SAFETY: live handle; changes of the context are serialized by its lock.
        check(unsafe {
            sys::lh_context_set_i64(self.raw.as_ptr(), sys::LH_CONTEXT_NUM_THREADS, value)
        })
    }

    /// Whether compiled kernels are kept in the on-disk cache (plans built afterwards).
    pub fn set_cache_enabled(&self, enabled: bool) -> Result<()> {
        let _lock = self.lock();
        // SAFETY: as in set_num_threads.
        check(unsafe {
            sys::lh_context_set_i64(
                self.raw.as_ptr(),
                sys::LH_CONTEXT_CACHE_ENABLED,
                enabled as i64,
            )
        })
    }

    /// The directory of the on-disk kernel cache (plans built afterwards).
    pub fn set_cache_dir(&self, dir: impl AsRef<Path>) -> Result<()> {
        let c_text = c_path("cache dir", dir.as_ref())?;
        let _lock = self.lock();
        // SAFETY: as in set_num_threads; the string is alive for the call.
        check(unsafe {
            sys::lh_context_set_str(
                self.raw.as_ptr(),
                sys::LH_CONTEXT_CACHE_DIR,
                c_text.as_ptr(),
            )
        })
    }

    /// Writes a description of this context's GPU to `path` (`lh_context_save_device`: a few kB
    /// of text with its name, compute capability and cuDNN's device properties), for
    /// [`PlanBuilder::precompile_device`] on a machine without that GPU. Needs a CUDA context
    /// (`Status::Unsupported` otherwise) and cuDNN 9.11 or later; `Status::Io` where the file
    /// cannot be written.
    pub fn save_device(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = c_path("device description path", path.as_ref())?;
        // SAFETY: live handle and a NUL-terminated path alive for the call. No lock: this reads
        // only what the context fixed at creation (its device), never its options.
        check(unsafe { sys::lh_context_save_device(self.raw.as_ptr(), path.as_ptr()) })
    }

    /// Starts a plan on this context; see [`PlanBuilder`]. The plan keeps a clone of the `Arc`.
    pub fn plan(self: &Arc<Self>) -> PlanBuilder {
        PlanBuilder::new(Arc::clone(self))
    }

    /// Held while the context changes: an option is set, or a plan of it is created, finalized
    /// or destroyed. A panic while it was held cannot leave the C state half-changed (C calls do
    /// not unwind), so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The raw handle, for calls this crate does not wrap. It stays owned by `self`; a caller
    /// that changes the context through it must not race with other threads using it.
    pub fn as_raw(&self) -> *mut sys::lh_context {
        self.raw.as_ptr()
    }
}

/// A path as the NUL-terminated text the library takes; `what` names it in the error. A path
/// with a NUL byte cannot be passed, and the crate keeps to UTF-8 paths, so both are refused.
pub(crate) fn c_path(what: &str, path: &Path) -> Result<CString> {
    let text = path.to_str().ok_or_else(|| {
        Error::new(
            Status::InvalidValue,
            format!("{what} {path:?} is not valid UTF-8"),
        )
    })?;
    CString::new(text).map_err(|_| {
        Error::new(
            Status::InvalidValue,
            format!("{what} {text:?} contains a NUL byte"),
        )
    })
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the handle is live and every plan and ring that held an Arc of it is gone. The
        // status is ignored: destroy cannot fail then, and a destructor has no way to report.
        unsafe { sys::lh_context_destroy(self.raw.as_ptr()) };
        LIVE_CONTEXTS.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("backend", &self.backend)
            .field("device", &self.device)
            .finish()
    }
}
