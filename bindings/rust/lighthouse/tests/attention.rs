//! The attention step (lh_attention_forward / _backward) and attention hooks on ring-less CPU
//! plans: the stage entry points around the attention step reproduce lh_forward, and a hook that
//! runs the library's own step changes nothing, bit for bit.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lighthouse::{Context, Error, Mode, Plan, Status};

/// A GQA Lighthouse plan (2 query heads on 1 kv head) small enough for a test.
fn plan(ctx: &Arc<Context>) -> lighthouse::PlanBuilder {
    ctx.plan()
        .batch(1)
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

fn inputs(plan: &Plan, seed: u64) -> Inputs {
    let info = plan.info();
    Inputs {
        q: common::random(info.q_len(), seed),
        k: common::random(info.kv_len(), seed + 1),
        v: common::random(info.kv_len(), seed + 2),
        dout: common::random(info.q_len(), seed + 3),
    }
}

struct Grads {
    out: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

impl std::fmt::Debug for Grads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Grads(out, dq: {} elements; dk, dv: {})",
            self.out.len(),
            self.dk.len()
        )
    }
}

fn forward_backward(plan: &mut Plan, x: &Inputs) -> lighthouse::Result<Grads> {
    let info = *plan.info();
    let mut g = Grads {
        out: vec![0f32; info.q_len()],
        dq: vec![0f32; info.q_len()],
        dk: vec![0f32; info.kv_len()],
        dv: vec![0f32; info.kv_len()],
    };
    let mut saved = plan.new_saved();
    plan.forward(&x.q, &x.k, &x.v, &mut g.out, &mut saved)?;
    plan.backward(
        &x.q,
        &x.k,
        &x.v,
        Some(&g.out),
        &x.dout,
        &saved,
        &mut g.dq,
        &mut g.dk,
        &mut g.dv,
    )?;
    Ok(g)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn ringless_plan_reports_one_chunk_and_rank() {
    let ctx = Context::cpu().unwrap();
    let plan = plan(&ctx).build().unwrap();
    let info = plan.info();
    assert_eq!(
        (info.chunks, info.world, info.rank, info.local_seq_len),
        (1, 1, 0, info.seq_len)
    );
    assert_eq!(info.chunk_subseq_len(), info.subseq_len);
    assert_eq!(info.lse_len(), info.batch * info.heads * info.subseq_len);
}

/// scores -> select -> gather -> attention step -> scatter is lh_forward taken apart.
#[test]
fn stages_around_the_attention_step_reproduce_forward() {
    let ctx = Context::cpu().unwrap();
    let mut plan = plan(&ctx).build().unwrap();
    let info = *plan.info();
    let x = inputs(&plan, 11);
    let want = forward_backward(&mut plan, &x).unwrap();

    let mut sq = vec![0f32; info.scores_q_len()];
    let mut sk = vec![0f32; info.scores_k_len()];
    plan.scores(&x.q, &x.k, &mut sq, &mut sk).unwrap();
    let mut indices = vec![0i32; info.indices_len()];
    plan.select(&sq, &sk, &mut indices).unwrap();
    let sel = info.selected_len();
    let (mut q_sel, mut k_sel, mut v_sel) = (vec![0f32; sel], vec![0f32; sel], vec![0f32; sel]);
    plan.gather(
        &x.q, &x.k, &x.v, &indices, &mut q_sel, &mut k_sel, &mut v_sel,
    )
    .unwrap();
    // Without a ring C = 1, so gather's [B, H, S_sel, D] is the step's [C, B, H, S_c, D].
    let mut o_sel = vec![f32::NAN; sel];
    let mut lse = vec![f32::NAN; info.lse_len()];
    plan.attention_forward(&q_sel, &k_sel, &v_sel, &mut o_sel, &mut lse)
        .unwrap();
    assert!(lse.iter().all(|l| l.is_finite()), "every lse written");
    let mut out = vec![f32::NAN; info.q_len()];
    plan.scatter(&indices, &o_sel, &mut out).unwrap();
    let err = common::rel_err(&out, &want.out);
    assert!(
        err <= 1e-6,
        "stages vs lh_forward: relative error {err:e}, max |diff| {:e}",
        max_abs_diff(&out, &want.out)
    );

    // The step's backward: every gradient written and finite; with do_sel = 0 all are 0.
    let do_sel = common::random(sel, 99);
    let (mut dq, mut dk, mut dv) = (
        vec![f32::NAN; sel],
        vec![f32::NAN; sel],
        vec![f32::NAN; sel],
    );
    plan.attention_backward(
        &q_sel, &k_sel, &v_sel, &o_sel, &lse, &do_sel, &mut dq, &mut dk, &mut dv,
    )
    .unwrap();
    for (name, g) in [("dq_sel", &dq), ("dk_sel", &dk), ("dv_sel", &dv)] {
        assert!(g.iter().all(|x| x.is_finite()), "{name} finite");
        assert!(g.iter().any(|&x| x != 0.0), "{name} not all zero");
    }
    let zero = vec![0f32; sel];
    plan.attention_backward(
        &q_sel, &k_sel, &v_sel, &o_sel, &lse, &zero, &mut dq, &mut dk, &mut dv,
    )
    .unwrap();
    assert!(dq.iter().chain(&dk).chain(&dv).all(|&x| x == 0.0));

    // The gradients are those of f = sum(o_sel * do_sel): a central difference of f along a
    // random direction of each input matches <grad, direction> (f64 sums of the fp32 step).
    plan.attention_backward(
        &q_sel, &k_sel, &v_sel, &o_sel, &lse, &do_sel, &mut dq, &mut dk, &mut dv,
    )
    .unwrap();
    let mut f = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
        let (mut o, mut l) = (vec![0f32; sel], vec![0f32; info.lse_len()]);
        plan.attention_forward(q, k, v, &mut o, &mut l).unwrap();
        o.iter()
            .zip(&do_sel)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    };
    let eps = 1e-2f32;
    for (which, grad) in [(0, &dq), (1, &dk), (2, &dv)] {
        let dir = common::random(sel, 500 + which as u64);
        let shifted = |sign: f32| -> Vec<f32> {
            let base = [&q_sel, &k_sel, &v_sel][which];
            base.iter()
                .zip(&dir)
                .map(|(&x, &d)| x + sign * eps * d)
                .collect()
        };
        let (plus, minus) = (shifted(1.0), shifted(-1.0));
        let pick = |x: &Vec<f32>| match which {
            0 => (x.clone(), k_sel.clone(), v_sel.clone()),
            1 => (q_sel.clone(), x.clone(), v_sel.clone()),
            _ => (q_sel.clone(), k_sel.clone(), x.clone()),
        };
        let (a, b) = (pick(&plus), pick(&minus));
        let numeric = (f(&a.0, &a.1, &a.2) - f(&b.0, &b.1, &b.2)) / (2.0 * eps as f64);
        let analytic: f64 = grad
            .iter()
            .zip(&dir)
            .map(|(&g, &d)| g as f64 * d as f64)
            .sum();
        let rel = (numeric - analytic).abs() / analytic.abs().max(1e-3);
        assert!(
            rel < 1e-3,
            "d{} of the attention step: directional derivative {analytic} vs central \
             difference {numeric} (relative {rel:e})",
            ["q", "k", "v"][which]
        );
    }
}

