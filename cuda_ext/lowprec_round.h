/* lowprec: one rounding of a float32 to a small binary format, the C twin of the 32-bit-word path of
 * lowprec/rounding.py:_encode_core (tests check it against the torch path). Written __host__ __device__
 * for CUDA kernels too; today only the CPU build (quant_cpu.c) uses it. Covers formats with subnormals and a zero (every registered format but E8M0), with at
 * most 22 fraction bits and emin >= -126, and the deterministic modes. */
#ifndef LOWPREC_ROUND_H
#define LOWPREC_ROUND_H

#include <stdint.h>
#include <string.h>
#include "lowprec_codes.h"

#ifdef __CUDACC__
#define LP_HD __host__ __device__ __forceinline__
#else
#define LP_HD static inline
#endif

typedef struct {
    int32_t mbits, emin, max_code, sign_mask;
    int32_t has_inf, has_nan, has_negative_zero, signed_nan;  /* signed_nan: NaN keeps the sign bit */
    int32_t inf_code, nan_code;
} lp_format;

LP_HD uint32_t lp_encode_f32(float x, const lp_format *f, int32_t rounding, int32_t saturate) {
    uint32_t bits; memcpy(&bits, &x, 4);
    const int32_t neg = (int32_t)(bits >> 31);
    const uint32_t ab = bits & 0x7FFFFFFFu;
    const int32_t M = f->mbits;
    const int32_t bexp = (int32_t)(ab >> 23);
    const int32_t frac = (int32_t)(ab & 0x7FFFFF);
    const int32_t sig = bexp ? (frac | 0x800000) : frac;          /* |x| = sig * 2^(e - 23) */
    const int32_t e = bexp ? bexp - 127 : -126;
    const int32_t e_eff = e > f->emin ? e : f->emin;
    const int32_t q = e_eff - M;
    int32_t shift = q - (e - 23);
    shift = shift < 1 ? 1 : shift > 30 ? 30 : shift;
    const int32_t r = sig >> shift, rem = sig & ((1 << shift) - 1), half = 1 << (shift - 1);
    const int32_t code_trunc = ((e_eff - f->emin) << M) + r;
    const int32_t inexact = rem != 0, odd = code_trunc & 1;
    /* branch-free from here on (selects only), so that loops over elements vectorise */
    const int32_t up = rounding == LP_RNE ? (rem > half) | ((rem == half) & odd)
                     : rounding == LP_RNA ? rem >= half
                     : rounding == LP_RTZ ? 0
                     : rounding == LP_RUP ? inexact & (neg ^ 1)
                     : rounding == LP_RDOWN ? inexact & neg
                     : inexact & (odd ^ 1);                          /* LP_RTO */
    const int32_t is_inf = ab == 0x7F800000u, is_nan_in = ab > 0x7F800000u;
    const int32_t over = (code_trunc + up > f->max_code) | is_inf;
    const int32_t away = rounding == LP_RTZ ? is_inf
                       : rounding == LP_RUP ? (neg ^ 1) | is_inf
                       : rounding == LP_RDOWN ? neg | is_inf : 1;   /* directed modes may stop at max */
    const int32_t to_special = (!saturate & f->has_nan) & over & away;
    int32_t mag = over ? f->max_code : code_trunc + up;
    mag = (to_special & f->has_inf) ? f->inf_code : mag;
    const int32_t is_nan = is_nan_in | (to_special & !f->has_inf);
    uint32_t code = (uint32_t)mag | ((neg & (f->has_negative_zero | (mag != 0))) ? (uint32_t)f->sign_mask : 0u);
    const uint32_t nan = (uint32_t)f->nan_code | ((f->signed_nan & neg) ? (uint32_t)f->sign_mask : 0u);
    code = (f->has_nan & is_nan) ? nan : code;
    return code;
}

#endif
