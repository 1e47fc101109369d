//! The attention op for autograd frameworks: forward returns the output and a [`ForwardState`]
//! that owns what backward needs (its `saved` memory, from the caller's [`Allocator`]); backward
//! takes that state. Nothing for the caller to keep in step by hand: the state knows the op
//! that made it and the tensors its forward read, and backward refuses any other.

use std::fmt;
use std::sync::{Mutex, MutexGuard};

use crate::device::{kv_bytes, q_bytes};
use crate::error::{Error, Result, Status};
use crate::host::HostBuffer;
use crate::memory::{DeviceMemory, Empty, Stream};
use crate::plan::{Plan, PlanInfo};
use crate::types::{Dtype, Mode};

/// What a buffer the op asks its allocator for will hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferKind {
    /// A tensor handed to the caller (out, dq, dk, dv): `elements` values of `dtype`, the plan's.
    Tensor { dtype: Dtype, elements: usize },
    /// The forward's `saved`: owned by the [`ForwardState`] until it is dropped.
    Saved,
    /// A workspace: dropped as soon as the call that used it is queued on the stream.
    Workspace,
}

/// Where the op gets its memory: a framework's allocator on the plan's device.
///
/// Buffers are used by work queued on `stream` (the call's), and dropped by the op while that
/// work may still be pending (workspaces right after the call is queued, `saved` with its
/// [`ForwardState`]): the [`DeviceMemory`] contract of `Buffer` requires that dropping frees
/// in stream order, as cudarc's `CudaSlice` (`cuMemFreeAsync`), candle's and CUDA.jl's
/// allocators do. Every buffer is checked (device, length, alignment) before use, so an
/// allocator that returns the wrong memory fails the call instead of corrupting it.
pub trait Allocator: Send + Sync {
    /// The framework's storage type.
    type Buffer: DeviceMemory + Send + Sync;

    /// At least `bytes` bytes (16-byte aligned) on the plan's device; the contents need not be
    /// initialized (every element of an output is written).
    fn alloc(&self, bytes: usize, kind: BufferKind, stream: Stream) -> Result<Self::Buffer>;
}

/// Host memory for CPU plans ([`HostBuffer`], zeroed and 16-byte aligned).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostAllocator;

impl Allocator for HostAllocator {
    type Buffer = HostBuffer;

    fn alloc(&self, bytes: usize, _kind: BufferKind, _stream: Stream) -> Result<HostBuffer> {
        Ok(HostBuffer::new(bytes))
    }
}

/// The gradients of a backward: dq (like q), dk and dv (like k and v).
pub struct Gradients<B> {
    pub dq: B,
    pub dk: B,
    pub dv: B,
}

impl<B: DeviceMemory> fmt::Debug for Gradients<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gradients")
            .field("dq", &Span::of(&self.dq))
            .field("dk", &Span::of(&self.dk))
            .field("dv", &Span::of(&self.dv))
            .finish()
    }
}

/// Where a tensor was and how long, to recognize it again at backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    ptr: u64,
    bytes: usize,
}

impl Span {
    fn of(memory: &dyn DeviceMemory) -> Span {
        Span {
            ptr: memory.device_ptr(),
            bytes: memory.byte_len(),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes at {:#x}", self.bytes, self.ptr)
    }
}

/// What one forward of an [`AttentionOp`] leaves for its backward: the `saved` memory (owned:
/// freed when the state is dropped) and which op and which q, k, v, out it belongs to.
///
/// `Send + Sync` (when the buffer is), so a framework can keep it in its autograd graph, e.g.
/// in an `Arc` (burn's backward state must be `Clone`).
pub struct ForwardState<B> {
    saved: Option<B>,
    op: u64,
    q: Span,
    k: Span,
    v: Span,
    out: Span,
}

impl<B> ForwardState<B> {
    /// The `saved` buffer (`None` when the plan saves nothing).
    pub fn saved(&self) -> Option<&B> {
        self.saved.as_ref()
    }

    /// Refuses a tensor that is not the one the forward read (or wrote, for `out`).
    fn expect(&self, name: &str, had: Span, got: &dyn DeviceMemory) -> Result<()> {
        let got = Span::of(got);
        if got == had {
            return Ok(());
        }
        Err(Error::new(
            Status::BadState,
            format!(
                "{name} ({got}) is not the tensor this state's forward used ({had}): backward \
                 must get the forward's own q, k, v and out"
            ),
        ))
    }
}

impl<B> fmt::Debug for ForwardState<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardState")
            .field("op", &self.op)
            .field("saved", &self.saved.is_some())
            .field("q", &self.q)
            .field("out", &self.out)
            .finish()
    }
}