#[test]
fn attention_step_checks_lengths() {
    let ctx = Context::cpu().unwrap();
    let mut plan = plan(&ctx).build().unwrap();
    let info = *plan.info();
    let sel = vec![0f32; info.selected_len()];
    let mut o_sel = vec![0f32; info.selected_len()];
    let mut short_lse = vec![0f32; info.lse_len() - 1];
    let err = plan
        .attention_forward(&sel, &sel, &sel, &mut o_sel, &mut short_lse)
        .unwrap_err();
    assert_eq!(err.status(), Status::InvalidValue);
    assert!(err.message().contains("lse"), "{}", err.message());
}

/// A hook that runs the library's own attention step is the same as no hook, bit for bit, except
/// dk and dv where `kv_tolerance` > 0 (relative error allowed).
fn check_hook_equals_no_hook(mode: Mode, kv_heads: usize, kv_tolerance: f64) {
    let ctx = Context::cpu().unwrap();
    let make = || plan(&ctx).mode(mode).kv_heads(kv_heads);
    let mut plain = make().build().unwrap();
    // The plan owns its closures ('static): they count through shared counters.
    let fwd_calls = Arc::new(AtomicUsize::new(0));
    let bwd_calls = Arc::new(AtomicUsize::new(0));
    let (fwd_seen, bwd_seen) = (Arc::clone(&fwd_calls), Arc::clone(&bwd_calls));
    let mut hooked = make()
        .attention_hooks(
            move |call| {
                fwd_seen.fetch_add(1, Ordering::SeqCst);
                assert_eq!(call.info().chunks, 1);
                assert!(call.stream.is_null(), "CPU plans run without a stream");
                call.run_library()
            },
            move |call| {
                bwd_seen.fetch_add(1, Ordering::SeqCst);
                call.run_library()
            },
        )
        .build()
        .unwrap();
    let x = inputs(&plain, 5);
    let want = forward_backward(&mut plain, &x).unwrap();
    let got = forward_backward(&mut hooked, &x).unwrap();
    assert_eq!(fwd_calls.load(Ordering::SeqCst), 1, "forward hook ran once");
    assert_eq!(
        bwd_calls.load(Ordering::SeqCst),
        1,
        "backward hook ran once"
    );
    let differ: Vec<String> = [
        ("out", &got.out, &want.out),
        ("dq", &got.dq, &want.dq),
        ("dk", &got.dk, &want.dk),
        ("dv", &got.dv, &want.dv),
    ]
    .iter()
    .filter(|(name, g, w)| {
        if kv_tolerance > 0.0 && (*name == "dk" || *name == "dv") {
            return common::rel_err(g, w) > kv_tolerance;
        }
        g.iter()
            .zip(w.iter())
            .any(|(a, b)| a.to_bits() != b.to_bits())
    })
    .map(|(name, g, w)| {
        format!(
            "{name} (max |diff| {:e}, relative {:e})",
            max_abs_diff(g, w),
            common::rel_err(g, w)
        )
    })
    .collect();
    assert!(
        differ.is_empty(),
        "{mode:?}, kv_heads {kv_heads}: hooked differs from no hook: {}",
        differ.join(", ")
    );
}

