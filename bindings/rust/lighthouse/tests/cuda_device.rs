//! The safe entry points on a framework's device memory (`forward_device` / `backward_device`
//! over `DeviceMemory`) and the autograd op (`AttentionOp` with a stream-ordered driver
//! allocator), each against the same call made directly through the C ABI on the same inputs and
//! stream. Lighthouse attention in bfloat16 (the dtype a CUDA plan gets when none is set) agrees
//! to the bit, as the pipeline is deterministic; dense float16 forward to the bit and backward
//! within 2e-3 (cuDNN's backward may sum in another order). Every output is poisoned with NaN
//! first. The checks the crate makes before C (device, alignment, length) are tried on real
//! device memory. Skips where no CUDA backend can be used (see tests/common/cuda.rs).

mod common;

use std::sync::Arc;

use common::cuda::{
    bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, max_rel, Cuda, DevBuf, DriverAllocator, View,
};
use lighthouse::{
    sys, AttentionOp, Context, Device, DeviceMemory, Dtype, Gradients, Mode, Plan, PlanInfo,
    Status, Stream,
};

/// B=2, N=2048, H=4 query heads over Hkv=2, D=64, L=2, p=4, topk=128 (BNHD).
fn builder(ctx: &Arc<Context>) -> lighthouse::PlanBuilder {
    ctx.plan()
        .batch(2)
        .seq_len(2048)
        .heads(4)
        .kv_heads(2)
        .head_dim(64)
        .levels(2)
        .pooling(4)
        .topk(128)
}

fn to_bits(x: f32, dtype: Dtype) -> u16 {
    match dtype {
        Dtype::BFloat16 => f32_to_bf16(x),
        _ => f32_to_f16(x),
    }
}

fn to_f32(bits: &[u16], dtype: Dtype) -> Vec<f32> {
    let f = match dtype {
        Dtype::BFloat16 => bf16_to_f32,
        _ => f16_to_f32,
    };
    bits.iter().map(|&b| f(b)).collect()
}

struct Inputs {
    q: DevBuf,
    k: DevBuf,
    v: DevBuf,
    dout: DevBuf,
}

fn inputs(cuda: &Arc<Cuda>, info: &PlanInfo, stream: Stream, seed: u64) -> Inputs {
    let make = |len: usize, seed: u64| {
        let bits: Vec<u16> = common::random(len, seed)
            .iter()
            .map(|&x| to_bits(2.0 * x, info.dtype))
            .collect();
        DevBuf::from_bits(cuda, &bits, info.dtype, stream)
    };
    Inputs {
        q: make(info.q_len(), seed),
        k: make(info.kv_len(), seed + 1),
        v: make(info.kv_len(), seed + 2),
        dout: make(info.q_len(), seed + 3),
    }
}

/// out, dq, dk, dv as 16-bit values.
type Results = [Vec<u16>; 4];

/// New device buffers for a path's outputs, poisoned on `stream`.
fn outputs(cuda: &Arc<Cuda>, info: &PlanInfo, stream: Stream) -> [DevBuf; 4] {
    let es = info.dtype.size();
    let sizes = [info.q_len(), info.q_len(), info.kv_len(), info.kv_len()];
    sizes.map(|n| {
        let b = DevBuf::new(cuda, n * es, stream);
        cuda.poison(b.ptr(), n * es, stream);
        b
    })
}

fn scratch(cuda: &Arc<Cuda>, bytes: usize, stream: Stream) -> DevBuf {
    DevBuf::new(cuda, bytes, stream)
}

/// The reference: lh_forward and lh_backward called on the raw pointers, on `stream`.
fn c_path(plan: &mut Plan, cuda: &Arc<Cuda>, x: &Inputs, stream: Stream) -> Results {
    let info = *plan.info();
    let [out, dq, dk, dv] = outputs(cuda, &info, stream);
    let saved = scratch(cuda, info.saved_bytes, stream);
    let ws = scratch(
        cuda,
        info.fwd_workspace_bytes.max(info.bwd_workspace_bytes),
        stream,
    );
    let p = |b: &DevBuf| b.ptr() as usize as *mut std::ffi::c_void;
    // SAFETY: device buffers of the plan's sizes on its device, alive until the stream is
    // synchronized below (they are freed in stream order after it).
    unsafe {
        let rc = sys::lh_forward(
            plan.as_raw(),
            p(&x.q),
            p(&x.k),
            p(&x.v),
            p(&out),
            p(&saved),
            p(&ws),
            stream.as_raw(),
        );
        assert_eq!(rc, sys::LH_OK, "lh_forward");
        let rc = sys::lh_backward(
            plan.as_raw(),
            p(&x.q),
            p(&x.k),
            p(&x.v),
            p(&out),
            p(&x.dout),
            p(&saved),
            p(&dq),
            p(&dk),
            p(&dv),
            p(&ws),
            stream.as_raw(),
        );
        assert_eq!(rc, sys::LH_OK, "lh_backward");
    }
    cuda.sync(stream);
    [out.bits(), dq.bits(), dk.bits(), dv.bits()]
}

