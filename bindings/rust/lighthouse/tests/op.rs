//! The framework-facing API on the CPU backend: `forward_device` / `backward_device` over
//! `DeviceMemory` and the autograd `AttentionOp` give exactly what the host-slice entry points
//! give (same plan configuration, bit for bit), refuse what does not fit before the library is
//! called, and the ownership model holds what a `'static` framework op needs (a context in a
//! `static`, plans owned and shared across threads).

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use lighthouse::{
    Allocator, AttentionOp, BufferKind, Context, Device, DeviceMemory, Dtype, ForwardState,
    HostAllocator, HostBuffer, Mode, Plan, PlanInfo, Status, Stream,
};

/// A GQA Lighthouse plan (2 query heads on 1 kv head) small enough for a test.
fn builder(ctx: &Arc<Context>) -> lighthouse::PlanBuilder {
    ctx.plan()
        .seq_len(2048)
        .heads(2)
        .kv_heads(1)
        .head_dim(16)
        .levels(2)
        .pooling(4)
        .topk(256)
}

struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dout: Vec<f32>,
}

fn inputs(i: &PlanInfo, seed: u64) -> Inputs {
    Inputs {
        q: common::random(i.q_len(), seed),
        k: common::random(i.kv_len(), seed + 1),
        v: common::random(i.kv_len(), seed + 2),
        dout: common::random(i.q_len(), seed + 3),
    }
}

/// out, dq, dk, dv through the host-slice entry points: the reference.
fn host_path(plan: &mut Plan, x: &Inputs) -> [Vec<f32>; 4] {
    let i = *plan.info();
    let (mut out, mut dq) = (vec![0f32; i.q_len()], vec![0f32; i.q_len()]);
    let (mut dk, mut dv) = (vec![0f32; i.kv_len()], vec![0f32; i.kv_len()]);
    let mut saved = plan.new_saved();
    plan.forward(&x.q, &x.k, &x.v, &mut out, &mut saved)
        .unwrap();
    plan.backward(
        &x.q,
        &x.k,
        &x.v,
        Some(&out),
        &x.dout,
        &saved,
        &mut dq,
        &mut dk,
        &mut dv,
    )
    .unwrap();
    [out, dq, dk, dv]
}

fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let differ = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differ, 0,
        "{what}: {differ} elements differ from the host path"
    );
}

/// Host memory poisoned with NaN, so that an element the library does not write shows.
struct PoisonAllocator;

impl Allocator for PoisonAllocator {
    type Buffer = HostBuffer;

    fn alloc(&self, bytes: usize, kind: BufferKind, _: Stream) -> lighthouse::Result<HostBuffer> {
        let mut b = HostBuffer::new(bytes);
        if let BufferKind::Tensor { dtype, elements } = kind {
            assert_eq!((dtype, elements * 4), (Dtype::Float32, bytes));
            b.as_f32_mut().fill(f32::NAN);
        }
        Ok(b)
    }
}

#[test]
fn device_entry_points_equal_the_host_path() {
    let ctx = Context::cpu().unwrap();
    assert_eq!(ctx.device(), Device::Cpu);
    let mut plan = builder(&ctx).build().unwrap();
    let i = *plan.info();
    let x = inputs(plan.info(), 3);
    let want = host_path(&mut plan, &x);

    let mut out = vec![f32::NAN; i.q_len()];
    let mut saved = HostBuffer::new(i.saved_bytes);
    let mut ws = HostBuffer::new(i.fwd_workspace_bytes.max(i.bwd_workspace_bytes));
    plan.forward_device(
        &x.q,
        &x.k,
        &x.v,
        &mut out,
        &mut saved,
        Some(&mut ws),
        Stream::null(),
    )
    .unwrap();
    let (mut dq, mut dk, mut dv) = (
        vec![f32::NAN; i.q_len()],
        vec![f32::NAN; i.kv_len()],
        vec![f32::NAN; i.kv_len()],
    );
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
        Some(&mut ws),
        Stream::null(),
    )
    .unwrap();
    for (name, got, want) in [
        ("out", &out, &want[0]),
        ("dq", &dq, &want[1]),
        ("dk", &dk, &want[2]),
        ("dv", &dv, &want[3]),
    ] {
        assert_bits(name, got, want);
    }
}

