//! Kernel precompilation from a CPU context (no GPU): `PlanBuilder::precompile` compiles a CUDA
//! plan's kernels into the context's disk cache (bfloat16 by default), a second call finds them
//! there, and the refusals carry their status. Skips where the library was built without its
//! kernel compiler.

use std::sync::Arc;

use lighthouse::{Context, Dtype, Mode, Status};

/// A cache directory of this test's own, removed on drop.
struct CacheDir(std::path::PathBuf);

impl Drop for CacheDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn context(cache: &CacheDir) -> Arc<Context> {
    let ctx = Context::cpu().unwrap();
    ctx.set_cache_dir(&cache.0).unwrap();
    ctx
}

#[test]
fn precompile_fills_the_cache_once() {
    let cache =
        CacheDir(std::env::temp_dir().join(format!("lh-rust-precompile-{}", std::process::id())));
    let ctx = context(&cache);
    let builder = || ctx.plan().heads(2).head_dim(64).levels(2).pooling(4);
    let compiled = match builder().precompile("sm_90") {
        Ok(n) => n,
        Err(e) if e.status() == Status::BackendUnavailable => {
            eprintln!("SKIP: the library was built without its kernel compiler ({e})");
            return;
        }
        Err(e) => panic!("precompile: {e}"),
    };
    assert!(compiled > 0, "a cold cache: kernels compiled");
    assert_eq!(builder().precompile("sm_90").unwrap(), 0, "all cached now");
    // The other dtype and dense mode are other kernels, or the same ones cached.
    assert!(builder().dtype(Dtype::Float16).precompile("sm_90").unwrap() > 0);
    builder().mode(Mode::Dense).precompile("sm_90").unwrap();
    assert_eq!(lighthouse::live_handles(), (1, 0), "no plan left behind");

    // Refusals: fp32 (a CPU dtype), HEADS unset, a NUL in the chip, a disabled cache.
    let err = builder()
        .dtype(Dtype::Float32)
        .precompile("sm_90")
        .unwrap_err();
    assert_eq!(err.status(), Status::UnsupportedDtype, "{err}");
    let err = ctx.plan().head_dim(64).precompile("sm_90").unwrap_err();
    assert_eq!(err.status(), Status::InvalidValue, "{err}");
    let err = builder().precompile("sm\0_90").unwrap_err();
    assert_eq!(err.status(), Status::InvalidValue, "{err}");
    ctx.set_cache_enabled(false).unwrap();
    let err = builder().precompile("sm_90").unwrap_err();
    assert_eq!(err.status(), Status::BadState, "{err}");
    assert_eq!(lighthouse::live_handles(), (1, 0));
}
