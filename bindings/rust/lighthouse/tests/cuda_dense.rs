//! The unsafe raw-pointer entry points on a GPU: dense causal attention in float16 through
//! `forward_raw` / `backward_raw` with device buffers and a non-default stream, compared with the
//! CPU backend in float32 on the same (float16-rounded) inputs. Skips (passes with a note) where
//! no CUDA backend can be used (see tests/common/cuda.rs).

mod common;

use std::ffi::c_void;

use common::cuda::{f16_to_f32, f32_to_f16, max_rel};
use lighthouse::{Context, Dtype, Mode, Status};

/// B=2, N=512, H=4 query heads over Hkv=2, D=64, dense mode.
fn shape(p: lighthouse::PlanBuilder) -> lighthouse::PlanBuilder {
    p.batch(2)
        .seq_len(512)
        .heads(4)
        .kv_heads(2)
        .head_dim(64)
        .mode(Mode::Dense)
}

#[test]
fn cuda_dense_f16_matches_cpu() {
    let Some((gpu_ctx, cuda)) = common::cuda::setup() else {
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
        gpu.forward_raw(
            p(qp),
            p(kp),
            p(vp),
            p(op),
            p(savedp),
            p(wsp),
            stream.as_raw(),
        )
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
            stream.as_raw(),
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
