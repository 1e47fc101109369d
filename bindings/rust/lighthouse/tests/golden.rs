//! Golden conformance through the safe API on the CPU backend (tests/golden of the repository):
//! selection indices identical (via lh_scores + lh_select, and via the stored scores), out, dq,
//! dk, dv within 1e-5 relative. Golden out/dout are [B,H,N,D]; q/k/v/dq/dk/dv are [B,N,H,D].

mod common;

use common::*;
use lighthouse::{Context, Layout};

const TOLERANCE: f64 = 1e-5;

struct Case {
    name: &'static str,
    b: usize,
    n: usize,
    h: usize,
    d: usize,
    levels: usize,
    pooling: usize,
    topk: usize,
    s_sel: usize,
}

const G1: Case = Case {
    name: "g1",
    b: 1,
    n: 2048,
    h: 2,
    d: 32,
    levels: 2,
    pooling: 4,
    topk: 128,
    s_sel: 1024,
};
const G2: Case = Case {
    name: "g2",
    b: 2,
    n: 2048,
    h: 1,
    d: 32,
    levels: 3,
    pooling: 2,
    topk: 128,
    s_sel: 1024,
};
const G3: Case = Case {
    name: "g3",
    b: 1,
    n: 8192,
    h: 1,
    d: 32,
    levels: 3,
    pooling: 4,
    topk: 256,
    s_sel: 2560,
};

fn run_case(c: &Case) {
    let ctx = Context::cpu().expect("CPU context");
    let mut plan = ctx
        .plan()
        .batch(c.b)
        .seq_len(c.n)
        .heads(c.h)
        .head_dim(c.d)
        .levels(c.levels)
        .pooling(c.pooling)
        .topk(c.topk)
        .layout(Layout::Bnhd)
        .build()
        .unwrap_or_else(|e| panic!("{}: build: {e}", c.name));
    let info = *plan.info();
    assert_eq!(info.subseq_len, c.s_sel, "{}: S_sel", c.name);
    let s_total: usize = (0..c.levels).map(|l| c.n / c.pooling.pow(l as u32)).sum();
    assert_eq!(info.pyramid_len, s_total, "{}: S_total", c.name);

    let len = c.b * c.n * c.h * c.d;
    let file = |what: &str| format!("{}.{what}", c.name);
    let q = read_f32(&file("q.f32"), len);
    let k = read_f32(&file("k.f32"), len);
    let v = read_f32(&file("v.f32"), len);
    let scores_qk = read_f32(&file("scores_qk.f32"), c.b * c.h * s_total);
    let scores_kq = read_f32(&file("scores_kq.f32"), c.b * c.h * s_total);
    let want_indices = read_i32(&file("indices.i32"), c.b * c.h * c.s_sel);
    let want_out = swap_axes_12(&read_f32(&file("out.f32"), len), c.b, c.h, c.n, c.d);
    let dout = swap_axes_12(&read_f32(&file("dout.f32"), len), c.b, c.h, c.n, c.d);

    // Selection from the library's own scores.
    let mut sq = vec![0f32; info.scores_q_len()];
    let mut sk = vec![0f32; info.scores_k_len()];
    plan.scores(&q, &k, &mut sq, &mut sk)
        .unwrap_or_else(|e| panic!("{}: scores: {e}", c.name));
    assert!(
        rel_err(&sq, &scores_qk) < TOLERANCE,
        "{}: scores_q rel err {}",
        c.name,
        rel_err(&sq, &scores_qk)
    );
    assert!(
        rel_err(&sk, &scores_kq) < TOLERANCE,
        "{}: scores_k rel err {}",
        c.name,
        rel_err(&sk, &scores_kq)
    );
    let mut indices = vec![0i32; info.indices_len()];
    plan.select(&sq, &sk, &mut indices)
        .unwrap_or_else(|e| panic!("{}: select: {e}", c.name));
    assert_eq!(
        indices, want_indices,
        "{}: indices via lh_scores + lh_select",
        c.name
    );

    // Selection from the stored scores.
    indices.fill(-1);
    plan.select(&scores_qk, &scores_kq, &mut indices)
        .unwrap_or_else(|e| panic!("{}: select: {e}", c.name));
    assert_eq!(
        indices, want_indices,
        "{}: indices via stored scores",
        c.name
    );

    // Forward and backward.
    let mut out = vec![f32::NAN; len];
    let mut saved = plan.new_saved();
    plan.forward(&q, &k, &v, &mut out, &mut saved)
        .unwrap_or_else(|e| panic!("{}: forward: {e}", c.name));
    let err = rel_err(&out, &want_out);
    println!("{}: out rel err {err:.3e}", c.name);
    assert!(err < TOLERANCE, "{}: out rel err {err}", c.name);

    let (mut dq, mut dk, mut dv) = (
        vec![f32::NAN; len],
        vec![f32::NAN; len],
        vec![f32::NAN; len],
    );
    plan.backward(
        &q,
        &k,
        &v,
        Some(&out),
        &dout,
        &saved,
        &mut dq,
        &mut dk,
        &mut dv,
    )
    .unwrap_or_else(|e| panic!("{}: backward: {e}", c.name));
    for (what, got) in [("dq", &dq), ("dk", &dk), ("dv", &dv)] {
        let want = read_f32(&file(&format!("{what}.f32")), len);
        let err = rel_err(got, &want);
        println!("{}: {what} rel err {err:.3e}", c.name);
        assert!(err < TOLERANCE, "{}: {what} rel err {err}", c.name);
    }

    // Lighthouse mode does not read `out`: backward without it gives the same gradients.
    let mut dq2 = vec![f32::NAN; len];
    let (mut dk2, mut dv2) = (vec![0f32; len], vec![0f32; len]);
    plan.backward(
        &q, &k, &v, None, &dout, &saved, &mut dq2, &mut dk2, &mut dv2,
    )
    .unwrap_or_else(|e| panic!("{}: backward without out: {e}", c.name));
    assert_eq!(dq2, dq, "{}: dq with and without out", c.name);
}