/// One attention configuration as an op of an autograd framework: a [`Plan`] and an
/// [`Allocator`]. `Send + Sync + 'static` (for a `'static` allocator), so it can live in a
/// candle `CustomOp3`, a burn backward step or a `static`.
///
/// ```
/// use lighthouse::{AttentionOp, Context, HostAllocator, Stream};
///
/// let ctx = Context::cpu()?;
/// let plan = ctx.plan().seq_len(512).heads(1).head_dim(8).levels(2).pooling(2).topk(128)
///     .build()?;
/// let op = AttentionOp::new(plan, HostAllocator);
/// let n = op.info().q_len();
/// let (q, k, v) = (vec![0.5f32; n], vec![0.25f32; n], vec![1f32; n]);
/// let (out, state) = op.forward(&q, &k, &v, Stream::null())?;
/// let dout = vec![1f32; n];
/// let grads = op.backward(&state, &q, &k, &v, Some(&out), &dout, Stream::null())?;
/// assert_eq!(grads.dq.as_f32().len(), n);
/// # Ok::<(), lighthouse::Error>(())
/// ```
///
/// Calls of one op are serialized (the plan is used by one thread at a time, as the C library
/// requires); for concurrent streams, make one op per stream.
pub struct AttentionOp<A: Allocator> {
    plan: Mutex<Plan>,
    info: PlanInfo,
    id: u64,
    allocator: A,
}

impl<A: Allocator> AttentionOp<A> {
    pub fn new(plan: Plan, allocator: A) -> Self {
        AttentionOp {
            info: *plan.info(),
            id: plan.id(),
            plan: Mutex::new(plan),
            allocator,
        }
    }

    /// The plan's parameters and sizes.
    pub fn info(&self) -> &PlanInfo {
        &self.info
    }

    pub fn allocator(&self) -> &A {
        &self.allocator
    }

