//! Every lh_status maps to an Error and back; real failures carry the status and a message.

mod common;

use lighthouse::{status_string, sys, Backend, Context, Dtype, Error, Mode, Stage, Status};

/// Every code the header defines (LH_ERROR_NULL_POINTER..LH_ERROR_INTERNAL) round-trips, and
/// the crate's name of it is the library's own (lh_status_string).
#[test]
fn every_status_round_trips() {
    let all: Vec<Status> = Status::all().collect();
    assert_eq!(
        all.len(),
        sys::LH_ERROR_INTERNAL as usize,
        "one variant per non-OK code"
    );
    for code in sys::LH_ERROR_NULL_POINTER..=sys::LH_ERROR_INTERNAL {
        let status = Status::from_code(code).expect("non-OK code");
        assert!(
            !matches!(status, Status::Unknown(_)),
            "code {code} has no variant"
        );
        assert_eq!(status.code(), code);
        assert_eq!(status.name(), status_string(code), "name of code {code}");
        assert_eq!(
            all[(code - 1) as usize],
            status,
            "Status::all() is in code order"
        );
    }
    assert_eq!(Status::from_code(sys::LH_OK), None);
    assert_eq!(status_string(sys::LH_OK), "LH_OK");
    // A code from a newer library is kept, not misread.
    let future = Status::from_code(1000).unwrap();
    assert_eq!(future, Status::Unknown(1000));
    assert_eq!(future.code(), 1000);
}

fn build_err(configure: impl FnOnce(lighthouse::PlanBuilder) -> lighthouse::PlanBuilder) -> Error {
    let ctx = Context::cpu().expect("CPU context");
    let builder = configure(
        ctx.plan()
            .seq_len(2048)
            .heads(2)
            .head_dim(32)
            .levels(2)
            .pooling(4)
            .topk(128),
    );
    let err = builder
        .build()
        .expect_err("the configuration must be refused");
    assert!(
        !err.message().is_empty(),
        "{:?} came without a message",
        err.status()
    );
    err
}

/// Each configuration rule of docs/spec.md fails with its own status and a message.
#[test]
fn configuration_errors_carry_status_and_message() {
    let cases: Vec<(Status, Error)> = vec![
        (Status::InvalidValue, build_err(|b| b.head_dim(0))),
        (Status::HeadsMismatch, build_err(|b| b.heads(3).kv_heads(2))),
        (Status::Pooling, build_err(|b| b.pooling(3))),
        (Status::Topk, build_err(|b| b.topk(100))),
        (Status::SeqDivisibility, build_err(|b| b.seq_len(2048 + 2))),
        (
            Status::TileTooSmall,
            build_err(|b| b.seq_len(512).topk(512)),
        ),
        (Status::Levels, build_err(|b| b.levels(9))),
        (
            Status::UnsupportedDtype,
            build_err(|b| b.dtype(Dtype::Float16)),
        ),
    ];
    for (want, err) in cases {
        assert_eq!(err.status(), want, "message: {}", err.message());
        assert_eq!(err.code(), want.code());
        assert!(err.to_string().starts_with(want.name()), "Display: {err}");
    }
}

/// Statuses the safe API cannot trigger (it never passes NULL or calls out of order), reached
/// through the raw declarations, with the message read back by Error.
#[test]
fn raw_errors_null_pointer_and_bad_state() {
    let ctx = Context::cpu().unwrap();
    // SAFETY: a live context; NULL out pointer is what is being tested.
    let rc = unsafe { sys::lh_plan_create(ctx.as_raw(), std::ptr::null_mut()) };
    assert_eq!(Status::from_code(rc), Some(Status::NullPointer));
    let message = unsafe { std::ffi::CStr::from_ptr(sys::lh_last_error()) };
    assert!(!message.to_bytes().is_empty());

    let plan = ctx
        .plan()
        .seq_len(2048)
        .heads(2)
        .head_dim(32)
        .levels(2)
        .pooling(4)
        .topk(128)
        .build()
        .unwrap();
    // SAFETY: a live finalized plan; setting a parameter now is the error under test.
    let rc = unsafe { sys::lh_plan_set_i64(plan.as_raw(), sys::LH_PARAM_TOPK, 256) };
    assert_eq!(Status::from_code(rc), Some(Status::BadState));
}

