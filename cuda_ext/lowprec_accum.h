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
 * Step 3's sum (exact): a product's term is an integer of magnitude at most T = ceil(smax_a * smax_b * 2^F)
 * (smax = 2 - 2^-mbits, the largest significand; T < 2^(F + 2)), the accumulator's at most 2^(F + 1). When G
 * product terms and the accumulator's fit int32 (G * T + 2^(F + 1) < 2^31: FP8 at F = 13, the Ampere presets,
 * E4M3 in groups of 16 at F = 25) `sum_chunk` is 0 and one int32 sum holds the group. Otherwise `sum_chunk` =
 * floor((2^31 - 1) / T) products are summed in int32 at a time and each chunk's sum is added into a wide sum (a
 * double on the CPU, an int64 on CUDA) that starts from the accumulator's term: exact, as a group's G + 1 terms
 * stay below 2^(F + 2 + ceil(log2(G + 1))) <= 2^51 (accum.AccumulatorModel's bound). The int32 sums are added
 * with wrap-around, which never happens (no undefined behaviour either way). lowprec.accum.native_unsupported
 * admits only models whose significand products fit 24 bits and with F <= 28 (one term fits int32: sum_chunk
 * >= 1; lowprec.accum._native_model_args computes it), and takes the fast path where a' * b' < 2^125 for
 * every value of the formats; where not (bf16, tf32), the CPU kernel takes it for a call whose operands' own
 * exponents span little enough, with lo_a, their smallest exponent, in place of emin_a (accum_cpu.c,
 * lp_prescale_for_data).
 * lp_dot_block is the scalar form of steps 2-6 for one output element: the CUDA kernel's per-thread code, and
 * (exported by accum_cpu.c as lp_emulated_matmul_scalar) checked on the CPU against the torch path.
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
    int32_t a_offset, b_offset;                   /* off_a = mbits_a - emin_a, off_b (or - lo_a: accum_cpu.c) */
    int32_t acc_mbits, acc_emin, acc_rounding;   /* accumulator format; rounding LP_RTZ or LP_RNE */
    int32_t acc_overflow_inf;                     /* 1: results >= 2^(emax+1) are Inf even under rtz */
    int32_t promote_every;   /* 0: no promotion */
    int32_t outer_mbits, outer_emin, outer_rounding;
    int32_t sum_chunk;       /* products per int32 sum before a wide add, floor((2^31 - 1) / T); 0: one int32 sum */
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

/* A term v (exact, or below 1/2 with its sign; |v| <= 2^(F + 2) <= 2^30) rounded to an integer by LP_RTZ, LP_RDOWN or
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

/* Steps 2-6 of one output element over products [k0, k1) of a row of a (a[k * sa]) and a column of b
 * (b[k * sb]), from the seed s (the accumulator's; the outer accumulator's when the model promotes): the
 * block's result, a value of the accumulator (or outer) format. Scalar: one thread of the CUDA kernel.
 * Block-scaled operands (xa non-NULL; then m->prescaled is 0): element k of the row has the E8M0 scale exponent
 * xa[k / xblock] and of the column xb[(k / xblock) * xsb], added to its exponent in step 1. */
LP_HD double lp_dot_block(const float *a, int64_t sa, const float *b, int64_t sb, int64_t k0, int64_t k1, double s,
                          const lp_accum_model *m, const int32_t *xa, const int32_t *xb, int64_t xsb,
                          int64_t xblock) {
    double acc = m->promote_every ? 0.0 : s, outer = m->promote_every ? s : 0.0;
    for (int64_t g0 = k0; g0 < k1; g0 += m->group) {
        const int64_t g1 = g0 + m->group < k1 ? g0 + m->group : k1;
        if (m->promote_every && g0 > k0 && (g0 - k0) % m->promote_every == 0) {
            outer = lp_round_any(lp_add_round_to_odd(outer, acc), m->outer_mbits, m->outer_emin, m->outer_rounding,
                                 m->outer_max, 0);
            acc = 0.0;
        }
        const int32_t inf = isinf(acc) ? 1 : 0;            /* step 6: an Inf accumulator stays Inf */
        float s_acc;
        int32_t e_acc;
        lp_split(inf ? 0.0 : acc, m->acc_emin, m->zero_exp, &s_acc, &e_acc);
        int32_t E = m->align_with_acc && e_acc > m->e_floor ? e_acc : m->e_floor;
        float va, vb;
        int32_t ea, eb;
        for (int64_t k = g0; k < g1; k++) {                /* step 2 */
            lp_operand(a[k * sa], m->a_emin, m->prescaled, m->a_offset, m->zero_exp, &va, &ea);
            lp_operand(b[k * sb], m->b_emin, m->prescaled, m->b_offset, m->zero_exp, &vb, &eb);
            if (xa) { ea += xa[k / xblock]; eb += xb[k / xblock * xsb]; }
            E = ea + eb > E ? ea + eb : E;
        }
        const float scale = lp_term_scale(E, m);
        /* step 3: `part` sums the whole group, or (sum_chunk > 0) at most sum_chunk products and `units` the
         * accumulator's term and the full chunks (uint32: wrap-around is defined, and never happens) */
        const int32_t t_acc = m->align_with_acc
            ? lp_round_term(lp_term_value(s_acc, e_acc, E, m->align_bits), m->align_rounding) : 0;
        uint32_t part = m->sum_chunk ? 0u : (uint32_t)t_acc;
        int64_t units = m->sum_chunk ? t_acc : 0;
        int32_t room = m->sum_chunk;
        for (int64_t k = g0; k < g1; k++) {
            if (m->sum_chunk && room == 0) {               /* the chunk is full: into the wide sum */
                units += (int32_t)part;
                part = 0u;
                room = m->sum_chunk;
            }
            lp_operand(a[k * sa], m->a_emin, m->prescaled, m->a_offset, m->zero_exp, &va, &ea);
            lp_operand(b[k * sb], m->b_emin, m->prescaled, m->b_offset, m->zero_exp, &vb, &eb);
            if (xa) { ea += xa[k / xblock]; eb += xb[k / xblock * xsb]; }
            part += (uint32_t)lp_round_term(m->prescaled ? va * vb * scale
                                                         : lp_term_value(va * vb, ea + eb, E, m->align_bits),
                                            m->align_rounding);
            room--;
        }
        units += (int32_t)part;
        const double sum = (double)units * lp_pow2(E - m->align_bits);      /* step 4: exact (|units| < 2^51) */
        const double total = m->align_with_acc ? sum : lp_add_round_to_odd(inf ? 0.0 : acc, sum);
        if (!inf) acc = lp_round_any(total, m->acc_mbits, m->acc_emin, m->acc_rounding, m->acc_max,
                                     m->acc_overflow_inf);
    }
    return m->promote_every ? lp_round_any(lp_add_round_to_odd(outer, acc), m->outer_mbits, m->outer_emin,
                                           m->outer_rounding, m->outer_max, 0)
                            : acc;
}

#endif
