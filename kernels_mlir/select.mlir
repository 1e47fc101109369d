// select.mlir - SPEC sections 2 and 3: the A/B cascade of one tile and the depth-first order
// of its kept entries, without a general sort.
//
// One block per (tile t, query head h, batch b). Reads scores_q [B, H, S_total] of head h and
// scores_k [B, Hkv, S_total] of kv head h / (H / Hkv) (fp32), writes the tile's slots
// [t * per_tile, (t + 1) * per_tile) of indices [B, H, S_sel] (pyramid positions, int32) and, for
// every kept entry, inv [B, H, S_total] = its slot (the runtime clears inv to -1 first; entries
// never kept stay -1), per_tile = tile_len + (L - 1) * REFINED * P.
//
// Constants: P (pooling), L (levels), SET (|A| = |B|, 64), REFINED (entries refined per level of
//   a tile: 2 SET = 128; a power of two), THREADS (block size: a multiple of 32, >= 256, one
//   thread per digit of the radix histogram, and >= REFINED); SET and REFINED come from
//   runtime/algorithm.h.
// Arguments: scores_q, scores_k, indices, inv : !llvm.ptr<1>;
//   n (N), heads (H), kv_heads (Hkv), s_total, s_sel, tile_len : i64.
// Launch: grid (T, H, B), block (THREADS), no dynamic shared memory.
//
// How. Candidates of a level are kept in position order as a list: at the coarsest level the
// tile's entries, below it the children of the refined entries, the r-th refined parent's
// children being list entries r*P .. r*P+P-1. Nothing per candidate is stored:
//  - A (SET highest scores_q, ties to the lower position) is found by a radix select over the
//    order-preserving integer image of the scores (4 passes of 8 bits with a shared
//    histogram); it leaves a threshold key and how many candidates equal to it belong to A, and
//    the list index of the last of those (found by counting per thread over contiguous ranges)
//    closes the definition: A = {key > thr} + {key == thr and index <= cut}. B is the same over
//    the candidates outside A with scores_k. Counts are exact integers, so the result does not
//    depend on thread timing.
//  - Every "first entry at which a running count reaches a need" (the histogram's digit, the
//    thread holding the last tie) and every prefix sum over threads or refined entries is a
//    block scan (@block_scan: shuffles in a warp, the warps' totals through shared memory), not
//    a loop of one thread: the kernel is latency-bound, and those loops of 128-256 dependent
//    shared-memory steps, 24 of them per tile at L = 3, were most of its time.
//  - The REFINED entries of every level (their list index and position) are compacted in
//    list order by a per-thread count and an exclusive scan.
//  - Order: a refined entry's subtree holds 1 + sum of its children's subtree sizes (a child
//    that is not refined counts 1); sizes go bottom-up over the REFINED entries per level
//    with E[r] = sum over refined r' < r of (size - 1). A list entry j then starts at
//    j + E[#refined before j] relative to its list, its parent's subtree starts where the
//    parent's first child does, and every entry's slot is start + size - 1 (children first,
//    the refined parent last).
// Scores are assumed finite or +-inf (they are norms): NaN orders above +inf here.
module attributes {gpu.container_module} {
gpu.module @select_order [{{TARGET}}] {
  {{include grid}}

  llvm.mlir.global internal @hist() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<256 x i32>
  llvm.mlir.global internal @cnt() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<{{THREADS}} x i32>
  llvm.mlir.global internal @ctl() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<4 x i32>
  llvm.mlir.global internal @refcand() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<{{L * REFINED}} x i32>
  llvm.mlir.global internal @refpos() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<{{L * REFINED}} x i32>
  llvm.mlir.global internal @rsize() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<{{L * REFINED}} x i32>
  llvm.mlir.global internal @rstart() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<{{L * REFINED}} x i32>
  llvm.mlir.global internal @epre() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<{{L * (REFINED + 1)}} x i32>
  llvm.mlir.global internal @wsum() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<{{THREADS / 32}} x i32>
  llvm.mlir.global internal @reach_at() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<2 x i32>

  // ---- helpers (inlined where they are called) -----------------------------------------------

  // off_l = n_0 + ... + n_(l-1), n_i = N / P^i: where level l starts in a row of the scores.
  func.func private @level_offset(%n: i64, %l: i64) -> i64 {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %cP = arith.constant {{P}} : i64
    %offs:2 = scf.for %j = %c0 to %l step %c1 iter_args(%o = %c0, %f = %c1) -> (i64, i64) : i64 {
      %nl = arith.divui %n, %f : i64
      %o2 = arith.addi %o, %nl : i64
      %f2 = arith.muli %f, %cP : i64
      scf.yield %o2, %f2 : i64, i64
    }
    return %offs#0 : i64
  }

  // The level li-th from the coarsest: l, whether it is the coarsest (its list is the tile's
  // entries, else the children of the refined entries above), its list's length, where it starts
  // in a row of the scores, and where the refined list of level l + 1 starts.
  func.func private @level_list(%li: i64, %n: i64, %tile_len: i64) -> (i64, i1, i64, i64, i64) {
    %c1 = arith.constant 1 : i64
    %cC = arith.constant {{L - 1}} : i64
    %cFine = arith.constant {{REFINED * P}} : i64
    %cRefined = arith.constant {{REFINED}} : i64
    %l = arith.subi %cC, %li : i64
    %is_c = arith.cmpi eq, %l, %cC : i64
    %m = arith.select %is_c, %tile_len, %cFine : i64
    %off_l = func.call @level_offset(%n, %l) : (i64, i64) -> i64
    %lp1 = arith.addi %l, %c1 : i64
    %par_base = arith.muli %lp1, %cRefined : i64
    return %l, %is_c, %m, %off_l, %par_base : i64, i1, i64, i64, i64
  }

  // Entry j of a finer level's candidate list is child j % P of the (j / P)-th refined entry of
  // the level above, whose refined list starts at par_base: the child's position inside its
  // level, and the parent's index into the refined lists (refpos, rstart, ...).
  func.func private @child_pos(%j: i64, %par_base: i64) -> (i64, i64) {
    %cP = arith.constant {{P}} : i64
    %refpos = llvm.mlir.addressof @refpos : !llvm.ptr<3>
    %par = arith.divui %j, %cP : i64
    %jj = arith.remui %j, %cP : i64
    %pi = arith.addi %par_base, %par : i64
    %pp = llvm.getelementptr %refpos[%pi] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
    %pv32 = llvm.load %pp : !llvm.ptr<3> -> i32
    %pv = arith.extsi %pv32 : i32 to i64
    %pvp = arith.muli %pv, %cP : i64
    %pf = arith.addi %pvp, %jj : i64
    return %pf, %pi : i64, i64
  }

  // The position inside its level of candidate j: the tile's entry j at the coarsest level
  // (is_c, the tile starting at tile_pos0), else a child as in @child_pos.
  func.func private @list_pos(%j: i64, %is_c: i1, %tile_pos0: i64, %par_base: i64) -> i64 {
    %pos = scf.if %is_c -> (i64) {
      %pc = arith.addi %tile_pos0, %j : i64
      scf.yield %pc : i64
    } else {
      %pf, %pi = func.call @child_pos(%j, %par_base) : (i64, i64) -> (i64, i64)
      scf.yield %pf : i64
    }
    return %pos : i64
  }

  // The score at scores[base + pos] as an order-preserving unsigned key: a higher score has a
  // higher key, -0 and +0 are one key, NaN sorts above +inf.
  func.func private @score_key(%scores: !llvm.ptr<1>, %base: i64, %pos: i64) -> i32 {
    %i0 = arith.constant 0 : i32
    %iabs = arith.constant 2147483647 : i32
    %isign = arith.constant -2147483648 : i32
    %iones = arith.constant -1 : i32
    %i = arith.addi %base, %pos : i64
    %p = llvm.getelementptr %scores[%i] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, f32
    %x = llvm.load %p : !llvm.ptr<1> -> f32
    %bits = arith.bitcast %x : f32 to i32
    %abs = arith.andi %bits, %iabs : i32
    %zero = arith.cmpi eq, %abs, %i0 : i32
    %neg = arith.cmpi slt, %bits, %i0 : i32
    %flipped = arith.xori %bits, %iones : i32
    %signed = arith.ori %bits, %isign : i32
    %key0 = arith.select %neg, %flipped, %signed : i32
    %key = arith.select %zero, %isign, %key0 : i32
    return %key : i32
  }

  // Whether candidate j with this key is in the set found with threshold key thr and cut: a
  // higher key, or the threshold key at a list index up to the cut (ties go to lower indices).
  func.func private @in_set(%key: i32, %thr: i32, %j: i64, %cut: i64) -> i1 {
    %gt = arith.cmpi ugt, %key, %thr : i32
    %eq = arith.cmpi eq, %key, %thr : i32
    %le = arith.cmpi sle, %j, %cut : i64
    %tie = arith.andi %eq, %le : i1
    %in = arith.ori %gt, %tie : i1
    return %in : i1
  }

  // Candidate j while set A (is_b false) or set B (is_b true) is selected: the key it is ranked
  // by (its scores_q's, or its scores_k's for B) and whether it competes (for B: not in A, whose
  // threshold and cut are thr_a, cut_a).
  func.func private @candidate(%j: i64, %is_c: i1, %tile_pos0: i64, %par_base: i64,
                               %sq: !llvm.ptr<1>, %qlev: i64, %sk: !llvm.ptr<1>, %klev: i64,
                               %thr_a: i32, %cut_a: i64, %is_b: i1) -> (i32, i1) {
    %true = arith.constant true
    %pos = func.call @list_pos(%j, %is_c, %tile_pos0, %par_base) : (i64, i1, i64, i64) -> i64
    %kq = func.call @score_key(%sq, %qlev, %pos) : (!llvm.ptr<1>, i64, i64) -> i32
    %in_a = func.call @in_set(%kq, %thr_a, %j, %cut_a) : (i32, i32, i64, i64) -> i1
    %in_a_b = arith.andi %in_a, %is_b : i1
    %elig = arith.xori %in_a_b, %true : i1
    %key = scf.if %is_b -> (i32) {
      %kk = func.call @score_key(%sk, %klev, %pos) : (!llvm.ptr<1>, i64, i64) -> i32
      scf.yield %kk : i32
    } else {
      scf.yield %kq : i32
    }
    return %key, %elig : i32, i1
  }

  // Counting the candidates tied at the threshold key: whether this one is a competing tie
  // (`hit`), and the count with it.
  func.func private @count_tie(%key: i32, %elig: i1, %thr: i32, %cc: i32) -> (i32, i1) {
    %eqt = arith.cmpi eq, %key, %thr : i32
    %hit = arith.andi %eqt, %elig : i1
    %inc = arith.extui %hit : i1 to i32
    %cc2 = arith.addi %cc, %inc : i32
    return %cc2, %hit : i32, i1
  }

  // refcand[i]: a refined entry's index in its level's candidate list.
  func.func private @refcand_at(%base: i64, %r: i64) -> i32 {
    %refcand = llvm.mlir.addressof @refcand : !llvm.ptr<3>
    %i = arith.addi %base, %r : i64
    %p = llvm.getelementptr %refcand[%i] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
    %v = llvm.load %p : !llvm.ptr<3> -> i32
    return %v : i32
  }

  // How many entries of the refined list at refcand[base ..] (REFINED list indices, increasing,
  // unused slots INT_MAX) are below x: a binary search of log2(REFINED) + 1 steps.
  func.func private @refined_below(%base: i64, %x: i32) -> i64 {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %c2 = arith.constant 2 : i64
    %cSteps = arith.constant {{log2(REFINED) + 1}} : i64
    %cRefined = arith.constant {{REFINED}} : i64
    %true = arith.constant true
    %lb:2 = scf.for %it = %c0 to %cSteps step %c1 iter_args(%lo = %c0, %hi = %cRefined) -> (i64, i64) : i64 {
      %open = arith.cmpi ult, %lo, %hi : i64
      %s = arith.addi %lo, %hi : i64
      %mid = arith.divui %s, %c2 : i64
      %midx = arith.select %open, %mid, %c0 : i64
      %av = func.call @refcand_at(%base, %midx) : (i64, i64) -> i32
      %less = arith.cmpi slt, %av, %x : i32
      %go_r = arith.andi %open, %less : i1
      %nless = arith.xori %less, %true : i1
      %go_l = arith.andi %open, %nless : i1
      %mid1 = arith.addi %mid, %c1 : i64
      %lo2 = arith.select %go_r, %mid1, %lo : i64
      %hi2 = arith.select %go_l, %mid, %hi : i64
      scf.yield %lo2, %hi2 : i64, i64
    }
    return %lb#0 : i64
  }

  // E[r] of the level whose E prefix starts at epre[ebase], as i64.
  func.func private @e_at(%ebase: i64, %r: i64) -> i64 {
    %epre = llvm.mlir.addressof @epre : !llvm.ptr<3>
    %i = arith.addi %ebase, %r : i64
    %p = llvm.getelementptr %epre[%i] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
    %e32 = llvm.load %p : !llvm.ptr<3> -> i32
    %e = arith.extsi %e32 : i32 to i64
    return %e : i64
  }

  // @refined_below for two list indices x and y.
  func.func private @refined_below2(%cbase: i64, %x: i64, %y: i64) -> (i64, i64) {
    %x32 = arith.trunci %x : i64 to i32
    %y32 = arith.trunci %y : i64 to i32
    %lbx = func.call @refined_below(%cbase, %x32) : (i64, i32) -> i64
    %lby = func.call @refined_below(%cbase, %y32) : (i64, i32) -> i64
    return %lbx, %lby : i64, i64
  }

  // The exclusive prefix sum of one value per thread over the block, in thread order, and the
  // block's total: an inclusive scan inside each warp by shuffles, then the warps' totals through
  // @wsum. Integer sums, so the result is the serial loop's. Every thread of the block calls it
  // (it holds two barriers: the second lets the next call reuse @wsum).
  func.func private @block_scan(%v: i32, %tid: i64) -> (i32, i32) {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %c5 = arith.constant 5 : i64
    %c31 = arith.constant 31 : i64
    %c32 = arith.constant 32 : i64
    %cWarps = arith.constant {{THREADS / 32}} : i64
    %i0 = arith.constant 0 : i32
    %i1 = arith.constant 1 : i32
    %i32 = arith.constant 32 : i32
    %wsum = llvm.mlir.addressof @wsum : !llvm.ptr<3>
    %lane = arith.remui %tid, %c32 : i64
    %lane32 = arith.trunci %lane : i64 to i32
    %warp = arith.divui %tid, %c32 : i64
    %sc:2 = scf.for %st = %c0 to %c5 step %c1 iter_args(%x = %v, %off = %i1) -> (i32, i32) : i64 {
      %o, %valid = gpu.shuffle up %x, %off, %i32 : i32
      %has = arith.cmpi uge, %lane32, %off : i32
      %sum = arith.addi %x, %o : i32
      %x2 = arith.select %has, %sum, %x : i32
      %off2 = arith.shli %off, %i1 : i32
      scf.yield %x2, %off2 : i32, i32
    }
    %is_last = arith.cmpi eq, %lane, %c31 : i64
    scf.if %is_last {
      %wp = llvm.getelementptr %wsum[%warp] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
      llvm.store %sc#0, %wp : i32, !llvm.ptr<3>
    }
    gpu.barrier
    %acc:2 = scf.for %w = %c0 to %cWarps step %c1 iter_args(%before = %i0, %tot = %i0) -> (i32, i32) : i64 {
      %wp = llvm.getelementptr %wsum[%w] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
      %ws = llvm.load %wp : !llvm.ptr<3> -> i32
      %lower = arith.cmpi ult, %w, %warp : i64
      %add = arith.select %lower, %ws, %i0 : i32
      %before2 = arith.addi %before, %add : i32
      %tot2 = arith.addi %tot, %ws : i32
      scf.yield %before2, %tot2 : i32, i32
    }
    gpu.barrier
    %incl = arith.addi %acc#0, %sc#0 : i32
    %excl = arith.subi %incl, %v : i32
    return %excl, %acc#1 : i32, i32
  }

  // The first entry at which a running count reaches `need`, over the block: with one count per
  // thread, in thread order, whether this thread's entry is that first one (counts are >= 0, so
  // exactly one thread is, unless the total stays below `need`: `none`), and the count before it.
  func.func private @block_first_reaching(%v: i32, %tid: i64, %need: i32) -> (i1, i32, i1) {
    %c0 = arith.constant 0 : i64
    %excl, %tot = func.call @block_scan(%v, %tid) : (i32, i64) -> (i32, i32)
    %incl = arith.addi %excl, %v : i32
    %reach = arith.cmpi sge, %incl, %need : i32
    %is_t0 = arith.cmpi eq, %tid, %c0 : i64
    %short = arith.cmpi slt, %excl, %need : i32
    %after_short = arith.ori %is_t0, %short : i1
    %first = arith.andi %reach, %after_short : i1
    %none = arith.cmpi slt, %tot, %need : i32
    return %first, %excl, %none : i1, i32, i1
  }

  // ---- the kernels -----------------------------------------------------------------------------

  gpu.func @lh_select_order(%sq: !llvm.ptr<1>, %sk: !llvm.ptr<1>, %indices: !llvm.ptr<1>, %inv: !llvm.ptr<1>,
                            %n: i64, %heads: i64, %kv_heads: i64, %s_total: i64, %s_sel: i64,
                            %tile_len: i64) kernel {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %c2 = arith.constant 2 : i64
    %c4 = arith.constant 4 : i64
    %c256 = arith.constant 256 : i64
    %cRefined = arith.constant {{REFINED}} : i64
    %cRefined1 = arith.constant {{REFINED + 1}} : i64
    %cP = arith.constant {{P}} : i64
    %cL = arith.constant {{L}} : i64
    %cC = arith.constant {{L - 1}} : i64
    %cFine = arith.constant {{REFINED * P}} : i64
    %cThreads = arith.constant {{THREADS}} : i64
    %i0 = arith.constant 0 : i32
    %i1 = arith.constant 1 : i32
    %i8 = arith.constant 8 : i32
    %i24 = arith.constant 24 : i32
    %iSet = arith.constant {{SET}} : i32
    %i255 = arith.constant 255 : i32
    %imax = arith.constant 2147483647 : i32
    %false = arith.constant false
    %true = arith.constant true

    %tid, %t, %h, %b = func.call @grid_ids() : () -> (i64, i64, i64, i64)
    %is_t0 = arith.cmpi eq, %tid, %c0 : i64

    %group = arith.divui %heads, %kv_heads : i64
    %hk = arith.divui %h, %group : i64
    %bh, %q_base = func.call @head_row(%b, %h, %heads, %s_total) : (i64, i64, i64, i64) -> (i64, i64)
    %bk, %k_base = func.call @head_row(%b, %hk, %kv_heads, %s_total) : (i64, i64, i64, i64) -> (i64, i64)
    %ind_base = arith.muli %bh, %s_sel : i64
    %fine_all0 = arith.muli %cC, %cFine : i64
    %per_tile = arith.addi %tile_len, %fine_all0 : i64
    %slot0 = arith.muli %t, %per_tile : i64
    %tile_pos0 = arith.muli %t, %tile_len : i64

    %hist = llvm.mlir.addressof @hist : !llvm.ptr<3>
    %cnt = llvm.mlir.addressof @cnt : !llvm.ptr<3>
    %ctl = llvm.mlir.addressof @ctl : !llvm.ptr<3>
    %refcand = llvm.mlir.addressof @refcand : !llvm.ptr<3>
    %refpos = llvm.mlir.addressof @refpos : !llvm.ptr<3>
    %rsize = llvm.mlir.addressof @rsize : !llvm.ptr<3>
    %rstart = llvm.mlir.addressof @rstart : !llvm.ptr<3>
    %epre = llvm.mlir.addressof @epre : !llvm.ptr<3>
    %fnd = llvm.mlir.addressof @reach_at : !llvm.ptr<3>
    %fnd0 = llvm.getelementptr %fnd[0] : (!llvm.ptr<3>) -> !llvm.ptr<3>, i32
    %fnd1 = llvm.getelementptr %fnd[1] : (!llvm.ptr<3>) -> !llvm.ptr<3>, i32
    %c255 = arith.constant 255 : i64

    // Level 0 has no refined entries: an empty list (all slots past any index) and E = 0.
    scf.for %i = %tid to %cRefined step %cThreads : i64 {
      %p = llvm.getelementptr %refcand[%i] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
      llvm.store %imax, %p : i32, !llvm.ptr<3>
    }
    scf.for %i = %tid to %cRefined1 step %cThreads : i64 {
      %p = llvm.getelementptr %epre[%i] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
      llvm.store %i0, %p : i32, !llvm.ptr<3>
    }
    gpu.barrier

    // ---- 1. the cascade, coarsest level first ----------------------------------------------
    scf.for %li = %c0 to %cC step %c1 : i64 {
      %l, %is_c, %m, %off_l, %par_base = func.call @level_list(%li, %n, %tile_len) : (i64, i64, i64) -> (i64, i1, i64, i64, i64)
      %qlev = arith.addi %q_base, %off_l : i64
      %klev = arith.addi %k_base, %off_l : i64
      // contiguous range of list entries per thread (for counts that must respect list order)
      %mr0 = arith.addi %m, %cThreads : i64
      %mr1 = arith.subi %mr0, %c1 : i64
      %range = arith.divui %mr1, %cThreads : i64
      %j_lo0 = arith.muli %tid, %range : i64
      %j_lo = arith.minui %j_lo0, %m : i64
      %j_hi0 = arith.addi %j_lo0, %range : i64
      %j_hi = arith.minui %j_hi0, %m : i64

      scf.for %sel = %c0 to %c2 step %c1 : i64 {
        %is_b = arith.cmpi eq, %sel, %c1 : i64
        %ap0 = llvm.getelementptr %ctl[0] : (!llvm.ptr<3>) -> !llvm.ptr<3>, i32
        %ap1 = llvm.getelementptr %ctl[1] : (!llvm.ptr<3>) -> !llvm.ptr<3>, i32
        %thr_a = llvm.load %ap0 : !llvm.ptr<3> -> i32
        %cut_a32 = llvm.load %ap1 : !llvm.ptr<3> -> i32
        %cut_a = arith.extsi %cut_a32 : i32 to i64

        // radix select of the SET-th best key among the eligible candidates
        %rs:3 = scf.for %d = %c0 to %c4 step %c1 iter_args(%prefix = %i0, %mask = %i0, %rem = %iSet) -> (i32, i32, i32) : i64 {
          %d32 = arith.trunci %d : i64 to i32
          %d8 = arith.muli %d32, %i8 : i32
          %shift = arith.subi %i24, %d8 : i32
          scf.for %i = %tid to %c256 step %cThreads : i64 {
            %p = llvm.getelementptr %hist[%i] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
            llvm.store %i0, %p : i32, !llvm.ptr<3>
          }
          gpu.barrier
          scf.for %j = %tid to %m step %cThreads : i64 {
            // position of list entry j inside level l
            %key, %elig = func.call @candidate(%j, %is_c, %tile_pos0, %par_base, %sq, %qlev, %sk, %klev, %thr_a, %cut_a, %is_b)
              : (i64, i1, i64, i64, !llvm.ptr<1>, i64, !llvm.ptr<1>, i64, i32, i64, i1) -> (i32, i1)
            %masked = arith.andi %key, %mask : i32
            %pm = arith.cmpi eq, %masked, %prefix : i32
            %hit = arith.andi %pm, %elig : i1
            scf.if %hit {
              %dg0 = arith.shrui %key, %shift : i32
              %dg = arith.andi %dg0, %i255 : i32
              %dg64 = arith.extui %dg : i32 to i64
              %hp = llvm.getelementptr %hist[%dg64] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
              %old = llvm.atomicrmw add %hp, %i1 monotonic : !llvm.ptr<3>, i32
            }
          }
          gpu.barrier
          // the first digit from the top at which the count reaches rem, and the count above
          // it: thread t holds digit 255 - t (none found: digit 0, 0 above, as the serial walk)
          %has_digit = arith.cmpi ult, %tid, %c256 : i64
          %digit = arith.subi %c255, %tid : i64
          %hc = scf.if %has_digit -> (i32) {
            %hp = llvm.getelementptr %hist[%digit] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
            %hv = llvm.load %hp : !llvm.ptr<3> -> i32
            scf.yield %hv : i32
          } else {
            scf.yield %i0 : i32
          }
          %first, %above, %none = func.call @block_first_reaching(%hc, %tid, %rem) : (i32, i64, i32) -> (i1, i32, i1)
          %t0_none = arith.andi %none, %is_t0 : i1
          scf.if %first {
            %digit32 = arith.trunci %digit : i64 to i32
            llvm.store %digit32, %fnd0 : i32, !llvm.ptr<3>
            llvm.store %above, %fnd1 : i32, !llvm.ptr<3>
          }
          scf.if %t0_none {
            llvm.store %i0, %fnd0 : i32, !llvm.ptr<3>
            llvm.store %i0, %fnd1 : i32, !llvm.ptr<3>
          }
          gpu.barrier
          %gsel = llvm.load %fnd0 : !llvm.ptr<3> -> i32
          %above_sel = llvm.load %fnd1 : !llvm.ptr<3> -> i32
          %gsh = arith.shli %gsel, %shift : i32
          %prefix2 = arith.ori %prefix, %gsh : i32
          %msh = arith.shli %i255, %shift : i32
          %mask2 = arith.ori %mask, %msh : i32
          %rem2 = arith.subi %rem, %above_sel : i32
          scf.yield %prefix2, %mask2, %rem2 : i32, i32, i32
        }
        %thr = arith.addi %rs#0, %i0 : i32
        %need = arith.addi %rs#2, %i0 : i32

        // how many eligible candidates equal the threshold, per thread over its own range
        %ties = scf.for %j = %j_lo to %j_hi step %c1 iter_args(%cc = %i0) -> (i32) : i64 {
          %key, %elig = func.call @candidate(%j, %is_c, %tile_pos0, %par_base, %sq, %qlev, %sk, %klev, %thr_a, %cut_a, %is_b)
            : (i64, i1, i64, i64, !llvm.ptr<1>, i64, !llvm.ptr<1>, i64, i32, i64, i1) -> (i32, i1)
          %cc2, %hit = func.call @count_tie(%key, %elig, %thr, %cc) : (i32, i1, i32, i32) -> (i32, i1)
          scf.yield %cc2 : i32
        }
        // the thread whose range holds the need-th tie in list order closes the set (none:
        // thread 0 walks its range for the need-th, as the serial search did)
        %owner, %ties_before, %no_owner = func.call @block_first_reaching(%ties, %tid, %need) : (i32, i64, i32) -> (i1, i32, i1)
        %t0_closes = arith.andi %no_owner, %is_t0 : i1
        %closes = arith.ori %owner, %t0_closes : i1
        scf.if %closes {
          %target = arith.subi %need, %ties_before : i32
          %walk:2 = scf.for %j = %j_lo to %j_hi step %c1 iter_args(%cc = %i0, %cut = %c0) -> (i32, i64) : i64 {
            %key, %elig = func.call @candidate(%j, %is_c, %tile_pos0, %par_base, %sq, %qlev, %sk, %klev, %thr_a, %cut_a, %is_b)
              : (i64, i1, i64, i64, !llvm.ptr<1>, i64, !llvm.ptr<1>, i64, i32, i64, i1) -> (i32, i1)
            %cc2, %hit = func.call @count_tie(%key, %elig, %thr, %cc) : (i32, i1, i32, i32) -> (i32, i1)
            %is_target = arith.cmpi eq, %cc2, %target : i32
            %now = arith.andi %hit, %is_target : i1
            %cut2 = arith.select %now, %j, %cut : i64
            scf.yield %cc2, %cut2 : i32, i64
          }
          %s2 = arith.muli %sel, %c2 : i64
          %s2p1 = arith.addi %s2, %c1 : i64
          %tp = llvm.getelementptr %ctl[%s2] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
          %cp = llvm.getelementptr %ctl[%s2p1] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
          %cut32 = arith.trunci %walk#1 : i64 to i32
          llvm.store %thr, %tp : i32, !llvm.ptr<3>
          llvm.store %cut32, %cp : i32, !llvm.ptr<3>
        }
        gpu.barrier
      }

      // compaction of the refined entries (A + B) in list order
      %cq0 = llvm.getelementptr %ctl[0] : (!llvm.ptr<3>) -> !llvm.ptr<3>, i32
      %cq1 = llvm.getelementptr %ctl[1] : (!llvm.ptr<3>) -> !llvm.ptr<3>, i32
      %cq2 = llvm.getelementptr %ctl[2] : (!llvm.ptr<3>) -> !llvm.ptr<3>, i32
      %cq3 = llvm.getelementptr %ctl[3] : (!llvm.ptr<3>) -> !llvm.ptr<3>, i32
      %thr_a = llvm.load %cq0 : !llvm.ptr<3> -> i32
      %cut_a32 = llvm.load %cq1 : !llvm.ptr<3> -> i32
      %thr_b = llvm.load %cq2 : !llvm.ptr<3> -> i32
      %cut_b32 = llvm.load %cq3 : !llvm.ptr<3> -> i32
      %cut_a = arith.extsi %cut_a32 : i32 to i64
      %cut_b = arith.extsi %cut_b32 : i32 to i64
      %lbase = arith.muli %l, %cRefined : i64
      // two passes over the thread's range: count, then (after the scan) write
      scf.for %pass = %c0 to %c2 step %c1 : i64 {
        %writing = arith.cmpi eq, %pass, %c1 : i64
        %start = scf.if %writing -> (i32) {
          %op = llvm.getelementptr %cnt[%tid] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
          %ov = llvm.load %op : !llvm.ptr<3> -> i32
          scf.yield %ov : i32
        } else {
          scf.yield %i0 : i32
        }
        %found = scf.for %j = %j_lo to %j_hi step %c1 iter_args(%cc = %start) -> (i32) : i64 {
          %pos = func.call @list_pos(%j, %is_c, %tile_pos0, %par_base) : (i64, i1, i64, i64) -> i64
          %kq = func.call @score_key(%sq, %qlev, %pos) : (!llvm.ptr<1>, i64, i64) -> i32
          %kk = func.call @score_key(%sk, %klev, %pos) : (!llvm.ptr<1>, i64, i64) -> i32
          %in_a = func.call @in_set(%kq, %thr_a, %j, %cut_a) : (i32, i32, i64, i64) -> i1
          %in_b = func.call @in_set(%kk, %thr_b, %j, %cut_b) : (i32, i32, i64, i64) -> i1
          %refd = arith.ori %in_a, %in_b : i1
          %store = arith.andi %refd, %writing : i1
          scf.if %store {
            %cc64 = arith.extsi %cc : i32 to i64
            %ri = arith.addi %lbase, %cc64 : i64
            %rcp = llvm.getelementptr %refcand[%ri] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
            %rpp = llvm.getelementptr %refpos[%ri] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
            %j32 = arith.trunci %j : i64 to i32
            %pos32 = arith.trunci %pos : i64 to i32
            llvm.store %j32, %rcp : i32, !llvm.ptr<3>
            llvm.store %pos32, %rpp : i32, !llvm.ptr<3>
          }
          %inc = arith.extui %refd : i1 to i32
          %cc2 = arith.addi %cc, %inc : i32
          scf.yield %cc2 : i32
        }
        // counting: where this thread's refined entries start, the exclusive scan of the counts
        // (%writing is the same in every thread, so every thread reaches the scan's barriers)
        %counting = arith.xori %writing, %true : i1
        scf.if %counting {
          %start_at, %total = func.call @block_scan(%found, %tid) : (i32, i64) -> (i32, i32)
          %op = llvm.getelementptr %cnt[%tid] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
          llvm.store %start_at, %op : i32, !llvm.ptr<3>
        }
        gpu.barrier
      }
    }

    // ---- 2. subtree sizes, finest refined level first ---------------------------------------
    scf.for %l = %c1 to %cL step %c1 : i64 {
      %lm1 = arith.subi %l, %c1 : i64
      %cbase = arith.muli %lm1, %cRefined : i64
      %ebase = arith.muli %lm1, %cRefined1 : i64
      %lbase = arith.muli %l, %cRefined : i64
      scf.for %k = %tid to %cRefined step %cThreads : i64 {
        %kp = arith.muli %k, %cP : i64
        %k1p = arith.addi %kp, %cP : i64
        // lower bounds of the children's range in the refined list of level l - 1
        %lb0, %lb1 = func.call @refined_below2(%cbase, %kp, %k1p) : (i64, i64, i64) -> (i64, i64)
        %e0i = arith.addi %ebase, %lb0 : i64
        %e1i = arith.addi %ebase, %lb1 : i64
        %e0p = llvm.getelementptr %epre[%e0i] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
        %e1p = llvm.getelementptr %epre[%e1i] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
        %e0 = llvm.load %e0p : !llvm.ptr<3> -> i32
        %e1 = llvm.load %e1p : !llvm.ptr<3> -> i32
        %de = arith.subi %e1, %e0 : i32
        %p32 = arith.trunci %cP : i64 to i32
        %s1 = arith.addi %p32, %i1 : i32
        %sz = arith.addi %s1, %de : i32
        %ri = arith.addi %lbase, %k : i64
        %rp = llvm.getelementptr %rsize[%ri] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
        llvm.store %sz, %rp : i32, !llvm.ptr<3>
      }
      gpu.barrier
      // E prefix of level l: epre[eb] = 0, epre[eb + r + 1] = sum over r' <= r of (size - 1),
      // thread r holding refined entry r
      %eb = arith.muli %l, %cRefined1 : i64
      %holds_r = arith.cmpi ult, %tid, %cRefined : i64
      %sz1 = scf.if %holds_r -> (i32) {
        %ri = arith.addi %lbase, %tid : i64
        %rp = llvm.getelementptr %rsize[%ri] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
        %sz = llvm.load %rp : !llvm.ptr<3> -> i32
        %szm1 = arith.subi %sz, %i1 : i32
        scf.yield %szm1 : i32
      } else {
        scf.yield %i0 : i32
      }
      %e_before, %e_total = func.call @block_scan(%sz1, %tid) : (i32, i64) -> (i32, i32)
      scf.if %holds_r {
        %e_incl = arith.addi %e_before, %sz1 : i32
        %eb1 = arith.addi %eb, %tid : i64
        %ei = arith.addi %eb1, %c1 : i64
        %ep = llvm.getelementptr %epre[%ei] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
        llvm.store %e_incl, %ep : i32, !llvm.ptr<3>
      }
      scf.if %is_t0 {
        %e0p = llvm.getelementptr %epre[%eb] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
        llvm.store %i0, %e0p : i32, !llvm.ptr<3>
      }
      gpu.barrier
    }

    // ---- 3. slots, coarsest level first ------------------------------------------------------
    // level c = L - 1 is the tile itself; levels below are the children lists (level 0 has no
    // refined entries, so its refined list is empty and every entry is a leaf).
    scf.for %li = %c0 to %cL step %c1 : i64 {
      %l, %is_c, %m, %off_l, %par_base = func.call @level_list(%li, %n, %tile_len) : (i64, i64, i64) -> (i64, i1, i64, i64, i64)
      %cbase = arith.muli %l, %cRefined : i64
      %ebase = arith.muli %l, %cRefined1 : i64
      scf.for %j = %tid to %m step %cThreads : i64 {
        // the parent's subtree start and where the parent's first child starts in this list
        %par = arith.divui %j, %cP : i64
        %first = arith.muli %par, %cP : i64
        %geo:3 = scf.if %is_c -> (i64, i64, i64) {
          %pc = arith.addi %tile_pos0, %j : i64
          scf.yield %pc, %c0, %c0 : i64, i64, i64
        } else {
          %pf, %pi = func.call @child_pos(%j, %par_base) : (i64, i64) -> (i64, i64)
          %sp = llvm.getelementptr %rstart[%pi] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
          %sv32 = llvm.load %sp : !llvm.ptr<3> -> i32
          %sv = arith.extsi %sv32 : i32 to i64
          scf.yield %pf, %sv, %c1 : i64, i64, i64
        }
        %pos = arith.addi %geo#0, %c0 : i64
        %has_parent = arith.cmpi eq, %geo#2, %c1 : i64
        %lbj, %lbf = func.call @refined_below2(%cbase, %j, %first) : (i64, i64, i64) -> (i64, i64)
        %j32 = arith.trunci %j : i64 to i32
        %r = arith.addi %lbj, %c0 : i64
        %ej = func.call @e_at(%ebase, %r) : (i64, i64) -> i64
        %ef = func.call @e_at(%ebase, %lbf) : (i64, i64) -> i64
        %ls_j = arith.addi %j, %ej : i64
        %ls_f = arith.addi %first, %ef : i64
        %rel = arith.subi %ls_j, %ls_f : i64
        %with_parent = arith.addi %geo#1, %rel : i64
        %start = arith.select %has_parent, %with_parent, %ls_j : i64
        // refined here? (r < REFINED and refcand[r] == j)
        %rin = arith.cmpi ult, %r, %cRefined : i64
        %rsafe = arith.select %rin, %r, %c0 : i64
        %rcv = func.call @refcand_at(%cbase, %rsafe) : (i64, i64) -> i32
        %rci = arith.addi %cbase, %rsafe : i64
        %same = arith.cmpi eq, %rcv, %j32 : i32
        %isref = arith.andi %rin, %same : i1
        %slot = scf.if %isref -> (i64) {
          %szp = llvm.getelementptr %rsize[%rci] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
          %sz32 = llvm.load %szp : !llvm.ptr<3> -> i32
          %sz = arith.extsi %sz32 : i32 to i64
          %st32 = arith.trunci %start : i64 to i32
          %stp = llvm.getelementptr %rstart[%rci] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i32
          llvm.store %st32, %stp : i32, !llvm.ptr<3>
          %e = arith.addi %start, %sz : i64
          %e1 = arith.subi %e, %c1 : i64
          scf.yield %e1 : i64
        } else {
          scf.yield %start : i64
        }
        %gpos = arith.addi %off_l, %pos : i64
        %gslot = arith.addi %slot0, %slot : i64
        %ii = arith.addi %ind_base, %gslot : i64
        %ip = llvm.getelementptr %indices[%ii] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, i32
        %gpos32 = arith.trunci %gpos : i64 to i32
        llvm.store %gpos32, %ip : i32, !llvm.ptr<1>
        %vi = arith.addi %q_base, %gpos : i64
        %vp = llvm.getelementptr %inv[%vi] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, i32
        %gslot32 = arith.trunci %gslot : i64 to i32
        llvm.store %gslot32, %vp : i32, !llvm.ptr<1>
      }
      gpu.barrier
    }
    gpu.return
  }

  // inv [B, H, S_total] from indices [B, H, S_sel] (inv cleared to -1 by the caller): used where
  // only the index list is at hand (backward reads it from `saved`; the scatter stage).
  // Arguments: indices, inv : !llvm.ptr<1>; heads, s_total, s_sel : i64.
  // Launch: grid (ceil(S_sel / THREADS), H, B), block (THREADS).
  gpu.func @lh_invert_indices(%indices: !llvm.ptr<1>, %inv: !llvm.ptr<1>, %heads: i64,
                              %s_total: i64, %s_sel: i64) kernel {
    %cThreads = arith.constant {{THREADS}} : i64
    %tid, %bx, %h, %b = func.call @grid_ids() : () -> (i64, i64, i64, i64)
    %s0 = arith.muli %bx, %cThreads : i64
    %s = arith.addi %s0, %tid : i64
    %in = arith.cmpi ult, %s, %s_sel : i64
    scf.if %in {
      %bh, %ib = func.call @head_row(%b, %h, %heads, %s_sel) : (i64, i64, i64, i64) -> (i64, i64)
      %ii = arith.addi %ib, %s : i64
      %ip = llvm.getelementptr %indices[%ii] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, i32
      %pos32 = llvm.load %ip : !llvm.ptr<1> -> i32
      %pos = arith.extsi %pos32 : i32 to i64
      // a position outside the pyramid (caller-supplied indices) is skipped, never written
      %valid = arith.cmpi ult, %pos, %s_total : i64
      scf.if %valid {
        %vb = arith.muli %bh, %s_total : i64
        %vi = arith.addi %vb, %pos : i64
        %vp = llvm.getelementptr %inv[%vi] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, i32
        %s32 = arith.trunci %s : i64 to i32
        llvm.store %s32, %vp : i32, !llvm.ptr<1>
      }
    }
    gpu.return
  }
}
}
