//! Rings: creation and destruction, the statuses of misuse, the threading promises (a ring is
//! shared by the threads of its ranks, a plan bound to it moves to one of them) and ownership (a
//! plan keeps its ring alive).
//! One test function that counts rings, so no other test of this binary changes the count.

mod common;

use lighthouse::{live_rings, sys, Context, NcclUniqueId, Plan, Ring, RingKind, Status};

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}

#[test]
fn threading_promises() {
    assert_send::<Ring>();
    assert_sync::<Ring>();
    assert_send::<Plan>(); // also when bound to a ring: the plan holds an Arc<Ring>
    assert_send::<std::sync::Arc<Ring>>();
    assert_sync::<std::sync::Arc<Ring>>();
}

#[test]
fn ring_lifecycle_and_errors() {
    assert_eq!(live_rings(), 0);
    for world in [1, 2, 4] {
        let ring = Ring::local(world).expect("local ring");
        assert_eq!(ring.kind(), RingKind::Local);
        assert_eq!(ring.world(), Some(world));
        assert_eq!(live_rings(), 1);
    }
    assert_eq!(live_rings(), 0);

    // A ring of no ranks, and one too large for a C int.
    assert_eq!(Ring::local(0).unwrap_err().status(), Status::InvalidValue);
    assert_eq!(
        Ring::local(1 << 40).unwrap_err().status(),
        Status::InvalidValue
    );
    assert_eq!(live_rings(), 0);

    // NCCL needs a CUDA context.
    let ctx = Context::cpu().unwrap();
    let err = ctx.nccl_unique_id().unwrap_err();
    assert_eq!(err.status(), Status::Unsupported, "{err}");
    let err = Ring::nccl_from_id(&ctx, &NcclUniqueId([0; 128]), 0, 1).unwrap_err();
    assert_eq!(err.status(), Status::Unsupported, "{err}");
    assert!(err.message().contains("CUDA"), "{}", err.message());
    let mut not_a_comm = 0u64;
    // SAFETY: a CPU context refuses before it looks at the communicator.
    let err = unsafe { Ring::nccl(&ctx, (&mut not_a_comm as *mut u64).cast()) }.unwrap_err();
    assert_eq!(err.status(), Status::Unsupported, "{err}");
    assert_eq!(live_rings(), 0);

    // A rank outside the ring is refused when the plan is built (and the plan is freed).
    let ring = Ring::local(2).unwrap();
    let err = ctx
        .plan()
        .seq_len(2048)
        .heads(1)
        .head_dim(8)
        .levels(2)
        .pooling(4)
        .topk(512)
        .ring(&ring, 2)
        .build()
        .unwrap_err();
    assert_eq!(err.status(), Status::InvalidValue, "{err}");
    assert_eq!(lighthouse::live_handles(), (1, 0));

    // The C rule that the plans' Arc enforces for the safe types: a ring with a plan bound to it
    // cannot be destroyed (checked on the raw ABI, where nothing stops the caller).
    // SAFETY: raw handles used in the order the header allows, each freed once.
    unsafe {
        let mut raw_ring = std::ptr::null_mut();
        assert_eq!(sys::lh_ring_create_local(2, &mut raw_ring), sys::LH_OK);
        let mut plan = std::ptr::null_mut();
        assert_eq!(sys::lh_plan_create(ctx.as_raw(), &mut plan), sys::LH_OK);
        assert_eq!(sys::lh_plan_set_ring(plan, raw_ring, 1), sys::LH_OK);
        assert_eq!(sys::lh_ring_destroy(raw_ring), sys::LH_ERROR_BAD_STATE);
        let message = std::ffi::CStr::from_ptr(sys::lh_last_error())
            .to_string_lossy()
            .into_owned();
        assert!(message.contains("destroy them first"), "{message}");
        // Binding twice is refused too.
        assert_eq!(
            sys::lh_plan_set_ring(plan, raw_ring, 0),
            sys::LH_ERROR_BAD_STATE
        );
        assert_eq!(sys::lh_plan_destroy(plan), sys::LH_OK);
        assert_eq!(sys::lh_ring_destroy(raw_ring), sys::LH_OK);
        assert_eq!(sys::lh_ring_destroy(std::ptr::null_mut()), sys::LH_OK);
    }

    // A plan that binds and builds (or, until the backend runs rings, fails to) leaves nothing.
    let built = ctx
        .plan()
        .seq_len(2048)
        .heads(1)
        .head_dim(8)
        .levels(2)
        .pooling(4)
        .topk(512)
        .ring(&ring, 1)
        .build();
    if let Ok(plan) = &built {
        let info = plan.info();
        assert_eq!((info.world, info.rank, info.chunks), (2, 1, 2));
        assert_eq!(info.local_seq_len, 1024);
    }
    // The plan holds the ring: dropping the caller's Arc first leaves it alive until then.
    drop(ring);
    assert_eq!(live_rings(), usize::from(built.is_ok()));
    drop(built);
    drop(ctx);
    assert_eq!(live_rings(), 0);
    assert_eq!(lighthouse::live_handles(), (0, 0));
}