/// What an op's forward and backward wrote (after the stream's work is done).
fn op_results(out: &DevBuf, grads: &Gradients<DevBuf>) -> Results {
    [
        out.bits(),
        grads.dq.bits(),
        grads.dk.bits(),
        grads.dv.bits(),
    ]
}

const NAMES: [&str; 4] = ["out", "dq", "dk", "dv"];

/// Bit-identical where `tolerance` is 0 for that tensor, else within it (max-norm relative);
/// every element written (no NaN from the poison) either way.
fn compare(path: &str, got: &Results, want: &Results, dtype: Dtype, tolerance: [f64; 4]) {
    for i in 0..4 {
        let (g, w) = (&got[i], &want[i]);
        let differ = g.iter().zip(w).filter(|(a, b)| a != b).count();
        let (gf, wf) = (to_f32(g, dtype), to_f32(w, dtype));
        let nan = gf.iter().filter(|x| x.is_nan()).count();
        let err = max_rel(&gf, &wf);
        println!(
            "{path}: {} {differ} of {} elements differ from the C path (max-norm relative {err:e})",
            NAMES[i],
            g.len()
        );
        assert_eq!(
            nan, 0,
            "{path}: {} has {nan} unwritten (NaN) elements",
            NAMES[i]
        );
        if tolerance[i] == 0.0 {
            assert_eq!(differ, 0, "{path}: {} is not bit-identical", NAMES[i]);
        } else {
            assert!(err <= tolerance[i], "{path}: {} error {err:e}", NAMES[i]);
        }
    }
}

/// Runs `body` with a stream of its own, destroyed after everything `body` freed on it is done.
fn with_stream(cuda: &Arc<Cuda>, body: impl FnOnce(Stream)) {
    let stream = cuda.stream();
    body(stream);
    cuda.sync(stream);
    cuda.sync_all();
    cuda.destroy_stream(stream);
}

#[test]
fn device_memory_path_equals_c_path() {
    let Some((ctx, cuda)) = common::cuda::setup() else {
        return;
    };
    let mut plan = builder(&ctx).build().expect("CUDA plan");
    let info = *plan.info();
    assert_eq!(info.dtype, Dtype::BFloat16, "a CUDA plan's default dtype");
    assert_eq!(ctx.device(), Device::Cuda(0));
    with_stream(&cuda, |stream| {
        let x = inputs(&cuda, &info, stream, 41);
        let want = c_path(&mut plan, &cuda, &x, stream);

        let [mut out, mut dq, mut dk, mut dv] = outputs(&cuda, &info, stream);
        let mut saved = scratch(&cuda, info.saved_bytes, stream);
        let mut ws = scratch(&cuda, info.fwd_workspace_bytes, stream);
        let mut bws = scratch(&cuda, info.bwd_workspace_bytes, stream);
        plan.forward_device(
            &x.q,
            &x.k,
            &x.v,
            &mut out,
            &mut saved,
            Some(&mut ws),
            stream,
        )
        .expect("forward_device");
        plan.backward_device(
            &x.q,
            &x.k,
            &x.v,
            None,
            &x.dout,
            &saved,
            &mut dq,
            &mut dk,
            &mut dv,
            Some(&mut bws),
            stream,
        )
        .expect("backward_device");
        cuda.sync(stream);
        let got = [out.bits(), dq.bits(), dk.bits(), dv.bits()];
        compare(
            "forward_device/backward_device",
            &got,
            &want,
            info.dtype,
            [0.0; 4],
        );

        // The crate's checks, before any pointer reaches C, on real device memory.
        let qb = info.q_len() * 2;
        let view = |offset: u64, bytes: usize, device: Device| View {
            ptr: x.q.ptr() + offset,
            bytes,
            device,
        };
        let mut run = |q: &dyn DeviceMemory| {
            plan.forward_device(q, &x.k, &x.v, &mut out, &mut saved, Some(&mut ws), stream)
                .unwrap_err()
        };
        let host = vec![0f32; info.q_len() / 2];
        let cases: [(&dyn DeviceMemory, Status, &str); 5] = [
            (&host, Status::BadPointer, "the host"),
            (
                &view(0, qb, Device::Cuda(1)),
                Status::BadPointer,
                "CUDA device 1",
            ),
            (&view(2, qb, Device::Cuda(0)), Status::BadPointer, "aligned"),
            (
                &view(0, qb - 16, Device::Cuda(0)),
                Status::InvalidValue,
                "bytes",
            ),
            (&x.k, Status::InvalidValue, "bytes"),
        ];
        for (q, status, words) in cases {
            let err = run(q);
            assert_eq!(err.status(), status, "{err}");
            assert!(
                err.message().starts_with("q: ") && err.message().contains(words),
                "{err}"
            );
        }
        // An f16 tensor for a bf16 plan.
        let mut wrong = DevBuf::new(&cuda, qb, stream);
        let bits = vec![0u16; info.q_len()];
        cuda.sync(stream);
        cuda.upload(wrong.ptr(), &bits);
        let f16 = DevBuf::from_bits(&cuda, &bits, Dtype::Float16, stream);
        let err = run(&f16);
        assert_eq!(err.status(), Status::UnsupportedDtype, "{err}");
        // A CUDA plan refuses host slices, with the way out in the message.
        let mut host_saved = plan.new_saved();
        let hq = vec![0f32; info.q_len()];
        let hk = vec![0f32; info.kv_len()];
        let mut hout = vec![0f32; info.q_len()];
        let err = plan
            .forward(&hq, &hk, &hk, &mut hout, &mut host_saved)
            .unwrap_err();
        assert_eq!(err.status(), Status::Unsupported);
        assert!(err.message().contains("forward_device"), "{err}");
        // Still in working order after the refusals: bit-identical again.
        plan.forward_device(
            &x.q,
            &x.k,
            &x.v,
            &mut wrong,
            &mut saved,
            Some(&mut ws),
            stream,
        )
        .expect("forward_device after refusals");
        cuda.sync(stream);
        assert!(wrong.bits() == want[0], "out after the refused calls");
    });
}

