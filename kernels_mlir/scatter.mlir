// scatter.mlir - SPEC section 5 as a gather: every output element is written exactly once.
//
// Output token t receives, at each level l (width f = P^l), the entry i = (t + 1) / f - 1 when
// i >= 0 and that entry was selected: entry i's window shifted right by f - 1 covers
// [i f + f - 1, (i + 1) f + f - 1). An inverse map inv [B, H, S_total] (int32, pyramid position
// -> slot in the sub-sequence, or -1), produced by an earlier kernel, turns "was it selected,
// and where" into one load. Contributions are summed in fp32 in level order 0 .. L-1 and
// rounded once to DTYPE; tokens nobody covers get 0.
//
// Constants: DTYPE (bf16 | f16), D (8 * 2^k, at most 256), P, L, THREADS (a multiple of D/8),
//   TOKENS (tokens per block, a multiple of THREADS/(D/8)).
// Arguments (strides in elements):
//   o_sel (the sub-sequence output, DTYPE), inv (i32), out (DTYPE) : !llvm.ptr<1>
//   n (N), heads (H), s_total : i64
//   o_stride_b, o_stride_h, o_stride_s : i64     (o_sel [B, H, S_sel, D] or any strided form)
//   out_stride_b, out_stride_t, out_stride_h : i64  ([B,N,H,D] or [B,H,N,D])
// Launch: grid (ceil(N / TOKENS), H, B), block (THREADS). Rows 16-byte aligned.
//
// How: D/8 threads own one token row, 16-byte loads and stores; a warp covers whole rows, so
// stores are coalesced per row (and across rows for [B,H,N,D]). o_sel must hold at least one
// row (S_sel >= 1): entries that contribute nothing read row 0 and add zero (no branches).
module attributes {gpu.container_module} {
gpu.module @scatter [{{TARGET}}] {
  gpu.func @lh_scatter(%o_sel: !llvm.ptr<1>, %inv: !llvm.ptr<1>, %out: !llvm.ptr<1>,
                       %n: i64, %heads: i64, %s_total: i64,
                       %o_sb: i64, %o_sh: i64, %o_ss: i64,
                       %out_sb: i64, %out_st: i64, %out_sh: i64) kernel {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %c8 = arith.constant 8 : i64
    %c0_i32 = arith.constant 0 : i32
    %cP = arith.constant {{P}} : i64
    %cL = arith.constant {{L}} : i64
    %cLanes = arith.constant {{D / 8}} : i64
    %cTpp = arith.constant {{THREADS / (D / 8)}} : i64
    %cTokens = arith.constant {{TOKENS}} : i64
    %cPasses = arith.constant {{TOKENS / (THREADS / (D / 8))}} : i64
    %vzero = arith.constant dense<0.0> : vector<8xf32>

    %tid_ix = gpu.thread_id x
    %bx_ix = gpu.block_id x
    %by_ix = gpu.block_id y
    %bz_ix = gpu.block_id z
    %tid = arith.index_cast %tid_ix : index to i64
    %bx = arith.index_cast %bx_ix : index to i64
    %h = arith.index_cast %by_ix : index to i64
    %b = arith.index_cast %bz_ix : index to i64

    %lane = arith.remui %tid, %cLanes : i64
    %tok = arith.divui %tid, %cLanes : i64
    %lane_off = arith.muli %lane, %c8 : i64
    %bh = arith.muli %b, %heads : i64
    %bh_h = arith.addi %bh, %h : i64
    %inv_base = arith.muli %bh_h, %s_total : i64
    %ob1 = arith.muli %b, %o_sb : i64
    %ob2 = arith.muli %h, %o_sh : i64
    %ob3 = arith.addi %ob1, %ob2 : i64
    %o_base = arith.addi %ob3, %lane_off : i64
    %wb1 = arith.muli %b, %out_sb : i64
    %wb2 = arith.muli %h, %out_sh : i64
    %wb3 = arith.addi %wb1, %wb2 : i64
    %w_base = arith.addi %wb3, %lane_off : i64
    %tok0 = arith.muli %bx, %cTokens : i64

    scf.for %it = %c0 to %cPasses step %c1 : i64 {
      %itt = arith.muli %it, %cTpp : i64
      %tl = arith.addi %itt, %tok : i64
      %t = arith.addi %tok0, %tl : i64
      %in = arith.cmpi ult, %t, %n : i64
      scf.if %in {
        %t1 = arith.addi %t, %c1 : i64
        %sum:3 = scf.for %l = %c0 to %cL step %c1
            iter_args(%f = %c1, %lvl_off = %c0, %a = %vzero) -> (i64, i64, vector<8xf32>) : i64 {
          // Branch-free, so the loads of all levels (and of several tokens) can be in flight
          // together: an entry that does not contribute reads row 0 (cached) and adds zero.
          // (i = -1 happens only for l >= 1, where inv[off_l - 1] is still inside this row.)
          %qt = arith.divui %t1, %f : i64
          %covered = arith.cmpi uge, %qt, %c1 : i64
          %i = arith.subi %qt, %c1 : i64
          %p1 = arith.addi %inv_base, %lvl_off : i64
          %p2 = arith.addi %p1, %i : i64
          %ip = llvm.getelementptr %inv[%p2] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, i32
          %slot32 = llvm.load %ip : !llvm.ptr<1> -> i32
          %selected = arith.cmpi sge, %slot32, %c0_i32 : i32
          %use = arith.andi %covered, %selected : i1
          %slot_raw = arith.extsi %slot32 : i32 to i64
          %slot = arith.select %use, %slot_raw, %c0 : i64
          %so = arith.muli %slot, %o_ss : i64
          %oo = arith.addi %o_base, %so : i64
          %op = llvm.getelementptr %o_sel[%oo] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
          %v = llvm.load %op {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8x{{DTYPE}}>
          %vf = arith.extf %v : vector<8x{{DTYPE}}> to vector<8xf32>
          %vz = arith.select %use, %vf, %vzero : vector<8xf32>
          %a2 = arith.addf %a, %vz : vector<8xf32>
          %n_l = arith.divui %n, %f : i64
          %lvl_off2 = arith.addi %lvl_off, %n_l : i64
          %f2 = arith.muli %f, %cP : i64
          scf.yield %f2, %lvl_off2, %a2 : i64, i64, vector<8xf32>
        }
        %r = arith.truncf %sum#2 : vector<8xf32> to vector<8x{{DTYPE}}>
        %ts = arith.muli %t, %out_st : i64
        %wo = arith.addi %w_base, %ts : i64
        %wp = llvm.getelementptr %out[%wo] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
        llvm.store %r, %wp {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<1>
      }
    }
    gpu.return
  }
}
}