#[test]
fn hook_running_the_library_step_equals_no_hook_lighthouse_gqa() {
    check_hook_equals_no_hook(Mode::Lighthouse, 1, 0.0);
}

#[test]
fn hook_running_the_library_step_equals_no_hook_lighthouse_mha() {
    check_hook_equals_no_hook(Mode::Lighthouse, 2, 0.0);
}

#[test]
fn hook_running_the_library_step_equals_no_hook_dense_mha() {
    check_hook_equals_no_hook(Mode::Dense, 2, 0.0);
}

/// Dense GQA: the attention step returns dk/dv per query head (the ABI's contract), which the
/// hooked backward then sums over each group, while the fused dense backward sums inside its
/// kernel: another summation order, so dk and dv agree to rounding only (out and dq are exact).
#[test]
fn hook_running_the_library_step_equals_no_hook_dense_gqa() {
    check_hook_equals_no_hook(Mode::Dense, 1, 1e-5);
}

/// A hook may also compute the step itself from host views (here: copying what the library's
/// step writes, through the slices), and its outputs are what forward uses.
#[test]
fn hook_host_views_cover_the_buffers() {
    let ctx = Context::cpu().unwrap();
    let mut hooked = plan(&ctx)
        .attention_hooks(
            |call| {
                let info = *call.info();
                let (q, k, v, o, lse) = call.host()?;
                assert_eq!(q.len(), info.selected_len());
                assert_eq!((k.len(), v.len(), o.len()), (q.len(), q.len(), q.len()));
                assert_eq!(lse.len(), info.lse_len());
                call.run_library()
            },
            |call| call.run_library(),
        )
        .build()
        .unwrap();
    let x = inputs(&hooked, 8);
    let g = forward_backward(&mut hooked, &x).unwrap();
    assert!(g.out.iter().all(|v| v.is_finite()));
}

/// An Err from a hook closure is what forward returns; a panic is caught before it reaches C
/// and becomes Status::Internal with the panic's message; the plan stays usable.
#[test]
fn hook_errors_and_panics_become_errors() {
    let ctx = Context::cpu().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut failing = plan(&ctx)
        .attention_hooks(
            |_| Err(Error::new(Status::Communication, "my ring is down")),
            |call| call.run_library(),
        )
        .build()
        .unwrap();
    let x = inputs(&failing, 3);
    let err = forward_backward(&mut failing, &x).unwrap_err();
    assert_eq!(err.status(), Status::Communication);
    assert_eq!(err.message(), "my ring is down");

    let mut panicking = plan(&ctx)
        .attention_hooks(
            move |call| {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("hook bug {}", 42);
                }
                call.run_library()
            },
            |call| call.run_library(),
        )
        .build()
        .unwrap();
    let err = forward_backward(&mut panicking, &x).unwrap_err();
    assert_eq!(err.status(), Status::Internal);
    assert!(err.message().contains("hook bug 42"), "{}", err.message());
    // The next call runs normally.
    let g = forward_backward(&mut panicking, &x).unwrap();
    assert!(g.dq.iter().all(|v| v.is_finite()));
}

