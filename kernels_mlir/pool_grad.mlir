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
// Constants: DTYPE (bf16 | f16), D (8 * 2^k, at most 256), P, L, THREADS (a multiple of D/8),
//   TOKENS (tokens per block, a multiple of THREADS / (D/8)).
// Arguments: g_q, g_k, g_v (DTYPE [B, H, S_sel, D] contiguous), inv (i32 [B, H, S_total]),
//   dq, dk, dv (DTYPE, plan layout) : !llvm.ptr<1>;
//   n (N), heads (H), kv_heads (Hkv), s_total, s_sel : i64;
//   q_stride_b, q_stride_t, q_stride_h, kv_stride_b, kv_stride_t, kv_stride_h : i64.
// Launch: grid (ceil(N / TOKENS), H + Hkv, B), block (THREADS); blockIdx.y < H writes dq of
//   that head, the rest write dk and dv of kv head blockIdx.y - H. Rows 16-byte aligned.
module attributes {gpu.container_module} {
gpu.module @pool_grad [{{TARGET}}] {
  gpu.func @lh_pool_grad(%g_q: !llvm.ptr<1>, %g_k: !llvm.ptr<1>, %g_v: !llvm.ptr<1>, %inv: !llvm.ptr<1>,
                         %dq: !llvm.ptr<1>, %dk: !llvm.ptr<1>, %dv: !llvm.ptr<1>,
                         %n: i64, %heads: i64, %kv_heads: i64, %s_total: i64, %s_sel: i64,
                         %q_sb: i64, %q_st: i64, %q_sh: i64,
                         %kv_sb: i64, %kv_st: i64, %kv_sh: i64) kernel {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %c8 = arith.constant 8 : i64
    %c0_i32 = arith.constant 0 : i32
    %cD = arith.constant {{D}} : i64
    %cP = arith.constant {{P}} : i64
    %cL = arith.constant {{L}} : i64
    %cLanes = arith.constant {{D / 8}} : i64
    %cTpp = arith.constant {{THREADS / (D / 8)}} : i64
    %cTokens = arith.constant {{TOKENS}} : i64
    %cPasses = arith.constant {{TOKENS / (THREADS / (D / 8))}} : i64
    %one = arith.constant 1.0 : f32
    %vzero = arith.constant dense<0.0> : vector<8xf32>

    %tid_ix = gpu.thread_id x
    %bx_ix = gpu.block_id x
    %by_ix = gpu.block_id y
    %bz_ix = gpu.block_id z
    %tid = arith.index_cast %tid_ix : index to i64
    %bx = arith.index_cast %bx_ix : index to i64
    %hy = arith.index_cast %by_ix : index to i64
    %b = arith.index_cast %bz_ix : index to i64

    %lane = arith.remui %tid, %cLanes : i64
    %tok = arith.divui %tid, %cLanes : i64
    %lane_off = arith.muli %lane, %c8 : i64
    %is_q = arith.cmpi ult, %hy, %heads : i64
    %group = arith.divui %heads, %kv_heads : i64
    %hk = arith.subi %hy, %heads : i64
    // the query heads whose entries feed this block: h itself, or the kv head's group
    %hk_first = arith.muli %hk, %group : i64
    %h_first = arith.select %is_q, %hy, %hk_first : i64
    %h_count = arith.select %is_q, %c1, %group : i64
    %bh0 = arith.muli %b, %heads : i64
    %tok0 = arith.muli %bx, %cTokens : i64
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

    scf.for %it = %c0 to %cPasses step %c1 : i64 {
      %itt = arith.muli %it, %cTpp : i64
      %tl = arith.addi %itt, %tok : i64
      %t = arith.addi %tok0, %tl : i64
      %in = arith.cmpi ult, %t, %n : i64
      scf.if %in {
        %sum:2 = scf.for %hi = %c0 to %h_count step %c1
            iter_args(%a = %vzero, %av = %vzero) -> (vector<8xf32>, vector<8xf32>) : i64 {
          %hq = arith.addi %h_first, %hi : i64
          %bh = arith.addi %bh0, %hq : i64
          %inv_base = arith.muli %bh, %s_total : i64
          %sel_base = arith.muli %bh, %s_sel : i64
          %lv:4 = scf.for %l = %c0 to %cL step %c1
              iter_args(%f = %c1, %lvl_off = %c0, %a1 = %a, %av1 = %av) -> (i64, i64, vector<8xf32>, vector<8xf32>) : i64 {
            %i = arith.divui %t, %f : i64
            %p1 = arith.addi %inv_base, %lvl_off : i64
            %p2 = arith.addi %p1, %i : i64
            %ip = llvm.getelementptr %inv[%p2] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, i32
            %slot32 = llvm.load %ip : !llvm.ptr<1> -> i32
            %selected = arith.cmpi sge, %slot32, %c0_i32 : i32
            %upd:2 = scf.if %selected -> (vector<8xf32>, vector<8xf32>) {
              %slot = arith.extsi %slot32 : i32 to i64
              %row = arith.addi %sel_base, %slot : i64
              %ro = arith.muli %row, %cD : i64
              %go = arith.addi %ro, %lane_off : i64
              %ff = arith.uitofp %f : i64 to f32
              %rf = arith.divf %one, %ff : f32
              %scale = vector.broadcast %rf : f32 to vector<8xf32>
              %gp = llvm.getelementptr %ga[%go] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
              %gv = llvm.load %gp {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8x{{DTYPE}}>
              %gf = arith.extf %gv : vector<8x{{DTYPE}}> to vector<8xf32>
              %gs = arith.mulf %gf, %scale : vector<8xf32>
              %a2 = arith.addf %a1, %gs : vector<8xf32>
              %av2 = scf.if %is_q -> (vector<8xf32>) {
                scf.yield %av1 : vector<8xf32>
              } else {
                %vp = llvm.getelementptr %g_v[%go] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
                %vv = llvm.load %vp {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8x{{DTYPE}}>
                %vf = arith.extf %vv : vector<8x{{DTYPE}}> to vector<8xf32>
                %vs = arith.mulf %vf, %scale : vector<8xf32>
                %av3 = arith.addf %av1, %vs : vector<8xf32>
                scf.yield %av3 : vector<8xf32>
              }
              scf.yield %a2, %av2 : vector<8xf32>, vector<8xf32>
            } else {
              scf.yield %a1, %av1 : vector<8xf32>, vector<8xf32>
            }
            %n_l = arith.divui %n, %f : i64
            %lvl_off2 = arith.addi %lvl_off, %n_l : i64
            %f2 = arith.muli %f, %cP : i64
            scf.yield %f2, %lvl_off2, %upd#0, %upd#1 : i64, i64, vector<8xf32>, vector<8xf32>
          }
          scf.yield %lv#2, %lv#3 : vector<8xf32>, vector<8xf32>
        }
        %ts = arith.muli %t, %w_st : i64
        %wo = arith.addi %w_base, %ts : i64
        %r = arith.truncf %sum#0 : vector<8xf32> to vector<8x{{DTYPE}}>
        %wp = llvm.getelementptr %out_a[%wo] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
        llvm.store %r, %wp {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<1>
        %is_kv = arith.cmpi uge, %hy, %heads : i64
        scf.if %is_kv {
          %rv = arith.truncf %sum#1 : vector<8xf32> to vector<8x{{DTYPE}}>
          %vwp = llvm.getelementptr %dv[%wo] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
          llvm.store %rv, %vwp {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<1>
        }
      }
    }
    gpu.return
  }
}
}