    /// The plan back (after the last call).
    pub fn into_plan(self) -> Plan {
        self.plan
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A panic while the lock was held cannot leave the plan half-changed (C calls do not
    /// unwind), so a poisoned lock is taken over.
    fn plan(&self) -> MutexGuard<'_, Plan> {
        self.plan
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn alloc(&self, bytes: usize, kind: BufferKind, stream: Stream) -> Result<A::Buffer> {
        self.allocator.alloc(bytes, kind, stream)
    }

    fn tensor(&self, bytes: usize, stream: Stream) -> Result<A::Buffer> {
        let dtype = self.info.dtype;
        let elements = bytes / dtype.size();
        self.alloc(bytes, BufferKind::Tensor { dtype, elements }, stream)
    }

    fn workspace(&self, bytes: usize, stream: Stream) -> Result<Option<A::Buffer>> {
        if bytes == 0 {
            return Ok(None);
        }
        self.alloc(bytes, BufferKind::Workspace, stream).map(Some)
    }

    /// out = attention(q, k, v), queued on `stream`: the output (a new buffer of the allocator)
    /// and the state its backward takes. q, k, v as for [`Plan::forward_device`].
    pub fn forward(
        &self,
        q: &dyn DeviceMemory,
        k: &dyn DeviceMemory,
        v: &dyn DeviceMemory,
        stream: Stream,
    ) -> Result<(A::Buffer, ForwardState<A::Buffer>)> {
        let mut out = self.tensor(q_bytes(&self.info), stream)?;
        let state = self.forward_into(q, k, v, &mut out, stream)?;
        Ok((out, state))
    }

    /// [`forward`](AttentionOp::forward) into an output the caller allocated (a framework's
    /// own output tensor); `saved` and the workspace still come from the allocator.
    pub fn forward_into(
        &self,
        q: &dyn DeviceMemory,
        k: &dyn DeviceMemory,
        v: &dyn DeviceMemory,
        out: &mut dyn DeviceMemory,
        stream: Stream,
    ) -> Result<ForwardState<A::Buffer>> {
        let info = self.info;
        let mut saved = match info.saved_bytes {
            0 => None,
            bytes => Some(self.alloc(bytes, BufferKind::Saved, stream)?),
        };
        let mut workspace = self.workspace(info.fwd_workspace_bytes, stream)?;
        let mut plan = self.plan();
        let mut no_saved = Empty(plan.context().device());
        plan.forward_device(
            q,
            k,
            v,
            out,
            match saved.as_mut() {
                Some(s) => s,
                None => &mut no_saved,
            },
            workspace.as_mut().map(|w| w as &mut dyn DeviceMemory),
            stream,
        )?;
        Ok(ForwardState {
            saved,
            op: self.id,
            q: Span::of(q),
            k: Span::of(k),
            v: Span::of(v),
            out: Span::of(out),
        })
    }

    /// The gradients of sum(out * dout) with respect to q, k, v, queued on `stream`: new buffers
    /// of the allocator. `state` is what this op's forward returned for these q, k, v and `out`
    /// (checked); `out` is needed in dense mode and may be `None` in Lighthouse mode. `stream` is
    /// the forward's, or one ordered after the forward's work (see
    /// [`Plan::backward_device`]). The state stays valid: backward may run again on it.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        state: &ForwardState<A::Buffer>,
        q: &dyn DeviceMemory,
        k: &dyn DeviceMemory,
        v: &dyn DeviceMemory,
        out: Option<&dyn DeviceMemory>,
        dout: &dyn DeviceMemory,
        stream: Stream,
    ) -> Result<Gradients<A::Buffer>> {
        // The state is checked before anything is allocated for it.
        self.check_state(state, q, k, v, out)?;
        let (qb, kvb) = (q_bytes(&self.info), kv_bytes(&self.info));
        let mut grads = Gradients {
            dq: self.tensor(qb, stream)?,
            dk: self.tensor(kvb, stream)?,
            dv: self.tensor(kvb, stream)?,
        };
        self.backward_into(
            state,
            q,
            k,
            v,
            out,
            dout,
            &mut grads.dq,
            &mut grads.dk,
            &mut grads.dv,
            stream,
        )?;
        Ok(grads)
    }

    /// [`backward`](AttentionOp::backward) into gradients the caller allocated (a framework's
    /// own tensors, or views of one packed buffer); the workspace still comes from the allocator.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_into(
        &self,
        state: &ForwardState<A::Buffer>,
        q: &dyn DeviceMemory,
        k: &dyn DeviceMemory,
        v: &dyn DeviceMemory,
        out: Option<&dyn DeviceMemory>,
        dout: &dyn DeviceMemory,
        dq: &mut dyn DeviceMemory,
        dk: &mut dyn DeviceMemory,
        dv: &mut dyn DeviceMemory,
        stream: Stream,
    ) -> Result<()> {
        self.check_state(state, q, k, v, out)?;
        let mut workspace = self.workspace(self.info.bwd_workspace_bytes, stream)?;
        let mut plan = self.plan();
        let no_saved = Empty(plan.context().device());
        plan.backward_device(
            q,
            k,
            v,
            out,
            dout,
            match state.saved.as_ref() {
                Some(s) => s,
                None => &no_saved,
            },
            dq,
            dk,
            dv,
            workspace.as_mut().map(|w| w as &mut dyn DeviceMemory),
            stream,
        )
    }

    /// Refuses a state of another op, or tensors other than those its forward used.
    fn check_state(
        &self,
        state: &ForwardState<A::Buffer>,
        q: &dyn DeviceMemory,
        k: &dyn DeviceMemory,
        v: &dyn DeviceMemory,
        out: Option<&dyn DeviceMemory>,
    ) -> Result<()> {
        if state.op != self.id {
            return Err(Error::new(
                Status::BadState,
                "the state comes from the forward of another op (another plan)",
            ));
        }
        state.expect("q", state.q, q)?;
        state.expect("k", state.k, k)?;
        state.expect("v", state.v, v)?;
        match out {
            Some(out) => state.expect("out", state.out, out),
            None if self.info.mode == Mode::Dense => Err(Error::new(
                Status::NullPointer,
                "out: a dense plan's backward reads the forward's output: pass it",
            )),
            None => Ok(()),
        }
    }
}

impl<A: Allocator> fmt::Debug for AttentionOp<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttentionOp")
            .field("id", &self.id)
            .field("info", &self.info)
            .finish()
    }
}