#[test]
fn device_entry_points_check_before_calling_the_library() {
    let ctx = Context::cpu().unwrap();
    let mut plan = builder(&ctx).build().unwrap();
    let i = *plan.info();
    let x = inputs(plan.info(), 5);
    let mut out = vec![0f32; i.q_len()];
    let mut saved = HostBuffer::new(i.saved_bytes);
    let mut ws = HostBuffer::new(i.fwd_workspace_bytes);
    // The CPU plan has a forward workspace: none given is refused too.
    let err = plan
        .forward_device(&x.q, &x.k, &x.v, &mut out, &mut saved, None, Stream::null())
        .unwrap_err();
    assert_eq!(err.status(), Status::NullPointer, "{err}");
    assert!(err.message().starts_with("workspace:"), "{err}");
    let mut run = |q: &dyn DeviceMemory, saved: &mut HostBuffer, stream: Stream| {
        plan.forward_device(q, &x.k, &x.v, &mut out, saved, Some(&mut ws), stream)
    };
    let short = vec![0f32; i.q_len() - 1];
    let err = run(&short, &mut saved, Stream::null()).unwrap_err();
    assert_eq!(err.status(), Status::InvalidValue);
    assert!(err.message().starts_with("q: has"), "{err}");
    // A too-small saved, a stream on a CPU plan, memory of a GPU.
    let mut small = HostBuffer::new(i.saved_bytes - 16);
    let err = run(&x.q, &mut small, Stream::null()).unwrap_err();
    assert!(
        err.message().starts_with("saved:") && err.message().contains("at least"),
        "{err}"
    );
    // SAFETY: the check refuses the stream before it is used.
    let stream = unsafe { Stream::from_raw(16 as *mut std::ffi::c_void) };
    let err = run(&x.q, &mut saved, stream).unwrap_err();
    assert_eq!(err.status(), Status::BadPointer, "{err}");
    struct Gpu(u64, usize);
    // SAFETY: never dereferenced: the device check refuses it.
    unsafe impl DeviceMemory for Gpu {
        fn device_ptr(&self) -> u64 {
            self.0
        }
        fn byte_len(&self) -> usize {
            self.1
        }
        fn device(&self) -> Device {
            Device::Cuda(0)
        }
    }
    let err = run(&Gpu(1 << 20, i.q_len() * 4), &mut saved, Stream::null()).unwrap_err();
    assert_eq!(err.status(), Status::BadPointer);
    assert!(err.message().contains("CUDA device 0"), "{err}");
    // The plan still runs after the refusals.
    run(&x.q, &mut saved, Stream::null()).unwrap();
}

#[test]
fn attention_op_equals_the_host_path_and_owns_saved() {
    let ctx = Context::cpu().unwrap();
    let mut plan = builder(&ctx).build().unwrap();
    let x = inputs(plan.info(), 9);
    let want = host_path(&mut plan, &x);
    let op = AttentionOp::new(plan, PoisonAllocator);
    let s = Stream::null();
    let (out, state) = op.forward(&x.q, &x.k, &x.v, s).unwrap();
    assert_eq!(state.saved().map(|b| b.len()), Some(op.info().saved_bytes));
    let g = op
        .backward(&state, &x.q, &x.k, &x.v, None, &x.dout, s)
        .unwrap();
    assert_bits("out", out.as_f32(), &want[0]);
    assert_bits("dq", g.dq.as_f32(), &want[1]);
    assert_bits("dk", g.dk.as_f32(), &want[2]);
    assert_bits("dv", g.dv.as_f32(), &want[3]);
    // Backward may run again on the same state (retain_graph), with or without `out`.
    let again = op
        .backward(&state, &x.q, &x.k, &x.v, Some(&out), &x.dout, s)
        .unwrap();
    assert_bits("dq again", again.dq.as_f32(), &want[1]);

    // The state belongs to these q, k, v, out and to this op.
    let copy = x.q.clone();
    let err = op
        .backward(&state, &copy, &x.k, &x.v, None, &x.dout, s)
        .unwrap_err();
    assert_eq!(err.status(), Status::BadState);
    assert!(err.message().starts_with("q ("), "{err}");
    let err = op
        .backward(&state, &x.q, &x.k, &x.v, Some(&x.dout), &x.dout, s)
        .unwrap_err();
    assert!(err.message().starts_with("out ("), "{err}");
    let other = AttentionOp::new(builder(&ctx).build().unwrap(), PoisonAllocator);
    let err = other
        .backward(&state, &x.q, &x.k, &x.v, None, &x.dout, s)
        .unwrap_err();
    assert_eq!(err.status(), Status::BadState);
    assert!(err.message().contains("another op"), "{err}");
}

/// Part of a caller's buffer, as a framework's narrowed view of one packed tensor would be.
struct Part {
    ptr: u64,
    bytes: usize,
}

