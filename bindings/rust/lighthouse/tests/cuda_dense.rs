//! The unsafe raw-pointer entry points on a GPU: dense causal attention in float16 through
//! `forward_raw` / `backward_raw` with device buffers and a non-default stream, compared with the
//! CPU backend in float32 on the same (float16-rounded) inputs. Skips (passes with a note) where
//! no CUDA backend can be used. The CUDA driver is reached through dlopen, as the library does.

mod common;

use std::ffi::{c_char, c_int, c_void, CString};

use lighthouse::{Backend, Context, Dtype, Mode, Status};

/// The few CUDA driver calls the test needs, loaded from libcuda.so.1.
mod driver {
    use super::*;

    extern "C" {
        fn dlopen(name: *const c_char, flags: c_int) -> *mut c_void;
        fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void;
    }
    const RTLD_NOW: c_int = 2;

    type Res = c_int;
    pub struct Cuda {
        mem_alloc: unsafe extern "C" fn(*mut u64, usize) -> Res,
        mem_free: unsafe extern "C" fn(u64) -> Res,
        htod: unsafe extern "C" fn(u64, *const c_void, usize) -> Res,
        dtoh: unsafe extern "C" fn(*mut c_void, u64, usize) -> Res,
        stream_create: unsafe extern "C" fn(*mut *mut c_void, u32) -> Res,
        stream_sync: unsafe extern "C" fn(*mut c_void) -> Res,
        stream_destroy: unsafe extern "C" fn(*mut c_void) -> Res,
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
                if init(0) != 0 || device_get(&mut device, 0) != 0 || retain(&mut ctx, device) != 0
                {
                    return None;
                }
                ok("cuCtxSetCurrent", set_current(ctx));
                Some(Cuda {
                    mem_alloc: sym(lib, "cuMemAlloc_v2")?,
                    mem_free: sym(lib, "cuMemFree_v2")?,
                    htod: sym(lib, "cuMemcpyHtoD_v2")?,
                    dtoh: sym(lib, "cuMemcpyDtoH_v2")?,
                    stream_create: sym(lib, "cuStreamCreate")?,
                    stream_sync: sym(lib, "cuStreamSynchronize")?,
                    stream_destroy: sym(lib, "cuStreamDestroy_v2")?,
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
        pub fn stream(&self) -> *mut c_void {
            let mut s = std::ptr::null_mut();
            ok("cuStreamCreate", unsafe { (self.stream_create)(&mut s, 1) });
            s
        }
        pub fn sync(&self, s: *mut c_void) {
            ok("cuStreamSynchronize", unsafe { (self.stream_sync)(s) });
        }
        pub fn destroy_stream(&self, s: *mut c_void) {
            ok("cuStreamDestroy", unsafe { (self.stream_destroy)(s) });
        }
    }
}

/// float -> IEEE half bits, round to nearest even (normal and subnormal range; inputs are small).
fn f32_to_f16(x: f32) -> u16 {
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

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let mant = (h & 0x3ff) as f32;
    match exp {
        0 => sign * mant * 2f32.powi(-24),
        31 => sign * f32::INFINITY,
        _ => sign * (1.0 + mant / 1024.0) * 2f32.powi(exp - 15),
    }
}

/// max |a - r| / max |r|, the GPU tests' measure.
fn max_rel(a: &[f32], r: &[f32]) -> f64 {
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

/// B=2, N=512, H=4 query heads over Hkv=2, D=64, dense mode.
fn shape(p: lighthouse::PlanBuilder<'_>) -> lighthouse::PlanBuilder<'_> {
    p.batch(2)
        .seq_len(512)
        .heads(4)
        .kv_heads(2)
        .head_dim(64)
        .mode(Mode::Dense)
}

#[test]
fn cuda_dense_f16_matches_cpu() {
    let gpu_ctx = match Context::new(Backend::Cuda, 0) {
        Ok(ctx) => ctx,
        Err(e) if e.status() == Status::BackendUnavailable => {
            eprintln!("SKIP: no usable CUDA backend here ({})", e.message());
            return;
        }
        Err(e) => panic!("CUDA context: {e}"),
    };
    let Some(cuda) = driver::Cuda::load() else {
        eprintln!("SKIP: the CUDA driver cannot be loaded by the test");
        return;
    };
    let mut gpu = shape(gpu_ctx.plan())
        .dtype(Dtype::Float16)
        .build()
        .expect("CUDA dense plan");
    let cpu_ctx = Context::cpu().unwrap();
    let mut cpu = shape(cpu_ctx.plan()).build().unwrap();
    let info = *gpu.info();
    let (nq, nkv) = (info.q_len(), info.kv_len());

    let rounded = |v: Vec<f32>| -> (Vec<u16>, Vec<f32>) {
        let bits: Vec<u16> = v.iter().map(|&x| f32_to_f16(x * 2.0)).collect();
        let vals = bits.iter().map(|&x| f16_to_f32(x)).collect();
        (bits, vals)
    };
    let (q16, q) = rounded(common::random(nq, 11));
    let (k16, k) = rounded(common::random(nkv, 12));
    let (v16, v) = rounded(common::random(nkv, 13));
    let (dout16, dout) = rounded(common::random(nq, 14));

    // CPU reference in f32.
    let mut out_ref = vec![0f32; nq];
    let mut saved = cpu.new_saved();
    cpu.forward(&q, &k, &v, &mut out_ref, &mut saved).unwrap();
    let (mut dq_ref, mut dk_ref, mut dv_ref) = (vec![0f32; nq], vec![0f32; nkv], vec![0f32; nkv]);
    cpu.backward(
        &q,
        &k,
        &v,
        Some(&out_ref),
        &dout,
        &saved,
        &mut dq_ref,
        &mut dk_ref,
        &mut dv_ref,
    )
    .unwrap();

    // GPU through the raw entry points on a stream of our own.
    let half = 2usize;
    let buf = |bytes: usize| cuda.alloc(bytes);
    let (dq_ptr, dk_ptr, dv_ptr) = (buf(nq * half), buf(nkv * half), buf(nkv * half));
    let (qp, kp, vp, op, dop) = (
        buf(nq * half),
        buf(nkv * half),
        buf(nkv * half),
        buf(nq * half),
        buf(nq * half),
    );
    let savedp = buf(info.saved_bytes);
    let wsp = buf(info.fwd_workspace_bytes.max(info.bwd_workspace_bytes));
    cuda.upload(qp, &q16);
    cuda.upload(kp, &k16);
    cuda.upload(vp, &v16);
    cuda.upload(dop, &dout16);
    let stream = cuda.stream();
    let p = |x: u64| x as usize as *mut c_void;
    // SAFETY: device buffers of the plan's sizes on the library's (primary) context, alive until
    // the stream is synchronized below.
    unsafe {
        gpu.forward_raw(p(qp), p(kp), p(vp), p(op), p(savedp), p(wsp), stream)
            .expect("forward_raw");
        gpu.backward_raw(
            p(qp),
            p(kp),
            p(vp),
            p(op),
            p(dop),
            p(savedp),
            p(dq_ptr),
            p(dk_ptr),
            p(dv_ptr),
            p(wsp),
            stream,
        )
        .expect("backward_raw");
    }
    cuda.sync(stream);
    let fetch = |ptr: u64, len: usize| -> Vec<f32> {
        let mut bits = vec![0u16; len];
        cuda.download(&mut bits, ptr);
        bits.into_iter().map(f16_to_f32).collect()
    };
    let errors = [
        ("out", max_rel(&fetch(op, nq), &out_ref)),
        ("dq", max_rel(&fetch(dq_ptr, nq), &dq_ref)),
        ("dk", max_rel(&fetch(dk_ptr, nkv), &dk_ref)),
        ("dv", max_rel(&fetch(dv_ptr, nkv), &dv_ref)),
    ];
    println!("CUDA dense f16 vs CPU f32 (max-norm relative): {errors:?}");
    for (what, e) in errors {
        assert!(e <= 5e-3, "{what}: {e}");
    }

    // Host slices are refused by a CUDA plan, with the status saying why.
    let mut out = vec![0f32; nq];
    let mut saved_host = gpu.new_saved();
    let err = gpu
        .forward(&q, &k, &v, &mut out, &mut saved_host)
        .unwrap_err();
    assert_eq!(err.status(), Status::Unsupported);

    cuda.destroy_stream(stream);
    for ptr in [qp, kp, vp, op, dop, savedp, wsp, dq_ptr, dk_ptr, dv_ptr] {
        cuda.free(ptr);
    }
}
