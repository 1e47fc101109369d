// scatter.mlir - SPEC section 5 as a gather: every output element is written exactly once.
//
// Output token t receives, at each level l (width f = P^l), the entry i = (t + 1) / f - 1 when
// i >= 0 and that entry was selected: entry i's window shifted right by f - 1 covers
// [i f + f - 1, (i + 1) f + f - 1). An inverse map inv [B, H, S_total] (int32, pyramid position
// -> slot in the sub-sequence, or -1), produced by an earlier kernel, turns "was it selected,
// and where" into one load. Contributions are summed in fp32 in level order 0 .. L-1 (an entry
// that does not contribute adds +0) and rounded once to DTYPE; tokens nobody covers get 0.
//
// Constants: DTYPE (bf16 | f16), D (8 * 2^k, at most 256), P (a power of two), L,
//   THREADS (a multiple of D/8), RUN (tokens per run, a power of two >= 2),
//   TOKENS (tokens per block, a multiple of THREADS / (D/8) * RUN).
// Arguments (strides in elements):
//   o_sel (the sub-sequence output, DTYPE), inv (i32), out (DTYPE) : !llvm.ptr<1>
//   n (N), heads (H), s_total : i64
//   o_stride_b, o_stride_h, o_stride_s : i64     (o_sel [B, H, S_sel, D] or any strided form)
//   out_stride_b, out_stride_t, out_stride_h : i64  ([B,N,H,D] or [B,H,N,D])
// Launch: grid (ceil(N / TOKENS), H, B), block (THREADS). Rows 16-byte aligned.
//
// How: D/8 threads (a group) own one row, 16-byte loads and stores. A group takes RUN
// consecutive tokens t0 .. t0 + RUN - 1, t0 a multiple of RUN, and loads the slot and row of a
// level's entry only at the run positions j where that entry can change, keeping it in
// registers for the tokens after. Token t0 + j uses entry (t0 + j + 1) / f - 1, which changes
// where t0 + j + 1 is a multiple of f: with RUN and f powers of two that is at (j + 1) % f == 0
// when f <= RUN, and at most at j = RUN - 1 when f > RUN (t0 + RUN is the only candidate). So a
// level loads at j = 0, at every j with (j + 1) % f == 0, and at j = RUN - 1; token j uses the
// load of the last such position <= j. Three passes over the run, loops fully unrolled:
//   A. the slots (plain loads, no branches), -1 where the entry does not contribute;
//   B. their rows, predicated inline-PTX loads (nothing read for -1), kept ahead of pass C;
//   C. per token, levels 0 .. L-1: a + (row or +0): the same fp32 additions as one token at a
//      time (which read row 0 and added +0 for an entry that does not contribute).
// Per run all loads are in flight together, in two dependent steps. Passes A and B are
// @load_slots and @load_rows of the shared piece runs, with this kernel's @loads_at, @slot_at
// and @row_offset.
#unroll_full = #llvm.loop_annotation<unroll = #llvm.loop_unroll<full = true>>
module attributes {gpu.container_module} {
gpu.module @scatter [{{TARGET}}] {
  {{include runs}}

  // Whether level l (windows of f tokens) loads its slot and row at run position j: token
  // t0 + j uses entry (t0 + j + 1) / f - 1, which changes where (j + 1) % f == 0, and a run also
  // loads at its first and last position (see How).
  func.func private @loads_at(%j: i64, %f: i64) -> i1 {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %cRunLast = arith.constant {{RUN - 1}} : i64
    %j1 = arith.addi %j, %c1 : i64
    %at0 = arith.cmpi eq, %j, %c0 : i64
    %atl = arith.cmpi eq, %j, %cRunLast : i64
    %ends = arith.ori %at0, %atl : i1
    %jm = arith.remui %j1, %f : i64
    %edge = arith.cmpi eq, %jm, %c0 : i64
    %loads = arith.ori %ends, %edge : i1
    return %loads : i1
  }

  // The slot of the entry token t uses at the level at off_l (windows of f tokens, shifted
  // right by f - 1): i = (t + 1) / f - 1, -1 where i < 0 or the entry was not selected.
  func.func private @slot_at(%inv: !llvm.ptr<1>, %inv_base: i64, %off_l: i64, %t: i64, %f: i64) -> i32 {
    %c0_i32 = arith.constant 0 : i32
    %cm1_i32 = arith.constant -1 : i32
    %c1 = arith.constant 1 : i64
    %t1 = arith.addi %t, %c1 : i64
    %qt = arith.divui %t1, %f : i64
    %covered = arith.cmpi uge, %qt, %c1 : i64
    %i = arith.subi %qt, %c1 : i64
    %p1 = arith.addi %inv_base, %off_l : i64
    %p2 = arith.addi %p1, %i : i64
    %ip = llvm.getelementptr %inv[%p2] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, i32
    %slot32 = llvm.load %ip : !llvm.ptr<1> -> i32
    %selected = arith.cmpi sge, %slot32, %c0_i32 : i32
    %use = arith.andi %covered, %selected : i1
    %eff = arith.select %use, %slot32, %cm1_i32 : i32
    return %eff : i32
  }

  // Where the row of `slot` starts in o_sel (elements): o_base + slot * o_ss.
  func.func private @row_offset(%slot: i64, %o_base: i64, %o_ss: i64) -> i64 {
    %so = arith.muli %slot, %o_ss : i64
    %oo = arith.addi %o_base, %so : i64
    return %oo : i64
  }

  gpu.func @lh_scatter(%o_sel: !llvm.ptr<1>, %inv: !llvm.ptr<1>, %out: !llvm.ptr<1>,
                       %n: i64, %heads: i64, %s_total: i64,
                       %o_sb: i64, %o_sh: i64, %o_ss: i64,
                       %out_sb: i64, %out_st: i64, %out_sh: i64) kernel {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %cP = arith.constant {{P}} : i64
    %cL = arith.constant {{L}} : i64
    %cRun = arith.constant {{RUN}} : i64
    %cRunLast = arith.constant {{RUN - 1}} : i64
    %cTokens = arith.constant {{TOKENS}} : i64
    %cRounds = arith.constant {{TOKENS / (THREADS / (D / 8) * RUN)}} : i64
    %vzero = arith.constant dense<0.0> : vector<8xf32>

    %tid, %bx, %h, %b = func.call @grid_ids() : () -> (i64, i64, i64, i64)

    %lane, %grp, %lane_off = func.call @row_lanes(%tid) : (i64) -> (i64, i64, i64)
    %bh_h, %inv_base = func.call @head_row(%b, %h, %heads, %s_total) : (i64, i64, i64, i64) -> (i64, i64)
    %o_base = func.call @strided_row(%b, %h, %o_sb, %o_sh, %lane_off) : (i64, i64, i64, i64, i64) -> i64
    %w_base = func.call @strided_row(%b, %h, %out_sb, %out_sh, %lane_off) : (i64, i64, i64, i64, i64) -> i64
    %tok0 = arith.muli %bx, %cTokens : i64
    %n_last = arith.subi %n, %c1 : i64

    %offs = func.call @level_offsets(%n) : (i64) -> vector<{{L}}xi64>

    scf.for %r = %c0 to %cRounds step %c1 : i64 {
      %t0, %live = func.call @run_start(%r, %grp, %tok0, %n) : (i64, i64, i64, i64) -> (i64, i1)
      scf.if %live {
        // A. slots at the load positions; -1 where the entry does not contribute (i < 0 or
        // not selected). Positions past N read as token N - 1 (valid memory, result unused).
        // (i = -1 happens only for l >= 1, where inv[off_l - 1] is still inside this row.)
        %slots = func.call @load_slots(%inv, %inv_base, %offs, %t0, %n_last)
            : (!llvm.ptr<1>, i64, vector<{{L}}xi64>, i64, i64) -> vector<{{RUN * L}}xi32>

        // B. the rows of those slots, 4 words each; nothing is read where the slot is -1
        %words = func.call @load_rows(%slots, %o_sel, %o_base, %o_ss)
            : (vector<{{RUN * L}}xi32>, !llvm.ptr<1>, i64, i64) -> vector<{{RUN * L * 4}}xi32>

        // C. per token, levels in order: a + (row or +0), the row loaded at the last load
        // position jo <= j: jo = RUN - 1 for the last token, else (j + 1) / f * f - 1, or 0
        // when that is negative. Rounded once and stored; tokens >= N untouched.
        scf.for %j = %c0 to %cRun step %c1 : i64 {
          %j1 = arith.addi %j, %c1 : i64
          %atl = arith.cmpi eq, %j, %cRunLast : i64
          %lv:2 = scf.for %l = %c0 to %cL step %c1
              iter_args(%f = %c1, %a = %vzero) -> (i64, vector<8xf32>) : i64 {
            %q = arith.divui %j1, %f : i64
            %qf = arith.muli %q, %f : i64
            %qf1 = arith.subi %qf, %c1 : i64
            %q0 = arith.cmpi eq, %q, %c0 : i64
            %jo_in = arith.select %q0, %c0, %qf1 : i64
            %jo = arith.select %atl, %cRunLast, %jo_in : i64
            %jol = arith.muli %jo, %cL : i64
            %k = arith.addi %jol, %l : i64
            %slot32, %use = func.call @slot_of(%slots, %k) : (vector<{{RUN * L}}xi32>, i64) -> (i32, i1)
            %v = func.call @row_at(%words, %k) : (vector<{{RUN * L * 4}}xi32>, i64) -> vector<8x{{DTYPE}}>
            %vf = arith.extf %v : vector<8x{{DTYPE}}> to vector<8xf32>
            %vz = arith.select %use, %vf, %vzero : vector<8xf32>
            %a2 = arith.addf %a, %vz : vector<8xf32>
            %f2 = arith.muli %f, %cP : i64
            scf.yield %f2, %a2 : i64, vector<8xf32>
          } {loop_annotation = #unroll_full}
          %t = arith.addi %t0, %j : i64
          %in = arith.cmpi ult, %t, %n : i64
          scf.if %in {
            %rr = arith.truncf %lv#1 : vector<8xf32> to vector<8x{{DTYPE}}>
            %ts = arith.muli %t, %out_st : i64
            %wo = arith.addi %w_base, %ts : i64
            %wp = llvm.getelementptr %out[%wo] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
            llvm.store %rr, %wp {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<1>
          }
        } {loop_annotation = #unroll_full}
      }
    }
    gpu.return
  }
}
}
