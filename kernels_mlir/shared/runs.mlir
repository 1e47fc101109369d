// ---- shared piece runs (kernels_mlir/shared/runs.mlir) --------------------------------------
  // What scatter and pool_grad share. A group of D/8 lanes takes a run of RUN consecutive tokens
  // and keeps the run's slots and rows in registers as vectors indexed by k = j * L + l (run
  // position j, level l): slots vector<RUN * L x i32>, rows as 4 words each in
  // vector<RUN * L * 4 x i32>. Constants: DTYPE, D, P, L, RUN, THREADS. Brings the pieces grid
  // and lanes, which every run kernel uses.
  {{include grid}}
  {{include lanes}}

  // The first token of the run that lane group grp takes in round r (a block covers tok0 ..),
  // and whether it is before N.
  func.func private @run_start(%r: i64, %grp: i64, %tok0: i64, %n: i64) -> (i64, i1) {
    %cGroups = arith.constant {{THREADS / (D / 8)}} : i64
    %cRun = arith.constant {{RUN}} : i64
    %rg = arith.muli %r, %cGroups : i64
    %run = arith.addi %rg, %grp : i64
    %run_t = arith.muli %run, %cRun : i64
    %t0 = arith.addi %tok0, %run_t : i64
    %live = arith.cmpi ult, %t0, %n : i64
    return %t0, %live : i64, i1
  }

  // off_l = n_0 + ... + n_(l-1), n_l = N / P^l, for every level l: where level l starts in a row
  // of inv.
  func.func private @level_offsets(%n: i64) -> vector<{{L}}xi64> {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %cP = arith.constant {{P}} : i64
    %cL = arith.constant {{L}} : i64
    %offs0 = arith.constant dense<0> : vector<{{L}}xi64>
    %offs:3 = scf.for %l = %c0 to %cL step %c1
        iter_args(%f = %c1, %off = %c0, %ov = %offs0) -> (i64, i64, vector<{{L}}xi64>) : i64 {
      %li = arith.index_cast %l : i64 to index
      %ov2 = vector.insert %off, %ov[%li] : i64 into vector<{{L}}xi64>
      %n_l = arith.divui %n, %f : i64
      %off2 = arith.addi %off, %n_l : i64
      %f2 = arith.muli %f, %cP : i64
      scf.yield %f2, %off2, %ov2 : i64, i64, vector<{{L}}xi64>
    } {loop_annotation = #llvm.loop_annotation<unroll = #llvm.loop_unroll<full = true>>}
    return %offs#2 : vector<{{L}}xi64>
  }

  // `words` with row k replaced by the 16 bytes at `row`: a predicated inline-PTX load that
  // reads nothing where slot < 0 (the row is then 0), so no branch lets LLVM sink it, and a side
  // effect, so that it stays ahead of the sums that use it.
  func.func private @load_row(%row: !llvm.ptr<1>, %slot32: i32, %k: i64,
                              %words: vector<{{RUN * L * 4}}xi32>) -> vector<{{RUN * L * 4}}xi32> {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %c4 = arith.constant 4 : i64
    %ra = llvm.ptrtoint %row : !llvm.ptr<1> to i64
    %ld = llvm.inline_asm has_side_effects "{ .reg .pred lhsel; setp.ge.s32 lhsel, $5, 0; @lhsel ld.global.v4.b32 {$0, $1, $2, $3}, [$4]; @!lhsel mov.b32 $0, 0; @!lhsel mov.b32 $1, 0; @!lhsel mov.b32 $2, 0; @!lhsel mov.b32 $3, 0; }", "=r,=r,=r,=r,l,r" %ra, %slot32 : (i64, i32) -> !llvm.struct<(i32, i32, i32, i32)>
    %x0 = llvm.extractvalue %ld[0] : !llvm.struct<(i32, i32, i32, i32)>
    %x1 = llvm.extractvalue %ld[1] : !llvm.struct<(i32, i32, i32, i32)>
    %x2 = llvm.extractvalue %ld[2] : !llvm.struct<(i32, i32, i32, i32)>
    %x3 = llvm.extractvalue %ld[3] : !llvm.struct<(i32, i32, i32, i32)>
    %lw = vector.from_elements %x0, %x1, %x2, %x3 : vector<4xi32>
    %k4 = arith.muli %k, %c4 : i64
    %out = scf.for %w = %c0 to %c4 step %c1
        iter_args(%wa = %words) -> (vector<{{RUN * L * 4}}xi32>) : i64 {
      %wi = arith.index_cast %w : i64 to index
      %x = vector.extract %lw[%wi] : i32 from vector<4xi32>
      %kw = arith.addi %k4, %w : i64
      %kwi = arith.index_cast %kw : i64 to index
      %wa2 = vector.insert %x, %wa[%kwi] : i32 into vector<{{RUN * L * 4}}xi32>
      scf.yield %wa2 : vector<{{RUN * L * 4}}xi32>
    } {loop_annotation = #llvm.loop_annotation<unroll = #llvm.loop_unroll<full = true>>}
    return %out : vector<{{RUN * L * 4}}xi32>
  }

  // Slot k of a run, and whether an entry was selected there (the slot is >= 0).
  func.func private @slot_of(%slots: vector<{{RUN * L}}xi32>, %k: i64) -> (i32, i1) {
    %c0_i32 = arith.constant 0 : i32
    %ki = arith.index_cast %k : i64 to index
    %slot32 = vector.extract %slots[%ki] : i32 from vector<{{RUN * L}}xi32>
    %selected = arith.cmpi sge, %slot32, %c0_i32 : i32
    return %slot32, %selected : i32, i1
  }

  // Row k of `words` as 8 DTYPE values.
  func.func private @row_at(%words: vector<{{RUN * L * 4}}xi32>, %k: i64) -> vector<8x{{DTYPE}}> {
    %c1 = arith.constant 1 : i64
    %c2 = arith.constant 2 : i64
    %c4 = arith.constant 4 : i64
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
    %v = vector.bitcast %wv : vector<4xi32> to vector<8x{{DTYPE}}>
    return %v : vector<8x{{DTYPE}}>
  }

  // Pass A of a run: for every run position j and level l where @loads_at(j, f) holds (f = P^l),
  // slot k = j * L + l is @slot_at(inv, inv_base, off_l, t, f) for token t = t0 + j; a token
  // past N reads as token N - 1 (valid memory, result unused). The other slots are -1. The
  // including kernel defines @slot_at(inv, inv_base, off_l, t, f) -> i32.
  func.func private @load_slots(%inv: !llvm.ptr<1>, %inv_base: i64, %offs: vector<{{L}}xi64>, %t0: i64,
                                %n_last: i64) -> vector<{{RUN * L}}xi32> {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %cP = arith.constant {{P}} : i64
    %cL = arith.constant {{L}} : i64
    %cRun = arith.constant {{RUN}} : i64
    %slots0 = arith.constant dense<-1> : vector<{{RUN * L}}xi32>
    %slots = scf.for %j = %c0 to %cRun step %c1
        iter_args(%sa = %slots0) -> (vector<{{RUN * L}}xi32>) : i64 {
      %tj0 = arith.addi %t0, %j : i64
      %tj = arith.minui %tj0, %n_last : i64
      %jl = arith.muli %j, %cL : i64
      %sa_j:2 = scf.for %l = %c0 to %cL step %c1
          iter_args(%f = %c1, %sa1 = %sa) -> (i64, vector<{{RUN * L}}xi32>) : i64 {
        %loads = func.call @loads_at(%j, %f) : (i64, i64) -> i1
        %sa2 = scf.if %loads -> (vector<{{RUN * L}}xi32>) {
          %li = arith.index_cast %l : i64 to index
          %off_l = vector.extract %offs[%li] : i64 from vector<{{L}}xi64>
          %slot32 = func.call @slot_at(%inv, %inv_base, %off_l, %tj, %f)
              : (!llvm.ptr<1>, i64, i64, i64, i64) -> i32
          %k = arith.addi %jl, %l : i64
          %ki = arith.index_cast %k : i64 to index
          %sa3 = vector.insert %slot32, %sa1[%ki] : i32 into vector<{{RUN * L}}xi32>
          scf.yield %sa3 : vector<{{RUN * L}}xi32>
        } else {
          scf.yield %sa1 : vector<{{RUN * L}}xi32>
        }
        %f2 = arith.muli %f, %cP : i64
        scf.yield %f2, %sa2 : i64, vector<{{RUN * L}}xi32>
      } {loop_annotation = #llvm.loop_annotation<unroll = #llvm.loop_unroll<full = true>>}
      scf.yield %sa_j#1 : vector<{{RUN * L}}xi32>
    } {loop_annotation = #llvm.loop_annotation<unroll = #llvm.loop_unroll<full = true>>}
    return %slots : vector<{{RUN * L}}xi32>
  }

  // Pass B of a run: for every run position j and level l where @loads_at(j, P^l) holds, the
  // row of slot k = j * L + l of `slots`, @row_offset(slot, a, b) elements into src, as words
  // 4k .. 4k + 3 (zeros where the slot is < 0, and where nothing loads). The including kernel
  // defines @loads_at(j, f) -> i1 and @row_offset(slot, a, b) -> i64.
  func.func private @load_rows(%slots: vector<{{RUN * L}}xi32>, %src: !llvm.ptr<1>, %a: i64, %b: i64)
      -> vector<{{RUN * L * 4}}xi32> {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %cP = arith.constant {{P}} : i64
    %cL = arith.constant {{L}} : i64
    %cRun = arith.constant {{RUN}} : i64
    %words0 = arith.constant dense<0> : vector<{{RUN * L * 4}}xi32>
    %words = scf.for %j = %c0 to %cRun step %c1
        iter_args(%wa = %words0) -> (vector<{{RUN * L * 4}}xi32>) : i64 {
      %jl = arith.muli %j, %cL : i64
      %wa_j:2 = scf.for %l = %c0 to %cL step %c1
          iter_args(%f = %c1, %wa1 = %wa) -> (i64, vector<{{RUN * L * 4}}xi32>) : i64 {
        %loads = func.call @loads_at(%j, %f) : (i64, i64) -> i1
        %wa2 = scf.if %loads -> (vector<{{RUN * L * 4}}xi32>) {
          %k = arith.addi %jl, %l : i64
          %ki = arith.index_cast %k : i64 to index
          %slot32 = vector.extract %slots[%ki] : i32 from vector<{{RUN * L}}xi32>
          %slot = arith.extsi %slot32 : i32 to i64
          %elem = func.call @row_offset(%slot, %a, %b) : (i64, i64, i64) -> i64
          %rp = llvm.getelementptr %src[%elem] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
          %wa3 = func.call @load_row(%rp, %slot32, %k, %wa1)
              : (!llvm.ptr<1>, i32, i64, vector<{{RUN * L * 4}}xi32>) -> vector<{{RUN * L * 4}}xi32>
          scf.yield %wa3 : vector<{{RUN * L * 4}}xi32>
        } else {
          scf.yield %wa1 : vector<{{RUN * L * 4}}xi32>
        }
        %f2 = arith.muli %f, %cP : i64
        scf.yield %f2, %wa2 : i64, vector<{{RUN * L * 4}}xi32>
      } {loop_annotation = #llvm.loop_annotation<unroll = #llvm.loop_unroll<full = true>>}
      scf.yield %wa_j#1 : vector<{{RUN * L * 4}}xi32>
    } {loop_annotation = #llvm.loop_annotation<unroll = #llvm.loop_unroll<full = true>>}
    return %words : vector<{{RUN * L * 4}}xi32>
  }
