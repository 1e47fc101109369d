//! One Lighthouse forward and backward on the CPU backend through the raw C ABI, every status
//! checked, then the path of the liblighthouse this process loaded (from /proc/self/maps), so the
//! test can tell that `cargo run` loads the library the crate was linked against.
use lighthouse_sys::*;
use std::ffi::CStr;
use std::ptr;

fn check(what: &str, status: lh_status) -> Result<(), String> {
    if status == LH_OK {
        return Ok(());
    }
    // SAFETY: lh_last_error always returns a NUL-terminated thread-local string.
    let message = unsafe { CStr::from_ptr(lh_last_error()) };
    Err(format!(
        "{what} failed ({status}): {}",
        message.to_string_lossy()
    ))
}

/// The file of the liblighthouse mapped into this process.
fn loaded_library() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.contains("liblighthouse.so"))
        .map(str::to_string)
}

fn run(ctx: *mut lh_context, plan: &mut *mut lh_plan) -> Result<(), String> {
    const B: usize = 1;
    const N: usize = 4096;
    const H: usize = 2;
    const D: usize = 32;
    // SAFETY: every pointer passed below is either a live handle of this function or a buffer
    // of the size the plan reports; the CPU backend takes host pointers and a NULL stream.
    unsafe {
        check("lh_plan_create", lh_plan_create(ctx, plan))?;
        let params = [
            (LH_PARAM_BATCH, B as i64),
            (LH_PARAM_SEQ_LEN, N as i64),
            (LH_PARAM_HEADS, H as i64),
            (LH_PARAM_HEAD_DIM, D as i64),
            (LH_PARAM_TOPK, 256),
        ];
        for (param, value) in params {
            check("lh_plan_set_i64", lh_plan_set_i64(*plan, param, value))?;
        }
        check("lh_plan_finalize", lh_plan_finalize(*plan))?;
        let mut sizes = [0i64; 3];
        let queries = [
            LH_QUERY_SAVED_BYTES,
            LH_QUERY_FWD_WORKSPACE_BYTES,
            LH_QUERY_BWD_WORKSPACE_BYTES,
        ];
        for (query, size) in queries.into_iter().zip(sizes.iter_mut()) {
            check("lh_plan_get_i64", lh_plan_get_i64(*plan, query, size))?;
        }
        // f32 vectors are 4-byte aligned; the library wants 16: over-allocate u128s.
        let bytes = |n: i64| vec![0u128; (n.max(1) as usize).div_ceil(16)];
        let (mut saved, mut fwd, mut bwd) = (bytes(sizes[0]), bytes(sizes[1]), bytes(sizes[2]));
        let n = B * N * H * D;
        let tensor = |seed: u32| -> Vec<f32> {
            (0..n as u32)
                .map(|i| {
                    ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32) / 8388608.0 - 1.0
                })
                .collect()
        };
        let (q, k, v, dout) = (tensor(1), tensor(2), tensor(3), tensor(4));
        let (mut out, mut dq, mut dk, mut dv) =
            (vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        check(
            "lh_forward",
            lh_forward(
                *plan,
                q.as_ptr().cast(),
                k.as_ptr().cast(),
                v.as_ptr().cast(),
                out.as_mut_ptr().cast(),
                saved.as_mut_ptr().cast(),
                fwd.as_mut_ptr().cast(),
                ptr::null_mut(),
            ),
        )?;
        check(
            "lh_backward",
            lh_backward(
                *plan,
                q.as_ptr().cast(),
                k.as_ptr().cast(),
                v.as_ptr().cast(),
                out.as_ptr().cast(),
                dout.as_ptr().cast(),
                saved.as_ptr().cast(),
                dq.as_mut_ptr().cast(),
                dk.as_mut_ptr().cast(),
                dv.as_mut_ptr().cast(),
                bwd.as_mut_ptr().cast(),
                ptr::null_mut(),
            ),
        )?;
        for (name, x) in [("out", &out), ("dq", &dq), ("dk", &dk), ("dv", &dv)] {
            let norm = x
                .iter()
                .map(|&e| f64::from(e) * f64::from(e))
                .sum::<f64>()
                .sqrt();
            if !norm.is_finite() || norm == 0.0 {
                return Err(format!("{name} is not finite or is all zero (norm {norm})"));
            }
            println!("  |{name}| = {norm:.4}");
        }
    }
    Ok(())
}

fn main() {
    let mut ctx: *mut lh_context = ptr::null_mut();
    let mut plan: *mut lh_plan = ptr::null_mut();
    // SAFETY: the handles are created, used and destroyed here, plan before context.
    let result = unsafe {
        check(
            "lh_context_create",
            lh_context_create(LH_BACKEND_CPU, 0, &mut ctx),
        )
        .and_then(|()| run(ctx, &mut plan))
    };
    unsafe {
        lh_plan_destroy(plan);
        lh_context_destroy(ctx);
    }
    match result {
        Ok(()) => {
            let library = loaded_library().unwrap_or_else(|| "unknown".to_string());
            println!("loaded {library}");
            println!("forward and backward: ok");
        }
        Err(why) => {
            eprintln!("{why}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    /// `cargo test` loads the same library as `cargo run`.
    #[test]
    fn library_loads_and_reports_its_version() {
        // SAFETY: a plain query without arguments.
        let version = unsafe { lighthouse_sys::lh_version_number() };
        assert_eq!(version, lighthouse_sys::LH_VERSION_NUMBER);
    }
}
