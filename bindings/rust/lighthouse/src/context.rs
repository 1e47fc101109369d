//! Context: one device (or the CPU) with its driver state and kernel cache.

use std::ffi::CString;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};

use lighthouse_sys as sys;

use crate::error::{check, Error, Result, Status};
use crate::plan::PlanBuilder;
use crate::types::Backend;
use crate::LIVE_CONTEXTS;

/// An `lh_context`, destroyed on drop.
///
/// Threading: `Send` (a context may be created, used and destroyed on any thread) but not
/// `Sync`. The header promises that *different* plans and contexts may be used concurrently, but
/// not that two threads may call into the *same* context at once (`lh_plan_create`, the option
/// setters), and the library does not lock it. Plans borrow their context, so the borrow checker
/// also enforces "plans must be destroyed first", and the setters (`&mut self`) can only run
/// while no plan exists.
///
/// Plans may be dropped on other threads (they are `Send`), and `lh_plan_create` and
/// `lh_plan_destroy` both update the C context's count of live plans without a lock, so every
/// plan creation and destruction of one context is serialized by `plan_lock`.
pub struct Context {
    raw: NonNull<sys::lh_context>,
    backend: Backend,
    plan_lock: Mutex<()>,
}

// SAFETY: the C side keeps no thread affinity for a context (see the header's threading note);
// exclusive access is all it needs, which moving a value preserves.
unsafe impl Send for Context {}

impl Context {
    /// Creates a context on `backend`. `device` is the CUDA ordinal (ignored by the CPU backend).
    pub fn new(backend: Backend, device: i32) -> Result<Context> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: `raw` is a valid out pointer; on error the library writes nothing we keep.
        check(unsafe { sys::lh_context_create(backend.to_raw(), device, &mut raw) })?;
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
            plan_lock: Mutex::new(()),
        };
        let mut actual = 0;
        // SAFETY: the handle is live and `actual` is a valid out pointer.
        check(unsafe { sys::lh_context_get_backend(context.raw.as_ptr(), &mut actual) })?;
        context.backend = Backend::from_raw(actual)?;
        Ok(context)
    }

    /// A context on the CPU reference backend.
    pub fn cpu() -> Result<Context> {
        Context::new(Backend::Cpu, 0)
    }

    /// The backend the context runs on (never `Auto`).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// CPU worker threads; 0 means all online cores.
    pub fn set_num_threads(&mut self, threads: usize) -> Result<()> {
        let value = crate::plan::to_i64("num_threads", threads)?;
        // SAFETY: live handle, exclusive borrow.
        check(unsafe {
            sys::lh_context_set_i64(self.raw.as_ptr(), sys::LH_CONTEXT_NUM_THREADS, value)
        })
    }

    /// Whether compiled kernels are kept in the on-disk cache.
    pub fn set_cache_enabled(&mut self, enabled: bool) -> Result<()> {
        // SAFETY: live handle, exclusive borrow.
        check(unsafe {
            sys::lh_context_set_i64(
                self.raw.as_ptr(),
                sys::LH_CONTEXT_CACHE_ENABLED,
                enabled as i64,
            )
        })
    }

    /// The directory of the on-disk kernel cache.
    pub fn set_cache_dir(&mut self, dir: impl AsRef<Path>) -> Result<()> {
        let text = dir.as_ref().to_str().ok_or_else(|| {
            Error::new(
                Status::InvalidValue,
                format!("cache dir {:?} is not valid UTF-8", dir.as_ref()),
            )
        })?;
        let c_text = CString::new(text).map_err(|_| {
            Error::new(
                Status::InvalidValue,
                format!("cache dir {text:?} contains a NUL byte"),
            )
        })?;
        // SAFETY: live handle, exclusive borrow, NUL-terminated string alive for the call.
        check(unsafe {
            sys::lh_context_set_str(
                self.raw.as_ptr(),
                sys::LH_CONTEXT_CACHE_DIR,
                c_text.as_ptr(),
            )
        })
    }

    /// Starts a plan on this context; see [`PlanBuilder`].
    pub fn plan(&self) -> PlanBuilder<'_> {
        PlanBuilder::new(self)
    }

    /// Held while a plan of this context is created, finalized or destroyed. A panic while it
    /// was held cannot leave the C state half-changed (C calls do not unwind), so a poisoned lock
    /// is simply taken over.
    pub(crate) fn lock_plans(&self) -> MutexGuard<'_, ()> {
        self.plan_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The raw handle, for calls this crate does not wrap. It stays owned by `self`.
    pub fn as_raw(&self) -> *mut sys::lh_context {
        self.raw.as_ptr()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the handle is live and every plan borrowing it is already gone. The status is
        // ignored: destroy cannot fail on a valid handle, and a destructor has no way to report.
        unsafe { sys::lh_context_destroy(self.raw.as_ptr()) };
        LIVE_CONTEXTS.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("backend", &self.backend)
            .finish()
    }
}
