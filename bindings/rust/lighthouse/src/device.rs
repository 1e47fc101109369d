//! The safe entry points on a framework's memory: forward and backward over [`DeviceMemory`]
//! on any backend, with every buffer checked against the plan (length, device, alignment,
//! element type) and the stream against the backend before a pointer reaches C.

use std::ffi::c_void;

use crate::error::{Error, Result, Status};
use crate::memory::{check_buffer, check_stream, DeviceMemory, Need, Stream};
use crate::plan::{Plan, PlanInfo};

/// Bytes of q, out, dout and dq (B*N_local*H*D elements in the plan's dtype).
pub(crate) fn q_bytes(info: &PlanInfo) -> usize {
    info.q_len() * info.dtype.size()
}

/// Bytes of k, v, dk and dv (B*N_local*Hkv*D elements).
pub(crate) fn kv_bytes(info: &PlanInfo) -> usize {
    info.kv_len() * info.dtype.size()
}

impl Plan {
    /// Checks an input against this plan; its pointer for C.
    fn checked(&self, name: &str, memory: &dyn DeviceMemory, need: Need) -> Result<*mut c_void> {
        let ptr = memory.device_ptr();
        check_buffer(
            self.info(),
            self.context().device(),
            name,
            memory,
            ptr,
            need,
        )
    }

    /// Checks the inputs q, k, v against this plan; their pointers for C.
    fn checked_qkv(
        &self,
        q: &dyn DeviceMemory,
        k: &dyn DeviceMemory,
        v: &dyn DeviceMemory,
    ) -> Result<(*mut c_void, *mut c_void, *mut c_void)> {
        let info = self.info();
        let (qb, kvb) = (q_bytes(info), kv_bytes(info));
        Ok((
            self.checked("q", q, Need::Tensor(qb))?,
            self.checked("k", k, Need::Tensor(kvb))?,
            self.checked("v", v, Need::Tensor(kvb))?,
        ))
    }

    /// Checks an output against this plan; its pointer for C, for writing.
    fn checked_mut(
        &self,
        name: &str,
        memory: &mut dyn DeviceMemory,
        need: Need,
    ) -> Result<*mut c_void> {
        let ptr = memory.device_ptr_mut();
        check_buffer(
            self.info(),
            self.context().device(),
            name,
            memory,
            ptr,
            need,
        )
    }

    /// A workspace of at least `bytes`, or NULL where none is given and none is needed.
    fn checked_workspace(
        &self,
        workspace: Option<&mut dyn DeviceMemory>,
        bytes: usize,
    ) -> Result<*mut c_void> {
        match workspace {
            Some(w) => self.checked_mut("workspace", w, Need::AtLeast(bytes)),
            None if bytes == 0 => Ok(std::ptr::null_mut()),
            None => Err(Error::new(
                Status::NullPointer,
                format!("workspace: none given but the plan needs {bytes} bytes"),
            )),
        }
    }

    /// out = attention(q, k, v) on a framework's memory, queued on `stream`.
    ///
    /// q and out hold `info().q_len()` elements, k and v `kv_len()`, in the plan's dtype and
    /// layout (exactly that many bytes); `saved` at least `saved_bytes` and `workspace` at least
    /// `fwd_workspace_bytes` (`None` when that is 0), both 16-byte aligned. Every buffer must be
    /// memory of the plan's device (`context().device()`), 16-byte aligned on CUDA; `stream` is
    /// a stream of that device, or [`Stream::null`] (the only one a CPU plan takes).
    ///
    /// `saved` then holds what [`backward_device`](Plan::backward_device) needs for the same
    /// q, k, v: keeping the two in step is the caller's part here; an
    /// [`AttentionOp`](crate::AttentionOp) does it for you.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_device(
        &mut self,
        q: &dyn DeviceMemory,
        k: &dyn DeviceMemory,
        v: &dyn DeviceMemory,
        out: &mut dyn DeviceMemory,
        saved: &mut dyn DeviceMemory,
        workspace: Option<&mut dyn DeviceMemory>,
        stream: Stream,
    ) -> Result<()> {
        let info = *self.info();
        let qb = q_bytes(&info);
        let (q, k, v) = self.checked_qkv(q, k, v)?;
        let out = self.checked_mut("out", out, Need::Tensor(qb))?;
        let saved = self.checked_mut("saved", saved, Need::AtLeast(info.saved_bytes))?;
        let workspace = self.checked_workspace(workspace, info.fwd_workspace_bytes)?;
        check_stream(&info, stream)?;
        // SAFETY: every buffer was checked against the plan (device, size, alignment), and the
        // DeviceMemory contract keeps it valid and unaliased until the work on `stream` is done.
        unsafe { self.forward_raw(q, k, v, out, saved, workspace, stream.as_raw()) }
    }

    /// dq, dk, dv = the gradients of sum(out * dout) on a framework's memory, queued on `stream`.
    ///
    /// `saved` is what [`forward_device`](Plan::forward_device) wrote for the same q, k, v;
    /// `out` is read in dense mode only (`None` is fine in Lighthouse mode); workspace at least
    /// `bwd_workspace_bytes`. Sizes, devices and alignment as in `forward_device`. The stream
    /// must be the forward's, or one ordered after the forward's work (as a framework orders a
    /// tensor's consumers after its producer: `dout` depends on `out`, written in the same call
    /// as `saved`).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_device(
        &mut self,
        q: &dyn DeviceMemory,
        k: &dyn DeviceMemory,
        v: &dyn DeviceMemory,
        out: Option<&dyn DeviceMemory>,
        dout: &dyn DeviceMemory,
        saved: &dyn DeviceMemory,
        dq: &mut dyn DeviceMemory,
        dk: &mut dyn DeviceMemory,
        dv: &mut dyn DeviceMemory,
        workspace: Option<&mut dyn DeviceMemory>,
        stream: Stream,
    ) -> Result<()> {
        let info = *self.info();
        let (qb, kvb) = (q_bytes(&info), kv_bytes(&info));
        let (q, k, v) = self.checked_qkv(q, k, v)?;
        let out = match out {
            Some(out) => self.checked("out", out, Need::Tensor(qb))?,
            None => std::ptr::null_mut(),
        };
        let dout = self.checked("dout", dout, Need::Tensor(qb))?;
        let saved = self.checked("saved", saved, Need::AtLeast(info.saved_bytes))?;
        let dq = self.checked_mut("dq", dq, Need::Tensor(qb))?;
        let dk = self.checked_mut("dk", dk, Need::Tensor(kvb))?;
        let dv = self.checked_mut("dv", dv, Need::Tensor(kvb))?;
        let workspace = self.checked_workspace(workspace, info.bwd_workspace_bytes)?;
        check_stream(&info, stream)?;
        // SAFETY: as in forward_device; the library refuses a NULL `out` in dense mode.
        unsafe {
            self.backward_raw(
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
                stream.as_raw(),
            )
        }
    }
}
