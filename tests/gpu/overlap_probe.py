#!/usr/bin/env python3
"""overlap_probe.py - can memory-bound work hide behind cuDNN's SDPA forward on this GPU?

Not a test and not part of the library: a measurement that decides how the forward's
memory-bound kernels (scores, gather, scatter) should be scheduled. It times, on the GPU
machine's PyTorch (cuDNN SDPA) and CuPy (a copy kernel compiled by NVRTC):
  - cuDNN SDPA forward at the floor's shape (B=1, H=8, S=S_sel, D=128, causal, bf16);
  - a grid-stride 16-byte copy of COPY_MB megabytes with a grid of G blocks, for several G
    (how many SMs does memory traffic need to reach the copy rate?);
  - both at once: the copy on a high-priority stream, attention on a normal one, in both
    launch orders. hidden = (t_attn + t_copy - t_both) / t_copy: 1 means the copy was free.

  python3 tests/gpu/overlap_probe.py [S_sel] [COPY_MB]
"""
import sys

import cupy as cp
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

S = int(sys.argv[1]) if len(sys.argv) > 1 else 49152
COPY_MB = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
REPS = 9

COPY_SRC = r"""
extern "C" __global__ void copy16(const uint4* __restrict__ src, uint4* __restrict__ dst,
                                  unsigned long long n) {
  // four independent 16-byte loads in flight per thread before the first store
  unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
  unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 a = src[i], b = src[i + stride], c = src[i + 2 * stride], d = src[i + 3 * stride];
    dst[i] = a; dst[i + stride] = b; dst[i + 2 * stride] = c; dst[i + 3 * stride] = d;
  }
  for (; i < n; i += stride) dst[i] = src[i];
}
"""


def median_ms(fn):
    times = []
    for _ in range(REPS + 2):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times = sorted(times[2:])
    return times[len(times) // 2]


def main():
    dev = torch.cuda.get_device_properties(0)
    print(f"overlap probe on {dev.name}, {dev.multi_processor_count} SMs, S_sel={S}, copy {COPY_MB} MB")
    q, k, v = (torch.randn(1, 8, S, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    n16 = COPY_MB * (1 << 20) // 16
    src = cp.zeros(n16 * 2, dtype=cp.uint64)
    dst = cp.zeros(n16 * 2, dtype=cp.uint64)
    kern = cp.RawKernel(COPY_SRC, "copy16")
    main_stream = torch.cuda.current_stream()
    hi = torch.cuda.Stream(priority=-1)   # the highest priority PyTorch hands out
    lo = torch.cuda.Stream(priority=0)

    def attn(stream):
        with torch.cuda.stream(stream), sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def copy(stream, grid):
        with cp.cuda.ExternalStream(stream.cuda_stream):
            kern((grid,), (512,), (src, dst, cp.uint64(n16)))

    def both(grid, copy_first):
        for s in (hi, lo):
            s.wait_stream(main_stream)
        if copy_first:
            copy(hi, grid)
            attn(lo)
        else:
            attn(lo)
            copy(hi, grid)
        main_stream.wait_stream(hi)
        main_stream.wait_stream(lo)

    t_attn = median_ms(lambda: attn(main_stream))
    print(f"cuDNN SDPA fwd alone: {t_attn:.3f} ms")
    sms = dev.multi_processor_count
    print(" grid  copy ms   GB/s | both(copy first) hidden | both(attn first) hidden")
    for grid in (4 * sms, sms, sms // 2, sms // 4, sms // 8):
        t_copy = median_ms(lambda: copy(main_stream, grid))
        gbs = 2 * COPY_MB * (1 << 20) / t_copy / 1e6
        t_cf = median_ms(lambda: both(grid, True))
        t_af = median_ms(lambda: both(grid, False))
        h_cf = (t_attn + t_copy - t_cf) / t_copy
        h_af = (t_attn + t_copy - t_af) / t_copy
        print(f"{grid:5d} {t_copy:8.3f} {gbs:7.0f} | {t_cf:10.3f} {h_cf:11.2f} | {t_af:10.3f} {h_af:11.2f}")


if __name__ == "__main__":
    main()
