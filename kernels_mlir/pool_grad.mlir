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
// So per run and query head all loads are in flight together, in two dependent steps.
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
  {{include grid}}

  gpu.func @lh_pool_grad(%g_q: !llvm.ptr<1>, %g_k: !llvm.ptr<1>, %g_v: !llvm.ptr<1>, %inv: !llvm.ptr<1>,
                         %dq: !llvm.ptr<1>, %dk: !llvm.ptr<1>, %dv: !llvm.ptr<1>,
                         %n: i64, %heads: i64, %kv_heads: i64, %s_total: i64, %s_sel: i64,
                         %q_sb: i64, %q_st: i64, %q_sh: i64,
                         %kv_sb: i64, %kv_st: i64, %kv_sh: i64) kernel
      attributes {nvvm.maxntid = array<i32: {{THREADS}}, 1, 1>, nvvm.minctasm = {{MINCTA}} : i32} {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %c2 = arith.constant 2 : i64
    %c4 = arith.constant 4 : i64
    %c8 = arith.constant 8 : i64
    %c0_i32 = arith.constant 0 : i32
    %cD = arith.constant {{D}} : i64
    %cP = arith.constant {{P}} : i64
    %cL = arith.constant {{L}} : i64
    %cLanes = arith.constant {{D / 8}} : i64
    %cGroups = arith.constant {{THREADS / (D / 8)}} : i64
    %cRun = arith.constant {{RUN}} : i64
    %cTokens = arith.constant {{TOKENS}} : i64
    %cRounds = arith.constant {{TOKENS / (THREADS / (D / 8) * RUN)}} : i64
    %one = arith.constant 1.0 : f32
    %vzero = arith.constant dense<0.0> : vector<8xf32>
    // a run's sums (RUN rows of 8), slots (RUN x L, -1 where nothing loads) and row words
    %acc0 = arith.constant dense<0.0> : vector<{{RUN * 8}}xf32>
    %slots0 = arith.constant dense<-1> : vector<{{RUN * L}}xi32>
    %words0 = arith.constant dense<0> : vector<{{RUN * L * 4}}xi32>
    %offs0 = arith.constant dense<0> : vector<{{L}}xi64>

    %tid, %bx, %hy, %b = func.call @grid_ids() : () -> (i64, i64, i64, i64)

    %lane = arith.remui %tid, %cLanes : i64
    %grp = arith.divui %tid, %cLanes : i64
    %lane_off = arith.muli %lane, %c8 : i64
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

    // off_l = n_0 + ... + n_{l-1}, n_l = N / f_l: where level l starts in a row of inv
    %offs:3 = scf.for %l = %c0 to %cL step %c1
        iter_args(%f = %c1, %off = %c0, %ov = %offs0) -> (i64, i64, vector<{{L}}xi64>) : i64 {
      %li = arith.index_cast %l : i64 to index
      %ov2 = vector.insert %off, %ov[%li] : i64 into vector<{{L}}xi64>
      %n_l = arith.divui %n, %f : i64
      %off2 = arith.addi %off, %n_l : i64
      %f2 = arith.muli %f, %cP : i64
      scf.yield %f2, %off2, %ov2 : i64, i64, vector<{{L}}xi64>
    } {loop_annotation = #unroll_full}

    scf.for %r = %c0 to %cRounds step %c1 : i64 {
      %rg = arith.muli %r, %cGroups : i64
      %run = arith.addi %rg, %grp : i64
      %run_t = arith.muli %run, %cRun : i64
      %t0 = arith.addi %tok0, %run_t : i64
      %live = arith.cmpi ult, %t0, %n : i64
      scf.if %live {
        %acc = scf.for %hi = %c0 to %h_count step %c1
            iter_args(%acc_h = %acc0) -> (vector<{{RUN * 8}}xf32>) : i64 {
          %hq = arith.addi %h_first, %hi : i64
          %bh = arith.addi %bh0, %hq : i64
          %inv_base = arith.muli %bh, %s_total : i64
          %sel_base = arith.muli %bh, %s_sel : i64

          // A. slots, loaded at the run positions j where level l's entry starts (j % f == 0).
          // Positions past N read the entry of token N - 1 (valid memory, result unused).
          %slots = scf.for %j = %c0 to %cRun step %c1
              iter_args(%sa = %slots0) -> (vector<{{RUN * L}}xi32>) : i64 {
            %tj0 = arith.addi %t0, %j : i64
            %tj = arith.minui %tj0, %n_last : i64
            %jl = arith.muli %j, %cL : i64
            %sa_j:2 = scf.for %l = %c0 to %cL step %c1
                iter_args(%f = %c1, %sa1 = %sa) -> (i64, vector<{{RUN * L}}xi32>) : i64 {
              %jm = arith.remui %j, %f : i64
              %starts = arith.cmpi eq, %jm, %c0 : i64
              %sa2 = scf.if %starts -> (vector<{{RUN * L}}xi32>) {
                %li = arith.index_cast %l : i64 to index
                %off_l = vector.extract %offs#2[%li] : i64 from vector<{{L}}xi64>
                %i = arith.divui %tj, %f : i64
                %p1 = arith.addi %inv_base, %off_l : i64
                %p2 = arith.addi %p1, %i : i64
                %ip = llvm.getelementptr %inv[%p2] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, i32
                %slot32 = llvm.load %ip : !llvm.ptr<1> -> i32
                %k = arith.addi %jl, %l : i64
                %ki = arith.index_cast %k : i64 to index
                %sa3 = vector.insert %slot32, %sa1[%ki] : i32 into vector<{{RUN * L}}xi32>
                scf.yield %sa3 : vector<{{RUN * L}}xi32>
              } else {
                scf.yield %sa1 : vector<{{RUN * L}}xi32>
              }
              %f2 = arith.muli %f, %cP : i64
              scf.yield %f2, %sa2 : i64, vector<{{RUN * L}}xi32>
            } {loop_annotation = #unroll_full}
            scf.yield %sa_j#1 : vector<{{RUN * L}}xi32>
          } {loop_annotation = #unroll_full}

          // B. the rows of those slots, 4 words each; nothing is read where the slot is < 0
          %words = scf.for %j = %c0 to %cRun step %c1
              iter_args(%wa = %words0) -> (vector<{{RUN * L * 4}}xi32>) : i64 {
            %jl = arith.muli %j, %cL : i64
            %wa_j:2 = scf.for %l = %c0 to %cL step %c1
                iter_args(%f = %c1, %wa1 = %wa) -> (i64, vector<{{RUN * L * 4}}xi32>) : i64 {
              %jm = arith.remui %j, %f : i64
              %starts = arith.cmpi eq, %jm, %c0 : i64
              %wa2 = scf.if %starts -> (vector<{{RUN * L * 4}}xi32>) {
                %k = arith.addi %jl, %l : i64
                %ki = arith.index_cast %k : i64 to index
                %slot32 = vector.extract %slots[%ki] : i32 from vector<{{RUN * L}}xi32>
                %slot = arith.extsi %slot32 : i32 to i64
                %row = arith.addi %sel_base, %slot : i64
                %ro = arith.muli %row, %cD : i64
                %go = arith.addi %ro, %lane_off : i64
                %gp = llvm.getelementptr %gsrc[%go] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
                %ga_i = llvm.ptrtoint %gp : !llvm.ptr<1> to i64
                %ld = llvm.inline_asm has_side_effects "{ .reg .pred lhsel; setp.ge.s32 lhsel, $5, 0; @lhsel ld.global.v4.b32 {$0, $1, $2, $3}, [$4]; @!lhsel mov.b32 $0, 0; @!lhsel mov.b32 $1, 0; @!lhsel mov.b32 $2, 0; @!lhsel mov.b32 $3, 0; }", "=r,=r,=r,=r,l,r" %ga_i, %slot32 : (i64, i32) -> !llvm.struct<(i32, i32, i32, i32)>
                %x0 = llvm.extractvalue %ld[0] : !llvm.struct<(i32, i32, i32, i32)>
                %x1 = llvm.extractvalue %ld[1] : !llvm.struct<(i32, i32, i32, i32)>
                %x2 = llvm.extractvalue %ld[2] : !llvm.struct<(i32, i32, i32, i32)>
                %x3 = llvm.extractvalue %ld[3] : !llvm.struct<(i32, i32, i32, i32)>
                %lw = vector.from_elements %x0, %x1, %x2, %x3 : vector<4xi32>
                %k4 = arith.muli %k, %c4 : i64
                %wa3 = scf.for %w = %c0 to %c4 step %c1
                    iter_args(%wa4 = %wa1) -> (vector<{{RUN * L * 4}}xi32>) : i64 {
                  %wi = arith.index_cast %w : i64 to index
                  %x = vector.extract %lw[%wi] : i32 from vector<4xi32>
                  %kw = arith.addi %k4, %w : i64
                  %kwi = arith.index_cast %kw : i64 to index
                  %wa5 = vector.insert %x, %wa4[%kwi] : i32 into vector<{{RUN * L * 4}}xi32>
                  scf.yield %wa5 : vector<{{RUN * L * 4}}xi32>
                } {loop_annotation = #unroll_full}
                scf.yield %wa3 : vector<{{RUN * L * 4}}xi32>
              } else {
                scf.yield %wa1 : vector<{{RUN * L * 4}}xi32>
              }
              %f2 = arith.muli %f, %cP : i64
              scf.yield %f2, %wa2 : i64, vector<{{RUN * L * 4}}xi32>
            } {loop_annotation = #unroll_full}
            scf.yield %wa_j#1 : vector<{{RUN * L * 4}}xi32>
          } {loop_annotation = #unroll_full}

          // C. per token, levels in order: its entry's row (loaded at jo = j - j % f), scaled
          // by 1 / f and added when selected; exactly the operations of one token at a time.
          %acc_run = scf.for %j = %c0 to %cRun step %c1
              iter_args(%aa = %acc_h) -> (vector<{{RUN * 8}}xf32>) : i64 {
            %j8 = arith.muli %j, %c8 : i64
            %aj = scf.for %e = %c0 to %c8 step %c1
                iter_args(%v = %vzero) -> (vector<8xf32>) : i64 {
              %je = arith.addi %j8, %e : i64
              %jei = arith.index_cast %je : i64 to index
              %ei = arith.index_cast %e : i64 to index
              %x = vector.extract %aa[%jei] : f32 from vector<{{RUN * 8}}xf32>
              %v2 = vector.insert %x, %v[%ei] : f32 into vector<8xf32>
              scf.yield %v2 : vector<8xf32>
            } {loop_annotation = #unroll_full}
            %lv:2 = scf.for %l = %c0 to %cL step %c1
                iter_args(%f = %c1, %a1 = %aj) -> (i64, vector<8xf32>) : i64 {
              %jm = arith.remui %j, %f : i64
              %jo = arith.subi %j, %jm : i64
              %jol = arith.muli %jo, %cL : i64
              %k = arith.addi %jol, %l : i64
              %ki = arith.index_cast %k : i64 to index
              %slot32 = vector.extract %slots[%ki] : i32 from vector<{{RUN * L}}xi32>
              %selected = arith.cmpi sge, %slot32, %c0_i32 : i32
              %a2 = scf.if %selected -> (vector<8xf32>) {
                %k4 = arith.muli %k, %c4 : i64
                %k4i = arith.index_cast %k4 : i64 to index
                %k4p1 = arith.addi %k4, %c1 : i64
                %k4p1i = arith.index_cast %k4p1 : i64 to index
                %k4p2 = arith.addi %k4, %c2 : i64
                %k4p2i = arith.index_cast %k4p2 : i64 to index
                %k4p3 = arith.addi %k4p2, %c1 : i64
                %k4p3i = arith.index_cast %k4p3 : i64 to index
                %w0 = vector.extract %words[%k4i] : i32 from vector<{{RUN * L * 4}}xi32>
                %w1 = vector.extract %words[%k4p1i] : i32 from vector<{{RUN * L * 4}}xi32>
                %w2 = vector.extract %words[%k4p2i] : i32 from vector<{{RUN * L * 4}}xi32>
                %w3 = vector.extract %words[%k4p3i] : i32 from vector<{{RUN * L * 4}}xi32>
                %wv = vector.from_elements %w0, %w1, %w2, %w3 : vector<4xi32>
                %gv = vector.bitcast %wv : vector<4xi32> to vector<8x{{DTYPE}}>
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
            %aa2 = scf.for %e = %c0 to %c8 step %c1
                iter_args(%ab = %aa) -> (vector<{{RUN * 8}}xf32>) : i64 {
              %je = arith.addi %j8, %e : i64
              %jei = arith.index_cast %je : i64 to index
              %ei = arith.index_cast %e : i64 to index
              %x = vector.extract %lv#1[%ei] : f32 from vector<8xf32>
              %ab2 = vector.insert %x, %ab[%jei] : f32 into vector<{{RUN * 8}}xf32>
              scf.yield %ab2 : vector<{{RUN * 8}}xf32>
            } {loop_annotation = #unroll_full}
            scf.yield %aa2 : vector<{{RUN * 8}}xf32>
          } {loop_annotation = #unroll_full}
          scf.yield %acc_run : vector<{{RUN * 8}}xf32>
        }

        // the run's rows of this component, rounded once; tokens >= N untouched
        scf.for %j = %c0 to %cRun step %c1 : i64 {
          %t = arith.addi %t0, %j : i64
          %in = arith.cmpi ult, %t, %n : i64
          scf.if %in {
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
