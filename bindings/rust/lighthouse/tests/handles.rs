//! Handles are freed: many create/destroy cycles (successful and failed) return the crate's live
//! handle count to zero. ctest also runs this file under valgrind, which checks the C side.
//! One test function only, so no other test of this binary changes the counts meanwhile.

mod common;

use lighthouse::{live_handles, AttentionOp, Context, HostAllocator, Mode, Stream};

const ROUNDS: usize = 50;

#[test]
fn create_destroy_cycles_leave_nothing_behind() {
    assert_eq!(live_handles(), (0, 0));
    for round in 0..ROUNDS {
        let ctx = Context::cpu().expect("CPU context");
        ctx.set_num_threads(1 + round % 2).unwrap();
        assert_eq!(live_handles(), (1, 0));
        {
            // A plan that runs, and one that fails in finalize (must still be destroyed).
            let mut plan = ctx
                .plan()
                .seq_len(512)
                .heads(1)
                .head_dim(8)
                .levels(2)
                .pooling(2)
                .topk(128)
                .build()
                .expect("plan");
            let failed = ctx
                .plan()
                .seq_len(512)
                .heads(1)
                .head_dim(8)
                .topk(100)
                .build();
            assert!(failed.is_err());
            let dense = ctx
                .plan()
                .seq_len(64)
                .heads(1)
                .head_dim(8)
                .mode(Mode::Dense)
                .build()
                .unwrap();
            assert_eq!(live_handles(), (1, 2));
            if round % 10 == 0 {
                let n = plan.info().q_len();
                let q = common::random(n, round as u64);
                let mut out = vec![0f32; n];
                let mut saved = plan.new_saved();
                plan.forward(&q, &q, &q, &mut out, &mut saved).unwrap();
            }
            drop(dense);
            assert_eq!(live_handles(), (1, 1));
        }
        assert_eq!(live_handles(), (1, 0));
        // A failed context creation holds nothing either.
        let _ = Context::new(lighthouse::Backend::Cuda, 1 << 20);
        drop(ctx);
        assert_eq!(live_handles(), (0, 0), "round {round}");
    }

    // A plan owns its context: the caller's Arc may go first; the plan, moved to another
    // thread, destroys its C plan and then the context there.
    let ctx = Context::cpu().unwrap();
    let plan = ctx
        .plan()
        .seq_len(512)
        .heads(1)
        .head_dim(8)
        .levels(2)
        .pooling(2)
        .topk(128)
        .build()
        .unwrap();
    drop(ctx);
    assert_eq!(live_handles(), (1, 1));
    std::thread::spawn(move || drop(plan)).join().unwrap();
    assert_eq!(live_handles(), (0, 0));

    // An op and the state of its forward: `saved` lives with the state, the plan with the op;
    // the state may outlive the op.
    let ctx = Context::cpu().unwrap();
    let op = AttentionOp::new(
        ctx.plan()
            .seq_len(512)
            .heads(1)
            .head_dim(8)
            .levels(2)
            .pooling(2)
            .topk(128)
            .build()
            .unwrap(),
        HostAllocator,
    );
    drop(ctx);
    let q = common::random(op.info().q_len(), 1);
    let (out, state) = op.forward(&q, &q, &q, Stream::null()).unwrap();
    drop(op);
    assert_eq!(live_handles(), (0, 0));
    assert!(state.saved().is_some() && out.as_f32().iter().all(|v| v.is_finite()));
}
