//! The GPU tests' view of CUDA, standard library only: the few driver calls they need (loaded
//! from libcuda.so.1 with dlopen, as the library itself does), device buffers that implement
//! `DeviceMemory` as a framework's storage would, an `Allocator` on stream-ordered driver
//! allocations, and half-precision conversions.
//!
//! Where no CUDA backend can be used the tests skip (pass with a note), unless
//! LIGHTHOUSE_TEST_REQUIRE_GPU=1 (set by tests/gpu/run_gpu_tests.sh), which makes a skip fail.

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::Arc;

use lighthouse::{
    Allocator, Backend, BufferKind, Context, Device, DeviceMemory, Dtype, Status, Stream,
};

extern "C" {
    fn dlopen(name: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void;
}
const RTLD_NOW: c_int = 2;

type Res = c_int;

/// The driver entry points, resolved once.
pub struct Cuda {
    mem_alloc: unsafe extern "C" fn(*mut u64, usize) -> Res,
    mem_free: unsafe extern "C" fn(u64) -> Res,
    mem_alloc_async: unsafe extern "C" fn(*mut u64, usize, *mut c_void) -> Res,
    mem_free_async: unsafe extern "C" fn(u64, *mut c_void) -> Res,
    memset_d8_async: unsafe extern "C" fn(u64, u8, usize, *mut c_void) -> Res,
    htod: unsafe extern "C" fn(u64, *const c_void, usize) -> Res,
    dtoh: unsafe extern "C" fn(*mut c_void, u64, usize) -> Res,
    stream_create: unsafe extern "C" fn(*mut *mut c_void, u32) -> Res,
    stream_sync: unsafe extern "C" fn(*mut c_void) -> Res,
    stream_destroy: unsafe extern "C" fn(*mut c_void) -> Res,
    ctx_sync: unsafe extern "C" fn() -> Res,
}

unsafe fn sym<T>(lib: *mut c_void, name: &str) -> Option<T> {
    let c = CString::new(name).unwrap();
    let p = dlsym(lib, c.as_ptr());
    // SAFETY (caller): T is the function pointer type of `name`.
    (!p.is_null()).then(|| std::mem::transmute_copy(&p))
}

fn ok(what: &str, r: Res) {
    assert_eq!(r, 0, "{what} failed with CUDA error {r}");
}

/// Whether a missing GPU must fail the test instead of skipping it.
fn gpu_required() -> bool {
    std::env::var("LIGHTHOUSE_TEST_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// Skips the calling test (prints why), or fails it where a GPU is required.
pub fn skip(why: &str) {
    assert!(!gpu_required(), "LIGHTHOUSE_TEST_REQUIRE_GPU=1 but {why}");
    eprintln!("SKIP: {why}");
}

/// A CUDA context of the library on device 0 and the driver, or None (after `skip`) where
/// neither can be had.
pub fn setup() -> Option<(Arc<Context>, Arc<Cuda>)> {
    let ctx = match Context::new(Backend::Cuda, 0) {
        Ok(ctx) => ctx,
        Err(e) if e.status() == Status::BackendUnavailable => {
            skip(&format!("no usable CUDA backend here ({})", e.message()));
            return None;
        }
        Err(e) => panic!("CUDA context: {e}"),
    };
    let Some(cuda) = Cuda::load() else {
        skip("the CUDA driver cannot be loaded by the test");
        return None;
    };
    Some((ctx, Arc::new(cuda)))
}

impl Cuda {
    /// Loads the driver and makes device 0's primary context (the library's) current.
    pub fn load() -> Option<Cuda> {
        unsafe {
            let name = CString::new("libcuda.so.1").unwrap();
            let lib = dlopen(name.as_ptr(), RTLD_NOW);
            if lib.is_null() {
                return None;
            }
            let init: unsafe extern "C" fn(u32) -> Res = sym(lib, "cuInit")?;
            let device_get: unsafe extern "C" fn(*mut c_int, c_int) -> Res =
                sym(lib, "cuDeviceGet")?;
            let retain: unsafe extern "C" fn(*mut *mut c_void, c_int) -> Res =
                sym(lib, "cuDevicePrimaryCtxRetain")?;
            let set_current: unsafe extern "C" fn(*mut c_void) -> Res =
                sym(lib, "cuCtxSetCurrent")?;
            let mut device = 0;
            let mut ctx = std::ptr::null_mut();
            if init(0) != 0 || device_get(&mut device, 0) != 0 || retain(&mut ctx, device) != 0 {
                return None;
            }
            ok("cuCtxSetCurrent", set_current(ctx));
            Some(Cuda {
                mem_alloc: sym(lib, "cuMemAlloc_v2")?,
                mem_free: sym(lib, "cuMemFree_v2")?,
                mem_alloc_async: sym(lib, "cuMemAllocAsync")?,
                mem_free_async: sym(lib, "cuMemFreeAsync")?,
                memset_d8_async: sym(lib, "cuMemsetD8Async")?,
                htod: sym(lib, "cuMemcpyHtoD_v2")?,
                dtoh: sym(lib, "cuMemcpyDtoH_v2")?,
                stream_create: sym(lib, "cuStreamCreate")?,
                stream_sync: sym(lib, "cuStreamSynchronize")?,
                stream_destroy: sym(lib, "cuStreamDestroy_v2")?,
                ctx_sync: sym(lib, "cuCtxSynchronize")?,
            })
        }
    }

    pub fn alloc(&self, bytes: usize) -> u64 {
        let mut p = 0;
        ok("cuMemAlloc", unsafe {
            (self.mem_alloc)(&mut p, bytes.max(16))
        });
        p
    }
    pub fn free(&self, p: u64) {
        ok("cuMemFree", unsafe { (self.mem_free)(p) });
    }
    pub fn upload<T>(&self, dst: u64, src: &[T]) {
        ok("cuMemcpyHtoD", unsafe {
            (self.htod)(dst, src.as_ptr().cast(), std::mem::size_of_val(src))
        });
    }
    pub fn download<T>(&self, dst: &mut [T], src: u64) {
        ok("cuMemcpyDtoH", unsafe {
            (self.dtoh)(dst.as_mut_ptr().cast(), src, std::mem::size_of_val(dst))
        });
    }
    /// Bytes of 0xFF: NaN in every float format, so an element a call does not write shows.
    pub fn poison(&self, p: u64, bytes: usize, stream: Stream) {
        ok("cuMemsetD8Async", unsafe {
            (self.memset_d8_async)(p, 0xff, bytes, stream.as_raw())
        });
    }
    pub fn stream(&self) -> Stream {
        let mut s = std::ptr::null_mut();
        ok("cuStreamCreate", unsafe { (self.stream_create)(&mut s, 1) });
        // SAFETY: a stream of the current (primary) context, destroyed by destroy_stream.
        unsafe { Stream::from_raw(s) }
    }
    pub fn sync(&self, s: Stream) {
        ok("cuStreamSynchronize", unsafe {
            (self.stream_sync)(s.as_raw())
        });
    }
    pub fn sync_all(&self) {
        ok("cuCtxSynchronize", unsafe { (self.ctx_sync)() });
    }
    pub fn destroy_stream(&self, s: Stream) {
        ok("cuStreamDestroy", unsafe {
            (self.stream_destroy)(s.as_raw())
        });
    }
}

/// Device memory owned like a framework's tensor storage: allocated and freed in stream order
/// (cuMemAllocAsync / cuMemFreeAsync on the stream it was made for), on device 0.
pub struct DevBuf {
    cuda: Arc<Cuda>,
    ptr: u64,
    bytes: usize,
    /// The CUstream it is freed on, as an address (a stream may be used from any thread).
    stream: usize,
    dtype: Option<Dtype>,
}

impl DevBuf {
    pub fn new(cuda: &Arc<Cuda>, bytes: usize, stream: Stream) -> DevBuf {
        let mut ptr = 0;
        ok("cuMemAllocAsync", unsafe {
            (cuda.mem_alloc_async)(&mut ptr, bytes.max(16), stream.as_raw())
        });
        DevBuf {
            cuda: Arc::clone(cuda),
            ptr,
            bytes,
            stream: stream.as_raw() as usize,
            dtype: None,
        }
    }

    /// A tensor of `dtype` holding `bits` (uploaded after the allocation is ready).
    pub fn from_bits(cuda: &Arc<Cuda>, bits: &[u16], dtype: Dtype, stream: Stream) -> DevBuf {
        let mut buf = DevBuf::new(cuda, std::mem::size_of_val(bits), stream);
        cuda.sync(stream);
        cuda.upload(buf.ptr, bits);
        buf.dtype = Some(dtype);
        buf
    }

    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// The contents as 16-bit values (after the stream's work is done).
    pub fn bits(&self) -> Vec<u16> {
        let mut out = vec![0u16; self.bytes / 2];
        self.cuda.download(&mut out, self.ptr);
        out
    }
}

impl std::fmt::Debug for DevBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevBuf({} bytes at {:#x})", self.bytes, self.ptr)
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        ok("cuMemFreeAsync", unsafe {
            (self.cuda.mem_free_async)(self.ptr, self.stream as *mut c_void)
        });
    }
}

// SAFETY: a live allocation of `bytes` bytes on device 0, owned by the DevBuf and freed in
// stream order after the work queued on its stream.
unsafe impl DeviceMemory for DevBuf {
    fn device_ptr(&self) -> u64 {
        self.ptr
    }
    fn byte_len(&self) -> usize {
        self.bytes
    }
    fn device(&self) -> Device {
        Device::Cuda(0)
    }
    fn dtype(&self) -> Option<Dtype> {
        self.dtype
    }
}

/// A view of part of another buffer (to test the checks: offsets and lengths of our choosing).
pub struct View {
    pub ptr: u64,
    pub bytes: usize,
    pub device: Device,
}

// SAFETY: the tests make views only inside live buffers (or ones that the checks refuse before
// any pointer reaches the library).
unsafe impl DeviceMemory for View {
    fn device_ptr(&self) -> u64 {
        self.ptr
    }
    fn byte_len(&self) -> usize {
        self.bytes
    }
    fn device(&self) -> Device {
        self.device
    }
}

/// The op's allocator: stream-ordered driver allocations, outputs poisoned with NaN first.
pub struct DriverAllocator(pub Arc<Cuda>);

impl Allocator for DriverAllocator {
    type Buffer = DevBuf;

    fn alloc(&self, bytes: usize, kind: BufferKind, stream: Stream) -> lighthouse::Result<DevBuf> {
        let mut buf = DevBuf::new(&self.0, bytes, stream);
        if let BufferKind::Tensor { dtype, .. } = kind {
            self.0.poison(buf.ptr, bytes, stream);
            buf.dtype = Some(dtype);
        }
        Ok(buf)
    }
}

/// float -> IEEE half bits, round to nearest even (normal and subnormal range; inputs are small).
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mant = bits & 0x7f_ffff;
    if exp >= 31 {
        return sign | 0x7c00;
    }
    if exp <= 0 {
        if exp < -10 {
            return sign;
        }
        let m = mant | 0x80_0000;
        let shift = (14 - exp) as u32;
        let half = 1u32 << (shift - 1);
        let rounded = (m + half - 1 + ((m >> shift) & 1)) >> shift;
        return sign | rounded as u16;
    }
    let rounded = mant + 0xfff + ((mant >> 13) & 1);
    let (exp, mant) = if rounded & 0x80_0000 != 0 {
        (exp + 1, 0)
    } else {
        (exp, rounded >> 13)
    };
    if exp >= 31 {
        return sign | 0x7c00;
    }
    sign | ((exp as u16) << 10) | mant as u16
}

pub fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let mant = (h & 0x3ff) as f32;
    match exp {
        0 => sign * mant * 2f32.powi(-24),
        31 => sign * f32::INFINITY,
        _ => sign * (1.0 + mant / 1024.0) * 2f32.powi(exp - 15),
    }
}

/// float -> bfloat16 bits, round to nearest even (finite inputs).
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// max |a - r| / max |r|, the GPU tests' measure.
pub fn max_rel(a: &[f32], r: &[f32]) -> f64 {
    let diff = a
        .iter()
        .zip(r)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max);
    let norm = r.iter().map(|&y| (y as f64).abs()).fold(0.0, f64::max);
    if a.iter().any(|x| x.is_nan()) {
        f64::NAN
    } else {
        diff / norm
    }
}
