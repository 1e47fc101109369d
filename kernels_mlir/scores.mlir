// scores.mlir - SPEC section 1: per-token L2 norms of q and k (fp32), max-pooled per level,
// and (optionally) the coarsest level's pooled q and k rows.
//
// Writes scores_q [B, H, S_total] and scores_k [B, Hkv, S_total] (fp32, contiguous), positions
// level-major: level l entry i at off_l + i, off_l = n_0 + ... + n_(l-1), n_l = N / P^l.
// When write_pooled != 0 it also writes pooled_q [B, H, N / F, D] and pooled_k [B, Hkv, N / F, D]
// (DTYPE, contiguous; F = P^(L-1)): row i is the mean of tokens [i F, (i + 1) F), computed exactly
// as lh_gather (gather.mlir) computes a level L-1 entry: summed in fp32 token by token in order
// from +0.0, times 1/F (exact: F is a power of two), rounded once. The rows are therefore bit for
// bit what lh_gather would build; every entry of level L-1 is in the sub-sequence, so the
// forward's gather copies them (use_pooled) instead of reading all of q and k a second time.
// With write_pooled == 0 (the stage entry point lh_scores, which has no scratch for them)
// pooled_q and pooled_k are never touched and may be NULL.
//
// Constants: DTYPE (bf16 | f16), D (head dim: 8 * 2^k, at most 256), P (pooling), L (levels),
//   THREADS (block size, a multiple of D/8), SLICE (tokens normed per step: a power of two >= P
//   and a multiple of THREADS/(D/8)), CHUNK (tokens per block: max(SLICE, P^(L-1))),
//   KPASS (passes staged per barrier for the pooled rows: 1, or a power of two <= F that divides
//   SLICE / TPP where a window fits in one pass, F <= TPP).
// Arguments (strides in elements, so q/k may be [B,N,H,D] or [B,H,N,D]):
//   q, k, scores_q, scores_k, pooled_q, pooled_k : !llvm.ptr<1>
//   n (N), heads (H), kv_heads (Hkv), s_total, write_pooled (0 or 1) : i64
//   q_stride_b, q_stride_t, q_stride_h, k_stride_b, k_stride_t, k_stride_h : i64
// Launch: grid (ceil(N / CHUNK), H + Hkv, B), block (THREADS); blockIdx.y < H is a q head, the
//   rest are k heads. q and k rows must be 16-byte aligned (D * 2 bytes is, for D >= 8).
//
// How: D/8 threads read one token row with 16-byte loads (a whole row per group, rows of a
// warp next to each other for [B,H,N,D]), square and sum in fp32, and combine through
// shuffles. The block keeps a slice's squared norms in shared memory; each level is the max of
// P entries of the level below (sqrt is monotonic, so max of norms = sqrt of max of squares,
// bit for bit). Levels wider than a slice keep a running max per level across the block's
// slices; CHUNK is a multiple of every level's width, so no window crosses blocks and no
// atomics are needed.
//
// Pooled rows (write_pooled): the token -> thread mapping above spreads a window's consecutive
// tokens over different thread groups (token it * TPP + tok of a pass goes to group tok,
// TPP = THREADS / (D/8)), and a window may be wider than a pass or a slice. Summing in token
// order needs one thread to see every token of a window (per 8 columns): each pass, every thread
// also stores its 16-byte row piece (raw DTYPE) to a pass-sized stage in shared memory
// (THREADS * 16 bytes, double-buffered so that one barrier per pass orders both the stores
// before the reads and the reads before the next overwrite), and after the barrier the lane
// groups `tok` < W add the R rows [tok R, (tok + 1) R) of their window to an fp32 accumulator
// they carry in registers across passes and slices (R = min(F, TPP) rows of one window a pass,
// W = TPP / R windows a pass). When a window's last token is in, the group scales, rounds and
// stores the row. Re-mapping tokens so that one group reads a window straight from global
// memory would change the norms' coalescing and still not cover windows wider than a group's
// share of a slice. With KPASS > 1 the stage holds 2 KPASS passes and the barrier comes after
// every KPASS-th pass; then chain group tok < KPASS W takes part tok % W of pass tok / W of the
// block just staged, so KPASS windows are summed at once and the other warps wait at half (a
// quarter) as many barriers: the barrier per pass, where the whole block waited for one group's
// F dependent adds, was what held the pass at 71-76% of the copy rate on an H200 (the same pass
// without pooled rows reaches 97%). Same rows, same order, same additions: bit-identical. The
// stage is 2 * KPASS * THREADS * 16 bytes of static shared memory (16 KB at THREADS = 256,
// KPASS = 2, allocated either way); the barriers are paid only when write_pooled != 0.
// Launch bounds: THREADS-thread blocks, 2048 / THREADS of them per SM (32 registers at 256):
// without the bound the stage's extra addressing takes 39 registers and two blocks per SM less.
module attributes {gpu.container_module} {
gpu.module @pyramid_scores [{{TARGET}}] {
  {{include grid}}
  {{include lanes}}

  llvm.mlir.global internal @slice_buf() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<{{2 * SLICE}} x f32>
  llvm.mlir.global internal @coarse_acc() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<{{L}} x f32>
  llvm.mlir.global internal @pool_stage() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<{{2 * KPASS * THREADS * 8}} x {{DTYPE}}>

  // The largest of the `count` squared norms at slice_buf[base ..] (from +0: they are >= 0).
  func.func private @slice_max(%base: i64, %count: i64) -> f32 {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %zero = arith.constant 0.0 : f32
    %buf = llvm.mlir.addressof @slice_buf : !llvm.ptr<3>
    %m = scf.for %j = %c0 to %count step %c1 iter_args(%mx = %zero) -> (f32) : i64 {
      %ij = arith.addi %base, %j : i64
      %pp = llvm.getelementptr %buf[%ij] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, f32
      %x = llvm.load %pp : !llvm.ptr<3> -> f32
      %mm = arith.maximumf %mx, %x : f32
      scf.yield %mm : f32
    }
    return %m : f32
  }

  // A norm into the scores: sqrt(sq) (correctly rounded, like the CPU's) at dst[base + i].
  func.func private @store_norm(%sq: f32, %dst: !llvm.ptr<1>, %base: i64, %i: i64) {
    %nx = llvm.inline_asm "sqrt.rn.f32 $0, $1;", "=f,f" %sq : (f32) -> f32
    %o = arith.addi %base, %i : i64
    %op = llvm.getelementptr %dst[%o] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, f32
    llvm.store %nx, %op : f32, !llvm.ptr<1>
    return
  }

  gpu.func @lh_pyramid_scores(%q: !llvm.ptr<1>, %k: !llvm.ptr<1>, %sq: !llvm.ptr<1>, %sk: !llvm.ptr<1>,
                              %pq: !llvm.ptr<1>, %pk: !llvm.ptr<1>,
                              %n: i64, %heads: i64, %kv_heads: i64, %s_total: i64,
                              %write_pooled: i64,
                              %q_sb: i64, %q_st: i64, %q_sh: i64,
                              %k_sb: i64, %k_st: i64, %k_sh: i64) kernel
      attributes {nvvm.maxntid = array<i32: {{THREADS}}, 1, 1>, nvvm.minctasm = {{2048 / THREADS}} : i32} {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %c8 = arith.constant 8 : i64
    %cP = arith.constant {{P}} : i64
    %cL = arith.constant {{L}} : i64
    %cThreads = arith.constant {{THREADS}} : i64
    %cSlice = arith.constant {{SLICE}} : i64
    %cChunk = arith.constant {{CHUNK}} : i64
    %cTpp = arith.constant {{THREADS / (D / 8)}} : i64
    %cSlices = arith.constant {{CHUNK / SLICE}} : i64
    %cPasses = arith.constant {{SLICE / (THREADS / (D / 8))}} : i64
    %cSteps = arith.constant {{log2(D / 8)}} : i64
    %cHalfLanes = arith.constant {{D / 16}} : i32
    %c1_i32 = arith.constant 1 : i32
    %c32_i32 = arith.constant 32 : i32
    %zero = arith.constant 0.0 : f32
    %one = arith.constant 1.0 : f32
    %vzero = arith.constant dense<0.0> : vector<8xf32>
    %hzero = arith.constant dense<0.0> : vector<8x{{DTYPE}}>
    %cD = arith.constant {{D}} : i64
    // pooled rows: F = P^(L-1) tokens a window, R = min(F, TPP) of them a pass, W = TPP / R
    // windows a pass; the stage holds one pass (THREADS * 8 elements) per half
    %cLogF = arith.constant {{log2(P) * (L - 1)}} : i64
    %cLogR = arith.constant {{min(log2(P) * (L - 1), log2(THREADS / (D / 8)))}} : i64
    %cF = arith.shli %c1, %cLogF : i64
    %cR = arith.shli %c1, %cLogR : i64
    %cW = arith.divui %cTpp, %cR : i64
    %cStage = arith.constant {{THREADS * 8}} : i64
    // passes staged per barrier (KPASS), and the stage's pass slots (two halves of KPASS)
    %cK = arith.constant {{KPASS}} : i64
    %cSlots = arith.constant {{2 * KPASS}} : i64
    %cKm1 = arith.constant {{KPASS - 1}} : i64

    %tid, %bx, %hy, %b = func.call @grid_ids() : () -> (i64, i64, i64, i64)

    // q head or k head
    %is_q = arith.cmpi ult, %hy, %heads : i64
    %src = llvm.select %is_q, %q, %k : i1, !llvm.ptr<1>
    %dst = llvm.select %is_q, %sq, %sk : i1, !llvm.ptr<1>
    %hk = arith.subi %hy, %heads : i64
    %h = arith.select %is_q, %hy, %hk : i64
    %nh = arith.select %is_q, %heads, %kv_heads : i64
    %sb = arith.select %is_q, %q_sb, %k_sb : i64
    %st = arith.select %is_q, %q_st, %k_st : i64
    %sh = arith.select %is_q, %q_sh, %k_sh : i64
    %bsb = arith.muli %b, %sb : i64
    %hsh = arith.muli %h, %sh : i64
    %row_base = arith.addi %bsb, %hsh : i64
    %bnh_h, %out_base = func.call @head_row(%b, %h, %nh, %s_total) : (i64, i64, i64, i64) -> (i64, i64)
    %wp = arith.cmpi ne, %write_pooled, %c0 : i64
    %pdst = llvm.select %is_q, %pq, %pk : i1, !llvm.ptr<1>
    %n_f = arith.divui %n, %cF : i64
    %prow_base = arith.muli %bnh_h, %n_f : i64
    // 1/F as lh_gather computes 1/width (exact either way: F is a power of two)
    %fw = arith.uitofp %cF : i64 to f32
    %inv_f = arith.divf %one, %fw : f32
    %pscale = vector.broadcast %inv_f : f32 to vector<8xf32>

    %lane, %tok, %lane_off = func.call @row_lanes(%tid) : (i64) -> (i64, i64, i64)
    %is_lane0 = arith.cmpi eq, %lane, %c0 : i64
    %is_t0 = arith.cmpi eq, %tid, %c0 : i64
    %chunk0 = arith.muli %bx, %cChunk : i64
    // this thread's piece of a stage slot, and (chain groups) its window part's first row
    %stage_off = arith.muli %tid, %c8 : i64
    // chain group tok < KPASS W takes window part w = tok % W of pass j = tok / W of a block
    %cKW = arith.muli %cK, %cW : i64
    %is_chain = arith.cmpi ult, %tok, %cKW : i64
    %chain_j = arith.divui %tok, %cW : i64
    %chain_w = arith.remui %tok, %cW : i64
    %tok_r = arith.muli %chain_w, %cR : i64
    %tok_rd = arith.muli %tok_r, %cD : i64
    %chain_off = arith.addi %tok_rd, %lane_off : i64
    %tok_end = arith.addi %tok_r, %cR : i64

    %buf = llvm.mlir.addressof @slice_buf : !llvm.ptr<3>
    %acc = llvm.mlir.addressof @coarse_acc : !llvm.ptr<3>
    %stage = llvm.mlir.addressof @pool_stage : !llvm.ptr<3>

    // Only thread 0 ever touches the running maxima of levels wider than a slice.
    scf.if %is_t0 {
      scf.for %l = %c0 to %cL step %c1 : i64 {
        %ap = llvm.getelementptr %acc[%l] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, f32
        llvm.store %zero, %ap : f32, !llvm.ptr<3>
      }
    }

    // %pacc_*: a chain group's fp32 sum of its current window so far, carried across passes and
    // slices (a block starts on a window boundary: CHUNK is a multiple of F)
    %pacc_end = scf.for %s = %c0 to %cSlices step %c1 iter_args(%pacc_s = %vzero) -> (vector<8xf32>) : i64 {
      %s_off = arith.muli %s, %cSlice : i64
      %t0 = arith.addi %chunk0, %s_off : i64
      %live = arith.cmpi ult, %t0, %n : i64
      %pacc_next = scf.if %live -> (vector<8xf32>) {
        // A. squared norms of the slice's tokens -> buf[0, SLICE)
        %pacc_a = scf.for %it = %c0 to %cPasses step %c1 iter_args(%pacc = %pacc_s) -> (vector<8xf32>) : i64 {
          %itt = arith.muli %it, %cTpp : i64
          %tl = arith.addi %itt, %tok : i64
          %t = arith.addi %t0, %tl : i64
          %in = arith.cmpi ult, %t, %n : i64
          %part:2 = scf.if %in -> (f32, vector<8x{{DTYPE}}>) {
            %tst = arith.muli %t, %st : i64
            %o1 = arith.addi %row_base, %tst : i64
            %o2 = arith.addi %o1, %lane_off : i64
            %ptr = llvm.getelementptr %src[%o2] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
            %v = llvm.load %ptr {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8x{{DTYPE}}>
            %f = arith.extf %v : vector<8x{{DTYPE}}> to vector<8xf32>
            %f2 = arith.mulf %f, %f : vector<8xf32>
            %r = vector.reduction <add>, %f2 : vector<8xf32> into f32
            scf.yield %r, %v : f32, vector<8x{{DTYPE}}>
          } else {
            scf.yield %zero, %hzero : f32, vector<8x{{DTYPE}}>
          }
          // sum over the D/8 lanes of this token (every thread shuffles: no lane is masked)
          %red:2 = scf.for %j = %c0 to %cSteps step %c1 iter_args(%a = %part#0, %off = %cHalfLanes) -> (f32, i32) : i64 {
            %other, %valid = gpu.shuffle xor %a, %off, %c32_i32 : f32
            %sum = arith.addf %a, %other : f32
            %off2 = arith.shrui %off, %c1_i32 : i32
            scf.yield %sum, %off2 : f32, i32
          }
          scf.if %is_lane0 {
            %bp = llvm.getelementptr %buf[%tl] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, f32
            llvm.store %red#0, %bp : f32, !llvm.ptr<3>
          }
          // pooled rows: stage the pass's rows, then each chain group adds its R rows in order
          // (%wp is uniform over the grid, so the barrier is reached by every thread or none)
          %wp_it = scf.if %wp -> (i1) {
            %slot = arith.remui %it, %cSlots : i64
            %sbase = arith.muli %slot, %cStage : i64
            %si = arith.addi %sbase, %stage_off : i64
            %sp = llvm.getelementptr %stage[%si] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, {{DTYPE}}
            llvm.store %part#1, %sp {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<3>
            // a block of KPASS passes is staged: its last pass holds the barrier
            %itk = arith.remui %it, %cK : i64
            %blk_end = arith.cmpi eq, %itk, %cKm1 : i64
            scf.yield %blk_end : i1
          } else {
            %no = arith.constant false
            scf.yield %no : i1
          }
          %pacc2 = scf.if %wp_it -> (vector<8xf32>) {
            gpu.barrier
            %chained = scf.if %is_chain -> (vector<8xf32>) {
              // pass pj = it + 1 - KPASS + j of the block (j = 0, pj = it when KPASS = 1)
              %pj0 = arith.subi %it, %cKm1 : i64
              %pj = arith.addi %pj0, %chain_j : i64
              %pslot = arith.remui %pj, %cSlots : i64
              %pbase = arith.muli %pslot, %cStage : i64
              %rbase = arith.addi %pbase, %chain_off : i64
              %sum = scf.for %j = %c0 to %cR step %c1 iter_args(%a = %pacc) -> (vector<8xf32>) : i64 {
                %jd = arith.muli %j, %cD : i64
                %ri = arith.addi %rbase, %jd : i64
                %rp = llvm.getelementptr %stage[%ri] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, {{DTYPE}}
                %x = llvm.load %rp {alignment = 16 : i64} : !llvm.ptr<3> -> vector<8x{{DTYPE}}>
                %xf = arith.extf %x : vector<8x{{DTYPE}}> to vector<8xf32>
                %a2 = arith.addf %a, %xf : vector<8xf32>
                scf.yield %a2 : vector<8xf32>
              }
              // tokens up to the end of this window part; the window is complete where that is a
              // multiple of F (always when F <= TPP)
              %pjt = arith.muli %pj, %cTpp : i64
              %tp0 = arith.addi %t0, %pjt : i64
              %t_end = arith.addi %tp0, %tok_end : i64
              %rem = arith.remui %t_end, %cF : i64
              %ends = arith.cmpi eq, %rem, %c0 : i64
              %after = scf.if %ends -> (vector<8xf32>) {
                %gi1 = arith.divui %t_end, %cF : i64
                %gi = arith.subi %gi1, %c1 : i64
                // a window cut by N is no entry of the pyramid
                %whole = arith.cmpi ult, %gi, %n_f : i64
                scf.if %whole {
                  %mean = arith.mulf %sum, %pscale : vector<8xf32>
                  %rm = arith.truncf %mean : vector<8xf32> to vector<8x{{DTYPE}}>
                  %prow = arith.addi %prow_base, %gi : i64
                  %po1 = arith.muli %prow, %cD : i64
                  %po = arith.addi %po1, %lane_off : i64
                  %pp = llvm.getelementptr %pdst[%po] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
                  llvm.store %rm, %pp {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<1>
                }
                scf.yield %vzero : vector<8xf32>
              } else {
                scf.yield %sum : vector<8xf32>
              }
              scf.yield %after : vector<8xf32>
            } else {
              scf.yield %pacc : vector<8xf32>
            }
            scf.yield %chained : vector<8xf32>
          } else {
            scf.yield %pacc : vector<8xf32>
          }
          scf.yield %pacc2 : vector<8xf32>
        }
        gpu.barrier

        // B. level 0: the norms themselves
        scf.for %i = %tid to %cSlice step %cThreads : i64 {
          %t = arith.addi %t0, %i : i64
          %in = arith.cmpi ult, %t, %n : i64
          scf.if %in {
            %bp = llvm.getelementptr %buf[%i] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, f32
            %x = llvm.load %bp : !llvm.ptr<3> -> f32
            func.call @store_norm(%x, %dst, %out_base, %t) : (f32, !llvm.ptr<1>, i64, i64) -> ()
          }
        }

        // C. levels 1 .. L-1; buf halves [0, SLICE) and [SLICE, 2 SLICE) alternate as source
        %lv:4 = scf.for %l = %c1 to %cL step %c1
            iter_args(%f = %c1, %lvl_off = %c0, %src_off = %c0, %dst_off = %cSlice) -> (i64, i64, i64, i64) : i64 {
          %n_prev = arith.divui %n, %f : i64
          %off_l = arith.addi %lvl_off, %n_prev : i64
          %fl = arith.muli %f, %cP : i64
          %fits = arith.cmpi ule, %fl, %cSlice : i64
          %next:2 = scf.if %fits -> (i64, i64) {
            %entries = arith.divui %cSlice, %fl : i64
            %first = arith.divui %t0, %fl : i64
            %n_l = arith.divui %n, %fl : i64
            scf.for %e = %tid to %entries step %cThreads : i64 {
              %ep = arith.muli %e, %cP : i64
              %base = arith.addi %src_off, %ep : i64
              %m = func.call @slice_max(%base, %cP) : (i64, i64) -> f32
              %de = arith.addi %dst_off, %e : i64
              %dp = llvm.getelementptr %buf[%de] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, f32
              llvm.store %m, %dp : f32, !llvm.ptr<3>
              %gi = arith.addi %first, %e : i64
              %in = arith.cmpi ult, %gi, %n_l : i64
              scf.if %in {
                %o1 = arith.addi %out_base, %off_l : i64
                func.call @store_norm(%m, %dst, %o1, %gi) : (f32, !llvm.ptr<1>, i64, i64) -> ()
              }
            }
            gpu.barrier
            scf.yield %dst_off, %src_off : i64, i64
          } else {
            // A level wider than a slice: thread 0 folds this slice's maximum (the max of the
            // fewer than P entries of the last level that fit in a slice) into the running max.
            scf.if %is_t0 {
              %cnt = arith.divui %cSlice, %f : i64
              %m = func.call @slice_max(%src_off, %cnt) : (i64, i64) -> f32
              %ap = llvm.getelementptr %acc[%l] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, f32
              %old = llvm.load %ap : !llvm.ptr<3> -> f32
              %new = arith.maximumf %old, %m : f32
              %end = arith.addi %t0, %cSlice : i64
              %rem = arith.remui %end, %fl : i64
              %done = arith.cmpi eq, %rem, %c0 : i64
              scf.if %done {
                %nx = llvm.inline_asm "sqrt.rn.f32 $0, $1;", "=f,f" %new : (f32) -> f32
                %gi = arith.divui %t0, %fl : i64
                %o1 = arith.addi %out_base, %off_l : i64
                %o = arith.addi %o1, %gi : i64
                %op = llvm.getelementptr %dst[%o] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, f32
                llvm.store %nx, %op : f32, !llvm.ptr<1>
                llvm.store %zero, %ap : f32, !llvm.ptr<3>
              } else {
                llvm.store %new, %ap : f32, !llvm.ptr<3>
              }
            }
            scf.yield %src_off, %dst_off : i64, i64
          }
          scf.yield %fl, %off_l, %next#0, %next#1 : i64, i64, i64, i64
        }
        // the next slice overwrites buf
        gpu.barrier
        scf.yield %pacc_a : vector<8xf32>
      } else {
        scf.yield %pacc_s : vector<8xf32>
      }
      scf.yield %pacc_next : vector<8xf32>
    }
    gpu.return
  }
}
}
