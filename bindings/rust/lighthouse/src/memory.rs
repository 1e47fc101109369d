//! Memory a framework owns, seen by the library: the [`DeviceMemory`] trait that a framework's
//! storage implements, the [`Stream`] its work runs on, and the checks that the safe entry points
//! (`device.rs`, `op.rs`) make before any pointer reaches C.

use std::ffi::c_void;

use crate::error::{Error, Result, Status};
use crate::host::HostBuffer;
use crate::plan::PlanInfo;
use crate::types::{Backend, Dtype};

/// Where a buffer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory: what CPU plans take.
    Cpu,
    /// Memory of the CUDA device with this ordinal (what `cuDeviceGet` numbers).
    Cuda(usize),
}

/// A buffer the library may read or write: a framework's device storage (a cudarc `CudaSlice`,
/// a candle `CudaStorage`, a burn/CubeCL handle), or host memory for CPU plans.
///
/// Implementing it takes a few lines: the address (a `CUdeviceptr` is a `u64`), the length in
/// bytes and the device. The safe entry points check every buffer against the plan (length,
/// device, alignment and, when [`dtype`](DeviceMemory::dtype) says it, the element type) before
/// the library sees it.
///
/// ```
/// use lighthouse::{Device, DeviceMemory};
///
/// /// What a framework's allocation looks like from here (cudarc: `*slice.device_ptr()`,
/// /// `slice.num_bytes()`, `device.ordinal()`).
/// struct Slice { ptr: u64, bytes: usize, ordinal: usize }
///
/// // SAFETY: `ptr` is a live allocation of `bytes` bytes on device `ordinal`, owned by the
/// // Slice, and freed in stream order only after the work queued on it.
/// unsafe impl DeviceMemory for Slice {
///     fn device_ptr(&self) -> u64 { self.ptr }
///     fn byte_len(&self) -> usize { self.bytes }
///     fn device(&self) -> Device { Device::Cuda(self.ordinal) }
/// }
/// ```
///
/// # Safety
/// An implementation promises, for as long as the value is borrowed by a call of this crate and
/// until the work that call queues on its stream has finished:
/// - `device_ptr()` is the start of `byte_len()` bytes of memory of `device()` (device memory of
///   that CUDA device, or host memory for [`Device::Cpu`]) that stay allocated;
/// - a value borrowed mutably (`&mut`) is the only access to those bytes, and a value borrowed
///   shared (`&`) is not written through anything else meanwhile (as a framework's tensor
///   storage guarantees for its own borrows);
/// - memory freed after the call is freed in stream order (after the work queued on the call's
///   stream, as `cuMemFreeAsync` on that stream or a caching allocator that records the stream
///   does), or only once that work has finished.
pub unsafe trait DeviceMemory {
    /// The address of the first byte (a `CUdeviceptr` on CUDA, the host address on the CPU),
    /// for reading.
    fn device_ptr(&self) -> u64;
    /// The same address, for writing: what the crate passes for outputs. Storage that hands out
    /// write access differently (host memory: a pointer derived from `&mut self`; cudarc: its
    /// `DevicePtrMut`) says so here; the default is `device_ptr()`.
    fn device_ptr_mut(&mut self) -> u64 {
        self.device_ptr()
    }
    /// How many bytes, from `device_ptr()`, the library may touch.
    fn byte_len(&self) -> usize;
    /// Where the memory lives.
    fn device(&self) -> Device;
    /// The element type, when the storage knows it: then a tensor of another dtype than the
    /// plan's is refused. `None` (the default) checks only the length.
    fn dtype(&self) -> Option<Dtype> {
        None
    }
}

// SAFETY: the buffer owns its bytes; `&`/`&mut` borrows of it are Rust's own, and host memory
// outlives the (synchronous) CPU calls that use it.
unsafe impl DeviceMemory for HostBuffer {
    fn device_ptr(&self) -> u64 {
        self.as_ptr() as usize as u64
    }
    fn device_ptr_mut(&mut self) -> u64 {
        self.as_mut_ptr() as usize as u64
    }
    fn byte_len(&self) -> usize {
        self.len()
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
}

// SAFETY: as for HostBuffer: the vector owns its elements.
unsafe impl DeviceMemory for Vec<f32> {
    fn device_ptr(&self) -> u64 {
        self.as_ptr() as usize as u64
    }
    fn device_ptr_mut(&mut self) -> u64 {
        self.as_mut_ptr() as usize as u64
    }
    fn byte_len(&self) -> usize {
        std::mem::size_of_val(self.as_slice())
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn dtype(&self) -> Option<Dtype> {
        Some(Dtype::Float32)
    }
}

/// No memory: zero bytes at NULL on `device`, for a buffer the plan needs none of.
pub(crate) struct Empty(pub(crate) Device);

// SAFETY: zero bytes: nothing can be read or written through it.
unsafe impl DeviceMemory for Empty {
    fn device_ptr(&self) -> u64 {
        0
    }
    fn byte_len(&self) -> usize {
        0
    }
    fn device(&self) -> Device {
        self.0
    }
}

/// The stream a call's work is queued on: a `CUstream` of the plan's device for CUDA plans,
/// [`Stream::null`] for CPU plans (which run synchronously). `Copy`, and usable from any thread:
/// a `CUstream` is a handle the driver lets any thread use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream(*mut c_void);

// SAFETY: a CUstream may be used from any thread (the driver locks it); Stream only passes it on.
unsafe impl Send for Stream {}
// SAFETY: as above.
unsafe impl Sync for Stream {}

impl Stream {
    /// No stream: what CPU plans take. On a CUDA plan, the legacy default stream.
    pub const fn null() -> Stream {
        Stream(std::ptr::null_mut())
    }

