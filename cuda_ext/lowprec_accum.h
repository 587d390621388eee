/* lowprec: the group-aligned accumulator model (lowprec/accum.py, steps 1-6; the caller does steps 7-8,
 * NaN/Inf inputs and NaN bits), shared by the CPU build
 * (accum_cpu.c, loaded through ctypes) and the CUDA kernels (accum_cuda.cu). It must compute the same bits
 * as the Python reference; tests/test_accum*.py and tests/test_native_gemm.py check that on every build.
 *
 * Operands arrive as float32 values of the input formats (NaN/Inf are taken as 0: the caller does step 7).
 * Step 1 here (lp_operand): a = s_a * 2^e_a with e_a >= emin_a (a zero has the model's zero exponent, or
 * LP_NO_EXP). Two ways to form a product's aligned term in units of 2^(E - F), by `prescaled`:
 * - 1 (formats of small range, the fast path): a' = a * 2^off_a = s_a * 2^(e_a + off_a), off_a = mbits_a -
 *   emin_a, is an integer-valued float32 (>= 1 when non-zero), and the term is round(a' * b' * 2^(F - E - off)),
 *   off = off_a + off_b, with one scale per group and output. a' * b' is exact in float32 (the significand
 *   products fit 24 bits) and below 2^125, so the scale, taken within [2^-126, 2^127], is exact wherever the
 *   term is >= 1 and otherwise leaves a term below 1/2 with its sign (all truncation, flooring and nearest-even
 *   see of it);
 * - 0 (any range, e.g. bf16, tf32, E8M0): the operands are their significands s_a, and the term is
 *   round(s_a * s_b * 2^(max(e_a + e_b - E, -60) + F)) (lp_term_value), as the torch path computes it.
 * lowprec.accum.native_unsupported admits only models whose significand products fit 24 bits, whose group sums
 * (G + 1 terms < 2^(F + 2)) fit int32, and takes the fast path where a' * b' < 2^125.
 * IEEE semantics are required: build without -ffast-math and with -ffp-contract=off (nvcc: --fmad=false).
 */
#ifndef LOWPREC_ACCUM_H
#define LOWPREC_ACCUM_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#include "lowprec_codes.h"

#ifdef __CUDACC__
#define LP_HD __host__ __device__ __forceinline__
#else
#define LP_HD static inline
#endif

#define LP_NO_EXP (-(1 << 20))   /* exponent of "no term": far below e_floor, so it never sets E */

typedef struct {
    int32_t group;           /* products per group */
    int32_t align_bits;      /* F: fraction bits kept after alignment */
    int32_t align_rounding;  /* LP_RTZ, LP_RDOWN or LP_RNE (lowprec_codes.h) */
    int32_t align_with_acc;  /* the accumulator takes part in the alignment */
    int32_t zero_exp;        /* exponent of a zero accumulator term; LP_NO_EXP: zeros take no part */
    int32_t e_floor;         /* E never goes below it (the smallest exponent of any term): 2^(E - F) is normal */
    int32_t a_emin, b_emin;  /* the input formats' smallest normal exponents */
    int32_t prescaled;       /* 1: operands pre-scaled by 2^off_a, 2^off_b (the fast path); 0: significands */
    int32_t a_offset, b_offset;                   /* off_a = mbits_a - emin_a, off_b */
    int32_t acc_mbits, acc_emin, acc_rounding;   /* accumulator format; rounding LP_RTZ or LP_RNE */
    int32_t acc_overflow_inf;                     /* 1: results >= 2^(emax+1) are Inf even under rtz */
    int32_t promote_every;   /* 0: no promotion */
    int32_t outer_mbits, outer_emin, outer_rounding;
    double acc_max, outer_max;
} lp_accum_model;

/* 2^k as a float32 (k in [-126, 127]) or double (k in [-1022, 1023]), from the bits: callers keep k there. */
LP_HD float lp_pow2f(int32_t k) { uint32_t b = (uint32_t)(k + 127) << 23; float f; memcpy(&f, &b, 4); return f; }
LP_HD double lp_pow2(int32_t k) { uint64_t b = (uint64_t)(k + 1023) << 52; double d; memcpy(&d, &b, 8); return d; }

/* Round an exact double (|x| < 2^1000) to a binary format with `mbits` fraction bits, smallest normal
 * exponent `emin` (subnormals below it), largest finite `vmax`; rounding LP_RTZ or LP_RNE (nearest
 * even). Overflow: nearest gives Inf; toward zero gives Inf when `overflow_inf` (the value's exponent
 * exceeds the format's), else saturates at vmax (IEEE). A zero result is +0. */
LP_HD double lp_round(double x, int32_t mbits, int32_t emin, int32_t rounding, double vmax, int32_t overflow_inf) {
    if (x == 0.0 || isnan(x) || isinf(x)) return x == 0.0 ? 0.0 : x;
    double ax = fabs(x);
    int32_t e = ilogb(ax);
    int32_t q = (e > emin ? e : emin) - mbits;
    double r = ax * lp_pow2(-q);                       /* exact: a power-of-two scaling */
    r = rounding == LP_RTZ ? trunc(r) : nearbyint(r);      /* default FE_TONEAREST: ties to even */
    double v = r * lp_pow2(q);
    if (v > vmax) v = rounding == LP_RTZ && !overflow_inf ? vmax : HUGE_VAL;   /* rtz: v > vmax iff e > emax */
    return v == 0.0 ? 0.0 : x < 0 ? -v : v;
}

