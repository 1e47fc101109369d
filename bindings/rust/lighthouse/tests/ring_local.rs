//! Context parallelism on the CPU: a local ring of W = 2 ranks, each a plan on its own thread,
//! runs forward and backward; outputs are finite, the same on a second run, and the same when
//! attention hooks run the library's own ring attention step.
//! Its own test binary: it sets LIGHTHOUSE_RING_TIMEOUT_S before any thread exists, so a rank
//! left waiting by a failing peer gives up quickly instead of after 120 s.

mod common;

use std::sync::Arc;

use lighthouse::{Context, Plan, Ring};

const WORLD: usize = 2;

struct RankResult {
    out: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

fn run_rank(plan: &mut Plan, rank: usize) -> lighthouse::Result<RankResult> {
    let info = *plan.info();
    let seed = 1000 * (rank as u64 + 1);
    let q = common::random(info.q_len(), seed);
    let k = common::random(info.kv_len(), seed + 1);
    let v = common::random(info.kv_len(), seed + 2);
    let dout = common::random(info.q_len(), seed + 3);
    let mut r = RankResult {
        out: vec![f32::NAN; info.q_len()],
        dq: vec![f32::NAN; info.q_len()],
        dk: vec![f32::NAN; info.kv_len()],
        dv: vec![f32::NAN; info.kv_len()],
    };
    let mut saved = plan.new_saved();
    plan.forward(&q, &k, &v, &mut r.out, &mut saved)?;
    plan.backward(
        &q,
        &k,
        &v,
        Some(&r.out),
        &dout,
        &saved,
        &mut r.dq,
        &mut r.dk,
        &mut r.dv,
    )?;
    Ok(r)
}

/// One forward+backward of every rank, each on its own thread, all at once. With `hooked`, each
/// plan's attention hooks run the library's own ring attention step from inside the hook.
fn run_ring(ctx: &Arc<Context>, ring: &Arc<Ring>, hooked: bool) -> Vec<RankResult> {
    let plans: Vec<Plan> = (0..WORLD)
        .map(|rank| {
            let builder = ctx
                .plan()
                .seq_len(2048)
                .heads(2)
                .kv_heads(1)
                .head_dim(16)
                .levels(2)
                .pooling(4)
                .topk(512)
                .ring(ring, rank);
            let builder = if hooked {
                builder.attention_hooks(
                    |call| {
                        assert_eq!(call.info().chunks, 2);
                        call.run_library()
                    },
                    |call| call.run_library(),
                )
            } else {
                builder
            };
            builder
                .build()
                .unwrap_or_else(|e| panic!("rank {rank}: {e}"))
        })
        .collect();
    for (rank, plan) in plans.iter().enumerate() {
        let info = plan.info();
        assert_eq!((info.world, info.rank, info.chunks), (WORLD, rank, 2));
        assert_eq!(info.local_seq_len, info.seq_len / WORLD);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = plans
            .into_iter()
            .enumerate()
            .map(|(rank, mut plan)| scope.spawn(move || run_rank(&mut plan, rank)))
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| {
                h.join()
                    .expect("rank thread panicked")
                    .unwrap_or_else(|e| panic!("rank {rank}: {e}"))
            })
            .collect()
    })
}

#[test]
fn local_ring_of_two_ranks_forward_backward() {
    std::env::set_var("LIGHTHOUSE_RING_TIMEOUT_S", "20");
    let ctx = Context::cpu().unwrap();
    let ring = Ring::local(WORLD).unwrap();
    let first = run_ring(&ctx, &ring, false);
    let second = run_ring(&ctx, &ring, false);
    // Hooks that run the library's ring attention change nothing either.
    let hooked = run_ring(&ctx, &ring, true);
    for (rank, ((a, b), h)) in first.iter().zip(&second).zip(&hooked).enumerate() {
        for (name, x, y) in [
            ("out", &a.out, &b.out),
            ("dq", &a.dq, &b.dq),
            ("dk", &a.dk, &b.dk),
            ("dv", &a.dv, &b.dv),
        ] {
            assert!(
                x.iter().all(|v| v.is_finite()),
                "rank {rank}: {name} not finite"
            );
            assert!(x.iter().any(|&v| v != 0.0), "rank {rank}: {name} all zero");
            assert!(
                x.iter()
                    .zip(y.iter())
                    .all(|(p, q)| p.to_bits() == q.to_bits()),
                "rank {rank}: {name} differs between two runs"
            );
        }
        for (name, x, y) in [
            ("out", &a.out, &h.out),
            ("dq", &a.dq, &h.dq),
            ("dk", &a.dk, &h.dk),
            ("dv", &a.dv, &h.dv),
        ] {
            assert!(
                x.iter()
                    .zip(y.iter())
                    .all(|(p, q)| p.to_bits() == q.to_bits()),
                "rank {rank}: {name} differs with hooks that run the library's step"
            );
        }
    }
    drop(ring);
    assert_eq!(lighthouse::live_rings(), 0);
}
