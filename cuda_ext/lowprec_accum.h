/* lowprec: the group-aligned accumulator model (lowprec/accum.py, steps 2-6; the caller does step 1's
 * decomposition of the operands, and steps 7-8, NaN/Inf inputs and NaN bits), shared by the CPU build
 * (accum_cpu.c, loaded through ctypes) and CUDA kernels. It must compute the same bits as the Python
 * reference; tests/test_accum*.py check that on every build.
 *
 * Narrow path only: inputs are <= 8-bit formats, so significand products are exact in float32, and
 * aligned terms are integers < 2^(align_bits + 2) whose group sum fits 24 bits (lowprec.accum._narrow_ok).
 * IEEE semantics are required: build without -ffast-math and with -ffp-contract=off.
 */
#ifndef LOWPREC_ACCUM_H
#define LOWPREC_ACCUM_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define LP_HD __host__ __device__ __forceinline__
#else
#define LP_HD static inline
#endif

#define LP_NO_EXP (-(1 << 20))   /* exponent of "no term": far below e_floor, its shifts clamp to -60 */

typedef struct {
    int32_t group;           /* products per group */
    int32_t align_bits;      /* fraction bits kept after alignment */
    int32_t align_rounding;  /* 0 toward zero, 1 toward -inf, 2 nearest even */
    int32_t align_with_acc;  /* the accumulator takes part in the alignment */
    int32_t zero_exp;        /* exponent of a zero accumulator term; LP_NO_EXP: zeros take no part */
    int32_t e_floor;         /* E never goes below it (the smallest exponent of any term): 2^(E - F) is normal */
    int32_t acc_mbits, acc_emin, acc_rounding;   /* accumulator format; rounding 0 rtz, 1 rne */
    int32_t acc_overflow_inf;                     /* 1: results >= 2^(emax+1) are Inf even under rtz */
    double acc_max;
    int32_t promote_every;   /* 0: no promotion */
    int32_t outer_mbits, outer_emin, outer_rounding;
    double outer_max;
} lp_accum_model;

/* 2^k as a float32 (k in [-126, 127]) or double (k in [-1022, 1023]), from the bits: callers keep k there. */
LP_HD float lp_pow2f(int32_t k) { uint32_t b = (uint32_t)(k + 127) << 23; float f; memcpy(&f, &b, 4); return f; }
LP_HD double lp_pow2(int32_t k) { uint64_t b = (uint64_t)(k + 1023) << 52; double d; memcpy(&d, &b, 8); return d; }

/* Round an exact double (|x| < 2^1000) to a binary format with `mbits` fraction bits, smallest normal
 * exponent `emin` (subnormals below it), largest finite `vmax`; rounding 0 = toward zero, 1 = nearest
 * even. Overflow: nearest gives Inf; toward zero gives Inf when `overflow_inf` (the value's exponent
 * exceeds the format's), else saturates at vmax (IEEE). A zero result is +0. */
LP_HD double lp_round(double x, int32_t mbits, int32_t emin, int32_t rounding, double vmax, int32_t overflow_inf) {
    if (x == 0.0 || isnan(x) || isinf(x)) return x == 0.0 ? 0.0 : x;
    double ax = fabs(x);
    int32_t e = ilogb(ax);
    int32_t q = (e > emin ? e : emin) - mbits;
    double r = ax * lp_pow2(-q);                       /* exact: a power-of-two scaling */
    r = rounding == 0 ? trunc(r) : nearbyint(r);       /* default FE_TONEAREST: ties to even */
    double v = r * lp_pow2(q);
    if (v > vmax) v = rounding == 0 && !overflow_inf ? vmax : HUGE_VAL;   /* rtz: v > vmax iff e > emax */
    return v == 0.0 ? 0.0 : x < 0 ? -v : v;
}

/* The common case of lp_round, branch-free so that loops vectorise: |x| >= 2^emin and no overflow.
 * Drops the low (52 - mbits) fraction bits of the double: toward zero, or nearest-even by adding half
 * an ulp minus one plus the kept lsb (a carry correctly bumps the exponent). *exceptional is set when
 * x is zero, below the normal range or overflows: the caller then uses lp_round. */
LP_HD double lp_round_fast(double x, int32_t mbits, int32_t emin, int32_t rounding, double vmax, int32_t *exceptional) {
    uint64_t b; memcpy(&b, &x, 8);
    const int32_t drop = 52 - mbits;
    const uint64_t mask = ((uint64_t)1 << drop) - 1;
    const int32_t e = (int32_t)((b >> 52) & 0x7FF) - 1023;
    b += rounding ? (mask >> 1) + ((b >> drop) & 1) : 0;
    b &= ~mask;
    double r; memcpy(&r, &b, 8);
    *exceptional = (e < emin) | (fabs(r) > vmax);
    return r;
}

/* x + y rounded to odd (TwoSum): rounding the result to <= 51 bits is then correctly rounded. */
LP_HD double lp_add_round_to_odd(double x, double y) {
    double s = x + y, bb = s - x;
    double err = (x - (s - bb)) + (y - bb);
    uint64_t bits; memcpy(&bits, &s, 8);
    if (err != 0.0 && (bits & 1) == 0 && isfinite(s)) s = nextafter(s, err > 0 ? HUGE_VAL : -HUGE_VAL);
    return s;
}

/* (s, e) of a finite accumulator value: |s| in [1, 2), e clamped below at emin; e = zero_exp for 0. */
LP_HD void lp_split(double v, int32_t emin, int32_t zero_exp, double *s, int32_t *e) {
    if (v == 0.0) { *s = 0.0; *e = zero_exp; return; }
    int32_t k = ilogb(fabs(v));
    if (k < emin) k = emin;
    *e = k;
    *s = v * lp_pow2(-k);
}

/* trunc/floor of |v| < 2^31 through an int32 conversion (which vectorises where truncf does not);
 * aligned terms are below 2^(align_bits + 2) <= 2^24 on the narrow path. */
LP_HD float lp_trunc_small(float v) { return (float)(int32_t)v; }
LP_HD float lp_floor_small(float v) { float t = (float)(int32_t)v; return t > v ? t - 1.0f : t; }

LP_HD float lp_align(float s, int32_t shift, const lp_accum_model *m) {
    if (shift < -60) shift = -60;                       /* a non-zero term stays non-zero */
    float v = s * lp_pow2f(shift + m->align_bits);
    return m->align_rounding == 0 ? lp_trunc_small(v) : m->align_rounding == 1 ? lp_floor_small(v) : nearbyintf(v);
}

#endif