/// The raw C variant: function pointers and user data of the caller's own.
#[test]
fn raw_hooks_are_called_with_their_user_data() {
    use lighthouse::sys;
    use std::ffi::c_void;

    /// A host workspace of the plan's attention step, from inside a hook.
    unsafe fn workspace(plan: *mut sys::lh_plan) -> Vec<u128> {
        let mut bytes = 0i64;
        assert_eq!(
            sys::lh_plan_get_i64(plan, sys::LH_QUERY_ATTENTION_WORKSPACE_BYTES, &mut bytes),
            sys::LH_OK
        );
        vec![0u128; (bytes as usize + 15) / 16 + 1]
    }
    unsafe extern "C" fn fwd(
        user_data: *mut c_void,
        plan: *mut sys::lh_plan,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        o: *mut c_void,
        lse: *mut f32,
        stream: *mut c_void,
    ) -> sys::lh_status {
        (*(user_data as *const AtomicUsize)).fetch_add(1, Ordering::SeqCst);
        let mut ws = workspace(plan);
        sys::lh_attention_forward(plan, q, k, v, o, lse, ws.as_mut_ptr().cast(), stream)
    }
    #[allow(clippy::too_many_arguments)]
    unsafe extern "C" fn bwd(
        user_data: *mut c_void,
        plan: *mut sys::lh_plan,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        o: *const c_void,
        lse: *const f32,
        d_o: *const c_void,
        dq: *mut c_void,
        dk: *mut c_void,
        dv: *mut c_void,
        stream: *mut c_void,
    ) -> sys::lh_status {
        (*(user_data as *const AtomicUsize)).fetch_add(100, Ordering::SeqCst);
        let mut ws = workspace(plan);
        sys::lh_attention_backward(
            plan,
            q,
            k,
            v,
            o,
            lse,
            d_o,
            dq,
            dk,
            dv,
            ws.as_mut_ptr().cast(),
            stream,
        )
    }
    #[allow(clippy::too_many_arguments)]
    unsafe extern "C" fn refuse(
        _: *mut c_void,
        _: *mut sys::lh_plan,
        _: *const c_void,
        _: *const c_void,
        _: *const c_void,
        _: *const c_void,
        _: *const f32,
        _: *const c_void,
        _: *mut c_void,
        _: *mut c_void,
        _: *mut c_void,
        _: *mut c_void,
    ) -> sys::lh_status {
        sys::LH_ERROR_UNSUPPORTED
    }

    let calls = AtomicUsize::new(0);
    let user_data = &calls as *const AtomicUsize as *mut c_void;
    let ctx = Context::cpu().unwrap();
    let mut plain = plan(&ctx).build().unwrap();
    // SAFETY: the hooks follow the contract, `calls` outlives the plans and is Sync.
    let mut hooked = unsafe { plan(&ctx).attention_hooks_raw(Some(fwd), Some(bwd), user_data) }
        .build()
        .unwrap();
    let x = inputs(&plain, 21);
    let want = forward_backward(&mut plain, &x).unwrap();
    let got = forward_backward(&mut hooked, &x).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 101, "each hook ran once");
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(same(&got.out, &want.out), "out");
    assert!(
        same(&got.dq, &want.dq) && same(&got.dk, &want.dk) && same(&got.dv, &want.dv),
        "gradients: dq relative {:e}, dk {:e}, dv {:e}",
        common::rel_err(&got.dq, &want.dq),
        common::rel_err(&got.dk, &want.dk),
        common::rel_err(&got.dv, &want.dv)
    );

    // A hook's error status is what backward returns.
    let mut refusing =
        unsafe { plan(&ctx).attention_hooks_raw(Some(fwd), Some(refuse), user_data) }
            .build()
            .unwrap();
    let err = forward_backward(&mut refusing, &x).unwrap_err();
    assert_eq!(err.status(), Status::Unsupported, "{err}");

    // Setting only one hook is refused by the library.
    let err = unsafe { plan(&ctx).attention_hooks_raw(Some(fwd), None, std::ptr::null_mut()) }
        .build()
        .unwrap_err();
    assert_eq!(err.status(), Status::NullPointer);
}
