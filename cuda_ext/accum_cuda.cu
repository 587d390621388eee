/* CUDA build of the group-aligned accumulator (see lowprec_accum.h): one thread per output element,
 * the same helpers as the CPU build, so the same bits. Inputs are device pointers in the layouts of
 * accum_cpu.c. Loaded by lowprec/native.py (nvcc, ctypes) for CUDA tensors. */
#include "lowprec_accum.h"

__global__ void lp_accum_kernel(const float *sa, const int32_t *ea, const float *sb, const int32_t *eb,
                                const double *c, double *out, int64_t M, int64_t K, int64_t N,
                                lp_accum_model model) {
    const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y;
    if (n >= N || m >= M) return;
    const int32_t F = model.align_bits;
    double outer = model.promote_every ? c[m * N + n] : 0.0;
    double acc = model.promote_every ? 0.0 : c[m * N + n];
    for (int64_t k0 = 0; k0 < K; k0 += model.group) {
        const int64_t k1 = k0 + model.group < K ? k0 + model.group : K;
        if (model.promote_every && k0 && k0 % model.promote_every == 0) {
            outer = lp_round(lp_add_round_to_odd(outer, acc), model.outer_mbits, model.outer_emin,
                             model.outer_rounding, model.outer_max, 0);
            acc = 0.0;
        }
        const double fin = isinf(acc) ? 0.0 : acc;          /* step 6: an Inf accumulator stays Inf */
        int32_t E = model.e_floor;                          /* so that 2^(E - F) is normal */
        for (int64_t k = k0; k < k1; k++) {
            const int32_t ep = ea[m * K + k] + eb[k * N + n];
            E = ep > E ? ep : E;
        }
        double s_acc = 0.0; int32_t e_acc = LP_NO_EXP;
        if (model.align_with_acc) {
            lp_split(fin, model.acc_emin, model.zero_exp, &s_acc, &e_acc);
            E = e_acc > E ? e_acc : E;
        }
        float units = model.align_with_acc ? lp_align((float)s_acc, e_acc - E, &model) : 0.0f;
        for (int64_t k = k0; k < k1; k++)
            units += lp_align(sa[m * K + k] * sb[k * N + n], ea[m * K + k] + eb[k * N + n] - E, &model);
        double total = (double)units * lp_pow2(E - F);
        if (!model.align_with_acc) total = lp_add_round_to_odd(fin, total);
        const double rounded = lp_round(total, model.acc_mbits, model.acc_emin, model.acc_rounding, model.acc_max,
                                        model.acc_overflow_inf);
        acc = isinf(acc) ? acc : rounded;
    }
    out[m * N + n] = model.promote_every
        ? lp_round(lp_add_round_to_odd(outer, acc), model.outer_mbits, model.outer_emin, model.outer_rounding,
                   model.outer_max, 0)
        : acc;
}

extern "C" int lp_emulated_matmul_cuda(const float *sa, const int32_t *ea, const float *sb, const int32_t *eb,
                                       const double *c, double *out, int64_t M, int64_t K, int64_t N,
                                       const lp_accum_model *model) {
    const dim3 block(128), grid((unsigned)((N + 127) / 128), (unsigned)M);
    lp_accum_kernel<<<grid, block>>>(sa, ea, sb, eb, c, out, M, K, N, *model);
    return (int)cudaDeviceSynchronize();
}