#[test]
fn golden_g1() {
    run_case(&G1);
}

#[test]
fn golden_g2() {
    run_case(&G2);
}

#[test]
fn golden_g3() {
    run_case(&G3);
}

/// The stage entry points compose to forward's output: gather, attention done here in f64 on
/// the sub-sequence, scatter. Checks the slice plumbing of gather and scatter on g1.
#[test]
fn stages_compose_to_forward_g1() {
    let c = &G1;
    let ctx = Context::cpu().unwrap();
    let mut plan = ctx
        .plan()
        .seq_len(c.n)
        .heads(c.h)
        .head_dim(c.d)
        .levels(c.levels)
        .pooling(c.pooling)
        .topk(c.topk)
        .build()
        .unwrap();
    let info = *plan.info();
    let len = c.b * c.n * c.h * c.d;
    let q = read_f32("g1.q.f32", len);
    let k = read_f32("g1.k.f32", len);
    let v = read_f32("g1.v.f32", len);
    let want_out = swap_axes_12(&read_f32("g1.out.f32", len), c.b, c.h, c.n, c.d);

    let (mut sq, mut sk) = (
        vec![0f32; info.scores_q_len()],
        vec![0f32; info.scores_k_len()],
    );
    plan.scores(&q, &k, &mut sq, &mut sk).unwrap();
    let mut indices = vec![0i32; info.indices_len()];
    plan.select(&sq, &sk, &mut indices).unwrap();
    let sel = info.selected_len();
    let (mut qs, mut ks, mut vs) = (vec![0f32; sel], vec![0f32; sel], vec![0f32; sel]);
    plan.gather(&q, &k, &v, &indices, &mut qs, &mut ks, &mut vs)
        .unwrap();

    // Causal softmax attention per head on [S_sel, D].
    let (s, d) = (info.subseq_len, c.d);
    let scale = info.softmax_scale;
    let mut o_sel = vec![0f32; sel];
    for head in 0..c.b * c.h {
        let base = head * s * d;
        for i in 0..s {
            let qi = &qs[base + i * d..base + (i + 1) * d];
            let logits: Vec<f64> = (0..=i)
                .map(|j| {
                    let kj = &ks[base + j * d..base + (j + 1) * d];
                    scale
                        * qi.iter()
                            .zip(kj)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>()
                })
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = logits.iter().map(|&x| (x - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for e in 0..d {
                let acc: f64 = (0..=i)
                    .map(|j| weights[j] * vs[base + j * d + e] as f64)
                    .sum();
                o_sel[base + i * d + e] = (acc / total) as f32;
            }
        }
    }
    let mut out = vec![f32::NAN; len];
    plan.scatter(&indices, &o_sel, &mut out).unwrap();
    let err = rel_err(&out, &want_out);
    assert!(
        err < TOLERANCE,
        "gather + attention + scatter: out rel err {err}"
    );
}
