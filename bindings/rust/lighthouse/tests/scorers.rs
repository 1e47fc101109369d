//! The scorers through the safe API on the CPU backend: the norm scorer's own scores given to
//! `Plan::forward_with_scores` of a `Scorer::External` plan reproduce the norm path bit for bit
//! (indices, out, dq, dk, dv); a dilated plan ranks with `scores_qkv`'s scores; bad scorer
//! parameters fail at `build` with their status and sentence.

mod common;

use common::random as inputs;
use lighthouse::{Context, Mode, Plan, Scorer, Status};

const B: usize = 1;
const N: usize = 1024;
const H: usize = 2;
const D: usize = 16;

fn plan(ctx: &std::sync::Arc<Context>, scorer: Scorer) -> lighthouse::Result<Plan> {
    ctx.plan()
        .batch(B)
        .seq_len(N)
        .heads(H)
        .head_dim(D)
        .levels(2)
        .pooling(4)
        .topk(128)
        .scorer(scorer)
        .build()
}

struct Run {
    out: Vec<f32>,
    grads: Vec<Vec<f32>>,
    indices: Vec<i32>,
}

fn run(plan: &mut Plan, q: &[f32], k: &[f32], v: &[f32], scores: Option<(&[f32], &[f32])>) -> Run {
    let mut out = vec![0f32; q.len()];
    let mut saved = plan.new_saved();
    match scores {
        Some((sq, sk)) => plan.forward_with_scores(q, k, v, sq, sk, &mut out, &mut saved),
        None => plan.forward(q, k, v, &mut out, &mut saved),
    }
    .expect("forward");
    let dout = inputs(q.len(), 4);
    let (mut dq, mut dk, mut dv) = (
        vec![0f32; q.len()],
        vec![0f32; k.len()],
        vec![0f32; v.len()],
    );
    plan.backward(q, k, v, None, &dout, &saved, &mut dq, &mut dk, &mut dv)
        .expect("backward");
    // The selection, through the plan's own scores: the same that the forward ranked with.
    let info = *plan.info();
    let (mut sq, mut sk) = (
        vec![0f32; info.scores_q_len()],
        vec![0f32; info.scores_k_len()],
    );
    let mut indices = vec![0i32; info.indices_len()];
    if let Some((given_q, given_k)) = scores {
        sq.copy_from_slice(given_q);
        sk.copy_from_slice(given_k);
    } else {
        plan.scores_qkv(q, k, v, &mut sq, &mut sk)
            .expect("scores_qkv");
    }
    plan.select(&sq, &sk, &mut indices).expect("select");
    Run {
        out,
        grads: vec![dq, dk, dv],
        indices,
    }
}

#[test]
fn external_scores_equal_the_norm_scorer() {
    let ctx = Context::cpu().unwrap();
    let (q, k, v) = (
        inputs(B * N * H * D, 1),
        inputs(B * N * H * D, 2),
        inputs(B * N * H * D, 3),
    );
    let mut norm = plan(&ctx, Scorer::Norm).unwrap();
    let mut ext = plan(&ctx, Scorer::External).unwrap();
    let info = *norm.info();
    let (mut sq, mut sk) = (
        vec![0f32; info.scores_q_len()],
        vec![0f32; info.scores_k_len()],
    );
    norm.scores(&q, &k, &mut sq, &mut sk).unwrap();
    assert_eq!(ext.info().forward_scores_q_len(), sq.len());
    let a = run(&mut norm, &q, &k, &v, None);
    let b = run(&mut ext, &q, &k, &v, Some((&sq, &sk)));
    assert_eq!(a.indices, b.indices);
    assert!(a
        .out
        .iter()
        .zip(&b.out)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    for (ga, gb) in a.grads.iter().zip(&b.grads) {
        assert!(ga.iter().zip(gb).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    // An external plan has no scorer of its own, and needs its scores.
    let mut out = vec![0f32; q.len()];
    let mut saved = ext.new_saved();
    let err = ext.forward(&q, &k, &v, &mut out, &mut saved).unwrap_err();
    assert_eq!(err.status(), Status::Unsupported);
    assert!(
        err.message().contains("lh_forward_with_scores"),
        "{}",
        err.message()
    );
    let short = &sq[..sq.len() - 1];
    let err = ext
        .forward_with_scores(&q, &k, &v, short, &sk, &mut out, &mut saved)
        .unwrap_err();
    assert!(err.message().contains("scores_q"), "{}", err.message());
}

#[test]
fn dilated_scorer_ranks_with_its_scores() {
    let ctx = Context::cpu().unwrap();
    let (q, k, v) = (
        inputs(B * N * H * D, 5),
        inputs(B * N * H * D, 6),
        inputs(B * N * H * D, 7),
    );
    let mut dilated = plan(&ctx, Scorer::Dilated { dilation: 8 }).unwrap();
    let r = run(&mut dilated, &q, &k, &v, None);
    assert!(r.out.iter().all(|x| x.is_finite()));
    // The forward's selection (at the start of saved on the CPU) is select(scores_qkv).
    let mut out = vec![0f32; q.len()];
    let mut saved = dilated.new_saved();
    dilated.forward(&q, &k, &v, &mut out, &mut saved).unwrap();
    let stored: Vec<i32> = saved.as_bytes()[..r.indices.len() * 4]
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(stored, r.indices);
    // The norm scorer's scores differ: the dilated scorer is not the norm in disguise.
    let mut norm = plan(&ctx, Scorer::Norm).unwrap();
    assert_ne!(run(&mut norm, &q, &k, &v, None).indices, r.indices);
}

#[test]
fn bad_scorer_parameters_fail_at_build() {
    let ctx = Context::cpu().unwrap();
    let err = plan(&ctx, Scorer::Dilated { dilation: 0 }).unwrap_err();
    assert_eq!(err.status(), Status::InvalidValue);
    assert!(err.message().contains("DILATION"), "{}", err.message());
    let err = plan(&ctx, Scorer::Dilated { dilation: 3 }).unwrap_err();
    assert_eq!(err.status(), Status::SeqDivisibility);
    assert!(
        err.message().contains("multiple of DILATION"),
        "{}",
        err.message()
    );
    let err = ctx
        .plan()
        .seq_len(N)
        .heads(4)
        .kv_heads(2)
        .head_dim(D)
        .scorer(Scorer::Dilated { dilation: 4 })
        .build()
        .unwrap_err();
    assert_eq!(err.status(), Status::HeadsMismatch);
    let err = ctx
        .plan()
        .seq_len(N)
        .heads(H)
        .head_dim(D)
        .mode(Mode::Dense)
        .scorer(Scorer::External)
        .build()
        .unwrap_err();
    assert!(err.message().contains("DENSE"), "{}", err.message());
}