    /// A framework's `CUstream` (cudarc: `stream.cu_stream()`; candle: its device's stream;
    /// CUDA.jl: `stream().handle`).
    ///
    /// # Safety
    /// `stream` is NULL or a `CUstream` of the primary context of the device the plans that use
    /// this value run on, and is not destroyed while work queued on it through them is pending.
    pub const unsafe fn from_raw(stream: *mut c_void) -> Stream {
        Stream(stream)
    }

    /// The `CUstream` (NULL for [`Stream::null`]).
    pub fn as_raw(self) -> *mut c_void {
        self.0
    }

    pub fn is_null(self) -> bool {
        self.0.is_null()
    }
}

impl Default for Stream {
    fn default() -> Stream {
        Stream::null()
    }
}

/// How a buffer must match what the plan needs.
#[derive(Clone, Copy)]
pub(crate) enum Need {
    /// A tensor in the plan's dtype: exactly this many bytes.
    Tensor(usize),
    /// `saved` or a workspace: at least this many bytes.
    AtLeast(usize),
}

/// The alignment the CUDA backend's kernels load with, and the one the ABI asks of `saved` and
/// workspaces on every backend.
pub(crate) const ALIGN: u64 = 16;

/// Checks one buffer, at address `ptr` (its `device_ptr`, or `device_ptr_mut` for an output),
/// against a plan on `device` (the context's) before the pointer reaches C: where it lives, its
/// length, its alignment and (when it says) its element type.
pub(crate) fn check_buffer(
    info: &PlanInfo,
    device: Device,
    name: &str,
    memory: &dyn DeviceMemory,
    ptr: u64,
    need: Need,
) -> Result<*mut c_void> {
    let bad = |status: Status, why: String| Err(Error::new(status, format!("{name}: {why}")));
    let bytes = memory.byte_len();
    if memory.device() != device {
        return bad(
            Status::BadPointer,
            format!(
                "is memory of {} but the plan runs on {}",
                describe(memory.device()),
                describe(device)
            ),
        );
    }
    let (want, exact) = match need {
        Need::Tensor(want) => (want, true),
        Need::AtLeast(want) => (want, false),
    };
    if (exact && bytes != want) || bytes < want {
        let rule = if exact { "exactly" } else { "at least" };
        return bad(
            Status::InvalidValue,
            format!("has {bytes} bytes but the plan needs {rule} {want}"),
        );
    }
    if want > 0 && ptr == 0 {
        return bad(
            Status::NullPointer,
            format!("is NULL ({want} bytes needed)"),
        );
    }
    let align = match (need, info.backend) {
        (Need::Tensor(_), Backend::Cpu) => info.dtype.size() as u64,
        _ => ALIGN,
    };
    if ptr % align != 0 {
        return bad(
            Status::BadPointer,
            format!("address {ptr:#x} is not aligned to {align} bytes"),
        );
    }
    if let (Need::Tensor(_), Some(dtype)) = (need, memory.dtype()) {
        if dtype != info.dtype {
            return bad(
                Status::UnsupportedDtype,
                format!("holds {dtype:?} but the plan's dtype is {:?}", info.dtype),
            );
        }
    }
    Ok(ptr as usize as *mut c_void)
}

/// Checks that a stream fits the plan: CPU plans run without one.
pub(crate) fn check_stream(info: &PlanInfo, stream: Stream) -> Result<()> {
    if info.backend == Backend::Cpu && !stream.is_null() {
        return Err(Error::new(
            Status::BadPointer,
            "a CPU plan runs without a stream: pass Stream::null()",
        ));
    }
    Ok(())
}

fn describe(device: Device) -> String {
    match device {
        Device::Cpu => "the host (CPU)".to_string(),
        Device::Cuda(ordinal) => format!("CUDA device {ordinal}"),
    }
}

#[cfg(test)]
mod tests {
    //! The checks on their own, with a CUDA plan's sizes (no GPU needed: nothing reaches C).
    use super::*;
    use crate::types::{Layout, Mode};

    struct Fake {
        ptr: u64,
        bytes: usize,
        device: Device,
        dtype: Option<Dtype>,
    }

    // SAFETY: never dereferenced: only the checks look at it.
    unsafe impl DeviceMemory for Fake {
        fn device_ptr(&self) -> u64 {
            self.ptr
        }
        fn byte_len(&self) -> usize {
            self.bytes
        }
        fn device(&self) -> Device {
            self.device
        }
        fn dtype(&self) -> Option<Dtype> {
            self.dtype
        }
    }