/// Slice lengths are checked before the library is called; the error names the tensor.
#[test]
fn wrong_lengths_and_unwritten_saved_are_refused() {
    let ctx = Context::cpu().unwrap();
    let mut plan = ctx
        .plan()
        .seq_len(2048)
        .heads(2)
        .head_dim(32)
        .levels(2)
        .pooling(4)
        .topk(128)
        .build()
        .unwrap();
    let n = plan.info().q_len();
    let (q, k, v) = (
        common::random(n, 1),
        common::random(n, 2),
        common::random(n, 3),
    );
    let mut out = vec![0f32; n];
    let mut saved = plan.new_saved();
    let err = plan
        .forward(&q[1..], &k, &v, &mut out, &mut saved)
        .unwrap_err();
    assert_eq!(err.status(), Status::InvalidValue);
    assert!(err.message().starts_with("q has"), "{}", err.message());

    let (mut dq, mut dk, mut dv) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    let err = plan
        .backward(&q, &k, &v, None, &out, &saved, &mut dq, &mut dk, &mut dv)
        .unwrap_err();
    assert_eq!(
        err.status(),
        Status::BadState,
        "backward before forward: {}",
        err.message()
    );

    let mut indices = vec![0i32; plan.info().indices_len()];
    indices[7] = plan.info().pyramid_len as i32;
    let err = plan
        .scatter(&indices, &vec![0f32; plan.info().selected_len()], &mut out)
        .unwrap_err();
    assert_eq!(err.status(), Status::InvalidValue, "{}", err.message());
}

/// Dense mode with default parameters is accepted (no Lighthouse rule applies).
#[test]
fn dense_plan_builds() {
    let ctx = Context::cpu().unwrap();
    let plan = ctx
        .plan()
        .seq_len(100)
        .heads(2)
        .head_dim(16)
        .mode(Mode::Dense)
        .build()
        .unwrap();
    assert_eq!(plan.info().subseq_len, 100);
    assert_eq!(plan.info().mode, Mode::Dense);
}

/// The recompute switch is accepted on a Lighthouse plan (the CPU backend keeps the same small
/// `saved` either way).
#[test]
fn recompute_subseq_plan_builds() {
    let ctx = Context::cpu().unwrap();
    let plan = ctx
        .plan()
        .seq_len(2048)
        .heads(2)
        .head_dim(16)
        .topk(128)
        .recompute_subseq(true)
        .build()
        .unwrap();
    assert!(plan.info().saved_bytes > 0);
}

/// Stage timing needs CUDA events: the CPU backend refuses it when the plan is built, and a plan
/// without it has no stage times to read.
#[test]
fn stage_timing_is_refused_on_the_cpu() {
    let err = build_err(|b| b.stage_timing(true));
    assert_eq!(
        err.status(),
        Status::Unsupported,
        "message: {}",
        err.message()
    );
    assert!(err.message().contains("STAGE_TIMING"), "{}", err.message());
    let ctx = Context::cpu().unwrap();
    let plan = ctx
        .plan()
        .seq_len(2048)
        .heads(2)
        .head_dim(16)
        .topk(128)
        .build()
        .unwrap();
    let err = plan.stage_ms(Stage::Scores).expect_err("timing is off");
    assert_eq!(err.status(), Status::BadState, "message: {}", err.message());
    assert_eq!(
        Stage::from_raw(sys::LH_STAGE_POOL_GRAD).unwrap(),
        Stage::PoolGrad
    );
    assert!(Stage::from_raw(sys::LH_STAGE_COUNT).is_err());
}

/// A CUDA context where no GPU can be used fails with BACKEND_UNAVAILABLE and a message; where
/// one can, it succeeds. Either way no handle is left behind.
#[test]
fn cuda_context_fails_cleanly_or_works() {
    match Context::new(Backend::Cuda, 0) {
        Ok(ctx) => assert_eq!(ctx.backend(), Backend::Cuda),
        Err(err) => {
            assert_eq!(err.status(), Status::BackendUnavailable, "{err}");
            assert!(!err.message().is_empty());
        }
    }
    // AUTO always yields a usable context.
    let auto = Context::new(Backend::Auto, 0).expect("AUTO context");
    assert_ne!(auto.backend(), Backend::Auto);
}