#[test]
fn attention_op_equals_c_path_lighthouse_bf16() {
    let Some((ctx, cuda)) = common::cuda::setup() else {
        return;
    };
    let mut plan = builder(&ctx).build().expect("CUDA plan");
    let info = *plan.info();
    with_stream(&cuda, |stream| {
        let x = inputs(&cuda, &info, stream, 7);
        let want = c_path(&mut plan, &cuda, &x, stream);
        let op = AttentionOp::new(plan, DriverAllocator(Arc::clone(&cuda)));
        let (out, state) = op.forward(&x.q, &x.k, &x.v, stream).expect("op forward");
        let grads = op
            .backward(&state, &x.q, &x.k, &x.v, None, &x.dout, stream)
            .expect("op backward");
        cuda.sync(stream);
        let got = op_results(&out, &grads);
        compare(
            "AttentionOp (Lighthouse bf16)",
            &got,
            &want,
            info.dtype,
            [0.0; 4],
        );

        // The state runs backward again, and refuses tensors its forward did not use.
        let again = op
            .backward(&state, &x.q, &x.k, &x.v, Some(&out), &x.dout, stream)
            .expect("second backward");
        cuda.sync(stream);
        assert!(again.dq.bits() == want[1], "a second backward on one state");
        // Into the three parts of one packed buffer (a framework's single-output custom op).
        let (qb, kvb) = (info.q_len() * 2, info.kv_len() * 2);
        let packed = DevBuf::new(&cuda, qb + 2 * kvb, stream);
        cuda.poison(packed.ptr(), qb + 2 * kvb, stream);
        let part = |from: usize, bytes: usize| View {
            ptr: packed.ptr() + from as u64,
            bytes,
            device: Device::Cuda(0),
        };
        let (mut dq, mut dk, mut dv) = (part(0, qb), part(qb, kvb), part(qb + kvb, kvb));
        op.backward_into(
            &state, &x.q, &x.k, &x.v, None, &x.dout, &mut dq, &mut dk, &mut dv, stream,
        )
        .expect("op backward_into");
        cuda.sync(stream);
        let all = packed.bits();
        let (nq, nkv) = (info.q_len(), info.kv_len());
        assert!(all[..nq] == want[1][..], "packed dq");
        assert!(all[nq..nq + nkv] == want[2][..], "packed dk");
        assert!(all[nq + nkv..] == want[3][..], "packed dv");
        let err = op
            .backward(&state, &x.dout, &x.k, &x.v, None, &x.dout, stream)
            .unwrap_err();
        assert_eq!(err.status(), Status::BadState, "{err}");
        assert!(err.message().starts_with("q ("), "{err}");
    });
}

#[test]
fn attention_op_equals_c_path_dense_f16() {
    let Some((ctx, cuda)) = common::cuda::setup() else {
        return;
    };
    let mut plan = builder(&ctx)
        .mode(Mode::Dense)
        .dtype(Dtype::Float16)
        .build()
        .expect("CUDA dense plan");
    let info = *plan.info();
    with_stream(&cuda, |stream| {
        let x = inputs(&cuda, &info, stream, 3);
        let want = c_path(&mut plan, &cuda, &x, stream);
        let op = AttentionOp::new(plan, DriverAllocator(Arc::clone(&cuda)));
        let (out, state) = op.forward(&x.q, &x.k, &x.v, stream).expect("op forward");
        // A dense backward reads the forward's output: refused without it.
        let err = op
            .backward(&state, &x.q, &x.k, &x.v, None, &x.dout, stream)
            .unwrap_err();
        assert_eq!(err.status(), Status::NullPointer, "{err}");
        let grads = op
            .backward(&state, &x.q, &x.k, &x.v, Some(&out), &x.dout, stream)
            .expect("op backward");
        cuda.sync(stream);
        let got = op_results(&out, &grads);
        compare(
            "AttentionOp (dense f16)",
            &got,
            &want,
            info.dtype,
            [0.0, 2e-3, 2e-3, 2e-3],
        );
    });
}