/* The common case of lp_round, branch-free so that loops vectorise: |x| >= 2^emin and no overflow.
 * Drops the low (52 - mbits) fraction bits of the double: toward zero, or nearest-even by adding half
 * an ulp minus one plus the kept lsb (a carry correctly bumps the exponent). *exceptional is set when
 * x is zero, below the normal range, not finite or overflows: the caller then uses lp_round. */
LP_HD double lp_round_fast(double x, int32_t mbits, int32_t emin, int32_t rounding, double vmax, int32_t *exceptional) {
    uint64_t b; memcpy(&b, &x, 8);
    const int32_t drop = 52 - mbits;
    const uint64_t mask = ((uint64_t)1 << drop) - 1;
    const int32_t e = (int32_t)((b >> 52) & 0x7FF) - 1023;
    b += rounding == LP_RNE ? (mask >> 1) + ((b >> drop) & 1) : 0;
    b &= ~mask;
    double r; memcpy(&r, &b, 8);
    *exceptional = (e < emin) | !(fabs(r) <= vmax);
    return r;
}

/* lp_round through lp_round_fast where that applies (one call site for scalar code). */
LP_HD double lp_round_any(double x, int32_t mbits, int32_t emin, int32_t rounding, double vmax, int32_t overflow_inf) {
    int32_t exceptional;
    const double r = lp_round_fast(x, mbits, emin, rounding, vmax, &exceptional);
    return exceptional ? lp_round(x, mbits, emin, rounding, vmax, overflow_inf) : r;
}

/* x + y rounded to odd (TwoSum, then the odd neighbour toward the error when the nearest sum is inexact
 * and even; branch-free): rounding the result to <= 51 bits is then correctly rounded. NaN/Inf: IEEE. */
LP_HD double lp_add_round_to_odd(double x, double y) {
    const double s = x + y, bb = s - x;
    const double err = (x - (s - bb)) + (y - bb);
    uint64_t bits; memcpy(&bits, &s, 8);
    const int32_t fix = (err != 0.0) & ((bits & 1) == 0) & (((bits >> 52) & 0x7FF) != 0x7FF);
    bits += fix ? ((err > 0) == (s > 0) ? 1 : (uint64_t)-1) : 0;   /* away from zero, or toward it */
    double r; memcpy(&r, &bits, 8);
    return r;
}

/* Step 1 for the accumulator: (s, e) of a finite value with |s| in [1, 2), e clamped below at emin
 * (then |s| < 1); e = zero_exp and s = 0 for 0. Branch-free. */
LP_HD void lp_split(double v, int32_t emin, int32_t zero_exp, float *s, int32_t *e) {
    uint64_t b; memcpy(&b, &v, 8);
    int32_t k = (int32_t)((b >> 52) & 0x7FF) - 1023;
    k = k < emin ? emin : k;
    *s = (float)(v * lp_pow2(-k));                     /* exact: accumulator values have <= 23 fraction bits */
    *e = v == 0.0 ? zero_exp : k;
}

/* Step 1 for an operand: its exponent e = max(floor(log2|a|), emin) (a zero, NaN or Inf: value 0, exponent
 * zero_exp) and, by `prescaled`, its pre-scaled value a * 2^offset or its significand a * 2^-e (exact). */
LP_HD void lp_operand(float a, int32_t emin, int32_t prescaled, int32_t offset, int32_t zero_exp, float *v,
                      int32_t *e) {
    uint32_t b; memcpy(&b, &a, 4);
    int32_t k = (int32_t)((b >> 23) & 0xFF) - 127;         /* -127 for float32 subnormals: below any emin */
    const int32_t nonzero = a != 0.0f && k != 128;
    k = k > emin ? k : emin;
    *v = !nonzero ? 0.0f : prescaled ? a * lp_pow2f(offset) : (float)((double)a * lp_pow2(-k));
    *e = nonzero ? k : zero_exp;
}

/* The scale of the pre-scaled products of a group with exponent E: 2^(F - E - off), within float32. */
LP_HD float lp_term_scale(int32_t E, const lp_accum_model *m) {
    int32_t x = m->align_bits - E - m->a_offset - m->b_offset;
    return lp_pow2f(x < -126 ? -126 : x > 127 ? 127 : x);
}

/* A term v (exact, or below 1/2 with its sign; |v| < 2^31) rounded to an integer by LP_RTZ, LP_RDOWN or
 * LP_RNE. */
LP_HD int32_t lp_round_term(float v, int32_t rounding) {
    return rounding == LP_RTZ ? (int32_t)v : rounding == LP_RDOWN ? (int32_t)floorf(v) : (int32_t)rintf(v);
}

/* A term s * 2^e (a significand product, or the accumulator's significand) aligned to E, in units of
 * 2^(E - F) before rounding: s * 2^(max(e - E, -60) + F) (-60: a non-zero term stays non-zero, and
 * 2^(F - 60) is normal). */
LP_HD float lp_term_value(float s, int32_t e, int32_t E, int32_t F) {
    int32_t sh = e - E;
    return s * lp_pow2f((sh < -60 ? -60 : sh) + F);
}

/* One K block's fold into the output of a block-scaled GEMM: out + s * partial with s = scale_a * scale_b
 * rounded to float32 (RNE), the product exact in float64 and the sum rounded once (round to odd, then
 * RNE to float32). */
LP_HD float lp_scaled_fold(float out, float scale_a, float scale_b, float partial) {
    const float s = (float)((double)scale_a * (double)scale_b);
    return (float)lp_add_round_to_odd((double)out, (double)s * (double)partial);
}

#endif
