// gather.mlir - the sub-sequence rows (SPEC sections 1 and 4) and, for the backward, the
// per-entry sums of dout (SPEC section 6).
//
// lh_gather: q_sel, k_sel, v_sel [B, H, S_sel, D] (DTYPE, contiguous) from q [.., H, ..] and
//   k, v [.., Hkv, ..]: row s of head h is the pyramid entry (l, i) at indices[b, h, s], i.e. the
//   mean of tokens [i f, (i + 1) f) (f = P^l) of q's head h and of k's and v's head
//   h / (H / Hkv). Summed in fp32 token by token in order, scaled by 1/f (exact: f is a power
//   of two), rounded once.
//   With use_pooled != 0, the q and k rows of a coarsest-level entry (l = L-1, f = F = P^(L-1))
//   are copied from pooled_q [B, H, N / F, D] row (b, h, i) and pooled_k [B, Hkv, N / F, D] row
//   (b, h / (H / Hkv), i) (DTYPE, contiguous), which lh_pyramid_scores wrote with write_pooled
//   by the same arithmetic, so the result is bit for bit the same; q and k are then read only
//   for the finer levels' entries. v is averaged as always. With use_pooled == 0 pooled_q and
//   pooled_k are never touched and may be NULL (the backward's re-gather, the stage entry point).
//   Arguments: q, k, v, indices, q_sel, k_sel, v_sel, pooled_q, pooled_k : !llvm.ptr<1>;
//     n (N), heads (H), kv_heads (Hkv), s_sel, use_pooled (0 or 1) : i64;
//     q_stride_b, q_stride_t, q_stride_h, kv_stride_b, kv_stride_t, kv_stride_h : i64.
// lh_gather_dout: d_sel [B, H, S_sel, D] (DTYPE, contiguous), row s = the fp32 sum of dout over
//   the tokens entry (l, i) was scattered to: t = i f + f - 1 + c, c = 0 .. f - 1, t < N.
//   Arguments: dout, indices, d_sel : !llvm.ptr<1>; n, heads, s_sel : i64;
//     d_stride_b, d_stride_t, d_stride_h : i64.
// Constants: DTYPE (bf16 | f16), D (8 * 2^k, at most 256), P, L, THREADS (a multiple of D/8),
//   ROWS (rows per block, a multiple of THREADS / (D/8)).
// Launch (both): grid (ceil(S_sel / ROWS), H, B), block (THREADS). Rows 16-byte aligned.
//
// A position outside the pyramid (lh_gather takes caller-supplied indices) yields a zero row and
// reads nothing.
//
// How: D/8 threads own one row and read each token row with one 16-byte load per thread, so a
// warp reads whole rows; the window loop of an entry is that group's alone (no reduction across
// groups), so every output element is written once by one thread.
module attributes {gpu.container_module} {
gpu.module @gather [{{TARGET}}] {
  {{include grid}}
  {{include lanes}}

  // Row s of this block's pass `it`: s = s0 + it * rows-per-pass + row, and whether s < s_sel.
  func.func private @pass_row(%s0: i64, %it: i64, %row: i64, %s_sel: i64) -> (i64, i1) {
    %cRpp = arith.constant {{THREADS / (D / 8)}} : i64
    %itr = arith.muli %it, %cRpp : i64
    %sr = arith.addi %itr, %row : i64
    %s = arith.addi %s0, %sr : i64
    %in = arith.cmpi ult, %s, %s_sel : i64
    return %s, %in : i64, i1
  }

  // The pyramid entry at indices[ii]: its position pos, the width f of its level (its window
  // is tokens [i f, (i + 1) f)), its index i in that level, the coarsest level's width F and
  // where that level starts. The level is the last one whose offset pos reaches.
  func.func private @entry_at(%indices: !llvm.ptr<1>, %ii: i64, %n: i64) -> (i64, i64, i64, i64, i64) {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %cP = arith.constant {{P}} : i64
    %cL = arith.constant {{L}} : i64
    %ip = llvm.getelementptr %indices[%ii] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, i32
    %pos32 = llvm.load %ip : !llvm.ptr<1> -> i32
    %pos = arith.extsi %pos32 : i32 to i64
    %loc:4 = scf.for %l = %c1 to %cL step %c1
        iter_args(%f = %c1, %off = %c0, %lf = %c1, %loff = %c0) -> (i64, i64, i64, i64) : i64 {
      %nprev = arith.divui %n, %f : i64
      %off2 = arith.addi %off, %nprev : i64
      %f2 = arith.muli %f, %cP : i64
      %here = arith.cmpi uge, %pos, %off2 : i64
      %lf2 = arith.select %here, %f2, %lf : i64
      %loff2 = arith.select %here, %off2, %loff : i64
      scf.yield %f2, %off2, %lf2, %loff2 : i64, i64, i64, i64
    }
    %i = arith.subi %pos, %loc#3 : i64
    return %pos, %loc#2, %i, %loc#0, %loc#1 : i64, i64, i64, i64, i64
  }

  // Whether position pos is inside the pyramid (caller-supplied indices may not be; then
  // nothing of it may be read), from the coarsest level's width F and offset; and N / F.
  func.func private @in_pyramid(%pos: i64, %n: i64, %cF: i64, %off_last: i64) -> (i64, i1) {
    %n_last = arith.divui %n, %cF : i64
    %s_total = arith.addi %off_last, %n_last : i64
    %valid = arith.cmpi ult, %pos, %s_total : i64
    return %n_last, %valid : i64, i1
  }

  // Launch bounds (.maxntid / .minnctapersm): THREADS-thread blocks, at least half of the SM's
  // 2048 threads resident (4 blocks, at most 64 registers at THREADS = 256), as before the
  // pooled-row branch existed: without the bound ptxas takes 65 registers at D = 128 and one
  // block per SM less. At D = 256 one block less (at most 80 registers): 64 would spill.
  gpu.func @lh_gather(%q: !llvm.ptr<1>, %k: !llvm.ptr<1>, %v: !llvm.ptr<1>, %indices: !llvm.ptr<1>,
                      %q_sel: !llvm.ptr<1>, %k_sel: !llvm.ptr<1>, %v_sel: !llvm.ptr<1>,
                      %pq: !llvm.ptr<1>, %pk: !llvm.ptr<1>,
                      %n: i64, %heads: i64, %kv_heads: i64, %s_sel: i64, %use_pooled: i64,
                      %q_sb: i64, %q_st: i64, %q_sh: i64,
                      %kv_sb: i64, %kv_st: i64, %kv_sh: i64) kernel
      attributes {nvvm.maxntid = array<i32: {{THREADS}}, 1, 1>, nvvm.minctasm = {{2048 / THREADS / 2 - D / 256}} : i32} {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %cD = arith.constant {{D}} : i64
    %cRows = arith.constant {{ROWS}} : i64
    %cPasses = arith.constant {{ROWS / (THREADS / (D / 8))}} : i64
    %one = arith.constant 1.0 : f32
    %vzero = arith.constant dense<0.0> : vector<8xf32>

    %tid, %bx, %h, %b = func.call @grid_ids() : () -> (i64, i64, i64, i64)

    %lane, %row, %lane_off = func.call @row_lanes(%tid) : (i64) -> (i64, i64, i64)
    %group = arith.divui %heads, %kv_heads : i64
    %hk = arith.divui %h, %group : i64
    %bh, %ind_base = func.call @head_row(%b, %h, %heads, %s_sel) : (i64, i64, i64, i64) -> (i64, i64)
    %q_base = func.call @strided_row(%b, %h, %q_sb, %q_sh, %lane_off) : (i64, i64, i64, i64, i64) -> i64
    %kv_base = func.call @strided_row(%b, %hk, %kv_sb, %kv_sh, %lane_off) : (i64, i64, i64, i64, i64) -> i64
    %s0 = arith.muli %bx, %cRows : i64
    %up = arith.cmpi ne, %use_pooled, %c0 : i64

    scf.for %it = %c0 to %cPasses step %c1 : i64 {
      %s, %in = func.call @pass_row(%s0, %it, %row, %s_sel) : (i64, i64, i64, i64) -> (i64, i1)
      scf.if %in {
        %ii = arith.addi %ind_base, %s : i64
        %pos, %width, %i, %cF, %off_last = func.call @entry_at(%indices, %ii, %n) : (!llvm.ptr<1>, i64, i64) -> (i64, i64, i64, i64, i64)
        %t0 = arith.muli %i, %width : i64
        // a position outside the pyramid (caller-supplied indices) gives a zero row, no read
        %n_last, %valid = func.call @in_pyramid(%pos, %n, %cF, %off_last) : (i64, i64, i64, i64) -> (i64, i1)
        %count = arith.select %valid, %width, %c0 : i64
        %wf = arith.uitofp %width : i64 to f32
        %inv_w = arith.divf %one, %wf : f32
        %scale = vector.broadcast %inv_w : f32 to vector<8xf32>
        // a coarsest-level entry (its width is F) with the pooled rows at hand
        %coarse = arith.cmpi eq, %width, %cF : i64
        %cv = arith.andi %coarse, %valid : i1
        %from_pooled = arith.andi %cv, %up : i1
        %oi = arith.muli %ii, %cD : i64
        %oo = arith.addi %oi, %lane_off : i64
        %oqp = llvm.getelementptr %q_sel[%oo] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
        %okp = llvm.getelementptr %k_sel[%oo] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
        %ovp = llvm.getelementptr %v_sel[%oo] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
        // (each branch stores its own rows: no three-vector join to keep registers for)
        scf.if %from_pooled {
          // q, k: row i of head (b, h) of pooled_q [B, H, N / F, D] and of head (b, h / (H / Hkv))
          // of pooled_k [B, Hkv, N / F, D] (n_last = N / F here), loaded first so that they
          // overlap the v loop; v: averaged as below
          %pq1 = arith.muli %bh, %n_last : i64
          %pq2 = arith.addi %pq1, %i : i64
          %pq3 = arith.muli %pq2, %cD : i64
          %pqo = arith.addi %pq3, %lane_off : i64
          %pqp = llvm.getelementptr %pq[%pqo] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
          %pqv = llvm.load %pqp {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8x{{DTYPE}}>
          %bkh, %pk1 = func.call @head_row(%b, %hk, %kv_heads, %n_last) : (i64, i64, i64, i64) -> (i64, i64)
          %pk2 = arith.addi %pk1, %i : i64
          %pk3 = arith.muli %pk2, %cD : i64
          %pko = arith.addi %pk3, %lane_off : i64
          %pkp = llvm.getelementptr %pk[%pko] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
          %pkv = llvm.load %pkp {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8x{{DTYPE}}>
          %accv = scf.for %c = %c0 to %count step %c1 iter_args(%av = %vzero) -> (vector<8xf32>) : i64 {
            %t = arith.addi %t0, %c : i64
            %vt = arith.muli %t, %kv_st : i64
            %vo = arith.addi %kv_base, %vt : i64
            %vf = func.call @load_f32(%v, %vo) : (!llvm.ptr<1>, i64) -> vector<8xf32>
            %av2 = arith.addf %av, %vf : vector<8xf32>
            scf.yield %av2 : vector<8xf32>
          }
          %mv = arith.mulf %accv, %scale : vector<8xf32>
          %rv = arith.truncf %mv : vector<8xf32> to vector<8x{{DTYPE}}>
          llvm.store %pqv, %oqp {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<1>
          llvm.store %pkv, %okp {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<1>
          llvm.store %rv, %ovp {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<1>
        } else {
          %acc:3 = scf.for %c = %c0 to %count step %c1
              iter_args(%aq = %vzero, %ak = %vzero, %av = %vzero) -> (vector<8xf32>, vector<8xf32>, vector<8xf32>) : i64 {
            %t = arith.addi %t0, %c : i64
            %qt = arith.muli %t, %q_st : i64
            %qo = arith.addi %q_base, %qt : i64
            %qp = llvm.getelementptr %q[%qo] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
            %qv = llvm.load %qp {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8x{{DTYPE}}>
            %kt = arith.muli %t, %kv_st : i64
            %ko = arith.addi %kv_base, %kt : i64
            %kp = llvm.getelementptr %k[%ko] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
            %kv_ = llvm.load %kp {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8x{{DTYPE}}>
            %vp = llvm.getelementptr %v[%ko] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
            %vv = llvm.load %vp {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8x{{DTYPE}}>
            %qf = arith.extf %qv : vector<8x{{DTYPE}}> to vector<8xf32>
            %kf = arith.extf %kv_ : vector<8x{{DTYPE}}> to vector<8xf32>
            %vf = arith.extf %vv : vector<8x{{DTYPE}}> to vector<8xf32>
            %aq2 = arith.addf %aq, %qf : vector<8xf32>
            %ak2 = arith.addf %ak, %kf : vector<8xf32>
            %av2 = arith.addf %av, %vf : vector<8xf32>
            scf.yield %aq2, %ak2, %av2 : vector<8xf32>, vector<8xf32>, vector<8xf32>
          }
          %mq = arith.mulf %acc#0, %scale : vector<8xf32>
          %mk = arith.mulf %acc#1, %scale : vector<8xf32>
          %mv = arith.mulf %acc#2, %scale : vector<8xf32>
          %rq = arith.truncf %mq : vector<8xf32> to vector<8x{{DTYPE}}>
          %rk = arith.truncf %mk : vector<8xf32> to vector<8x{{DTYPE}}>
          %rv = arith.truncf %mv : vector<8xf32> to vector<8x{{DTYPE}}>
          llvm.store %rq, %oqp {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<1>
          llvm.store %rk, %okp {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<1>
          llvm.store %rv, %ovp {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<1>
        }
      }
    }
    gpu.return
  }

  gpu.func @lh_gather_dout(%dout: !llvm.ptr<1>, %indices: !llvm.ptr<1>, %d_sel: !llvm.ptr<1>,
                           %n: i64, %heads: i64, %s_sel: i64,
                           %d_sb: i64, %d_st: i64, %d_sh: i64) kernel {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %cD = arith.constant {{D}} : i64
    %cRows = arith.constant {{ROWS}} : i64
    %cPasses = arith.constant {{ROWS / (THREADS / (D / 8))}} : i64
    %vzero = arith.constant dense<0.0> : vector<8xf32>

    %tid, %bx, %h, %b = func.call @grid_ids() : () -> (i64, i64, i64, i64)

    %lane, %row, %lane_off = func.call @row_lanes(%tid) : (i64) -> (i64, i64, i64)
    %bh, %ind_base = func.call @head_row(%b, %h, %heads, %s_sel) : (i64, i64, i64, i64) -> (i64, i64)
    %d_base = func.call @strided_row(%b, %h, %d_sb, %d_sh, %lane_off) : (i64, i64, i64, i64, i64) -> i64
    %s0 = arith.muli %bx, %cRows : i64

    scf.for %it = %c0 to %cPasses step %c1 : i64 {
      %s, %in = func.call @pass_row(%s0, %it, %row, %s_sel) : (i64, i64, i64, i64) -> (i64, i1)
      scf.if %in {
        %ii = arith.addi %ind_base, %s : i64
        %pos, %width, %i, %cF, %off_last = func.call @entry_at(%indices, %ii, %n) : (!llvm.ptr<1>, i64, i64) -> (i64, i64, i64, i64, i64)
        // the shifted window [i f + f - 1, i f + 2 f - 1) cut at N
        %i1 = arith.addi %i, %c1 : i64
        %w0 = arith.muli %i1, %width : i64
        %t0 = arith.subi %w0, %c1 : i64
        %t1a = arith.addi %t0, %width : i64
        %t1b = arith.minui %t1a, %n : i64
        %n_last, %valid = func.call @in_pyramid(%pos, %n, %cF, %off_last) : (i64, i64, i64, i64) -> (i64, i1)
        %t1 = arith.select %valid, %t1b, %t0 : i64
        %acc = scf.for %t = %t0 to %t1 step %c1 iter_args(%a = %vzero) -> (vector<8xf32>) : i64 {
          %dt = arith.muli %t, %d_st : i64
          %dof = arith.addi %d_base, %dt : i64
          %df = func.call @load_f32(%dout, %dof) : (!llvm.ptr<1>, i64) -> vector<8xf32>
          %a2 = arith.addf %a, %df : vector<8xf32>
          scf.yield %a2 : vector<8xf32>
        }
        %r = arith.truncf %acc : vector<8xf32> to vector<8x{{DTYPE}}>
        %oi = arith.muli %ii, %cD : i64
        %oo = arith.addi %oi, %lane_off : i64
        %op = llvm.getelementptr %d_sel[%oo] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
        llvm.store %r, %op {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<1>
      }
    }
    gpu.return
  }
}
}