// SAFETY: the test makes parts of a live host buffer that do not overlap, one borrow each.
unsafe impl DeviceMemory for Part {
    fn device_ptr(&self) -> u64 {
        self.ptr
    }
    fn byte_len(&self) -> usize {
        self.bytes
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
}

/// Outputs the caller allocated: forward into its own tensor, backward into the three parts of
/// one packed buffer (what a framework whose custom op returns one tensor does).
#[test]
fn attention_op_writes_into_caller_outputs() {
    let ctx = Context::cpu().unwrap();
    let mut plan = builder(&ctx).build().unwrap();
    let x = inputs(plan.info(), 17);
    let want = host_path(&mut plan, &x);
    let op = AttentionOp::new(plan, PoisonAllocator);
    let s = Stream::null();
    let mut out = vec![f32::NAN; op.info().q_len()];
    let state = op.forward_into(&x.q, &x.k, &x.v, &mut out, s).unwrap();
    assert_bits("out", &out, &want[0]);
    let (nq, nkv) = (op.info().q_len(), op.info().kv_len());
    let mut packed = HostBuffer::new(4 * (nq + 2 * nkv));
    packed.as_f32_mut().fill(f32::NAN);
    let base = packed.device_ptr();
    let part = |from: usize, len: usize| Part {
        ptr: base + 4 * from as u64,
        bytes: 4 * len,
    };
    let (mut dq, mut dk, mut dv) = (part(0, nq), part(nq, nkv), part(nq + nkv, nkv));
    op.backward_into(
        &state,
        &x.q,
        &x.k,
        &x.v,
        Some(&out),
        &x.dout,
        &mut dq,
        &mut dk,
        &mut dv,
        s,
    )
    .unwrap();
    let all = packed.as_f32();
    assert_bits("packed dq", &all[..nq], &want[1]);
    assert_bits("packed dk", &all[nq..nq + nkv], &want[2]);
    assert_bits("packed dv", &all[nq + nkv..], &want[3]);
    // A part of the wrong length is refused before the library runs.
    let mut short = part(0, nq - 1);
    let err = op
        .backward_into(
            &state, &x.q, &x.k, &x.v, None, &x.dout, &mut short, &mut dk, &mut dv, s,
        )
        .unwrap_err();
    assert!(err.message().starts_with("dq: "), "{err}");
}

#[test]
fn dense_attention_op_needs_the_output_in_backward() {
    let ctx = Context::cpu().unwrap();
    let mut plan = builder(&ctx).mode(Mode::Dense).build().unwrap();
    let x = inputs(plan.info(), 13);
    let want = host_path(&mut plan, &x);
    let op = AttentionOp::new(plan, HostAllocator);
    let (out, state) = op.forward(&x.q, &x.k, &x.v, Stream::null()).unwrap();
    let err = op
        .backward(&state, &x.q, &x.k, &x.v, None, &x.dout, Stream::null())
        .unwrap_err();
    assert_eq!(err.status(), Status::NullPointer);
    let g = op
        .backward(
            &state,
            &x.q,
            &x.k,
            &x.v,
            Some(&out),
            &x.dout,
            Stream::null(),
        )
        .unwrap();
    assert_bits("dense out", out.as_f32(), &want[0]);
    assert_bits("dense dv", g.dv.as_f32(), &want[3]);
}

/// What a framework does with the types: a context in a `static`, an op (owning its plan and so
/// its context) in an `Arc` shared by threads, forward states sent to another thread for
/// backward, plans built and dropped on many threads of one context at once.
#[test]
fn ownership_fits_a_static_framework_op() {
    static CONTEXT: OnceLock<Arc<Context>> = OnceLock::new();
    let ctx = CONTEXT.get_or_init(|| Context::cpu().unwrap());
    ctx.set_num_threads(1).unwrap();

    fn assert_static_send_sync<T: Send + Sync + 'static>(_: &T) {}
    let op = Arc::new(AttentionOp::new(
        builder(ctx).build().unwrap(),
        HostAllocator,
    ));
    assert_static_send_sync(&op);
    let x = Arc::new(inputs(op.info(), 21));
    let want = Arc::new(Mutex::new(None::<Vec<f32>>));
    std::thread::scope(|scope| {
        for t in 0..3 {
            let (op, x, want) = (Arc::clone(&op), Arc::clone(&x), Arc::clone(&want));
            scope.spawn(move || {
                let (out, state): (HostBuffer, ForwardState<HostBuffer>) =
                    op.forward(&x.q, &x.k, &x.v, Stream::null()).unwrap();
                // Backward on another thread, with the state moved there.
                let g = std::thread::spawn(move || {
                    op.backward(&state, &x.q, &x.k, &x.v, None, &x.dout, Stream::null())
                        .unwrap()
                })
                .join()
                .unwrap();
                let mut w = want.lock().unwrap();
                match &*w {
                    None => *w = Some(g.dq.as_f32().to_vec()),
                    Some(first) => assert_bits(&format!("thread {t} dq"), g.dq.as_f32(), first),
                }
                assert!(out.as_f32().iter().all(|v| v.is_finite()));
            });
        }
        // Plans of the same context built and dropped concurrently with the op's calls.
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..5 {
                    let plan = builder(ctx).build().unwrap();
                    std::thread::spawn(move || drop(plan)).join().unwrap();
                }
            });
        }
    });
}
