//! Precompilation for a described GPU without one: `Context::save_device` on a CPU context and
//! `precompile_device` with no description file are refused with their status and sentence,
//! after the plan's parameters passed `build`'s checks. Writing a description needs a GPU, and
//! using one a file written on a GPU, so only the refusals are tested here. A file of its own
//! with one test function: it counts live handles, as precompile.rs does, and another test of
//! the same binary would change the counts meanwhile.

use lighthouse::{Context, Dtype, Status};

/// A directory of this test's own, removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn device_description_refusals() {
    let dir = TempDir(
        std::env::temp_dir().join(format!("lh-rust-precompile-device-{}", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    let ctx = Context::cpu().unwrap();
    ctx.set_cache_dir(&dir.0).unwrap();
    let path = dir.0.join("gpu.device");

    let err = ctx.save_device(&path).unwrap_err();
    assert_eq!(err.status(), Status::Unsupported, "{err}");
    assert!(err.message().contains("no GPU to describe"), "{err}");
    assert!(!path.exists(), "nothing written");

    // Every parameter a CUDA plan of this shape needs, so that only the file is missing.
    let builder = || {
        ctx.plan()
            .seq_len(32768)
            .heads(2)
            .head_dim(64)
            .dtype(Dtype::BFloat16)
            .topk(2048)
    };
    let err = match builder().precompile_device(&path) {
        Ok(built) => panic!("precompiled for a missing description: {built:?}"),
        Err(e) if e.status() == Status::BackendUnavailable => {
            eprintln!("SKIP: the library was built without its kernel compiler ({e})");
            return;
        }
        Err(e) => e,
    };
    assert_eq!(err.status(), Status::Io, "{err}");
    assert!(
        err.message().contains("cannot open the device description"),
        "{err}"
    );
    // The parameters are checked before the file is read: SEQ_LEN unset.
    let err = ctx
        .plan()
        .heads(2)
        .head_dim(64)
        .precompile_device(&path)
        .unwrap_err();
    assert_eq!(err.status(), Status::InvalidValue, "{err}");
    // A NUL byte cannot reach C.
    let err = builder().precompile_device("gpu\0.device").unwrap_err();
    assert_eq!(err.status(), Status::InvalidValue, "{err}");
    // A built plan goes the same way.
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
    let err = plan.precompile_device(&path).unwrap_err();
    assert_eq!(err.status(), Status::Io, "{err}");
    drop(plan);
    assert_eq!(lighthouse::live_handles(), (1, 0), "no plan left behind");
}
