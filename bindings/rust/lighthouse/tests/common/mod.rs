//! Helpers shared by the integration tests: golden files and comparisons.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod cuda;

/// The golden vectors: $LIGHTHOUSE_GOLDEN_DIR, else <repo>/tests/golden.
pub fn golden_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LIGHTHOUSE_GOLDEN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // CARGO_MANIFEST_DIR = <repo>/bindings/rust/lighthouse
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../tests/golden")
}

fn read_bytes(name: &str, elements: usize) -> Vec<u8> {
    let path = golden_dir().join(name);
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert_eq!(
        bytes.len(),
        elements * 4,
        "{} has {} bytes, expected {} elements",
        path.display(),
        bytes.len(),
        elements
    );
    bytes
}

/// A raw little-endian float32 file of `elements` values.
pub fn read_f32(name: &str, elements: usize) -> Vec<f32> {
    read_bytes(name, elements)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A raw little-endian int32 file of `elements` values.
pub fn read_i32(name: &str, elements: usize) -> Vec<i32> {
    read_bytes(name, elements)
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// [B, X, Y, D] -> [B, Y, X, D] (BHND <-> BNHD).
pub fn swap_axes_12(src: &[f32], b: usize, x: usize, y: usize, d: usize) -> Vec<f32> {
    let mut dst = vec![0f32; src.len()];
    for bi in 0..b {
        for xi in 0..x {
            for yi in 0..y {
                let s = ((bi * x + xi) * y + yi) * d;
                let t = ((bi * y + yi) * x + xi) * d;
                dst[t..t + d].copy_from_slice(&src[s..s + d]);
            }
        }
    }
    dst
}

/// ||got - want|| / ||want|| (Frobenius), in f64.
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut diff, mut norm) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        diff += (g as f64 - w as f64).powi(2);
        norm += (w as f64).powi(2);
    }
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift; no crates offline).
pub fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
