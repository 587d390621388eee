/* CUDA build of the group-aligned accumulator (see lowprec_accum.h): lp_emulated_matmul of accum_cpu.c, with
 * the same arguments (device pointers) and the same bits, one thread per output element (grid-stride), built
 * from the header's scalar helpers. Adjacent threads take adjacent columns, so reads of b coalesce and reads
 * of a are broadcasts. Loaded by lowprec/native.py (nvcc, ctypes) for CUDA tensors.
 *
 * lp_emulated_matmul_cuda launches on `stream` (the caller's current stream) of `device`, which it makes current
 * for the launch and then restores; it never synchronises, and returns cudaGetLastError() after the launch. */
#include "lowprec_accum.h"

/* Steps 1-6 of one output element (row, col) over products [k0, k1), from the seed `s`: the block's result. */
__device__ double lp_element_block(const float *a, const float *b, int64_t K, int64_t N, int64_t row, int64_t col,
                                   int64_t k0, int64_t k1, double s, const lp_accum_model &m) {
    double acc = m.promote_every ? 0.0 : s, outer = m.promote_every ? s : 0.0;
    for (int64_t g0 = k0; g0 < k1; g0 += m.group) {
        const int64_t g1 = g0 + m.group < k1 ? g0 + m.group : k1;
        if (m.promote_every && g0 > k0 && (g0 - k0) % m.promote_every == 0) {
            outer = lp_round_any(lp_add_round_to_odd(outer, acc), m.outer_mbits, m.outer_emin, m.outer_rounding,
                                 m.outer_max, 0);
            acc = 0.0;
        }
        const bool inf = isinf(acc);                       /* step 6: an Inf accumulator stays Inf */
        float s_acc;
        int32_t e_acc;
        lp_split(inf ? 0.0 : acc, m.acc_emin, m.zero_exp, &s_acc, &e_acc);
        int32_t E = m.align_with_acc && e_acc > m.e_floor ? e_acc : m.e_floor;
        float sa, sb;
        int32_t ea, eb;
        for (int64_t k = g0; k < g1; k++) {
            lp_operand(a[row * K + k], m.a_emin, m.prescaled, m.a_offset, m.zero_exp, &sa, &ea);
            lp_operand(b[k * N + col], m.b_emin, m.prescaled, m.b_offset, m.zero_exp, &sb, &eb);
            E = ea + eb > E ? ea + eb : E;
        }
        const float scale = lp_term_scale(E, &m);
        int32_t units = m.align_with_acc
            ? lp_round_term(lp_term_value(s_acc, e_acc, E, m.align_bits), m.align_rounding) : 0;
        for (int64_t k = g0; k < g1; k++) {
            lp_operand(a[row * K + k], m.a_emin, m.prescaled, m.a_offset, m.zero_exp, &sa, &ea);
            lp_operand(b[k * N + col], m.b_emin, m.prescaled, m.b_offset, m.zero_exp, &sb, &eb);
            units += lp_round_term(m.prescaled ? sa * sb * scale : lp_term_value(sa * sb, ea + eb, E, m.align_bits),
                                   m.align_rounding);
        }
        const double sum = (double)units * lp_pow2(E - m.align_bits);
        const double total = m.align_with_acc ? sum : lp_add_round_to_odd(inf ? 0.0 : acc, sum);
        if (!inf) acc = lp_round_any(total, m.acc_mbits, m.acc_emin, m.acc_rounding, m.acc_max, m.acc_overflow_inf);
    }
    return m.promote_every ? lp_round_any(lp_add_round_to_odd(outer, acc), m.outer_mbits, m.outer_emin,
                                          m.outer_rounding, m.outer_max, 0)
                           : acc;
}

__global__ void lp_gemm_kernel(const float *a, const float *b, const double *seed, int64_t M, int64_t K, int64_t N,
                               lp_accum_model m, int64_t k_block, const float *scale_a, const float *scale_b,
                               const float *ieee, float *out) {
    const int64_t kb = k_block > 0 ? k_block : (K > 0 ? K : 1);
    const int64_t nblocks = k_block > 0 ? (K + kb - 1) / kb : 1;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < M * N; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i / N, col = i % N;
        float result = 0.0f;
        for (int64_t blk = 0; blk < nblocks; blk++) {
            const int64_t k0 = blk * kb, k1 = k0 + kb < K ? k0 + kb : K;
            const float partial = (float)lp_element_block(a, b, K, N, row, col, k0, k1,
                                                          seed ? seed[i] : 0.0, m);   /* exact */
            if (!scale_a) { result = partial; continue; }
            const float p = ieee && !isfinite(ieee[blk * M * N + i]) ? ieee[blk * M * N + i] : partial;
            result = lp_scaled_fold(result, scale_a[row * nblocks + blk], scale_b[blk * N + col], p);
        }
        out[i] = result;
    }
}

extern "C" int lp_emulated_matmul_cuda(const float *a, const float *b, const double *seed, int64_t M, int64_t K,
                                       int64_t N, const lp_accum_model *model, int64_t k_block, const float *scale_a,
                                       const float *scale_b, const float *ieee, float *out, int device,
                                       void *stream) {
    int previous;
    cudaError_t err = cudaGetDevice(&previous);
    if (err != cudaSuccess) return (int)err;
    if (previous != device && (err = cudaSetDevice(device)) != cudaSuccess) return (int)err;
    if (M * N > 0) {
        const int threads = 256;
        const int64_t wanted = (M * N + threads - 1) / threads, most = (int64_t)1 << 20;
        lp_gemm_kernel<<<(unsigned)(wanted < most ? wanted : most), threads, 0, (cudaStream_t)stream>>>(
            a, b, seed, M, K, N, *model, k_block, scale_a, scale_b, ieee, out);
    }
    err = cudaGetLastError();
    if (previous != device) cudaSetDevice(previous);
    return (int)err;
}
