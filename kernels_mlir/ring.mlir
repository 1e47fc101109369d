// ring.mlir - the element-wise steps of ring attention (docs/spec.md section 8) around cuDNN.
//
// lh_ring_merge: folds one block's partial attention result into a chunk's running result.
//   A block (queries of one chunk against the keys of one chunk) gives o_part (DTYPE) and its
//   log-sum-exp lse_part; the running result is acc (fp32, normalised) with lse_in. Per row:
//   m = max(lse_in, lse_part), wa = exp(lse_in - m), wp = exp(lse_part - m),
//   acc = (acc * wa + o_part * wp) / (wa + wp), lse_out = m + log(wa + wp).
//   A fresh accumulator is acc = 0 with lse_in = -inf (then wa = 0). lse_out is a different
//   buffer than lse_in (the caller alternates two), so no lane reads a value another lane of the
//   same row has already replaced.
// lh_ring_add:     acc (fp32) += part (DTYPE), 8 elements per thread.
// lh_ring_convert: out (DTYPE) = acc (fp32) rounded, 8 elements per thread.
// lh_ring_pack:    dst[b, t, h] = sum over g < G of src[b, t, (h * G + g) / E] (fp32 sum, one
//   rounding): with G = 1 it copies a strided [B,T,Hs,D] tensor into another layout, repeating
//   each source head E times (k, v of grouped-query attention); with E = 1 it sums groups of G
//   heads (dk, dv of grouped-query attention back to the kv heads).
//
// Constants: DTYPE (bf16 | f16), D (8 * 2^k, at most 256), THREADS (a multiple of D/8).
// Arguments:
//   lh_ring_merge(o_part, lse_part, acc, lse_in, lse_out : !llvm.ptr<1>, rows : i64)
//     rows = number of D-element rows; o_part and acc are [rows, D], the lse buffers [rows].
//     Launch: grid (ceil(rows / (THREADS / (D/8)))), block (THREADS).
//   lh_ring_add(part, acc : !llvm.ptr<1>, vecs : i64), lh_ring_convert(acc, out, vecs)
//     vecs = elements / 8. Launch: grid (ceil(vecs / THREADS)), block (THREADS).
//   lh_ring_pack(src, dst : !llvm.ptr<1>, tokens, expand, group,
//                src_sb, src_st, src_sh, dst_sb, dst_st, dst_sh : i64)
//     Launch: grid (ceil(tokens / (THREADS / (D/8))), dst heads, B), block (THREADS).
// How: D/8 lanes own one row with 16-byte accesses; exp and log through ex2/lg2.approx, whose
// relative error (2^-22) is far below the bf16/f16 rounding of the result.
module attributes {gpu.container_module} {
gpu.module @ring [{{TARGET}}] {
  {{include grid}}
  {{include lanes}}

  // The 8-element vector this thread of lh_ring_add and lh_ring_convert handles, and whether it
  // is one of the `vecs` there are.
  func.func private @vector_index(%vecs: i64) -> (i64, i1) {
    %cT = arith.constant {{THREADS}} : i64
    %tid, %bx, %by_unused, %bz_unused = func.call @grid_ids() : () -> (i64, i64, i64, i64)
    %b0 = arith.muli %bx, %cT : i64
    %i = arith.addi %b0, %tid : i64
    %in = arith.cmpi ult, %i, %vecs : i64
    return %i, %in : i64, i1
  }

  gpu.func @lh_ring_merge(%o_part: !llvm.ptr<1>, %lse_part: !llvm.ptr<1>, %acc: !llvm.ptr<1>,
                          %lse_in: !llvm.ptr<1>, %lse_out: !llvm.ptr<1>, %rows: i64) kernel {
    %c0 = arith.constant 0 : i64
    %c8 = arith.constant 8 : i64
    %cLanes = arith.constant {{D / 8}} : i64
    %log2e = arith.constant 1.4426950408889634 : f32
    %ln2 = arith.constant 0.6931471805599453 : f32
    %tid, %bx, %by_unused, %bz_unused = func.call @grid_ids() : () -> (i64, i64, i64, i64)
    %lane, %rl, %lane_off_unused = func.call @row_lanes(%tid) : (i64) -> (i64, i64, i64)
    %r, %in = func.call @block_row(%bx, %rl, %rows) : (i64, i64, i64) -> (i64, i1)
    scf.if %in {
      %lip = llvm.getelementptr %lse_in[%r] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, f32
      %la = llvm.load %lip : !llvm.ptr<1> -> f32
      %lpp = llvm.getelementptr %lse_part[%r] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, f32
      %lp = llvm.load %lpp : !llvm.ptr<1> -> f32
      %m = arith.maximumf %la, %lp : f32
      %da = arith.subf %la, %m : f32
      %dp = arith.subf %lp, %m : f32
      %xa = arith.mulf %da, %log2e : f32
      %xp = arith.mulf %dp, %log2e : f32
      %wa = llvm.inline_asm "ex2.approx.ftz.f32 $0, $1;", "=f,f" %xa : (f32) -> f32
      %wp = llvm.inline_asm "ex2.approx.ftz.f32 $0, $1;", "=f,f" %xp : (f32) -> f32
      %s = arith.addf %wa, %wp : f32
      %one = arith.constant 1.0 : f32
      %inv_s = arith.divf %one, %s : f32
      %ca = arith.mulf %wa, %inv_s : f32
      %cp = arith.mulf %wp, %inv_s : f32
      %rowoff = arith.muli %r, %cLanes : i64
      %vi = arith.addi %rowoff, %lane : i64
      %e = arith.muli %vi, %c8 : i64
      %of = func.call @load_f32(%o_part, %e) : (!llvm.ptr<1>, i64) -> vector<8xf32>
      %ap = llvm.getelementptr %acc[%e] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, f32
      %av = llvm.load %ap {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8xf32>
      %cav = vector.broadcast %ca : f32 to vector<8xf32>
      %cpv = vector.broadcast %cp : f32 to vector<8xf32>
      %t1 = arith.mulf %av, %cav : vector<8xf32>
      %t2 = arith.mulf %of, %cpv : vector<8xf32>
      %nv = arith.addf %t1, %t2 : vector<8xf32>
      llvm.store %nv, %ap {alignment = 16 : i64} : vector<8xf32>, !llvm.ptr<1>
      %first = arith.cmpi eq, %lane, %c0 : i64
      scf.if %first {
        %lg = llvm.inline_asm "lg2.approx.ftz.f32 $0, $1;", "=f,f" %s : (f32) -> f32
        %ln = arith.mulf %lg, %ln2 : f32
        %lnew = arith.addf %m, %ln : f32
        %lop = llvm.getelementptr %lse_out[%r] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, f32
        llvm.store %lnew, %lop : f32, !llvm.ptr<1>
      }
    }
    gpu.return
  }

  gpu.func @lh_ring_add(%part: !llvm.ptr<1>, %acc: !llvm.ptr<1>, %vecs: i64) kernel {
    %c8 = arith.constant 8 : i64
    %i, %in = func.call @vector_index(%vecs) : (i64) -> (i64, i1)
    scf.if %in {
      %e = arith.muli %i, %c8 : i64
      %pf = func.call @load_f32(%part, %e) : (!llvm.ptr<1>, i64) -> vector<8xf32>
      %ap = llvm.getelementptr %acc[%e] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, f32
      %av = llvm.load %ap {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8xf32>
      %sum = arith.addf %av, %pf : vector<8xf32>
      llvm.store %sum, %ap {alignment = 16 : i64} : vector<8xf32>, !llvm.ptr<1>
    }
    gpu.return
  }

  gpu.func @lh_ring_convert(%acc: !llvm.ptr<1>, %out: !llvm.ptr<1>, %vecs: i64) kernel {
    %c8 = arith.constant 8 : i64
    %i, %in = func.call @vector_index(%vecs) : (i64) -> (i64, i1)
    scf.if %in {
      %e = arith.muli %i, %c8 : i64
      %ap = llvm.getelementptr %acc[%e] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, f32
      %av = llvm.load %ap {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8xf32>
      %r = arith.truncf %av : vector<8xf32> to vector<8x{{DTYPE}}>
      %op = llvm.getelementptr %out[%e] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
      llvm.store %r, %op {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<1>
    }
    gpu.return
  }

  gpu.func @lh_ring_pack(%src: !llvm.ptr<1>, %dst: !llvm.ptr<1>, %tokens: i64, %expand: i64,
                         %group: i64, %s_sb: i64, %s_st: i64, %s_sh: i64,
                         %d_sb: i64, %d_st: i64, %d_sh: i64) kernel {
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %c8 = arith.constant 8 : i64
    %vzero = arith.constant dense<0.0> : vector<8xf32>
    %tid, %bx, %h, %b = func.call @grid_ids() : () -> (i64, i64, i64, i64)
    // (the lane's element offset is formed inside the branch, where it is used)
    %lane, %tl, %lane_off_unused = func.call @row_lanes(%tid) : (i64) -> (i64, i64, i64)
    %t, %in = func.call @block_row(%bx, %tl, %tokens) : (i64, i64, i64) -> (i64, i1)
    scf.if %in {
      %lo = arith.muli %lane, %c8 : i64
      %sb = arith.muli %b, %s_sb : i64
      %stt = arith.muli %t, %s_st : i64
      %s1 = arith.addi %sb, %stt : i64
      %sbase = arith.addi %s1, %lo : i64
      %hg = arith.muli %h, %group : i64
      %sum = scf.for %g = %c0 to %group step %c1 iter_args(%a = %vzero) -> (vector<8xf32>) : i64 {
        %hs0 = arith.addi %hg, %g : i64
        %hs = arith.divui %hs0, %expand : i64
        %sho = arith.muli %hs, %s_sh : i64
        %so = arith.addi %sbase, %sho : i64
        %sf = func.call @load_f32(%src, %so) : (!llvm.ptr<1>, i64) -> vector<8xf32>
        %a2 = arith.addf %a, %sf : vector<8xf32>
        scf.yield %a2 : vector<8xf32>
      }
      %r = arith.truncf %sum : vector<8xf32> to vector<8x{{DTYPE}}>
      %db = arith.muli %b, %d_sb : i64
      %dt = arith.muli %t, %d_st : i64
      %dh = arith.muli %h, %d_sh : i64
      %d1 = arith.addi %db, %dt : i64
      %d2 = arith.addi %d1, %dh : i64
      %d3 = arith.addi %d2, %lo : i64
      %dp = llvm.getelementptr %dst[%d3] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
      llvm.store %r, %dp {alignment = 16 : i64} : vector<8x{{DTYPE}}>, !llvm.ptr<1>
    }
    gpu.return
  }
}
}
