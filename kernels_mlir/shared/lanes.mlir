// ---- shared piece lanes (kernels_mlir/shared/lanes.mlir) ------------------------------------
  // Rows of D elements are read and written by groups of D/8 lanes, 16 bytes (8 elements) per
  // lane; a block of THREADS threads covers THREADS / (D/8) rows. Constants: D, DTYPE, THREADS.

  // Thread tid is lane tid % (D/8) of row tid / (D/8) of its block, at element 8 * lane of that
  // row: (lane, row, element offset).
  func.func private @row_lanes(%tid: i64) -> (i64, i64, i64) {
    %c8 = arith.constant 8 : i64
    %cLanes = arith.constant {{D / 8}} : i64
    %lane = arith.remui %tid, %cLanes : i64
    %row = arith.divui %tid, %cLanes : i64
    %lane_off = arith.muli %lane, %c8 : i64
    return %lane, %row, %lane_off : i64, i64, i64
  }

  // Row `row` of block bx, one row per lane group, and whether it is below `count`.
  func.func private @block_row(%bx: i64, %row: i64, %count: i64) -> (i64, i1) {
    %cRows = arith.constant {{THREADS / (D / 8)}} : i64
    %r0 = arith.muli %bx, %cRows : i64
    %r = arith.addi %r0, %row : i64
    %in = arith.cmpi ult, %r, %count : i64
    return %r, %in : i64, i1
  }

  // The 8 DTYPE elements at p[elem] (16-byte aligned) as fp32.
  func.func private @load_f32(%p: !llvm.ptr<1>, %elem: i64) -> vector<8xf32> {
    %ptr = llvm.getelementptr %p[%elem] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {{DTYPE}}
    %v = llvm.load %ptr {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8x{{DTYPE}}>
    %f = arith.extf %v : vector<8x{{DTYPE}}> to vector<8xf32>
    return %f : vector<8xf32>
  }

  // Where this thread's piece of token 0 of head h, batch b starts in a strided tensor
  // (elements): b * stride_b + h * stride_h + lane_off.
  func.func private @strided_row(%b: i64, %h: i64, %stride_b: i64, %stride_h: i64, %lane_off: i64) -> i64 {
    %bo = arith.muli %b, %stride_b : i64
    %ho = arith.muli %h, %stride_h : i64
    %bho = arith.addi %bo, %ho : i64
    %base = arith.addi %bho, %lane_off : i64
    return %base : i64
  }