    fn cuda_info() -> PlanInfo {
        let mut info = crate::hooks::tests::info();
        info.backend = Backend::Cuda;
        info.dtype = Dtype::BFloat16;
        info.layout = Layout::Bnhd;
        info.mode = Mode::Lighthouse;
        info
    }

    fn check(memory: Fake, need: Need) -> Result<*mut c_void> {
        check_buffer(
            &cuda_info(),
            Device::Cuda(1),
            "q",
            &memory,
            memory.ptr,
            need,
        )
    }

    fn fake(ptr: u64, bytes: usize, device: Device) -> Fake {
        Fake {
            ptr,
            bytes,
            device,
            dtype: None,
        }
    }

    #[test]
    fn a_matching_buffer_passes() {
        let got = check(fake(0x1000, 64, Device::Cuda(1)), Need::Tensor(64)).unwrap();
        assert_eq!(got as usize, 0x1000);
        let got = check(fake(0x2000, 128, Device::Cuda(1)), Need::AtLeast(64)).unwrap();
        assert_eq!(got as usize, 0x2000);
    }

    fn refused(memory: Fake, need: Need, status: Status, words: &str) {
        let err = check(memory, need).unwrap_err();
        assert_eq!(err.status(), status, "{}", err.message());
        assert!(err.message().starts_with("q: "), "{}", err.message());
        assert!(err.message().contains(words), "{}", err.message());
    }

    #[test]
    fn device_length_alignment_and_dtype_are_checked() {
        let t = Need::Tensor(64);
        refused(
            fake(0x1000, 64, Device::Cuda(0)),
            t,
            Status::BadPointer,
            "CUDA device 0 but the plan runs on CUDA device 1",
        );
        refused(
            fake(0x1000, 64, Device::Cpu),
            t,
            Status::BadPointer,
            "the host (CPU)",
        );
        refused(
            fake(0x1000, 62, Device::Cuda(1)),
            t,
            Status::InvalidValue,
            "exactly 64",
        );
        refused(
            fake(0x1000, 66, Device::Cuda(1)),
            t,
            Status::InvalidValue,
            "exactly 64",
        );
        refused(
            fake(0x1000, 32, Device::Cuda(1)),
            Need::AtLeast(64),
            Status::InvalidValue,
            "at least 64",
        );
        refused(fake(0, 64, Device::Cuda(1)), t, Status::NullPointer, "NULL");
        refused(
            fake(0x1002, 64, Device::Cuda(1)),
            t,
            Status::BadPointer,
            "not aligned to 16",
        );
        let mut f32_tensor = fake(0x1000, 64, Device::Cuda(1));
        f32_tensor.dtype = Some(Dtype::Float32);
        refused(f32_tensor, t, Status::UnsupportedDtype, "Float32");
        // A dtype on scratch memory is not the plan's business.
        let mut bytes = fake(0x1000, 64, Device::Cuda(1));
        bytes.dtype = Some(Dtype::Float32);
        assert!(check(bytes, Need::AtLeast(64)).is_ok());
        // An empty workspace may be NULL.
        assert!(check(fake(0, 0, Device::Cuda(1)), Need::AtLeast(0)).is_ok());
    }

    #[test]
    fn cpu_plans_take_host_memory_element_aligned_and_no_stream() {
        let mut info = cuda_info();
        info.backend = Backend::Cpu;
        info.dtype = Dtype::Float32;
        let host = fake(0x1004, 64, Device::Cpu);
        assert!(check_buffer(&info, Device::Cpu, "q", &host, host.ptr, Need::Tensor(64)).is_ok());
        let err = check_buffer(
            &info,
            Device::Cpu,
            "saved",
            &host,
            host.ptr,
            Need::AtLeast(64),
        )
        .unwrap_err();
        assert_eq!(err.status(), Status::BadPointer);
        let cuda = fake(0x1000, 64, Device::Cuda(0));
        let err =
            check_buffer(&info, Device::Cpu, "q", &cuda, cuda.ptr, Need::Tensor(64)).unwrap_err();
        assert_eq!(err.status(), Status::BadPointer);
        assert!(check_stream(&info, Stream::null()).is_ok());
        // SAFETY: never used as a stream: the check refuses it first.
        let some = unsafe { Stream::from_raw(0x10 as *mut c_void) };
        assert_eq!(
            check_stream(&info, some).unwrap_err().status(),
            Status::BadPointer
        );
        assert!(check_stream(&cuda_info(), some).is_ok());
    }

    #[test]
    fn host_memory_implementations_describe_themselves() {
        let v = vec![1f32; 10];
        assert_eq!(v.byte_len(), 40);
        assert_eq!(v.device(), Device::Cpu);
        assert_eq!(v.dtype(), Some(Dtype::Float32));
        assert_eq!(v.device_ptr(), v.as_ptr() as u64);
        let b = HostBuffer::new(33);
        assert_eq!(
            (b.byte_len(), b.device(), b.dtype()),
            (33, Device::Cpu, None)
        );
        assert_eq!(b.device_ptr() % ALIGN, 0);
    }
}
