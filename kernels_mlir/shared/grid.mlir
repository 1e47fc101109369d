// ---- shared piece grid (kernels_mlir/shared/grid.mlir) --------------------------------------
  // Where a thread is in the launch: thread x, block x, block y, block z, cast to i64 once
  // (kernels index in i64). A kernel that needs fewer leaves the rest unused: reading them is
  // pure, so the lowering drops the reads. No constants.
  func.func private @grid_ids() -> (i64, i64, i64, i64) {
    %tid_ix = gpu.thread_id x
    %bx_ix = gpu.block_id x
    %by_ix = gpu.block_id y
    %bz_ix = gpu.block_id z
    %tid = arith.index_cast %tid_ix : index to i64
    %bx = arith.index_cast %bx_ix : index to i64
    %by = arith.index_cast %by_ix : index to i64
    %bz = arith.index_cast %bz_ix : index to i64
    return %tid, %bx, %by, %bz : i64, i64, i64, i64
  }

  // Row (b, h) of a [B, H, len] tensor: its index b * H + h, and where it starts, (b * H + h) *
  // len.
  func.func private @head_row(%b: i64, %h: i64, %heads: i64, %len: i64) -> (i64, i64) {
    %bh0 = arith.muli %b, %heads : i64
    %bh = arith.addi %bh0, %h : i64
    %start = arith.muli %bh, %len : i64
    return %bh, %start : i64, i64
  }
