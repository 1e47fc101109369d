// pool_grad.mlir - SPEC section 6, last step: dq, dk, dv for every token from the gradients of
// the selected entries, with the pooling's backward folded in.
//
// Token t of query head h receives g(0, t) + sum over l >= 1 of g(l, t / f_l) / f_l, where
// g(l, i) is the row of dQ_sel [B, H, S_sel, D] at slot inv[b, h, off_l + i] when that slot is
// >= 0 (windows UNshifted: pooling averaged tokens [i f, (i + 1) f)). For kv head hk, dk and dv
// sum the same over the query heads hk * G .. hk * G + G - 1 (G = H / Hkv) with dK_sel, dV_sel.
// Sums in fp32 (query heads outer, levels inner), rounded once; every element written exactly
// once by one thread, tokens nobody selected get 0. No atomics.
//
// Constants: DTYPE (bf16 | f16), D (8 * 2^k, at most 256), P (a power of two), L,
//   THREADS (a multiple of D/8), RUN (tokens per run, a power of two >= 2),
//   TOKENS (tokens per block, a multiple of THREADS / (D/8) * RUN),
//   GROUP (G = H / Hkv fixed at compile time, or 0: read from heads / kv_heads at run time),
//   MINCTA (blocks per SM that the launch bounds ask ptxas to fit).
// Arguments: g_q, g_k, g_v (DTYPE [B, H, S_sel, D] contiguous), inv (i32 [B, H, S_total]),
//   dq, dk, dv (DTYPE, plan layout) : !llvm.ptr<1>;
//   n (N), heads (H), kv_heads (Hkv), s_total, s_sel : i64;
//   q_stride_b, q_stride_t, q_stride_h, kv_stride_b, kv_stride_t, kv_stride_h : i64.
// Launch: grid (ceil(N / TOKENS), H + 2 Hkv, B), block (THREADS); blockIdx.y < H writes dq of
//   that head, H .. H + Hkv - 1 dk of kv head blockIdx.y - H, the rest dv of kv head
//   blockIdx.y - H - Hkv. Rows 16-byte aligned.
//
// How: D/8 threads (a group) own one row, 16-byte loads and stores. A group takes RUN
// consecutive tokens t0 .. t0 + RUN - 1, t0 a multiple of RUN. At level l the entry t / f_l
// changes only where t is a multiple of f_l, and since RUN and f_l are powers of two, within the
// run that is exactly at the run positions j with j % f_l == 0: there the inverse map and the
// gradient row are loaded once, and the tokens up to the next such j reuse them from registers
// (level 0 changes every token; a level with f_l >= RUN is loaded once per run). Per query head
// three passes over the run, every loop fully unrolled so that every index is a constant:
//   A. the slots of all (position, level) pairs that load: plain loads, no branches;
//   B. their rows, as predicated inline-PTX loads (a slot < 0 loads nothing): no branch for LLVM
//      to sink them behind, and a side effect so that they stay ahead of pass C;
//   C. per token, per level, the row of its entry added when selected: the same fp32 operations
//      (extend, multiply by 1 / f, add) in the same order as one token at a time.
// So per run and query head all loads are in flight together, in two dependent steps. Passes A
// and B are @load_slots and @load_rows of the shared piece runs, with this kernel's @loads_at,
// @slot_at and @row_offset.
// The per-token sums of a run stay in registers across the query heads of a kv group (query
// heads outer, levels inner, as for one token).
// Registers decide the speed: the kernel is bound by the two dependent load steps per run, so
// bytes in flight per SM = blocks per SM x bytes per block. One component per block (dk and dv
// in blocks of their own) and G fixed at compile time let the head loop vanish at G = 1 (no sums
// carried across it): 64 registers, four blocks per SM (MINCTA), against 93 and two blocks when
// a kv block did dk then dv with G read at run time (0.87 -> 0.68 ms at 256K on an H100,
// docs/perf-log.md).
#unroll_full = #llvm.loop_annotation<unroll = #llvm.loop_unroll<full = true>>
module attributes {gpu.container_module} {
gpu.module @pool_grad [{{TARGET}}] {
  {{include runs}}

  // The slot of the entry token t uses at the level at off_l (windows of f tokens): inv at
  // i = t / f (-1 where the entry was not selected).
  func.func private @slot_at(%inv: !llvm.ptr<1>, %inv_base: i64, %off_l: i64, %t: i64, %f: i64) -> i32 {
    %i = arith.divui %t, %f : i64
    %p1 = arith.addi %inv_base, %off_l : i64
    %p2 = arith.addi %p1, %i : i64
    %ip = llvm.getelementptr %inv[%p2] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, i32
    %slot32 = llvm.load %ip : !llvm.ptr<1> -> i32
    return %slot32 : i32
  }

  // Whether level l (windows of f tokens) loads its slot and row at run position j: token
  // t0 + j uses entry (t0 + j) / f, which changes where j % f == 0 (see How).
  func.func private @loads_at(%j: i64, %f: i64) -> i1 {
    %c0 = arith.constant 0 : i64
    %jm = arith.remui %j, %f : i64
    %starts = arith.cmpi eq, %jm, %c0 : i64
    return %starts : i1
  }

  // Token j's 8 sums in a run's sums (token j at 8 j .. 8 j + 7).
  func.func private @sums_of(%acc: vector<{{RUN * 8}}xf32>, %j: i64) -> vector<8xf32> {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %c8 = arith.constant 8 : i64
    %vzero = arith.constant dense<0.0> : vector<8xf32>
    %j8 = arith.muli %j, %c8 : i64
    %aj = scf.for %e = %c0 to %c8 step %c1
        iter_args(%v = %vzero) -> (vector<8xf32>) : i64 {
      %je = arith.addi %j8, %e : i64
      %jei = arith.index_cast %je : i64 to index
      %ei = arith.index_cast %e : i64 to index
      %x = vector.extract %acc[%jei] : f32 from vector<{{RUN * 8}}xf32>
      %v2 = vector.insert %x, %v[%ei] : f32 into vector<8xf32>
      scf.yield %v2 : vector<8xf32>
    } {loop_annotation = #unroll_full}
    return %aj : vector<8xf32>
  }

  // A run's sums with token j's replaced by `sums`.
  func.func private @with_sums(%acc: vector<{{RUN * 8}}xf32>, %j: i64, %sums: vector<8xf32>)
      -> vector<{{RUN * 8}}xf32> {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %c8 = arith.constant 8 : i64
    %j8 = arith.muli %j, %c8 : i64
    %out = scf.for %e = %c0 to %c8 step %c1
        iter_args(%ab = %acc) -> (vector<{{RUN * 8}}xf32>) : i64 {
      %je = arith.addi %j8, %e : i64
      %jei = arith.index_cast %je : i64 to index
      %ei = arith.index_cast %e : i64 to index
      %x = vector.extract %sums[%ei] : f32 from vector<8xf32>
      %ab2 = vector.insert %x, %ab[%jei] : f32 into vector<{{RUN * 8}}xf32>
      scf.yield %ab2 : vector<{{RUN * 8}}xf32>
    } {loop_annotation = #unroll_full}
    return %out : vector<{{RUN * 8}}xf32>
  }

  // Where the row of `slot` of this head (rows from sel_base) starts in a gradient, plus the
  // thread's lane offset (elements).
  func.func private @row_offset(%slot: i64, %sel_base: i64, %lane_off: i64) -> i64 {
    %cD = arith.constant {{D}} : i64
    %row = arith.addi %sel_base, %slot : i64
    %ro = arith.muli %row, %cD : i64
    %go = arith.addi %ro, %lane_off : i64
    return %go : i64
  }

  gpu.func @lh_pool_grad(%g_q: !llvm.ptr<1>, %g_k: !llvm.ptr<1>, %g_v: !llvm.ptr<1>, %inv: !llvm.ptr<1>,
                         %dq: !llvm.ptr<1>, %dk: !llvm.ptr<1>, %dv: !llvm.ptr<1>,
                         %n: i64, %heads: i64, %kv_heads: i64, %s_total: i64, %s_sel: i64,
                         %q_sb: i64, %q_st: i64, %q_sh: i64,
                         %kv_sb: i64, %kv_st: i64, %kv_sh: i64) kernel
      attributes {nvvm.maxntid = array<i32: {{THREADS}}, 1, 1>, nvvm.minctasm = {{MINCTA}} : i32} {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %cP = arith.constant {{P}} : i64
    %cL = arith.constant {{L}} : i64
    %cRun = arith.constant {{RUN}} : i64
    %cTokens = arith.constant {{TOKENS}} : i64
    %cRounds = arith.constant {{TOKENS / (THREADS / (D / 8) * RUN)}} : i64
    %one = arith.constant 1.0 : f32
    // a run's sums (RUN rows of 8)
    %acc0 = arith.constant dense<0.0> : vector<{{RUN * 8}}xf32>

    %tid, %bx, %hy, %b = func.call @grid_ids() : () -> (i64, i64, i64, i64)

    %lane, %grp, %lane_off = func.call @row_lanes(%tid) : (i64) -> (i64, i64, i64)
    %is_q = arith.cmpi ult, %hy, %heads : i64
    %cG = arith.constant {{GROUP}} : i64
    %g_fixed = arith.cmpi ne, %cG, %c0 : i64
    %g_run = arith.divui %heads, %kv_heads : i64
    %group = arith.select %g_fixed, %cG, %g_run : i64
    // y in H .. H + Hkv - 1: dk of kv head y - H; from H + Hkv on: dv of kv head y - H - Hkv
    %hk_k = arith.subi %hy, %heads : i64
    %is_v = arith.cmpi sge, %hk_k, %kv_heads : i64
    %hk_v = arith.subi %hk_k, %kv_heads : i64
    %hk = arith.select %is_v, %hk_v, %hk_k : i64
    // the query heads whose entries feed this block: h itself, or the kv head's group
    %hk_first = arith.muli %hk, %group : i64
    %h_first = arith.select %is_q, %hy, %hk_first : i64
    %h_count = arith.select %is_q, %c1, %group : i64
    %bh0 = arith.muli %b, %heads : i64
    %tok0 = arith.muli %bx, %cTokens : i64
    %n_last = arith.subi %n, %c1 : i64
    // output row base of this block's head
    %qb1 = arith.muli %b, %q_sb : i64
    %qb2 = arith.muli %hy, %q_sh : i64
    %qb3 = arith.addi %qb1, %qb2 : i64
    %kb1 = arith.muli %b, %kv_sb : i64
    %kb2 = arith.muli %hk, %kv_sh : i64
    %kb3 = arith.addi %kb1, %kb2 : i64
    %w_base0 = arith.select %is_q, %qb3, %kb3 : i64
    %w_base = arith.addi %w_base0, %lane_off : i64
    %w_st = arith.select %is_q, %q_st, %kv_st : i64
    %ga = llvm.select %is_q, %g_q, %g_k : i1, !llvm.ptr<1>
    %out_a = llvm.select %is_q, %dq, %dk : i1, !llvm.ptr<1>
    %gsrc = llvm.select %is_v, %g_v, %ga : i1, !llvm.ptr<1>
    %out = llvm.select %is_v, %dv, %out_a : i1, !llvm.ptr<1>

    %offs = func.call @level_offsets(%n) : (i64) -> vector<{{L}}xi64>
    // Slots at or past S_sel count as not selected (-1): a `saved` that no forward of this plan
    // wrote (its inverse map is read from there) then reads nothing outside dq/dk/dv_sel.
    %s_sel32 = arith.trunci %s_sel : i64 to i32
    %sel_lim = vector.broadcast %s_sel32 : i32 to vector<{{RUN * L}}xi32>
    %no_slot = arith.constant dense<-1> : vector<{{RUN * L}}xi32>

    scf.for %r = %c0 to %cRounds step %c1 : i64 {
      %t0, %live = func.call @run_start(%r, %grp, %tok0, %n) : (i64, i64, i64, i64) -> (i64, i1)
      scf.if %live {
        %acc = scf.for %hi = %c0 to %h_count step %c1
            iter_args(%acc_h = %acc0) -> (vector<{{RUN * 8}}xf32>) : i64 {
          %hq = arith.addi %h_first, %hi : i64
          %bh = arith.addi %bh0, %hq : i64
          %inv_base = arith.muli %bh, %s_total : i64
          %sel_base = arith.muli %bh, %s_sel : i64

          // A. slots, loaded at the run positions j where level l's entry starts (j % f == 0).
          // Positions past N read the entry of token N - 1 (valid memory, result unused).
          %slots_in = func.call @load_slots(%inv, %inv_base, %offs, %t0, %n_last)
              : (!llvm.ptr<1>, i64, vector<{{L}}xi64>, i64, i64) -> vector<{{RUN * L}}xi32>
          %in_sel = arith.cmpi slt, %slots_in, %sel_lim : vector<{{RUN * L}}xi32>
          %slots = arith.select %in_sel, %slots_in, %no_slot
              : vector<{{RUN * L}}xi1>, vector<{{RUN * L}}xi32>

          // B. the rows of those slots, 4 words each; nothing is read where the slot is < 0
          %words = func.call @load_rows(%slots, %gsrc, %sel_base, %lane_off)
              : (vector<{{RUN * L}}xi32>, !llvm.ptr<1>, i64, i64) -> vector<{{RUN * L * 4}}xi32>

          // C. per token, levels in order: its entry's row (loaded at jo = j - j % f), scaled
          // by 1 / f and added when selected; exactly the operations of one token at a time.
          %acc_run = scf.for %j = %c0 to %cRun step %c1
              iter_args(%aa = %acc_h) -> (vector<{{RUN * 8}}xf32>) : i64 {
            %aj = func.call @sums_of(%aa, %j) : (vector<{{RUN * 8}}xf32>, i64) -> vector<8xf32>
            %lv:2 = scf.for %l = %c0 to %cL step %c1
                iter_args(%f = %c1, %a1 = %aj) -> (i64, vector<8xf32>) : i64 {
              %jm = arith.remui %j, %f : i64
              %jo = arith.subi %j, %jm : i64
              %jol = arith.muli %jo, %cL : i64
              %k = arith.addi %jol, %l : i64
              %slot32, %selected = func.call @slot_of(%slots, %k) : (vector<{{RUN * L}}xi32>, i64) -> (i32, i1)
              %a2 = scf.if %selected -> (vector<8xf32>) {
                %gv = func.call @row_at(%words, %k) : (vector<{{RUN * L * 4}}xi32>, i64) -> vector<8x{{DTYPE}}>
                %ff = arith.uitofp %f : i64 to f32
                %rf = arith.divf %one, %ff : f32
                %scale = vector.broadcast %rf : f32 to vector<8xf32>
                %gf = arith.extf %gv : vector<8x{{DTYPE}}> to vector<8xf32>
                %gs = arith.mulf %gf, %scale : vector<8xf32>
                %a3 = arith.addf %a1, %gs : vector<8xf32>
                scf.yield %a3 : vector<8xf32>
              } else {
                scf.yield %a1 : vector<8xf32>
              }
              %f2 = arith.muli %f, %cP : i64
              scf.yield %f2, %a2 : i64, vector<8xf32>
            } {loop_annotation = #unroll_full}
            %aa2 = func.call @with_sums(%aa, %j, %lv#1)
                : (vector<{{RUN * 8}}xf32>, i64, vector<8xf32>) -> vector<{{RUN * 8}}xf32>
            scf.yield %aa2 : vector<{{RUN * 8}}xf32>
          } {loop_annotation = #unroll_full}
          scf.yield %acc_run : vector<{{RUN * 8}}xf32>
        }

        // the run's rows of this component, rounded once; tokens >= N untouched
        scf.for %j = %c0 to %cRun step %c1 : i64 {
          %t = arith.addi %t0, %j : i64
          %in = arith.cmpi ult, %t, %n : i64
          scf.if %in {
            %aj = func.call @sums_of(%acc, %j) : (vector<{{RUN * 8}}xf32>, i64) -> vector<8xf32>
            %ts = arith.muli %t, %w_st : i64
            %wo = arith.addi %w_base, %ts : i64
            %rr = arith.truncf %aj : vector<8xf32> to vector<8x{{DTYPE}}>
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
