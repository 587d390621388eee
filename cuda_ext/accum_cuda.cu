/* CUDA build of the group-aligned accumulator (see lowprec_accum.h): lp_emulated_matmul of accum_cpu.c, with
 * the same arguments (device pointers) and the same bits, one thread per output element (grid-stride), each
 * running the header's scalar lp_dot_block (which accum_cpu.c also exports, as lp_emulated_matmul_scalar, so
 * that its bits are checked on machines without a GPU). Adjacent threads take adjacent columns, so reads of b
 * coalesce and reads of a are broadcasts. Loaded by lowprec/native.py (nvcc, ctypes) for CUDA tensors.
 *
 * lp_emulated_matmul_cuda launches on `stream` (the caller's current stream) of `device`, which it makes current
 * for the launch and then restores; it never synchronises, and returns cudaGetLastError() after the launch. */
#include "lowprec_accum.h"

__global__ void lp_gemm_kernel(const float *a, const float *b, const double *seed, int64_t M, int64_t K, int64_t N,
                               lp_accum_model m, int64_t k_block, const float *scale_a, const float *scale_b,
                               const float *ieee, const int32_t *xa, const int32_t *xb, int64_t xblock, float *out) {
    const int64_t kb = k_block > 0 ? k_block : (K > 0 ? K : 1);
    const int64_t nblocks = k_block > 0 ? (K + kb - 1) / kb : 1;
    const int64_t nx = xa ? (K + xblock - 1) / xblock : 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < M * N; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i / N, col = i % N;
        float result = 0.0f;
        for (int64_t blk = 0; blk < nblocks; blk++) {
            const int64_t k0 = blk * kb, k1 = k0 + kb < K ? k0 + kb : K;
            const float partial = (float)lp_dot_block(a + row * K, 1, b + col, N, k0, k1, seed ? seed[i] : 0.0,
                                                      &m, xa ? xa + row * nx : NULL, xb ? xb + col : NULL, N,
                                                      xblock);                       /* exact */
            if (!scale_a) { result = partial; continue; }
            const float p = ieee && !isfinite(ieee[blk * M * N + i]) ? ieee[blk * M * N + i] : partial;
            result = lp_scaled_fold(result, scale_a[row * nblocks + blk], scale_b[blk * N + col], p);
        }
        out[i] = result;
    }
}

extern "C" int lp_emulated_matmul_cuda(const float *a, const float *b, const double *seed, int64_t M, int64_t K,
                                       int64_t N, const lp_accum_model *model, int64_t k_block, const float *scale_a,
                                       const float *scale_b, const float *ieee, const int32_t *xa,
                                       const int32_t *xb, int64_t xblock, float *out, int device, void *stream) {
    int previous;
    cudaError_t err = cudaGetDevice(&previous);
    if (err != cudaSuccess) return (int)err;
    if (previous != device && (err = cudaSetDevice(device)) != cudaSuccess) return (int)err;
    if (M * N > 0) {
        const int threads = 256;
        const int64_t wanted = (M * N + threads - 1) / threads, most = (int64_t)1 << 20;
        lp_gemm_kernel<<<(unsigned)(wanted < most ? wanted : most), threads, 0, (cudaStream_t)stream>>>(
            a, b, seed, M, K, N, *model, k_block, scale_a, scale_b, ieee, xa, xb, xblock, out);
    }
    err = cudaGetLastError();
    if (previous != device) cudaSetDevice(previous);
    return (int)err;
}
