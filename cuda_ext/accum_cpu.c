/* CPU build of the group-aligned accumulator (see lowprec_accum.h), loaded by lowprec/native.py.
 *
 * lp_emulated_matmul computes, for every output element, the model's result of each K block of `k_block`
 * products (0: one block of all K) from a zero accumulator -- or, with one block, from `seed` -- and then
 * either stores it (scale_a NULL: out = the model's c + a @ b) or folds it into the output of a
 * block-scaled GEMM (out = lp_scaled_fold(out, scale_a[m, blk], scale_b[blk, n], partial), where a
 * non-finite ieee[blk, m, n] replaces the partial: step 7 for that block, computed by the caller).
 *
 * Operands: a (M x K) and b (K x N) float32 values of the input formats; seed (M x N double,
 * already rounded to the accumulator format, or the outer seed when promoting; NULL: zero); scale_a
 * (M x nblocks), scale_b (nblocks x N) float32; out (M x N float32). Block-scaled operands (a model with E8M0
 * scales inside the fused step, Blackwell kind::mxf8f6f4): xa (M x ceil(K / xblock)) and xb
 * (ceil(K / xblock) x N) int32, the scale exponents of each xblock elements along K, added to the operands'
 * exponents in step 1 (the model then has prescaled 0); NULL: none.
 *
 * Where the formats' range rules out the fast path (`prescaled` 0: bf16, tf32), the operands' own exponent range
 * may allow it (lp_prescale_for_data: one pass over a and b first).
 *
 * Work: step 1 packs a and b (panels of LP_MR rows of a and LP_NC columns of b, K-major, so that a group of a
 * tile reads contiguous memory); then OpenMP over output tiles of LP_MC rows x LP_NC columns, groups outermost
 * so that a group of b stays in L1 for every row of the tile. Register tiles of LP_MR x LP_W hold E (integer
 * max of the product exponents), the float32 scale 2^(F - E - off) and the int32 sums of the aligned terms:
 * each product costs a multiply, a scaling, a conversion and an integer add on LP_VL lanes. Where a group's
 * terms may not fit int32 (F = 25: fp16, bf16, Blackwell FP8), the int32 sums take sum_chunk products at a time
 * and are added into double sums (exact integers: lowprec_accum.h), one conversion and add per chunk and lane
 * (lp_wide_group, out of line: other models run the plain int32 code). The accumulator's
 * own steps (its split, the rounding of the group's sum, promotion) run on the register tile too, in double
 * vectors; lp_round covers the rare lanes (tiny, overflowing or infinite sums) out of line.
 */
#include <stdlib.h>
#include "lowprec_accum.h"

#if defined(__AVX__)             /* 256-bit vectors (also with AVX-512: the doubles' 512-bit vectors stay native) */
#define LP_VL 8
#else
#define LP_VL 4
#endif
#define LP_MR 4                  /* rows of a register tile */
#define LP_U 2                   /* vectors per row of a register tile */
#define LP_W (LP_VL * LP_U)      /* columns of a register tile */
#define LP_MC 64                 /* rows of an output tile */
#define LP_NC 64                 /* columns of an output tile (a multiple of LP_W): a group of b stays in L1 */
#define LP_TILE (LP_MC * LP_NC)

#define LP_V static inline __attribute__((always_inline))   /* vectors stay in registers */

typedef float lp_vf __attribute__((vector_size(LP_VL * 4)));
typedef int32_t lp_vi __attribute__((vector_size(LP_VL * 4)));
typedef uint32_t lp_vu __attribute__((vector_size(LP_VL * 4)));   /* int32 sums, added with defined wrap-around */
typedef double lp_vd __attribute__((vector_size(LP_VL * 8)));
typedef int64_t lp_vl __attribute__((vector_size(LP_VL * 8)));

typedef struct {                 /* one thread's output tile (LP_MC x LP_NC), rows LP_NC apart */
    double acc[LP_TILE], outer[LP_TILE];
} lp_tile;

LP_V lp_vf lp_ldf(const float *p) { lp_vf v; memcpy(&v, p, sizeof v); return v; }
LP_V lp_vi lp_ldi(const int32_t *p) { lp_vi v; memcpy(&v, p, sizeof v); return v; }
LP_V lp_vd lp_ldd(const double *p) { lp_vd v; memcpy(&v, p, sizeof v); return v; }
LP_V void lp_std(double *p, lp_vd v) { memcpy(p, &v, sizeof v); }
LP_V lp_vi lp_vmax(lp_vi a, lp_vi b) { const lp_vi gt = a > b; return (a & gt) | (b & ~gt); }
LP_V lp_vi lp_vmin(lp_vi a, lp_vi b) { const lp_vi lt = a < b; return (a & lt) | (b & ~lt); }
LP_V lp_vl lp_vmaxl(lp_vl a, lp_vl b) { const lp_vl gt = a > b; return (a & gt) | (b & ~gt); }
LP_V lp_vf lp_vpow2f(lp_vi k) { return (lp_vf)((k + 127) << 23); }     /* k in [-126, 127] */
LP_V lp_vd lp_vpow2(lp_vi k) {                                          /* k in [-1022, 1023] */
    return (lp_vd)(__builtin_convertvector(k + 1023, lp_vl) << 52);
}
LP_V lp_vl lp_vexp(lp_vd v) { return (((lp_vl)v >> 52) & 0x7FF) - 1023; }   /* biased field - 1023 */

/* lp_round_term on LP_VL lanes (|v| < 2^31): truncation, then floor and nearest-even corrections from the
 * exact remainder v - trunc(v). */
LP_V lp_vi lp_vround(lp_vf v, const int32_t rounding) {
    const lp_vi t = __builtin_convertvector(v, lp_vi);
    if (rounding == LP_RTZ) return t;
    const lp_vf tf = __builtin_convertvector(t, lp_vf);
    if (rounding == LP_RDOWN) return t + (tf > v);                     /* -1 where truncation went up */
    const lp_vf frac = v - tf;                                         /* exact, in (-1, 1) */
    const lp_vi odd = (t & 1) != 0;
    const lp_vf half = (lp_vf){0} + 0.5f;
    return t - ((frac > half) | ((frac == half) & odd)) + ((frac < -half) | ((frac == -half) & odd));
}

/* lp_add_round_to_odd on LP_VL lanes. */
LP_V lp_vd lp_vadd_odd(lp_vd x, lp_vd y) {
    const lp_vd s = x + y, bb = s - x;
    const lp_vd err = (x - (s - bb)) + (y - bb);
    const lp_vl bits = (lp_vl)s, zero = (lp_vl){0};
    const lp_vl fix = (err != 0.0) & ((bits & 1) == 0) & (((bits >> 52) & 0x7FF) != 0x7FF);
    const lp_vl away = ~((err > 0.0) ^ (s > 0.0));                       /* -1: the odd neighbour is away from 0 */
    return (lp_vd)(bits + (fix & ((away & 1) | (~away & (zero - 1)))));
}

/* The lanes of lp_vround_fmt that lp_round_fast does not cover, by lp_round (out of line: rare). */
static __attribute__((noinline)) lp_vd lp_round_lanes(lp_vd r, lp_vd x, lp_vl exceptional, int32_t mbits, int32_t emin,
                                                      int32_t rounding, double vmax, int32_t overflow_inf) {
    for (int i = 0; i < LP_VL; i++)
        if (exceptional[i]) r[i] = lp_round(x[i], mbits, emin, rounding, vmax, overflow_inf);
    return r;
}

/* lp_round_fast on LP_VL lanes, zeros to +0; *exceptional marks the lanes it does not cover (tiny,
 * overflowing or not finite), for lp_round_lanes. */
LP_V lp_vd lp_vround_fast(lp_vd x, int32_t mbits, int32_t emin, int32_t rounding, double vmax, lp_vl *exceptional) {
    const int64_t mask = ((int64_t)1 << (52 - mbits)) - 1;
    lp_vl b = (lp_vl)x;
    if (rounding == LP_RNE) b += (mask >> 1) + ((b >> (52 - mbits)) & 1);
    b &= ~mask;
    const lp_vl zero = x == 0.0;
    *exceptional = ~zero & ((lp_vexp(x) < emin) | ~((lp_vd)(b & INT64_MAX) <= vmax));
    return (lp_vd)(b & ~zero);
}

LP_V int lp_vany(lp_vl v) { const lp_vl none = {0}; return memcmp(&v, &none, sizeof none) != 0; }

/* lp_round on LP_VL lanes. */
LP_V lp_vd lp_vround_fmt(lp_vd x, int32_t mbits, int32_t emin, int32_t rounding, double vmax, int32_t overflow_inf) {
    lp_vl exceptional;
    const lp_vd r = lp_vround_fast(x, mbits, emin, rounding, vmax, &exceptional);
    return lp_vany(exceptional) ? lp_round_lanes(r, x, exceptional, mbits, emin, rounding, vmax, overflow_inf) : r;
}

/* Step 5 on LP_VL lanes: outer = outer + acc (rounded to odd, then to the outer format), acc = 0. */
LP_V void lp_vpromote(double *outer, double *acc, const lp_accum_model *m) {
    lp_std(outer, lp_vround_fmt(lp_vadd_odd(lp_ldd(outer), lp_ldd(acc)), m->outer_mbits, m->outer_emin,
                                m->outer_rounding, m->outer_max, 0));
    lp_std(acc, (lp_vd){0});
}

/* lp_split on LP_VL lanes of the accumulator; an Inf accumulator (step 6: kept, its group computed with 0
 * in its place) splits as 0. */
LP_V void lp_vsplit(lp_vd v, const lp_accum_model *m, lp_vf *s, lp_vi *e) {
    const lp_vl zero = (v == 0.0) | (lp_vexp(v) == 1024);
    const lp_vl k = lp_vmaxl(lp_vexp(v), (lp_vl){0} + m->acc_emin) & ~zero;      /* <= 127 where used */
    const lp_vd sv = v * (lp_vd)((1023 - k) << 52);
    *s = __builtin_convertvector((lp_vd)((lp_vl)sv & ~zero), lp_vf);  /* exact: <= 23 fraction bits */
    *e = __builtin_convertvector(k | (zero & m->zero_exp), lp_vi);
}

/* One group of g products for the register tile whose accumulators are acc[r * LP_NC + j] (j < LP_W):
 * steps 2-4 and 6, in registers. A/EA: the group's packed a (A[k * LP_MR + r]); B/EB: its packed b
 * (B[k * LP_NC + j]). `wide` (m->sum_chunk > 0): the group's terms may overflow int32, so double sums start from
 * the accumulator's term and take the int32 sums of m->sum_chunk products at a time; otherwise one int32 sum holds
 * the group. */
LP_V void lp_register_group(const float *A, const int32_t *EA, const float *B, const int32_t *EB, int64_t g,
                            double *acc, const lp_accum_model *m, const int32_t rounding, const int32_t prescaled,
                            const int32_t wide) {
    lp_vi E[LP_MR][LP_U], e_acc[LP_MR][LP_U];
    lp_vu units[LP_MR][LP_U];
    lp_vd wsum[LP_MR][LP_U];
    lp_vf scale[LP_MR][LP_U], s_acc[LP_MR][LP_U];
    const lp_vi zero = (lp_vi){0};
    for (int r = 0; r < LP_MR; r++)
        for (int u = 0; u < LP_U; u++) {
            E[r][u] = zero + m->e_floor;
            if (m->align_with_acc) {
                lp_vsplit(lp_ldd(acc + r * LP_NC + u * LP_VL), m, &s_acc[r][u], &e_acc[r][u]);
                E[r][u] = lp_vmax(E[r][u], e_acc[r][u]);
            }
        }
    for (int64_t k = 0; k < g; k++) {                                  /* step 2: E */
        lp_vi eb[LP_U];
        for (int u = 0; u < LP_U; u++) eb[u] = lp_ldi(EB + k * LP_NC + u * LP_VL);
        for (int r = 0; r < LP_MR; r++) {
            const int32_t ea = EA[k * LP_MR + r];
            for (int u = 0; u < LP_U; u++) E[r][u] = lp_vmax(E[r][u], eb[u] + ea);
        }
    }
    for (int r = 0; r < LP_MR; r++)
        for (int u = 0; u < LP_U; u++) {
            const lp_vi x = m->align_bits - m->a_offset - m->b_offset - E[r][u];       /* lp_term_scale */
            scale[r][u] = lp_vpow2f(lp_vmin(lp_vmax(x, zero - 126), zero + 127));
            units[r][u] = (lp_vu){0};
            if (wide) wsum[r][u] = (lp_vd){0};
            if (m->align_with_acc) {                                   /* lp_term_value */
                const lp_vi sh = lp_vmax(e_acc[r][u] - E[r][u], zero - 60) + m->align_bits;
                const lp_vi t = lp_vround(s_acc[r][u] * lp_vpow2f(sh), rounding);
                if (wide) wsum[r][u] = __builtin_convertvector(t, lp_vd);
                else units[r][u] = (lp_vu)t;
            }
        }
#define LP_TERMS(K0, K1)                                       /* step 3: the aligned terms of products [K0, K1) */ \
    for (int64_t k = (K0); k < (K1); k++) {                                                                      \
        lp_vf b[LP_U];                                                                                           \
        for (int u = 0; u < LP_U; u++) b[u] = lp_ldf(B + k * LP_NC + u * LP_VL);                                 \
        if (prescaled)                                                                                           \
            for (int r = 0; r < LP_MR; r++) {                                                                    \
                const float a = A[k * LP_MR + r];                                                                \
                for (int u = 0; u < LP_U; u++) units[r][u] += (lp_vu)lp_vround(b[u] * a * scale[r][u], rounding); \
            }                                                                                                    \
        else {                                                 /* lp_term_value per product */                   \
            lp_vi eb[LP_U];                                                                                      \
            for (int u = 0; u < LP_U; u++) eb[u] = lp_ldi(EB + k * LP_NC + u * LP_VL);                           \
            for (int r = 0; r < LP_MR; r++) {                                                                    \
                const float a = A[k * LP_MR + r];                                                                \
                const int32_t ea = EA[k * LP_MR + r];                                                            \
                for (int u = 0; u < LP_U; u++) {                                                                 \
                    const lp_vi sh = lp_vmax(eb[u] + ea - E[r][u], zero - 60) + m->align_bits;                   \
                    units[r][u] += (lp_vu)lp_vround(b[u] * a * lp_vpow2f(sh), rounding);                         \
                }                                                                                                \
            }                                                                                                    \
        }                                                                                                        \
    }
    if (!wide)
        LP_TERMS(0, g)
    else                                                       /* chunks of sum_chunk products */
        for (int64_t k0 = 0; k0 < g;) {
            const int64_t k1 = g - k0 <= m->sum_chunk ? g : k0 + m->sum_chunk;
            LP_TERMS(k0, k1)
            if (k1 < g)                                        /* into the double sums (exact: < 2^51) */
                for (int r = 0; r < LP_MR; r++)
                    for (int u = 0; u < LP_U; u++) {
                        wsum[r][u] += __builtin_convertvector((lp_vi)units[r][u], lp_vd);
                        units[r][u] = (lp_vu){0};
                    }
            k0 = k1;
        }
#undef LP_TERMS
    lp_vd total[LP_MR][LP_U], rounded[LP_MR][LP_U];
    lp_vl exceptional[LP_MR][LP_U], any = {0};
    for (int r = 0; r < LP_MR; r++)                                    /* step 4 */
        for (int u = 0; u < LP_U; u++) {
            const lp_vd prev = lp_ldd(acc + r * LP_NC + u * LP_VL);
            const lp_vl inf = lp_vexp(prev) == 1024;                   /* NaN never occurs: Inf */
            lp_vd whole = __builtin_convertvector((lp_vi)units[r][u], lp_vd);   /* exact integers < 2^51 */
            if (wide) whole += wsum[r][u];
            const lp_vd sum = whole * lp_vpow2(E[r][u] - m->align_bits);
            const lp_vd t = m->align_with_acc ? sum : lp_vadd_odd((lp_vd)((lp_vl)prev & ~inf), sum);
            total[r][u] = (lp_vd)(((lp_vl)prev & inf) | ((lp_vl)t & ~inf));   /* Inf rounds to itself */
            rounded[r][u] = lp_vround_fast(total[r][u], m->acc_mbits, m->acc_emin, m->acc_rounding, m->acc_max,
                                           &exceptional[r][u]);
            any |= exceptional[r][u];
        }
    for (int r = 0; r < LP_MR; r++)                                    /* one test for the register tile */
        for (int u = 0; u < LP_U; u++) {
            if (lp_vany(any))
                rounded[r][u] = lp_round_lanes(rounded[r][u], total[r][u], exceptional[r][u], m->acc_mbits,
                                               m->acc_emin, m->acc_rounding, m->acc_max, m->acc_overflow_inf);
            lp_std(acc + r * LP_NC + u * LP_VL, rounded[r][u]);
        }
}

/* One specialisation of lp_register_group per rounding and `prescaled`, for the flag WIDE. */
#define LP_GROUP(ROUNDING, PRESCALED, WIDE) lp_register_group(a, ea, b, eb, g, acc, m, ROUNDING, PRESCALED, WIDE)
#define LP_GROUPS(WIDE)                                                                                   \
    if (m->prescaled) {                                                                                   \
        if (m->align_rounding == LP_RTZ) LP_GROUP(LP_RTZ, 1, WIDE);                                       \
        else if (m->align_rounding == LP_RDOWN) LP_GROUP(LP_RDOWN, 1, WIDE);                              \
        else LP_GROUP(LP_RNE, 1, WIDE);                                                                   \
    } else {                                                                                              \
        if (m->align_rounding == LP_RTZ) LP_GROUP(LP_RTZ, 0, WIDE);                                       \
        else if (m->align_rounding == LP_RDOWN) LP_GROUP(LP_RDOWN, 0, WIDE);                              \
        else LP_GROUP(LP_RNE, 0, WIDE);                                                                   \
    }

/* lp_register_group for groups whose terms may overflow int32 (out of line: the int32 path's code stays as it
 * was without it). */
static __attribute__((noinline)) void lp_wide_group(const float *a, const int32_t *ea, const float *b,
                                                    const int32_t *eb, int64_t g, double *acc, const lp_accum_model *m) {
    LP_GROUPS(1)
}

/* Steps 2-6 over products [k0, k1) of the first `rows` rows of the tile (A/EA: packed a from the tile's first
 * row; B/EB: packed b of the tile's columns), continuing the accumulators in t->acc / t->outer; then, when the
 * model promotes, the last promotion (the block's result is t->outer, else t->acc). */
static void lp_tile_block(const float *A, const int32_t *EA, const float *B, const int32_t *EB, int64_t K,
                          int64_t k0, int64_t k1, int64_t rows, lp_tile *t, const lp_accum_model *m) {
    const int64_t n = rows * LP_NC;                                    /* the tile's elements in use */
    const int32_t wide = m->sum_chunk > 0;                             /* lowprec_accum.h */
    for (int64_t g0 = k0; g0 < k1; g0 += m->group) {
        const int64_t g = g0 + m->group < k1 ? m->group : k1 - g0;
        if (m->promote_every && g0 > k0 && (g0 - k0) % m->promote_every == 0)
            for (int64_t i = 0; i < n; i += LP_VL) lp_vpromote(t->outer + i, t->acc + i, m);
        for (int64_t r0 = 0; r0 < rows; r0 += LP_MR) {
            const int64_t pa = (r0 / LP_MR * K + g0) * LP_MR;
            for (int64_t c = 0; c < LP_NC; c += LP_W) {
                const int64_t pb = g0 * LP_NC + c;
                double *acc = t->acc + r0 * LP_NC + c;
                const float *a = A + pa, *b = B + pb;
                const int32_t *ea = EA + pa, *eb = EB + pb;
                if (wide) {
                    lp_wide_group(a, ea, b, eb, g, acc, m);
                    continue;
                }
                LP_GROUPS(0)
            }
        }
    }
    if (m->promote_every)
        for (int64_t i = 0; i < n; i += LP_VL) lp_vpromote(t->outer + i, t->acc + i, m);
}
#undef LP_GROUPS
#undef LP_GROUP

/* The smallest and largest exponent max(floor(log2|x|), emin) of the finite non-zero x[i] (lo > hi: none). */
static void lp_exponent_range(const float *x, int64_t n, int32_t emin, int32_t *lo, int32_t *hi) {
    int32_t l = INT32_MAX, h = INT32_MIN;
    #pragma omp parallel for reduction(min:l) reduction(max:h) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, x + i, 4);
        const int32_t field = (int32_t)((bits >> 23) & 0xFF);
        const int32_t e = field - 127 > emin ? field - 127 : emin;   /* float32 subnormals: below any emin */
        const int32_t use = (bits & 0x7FFFFFFFu) != 0 && field != 255;
        l = use && e < l ? e : l;
        h = use && e > h ? e : h;
    }
    *lo = l;
    *hi = h;
}

/* The fast path for this call's operands where the formats' range does not allow it for every value (bf16,
 * tf32, E8M0; lowprec_accum.h, `prescaled`): with lo_a the smallest exponent (clamped at emin_a) of a's non-zero
 * values and hi_a the largest, off_a = mbits_a - lo_a makes every a' = a * 2^off_a an integer-valued float32,
 * >= 1 when non-zero and below 2^(hi_a - lo_a + mbits_a + 1): the header's argument holds with lo_a in place of
 * emin_a wherever the two bounds multiply to at most 2^125 (and 2^off fits float32). Same bits either way. */
static void lp_prescale_for_data(const float *a, const float *b, int64_t M, int64_t K, int64_t N,
                                 lp_accum_model *m) {
    int32_t span = 0, off[2];
    const float *x[2] = {a, b};
    const int64_t n[2] = {M * K, K * N};
    const int32_t emin[2] = {m->a_emin, m->b_emin}, mbits[2] = {m->a_offset + m->a_emin, m->b_offset + m->b_emin};
    for (int i = 0; i < 2; i++) {
        int32_t lo, hi;
        lp_exponent_range(x[i], n[i], emin[i], &lo, &hi);
        if (lo > hi) { off[i] = 0; continue; }                       /* only zeros: every a' is 0 */
        off[i] = mbits[i] - lo;
        span += hi - lo + mbits[i] + 1;
        if (off[i] < -126 || off[i] > 127) return;
    }
    if (span > 125) return;
    m->prescaled = 1;
    m->a_offset = off[0];
    m->b_offset = off[1];
}

void lp_emulated_matmul(const float *a, const float *b, const double *seed, int64_t M, int64_t K, int64_t N,
                        const lp_accum_model *model, int64_t k_block, const float *scale_a, const float *scale_b,
                        const float *ieee, const int32_t *xa, const int32_t *xb, int64_t xblock, float *out) {
    lp_accum_model m = *model;
    if (!m.prescaled && !xa) lp_prescale_for_data(a, b, M, K, N, &m);
    const int64_t nx = xa ? (K + xblock - 1) / xblock : 0;          /* scale blocks along K */
    /* Step 1 into packed operands (lp_operand), padded with zeros whose exponents take no part (the padding
     * is never stored):
     * a in panels of LP_MR rows, Ap[(p * K + k) * LP_MR + r]; b in panels of LP_NC columns,
     * Bp[(q * K + k) * LP_NC + j]: a group of a tile reads contiguous memory (no cache-set conflicts). */
    const int64_t Mp = (M + LP_MR - 1) / LP_MR * LP_MR, Np = (N + LP_NC - 1) / LP_NC * LP_NC;
    float *Ap = malloc(sizeof(float) * (Mp * K + 1)), *Bp = malloc(sizeof(float) * (Np * K + 1));
    int32_t *EAp = malloc(sizeof(int32_t) * (Mp * K + 1)), *EBp = malloc(sizeof(int32_t) * (Np * K + 1));
    #pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < K; k++) {
        for (int64_t i = 0; i < Mp; i++) {
            const int64_t o = (i / LP_MR * K + k) * LP_MR + i % LP_MR;
            Ap[o] = 0.0f;
            EAp[o] = LP_NO_EXP;
            if (i < M) lp_operand(a[i * K + k], m.a_emin, m.prescaled, m.a_offset, m.zero_exp, &Ap[o], &EAp[o]);
        }
        for (int64_t j = 0; j < Np; j++) {
            const int64_t o = (j / LP_NC * K + k) * LP_NC + j % LP_NC;
            Bp[o] = 0.0f;
            EBp[o] = LP_NO_EXP;
            if (j < N) lp_operand(b[k * N + j], m.b_emin, m.prescaled, m.b_offset, m.zero_exp, &Bp[o], &EBp[o]);
        }
    }
    if (xa) {                                                          /* the scale exponents join step 1 */
        #pragma omp parallel for schedule(static)
        for (int64_t k = 0; k < K; k++) {
            for (int64_t i = 0; i < M; i++) EAp[(i / LP_MR * K + k) * LP_MR + i % LP_MR] += xa[i * nx + k / xblock];
            for (int64_t j = 0; j < N; j++) EBp[(j / LP_NC * K + k) * LP_NC + j % LP_NC] += xb[k / xblock * N + j];
        }
    }
    const int64_t kb = k_block > 0 ? k_block : (K > 0 ? K : 1);
    const int64_t nblocks = k_block > 0 ? (K + kb - 1) / kb : 1;
    const int64_t tiles_m = (M + LP_MC - 1) / LP_MC, tiles_n = Np / LP_NC;
    #pragma omp parallel
    {
        lp_tile *t = malloc(sizeof(lp_tile));
        #pragma omp for schedule(dynamic)
        for (int64_t tile = 0; tile < tiles_m * tiles_n; tile++) {
            const int64_t m0 = tile / tiles_n * LP_MC, n0 = tile % tiles_n * LP_NC;
            const int64_t valid = M - m0 < LP_MC ? M - m0 : LP_MC;
            const int64_t rows = (valid + LP_MR - 1) / LP_MR * LP_MR;  /* whole register tiles */
            const int64_t pa = m0 * K, pb = n0 * K;                  /* the tile's panels */
            for (int64_t blk = 0; blk < nblocks; blk++) {
                const int64_t k0 = blk * kb, k1 = k0 + kb < K ? k0 + kb : K;
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t c = 0; c < LP_NC; c++) {
                        const int64_t i = r * LP_NC + c;
                        const double s = seed && r < valid && n0 + c < N ? seed[(m0 + r) * N + n0 + c] : 0.0;
                        t->acc[i] = m.promote_every ? 0.0 : s;
                        t->outer[i] = m.promote_every ? s : 0.0;
                    }
                lp_tile_block(Ap + pa, EAp + pa, Bp + pb, EBp + pb, K, k0, k1, rows, t, &m);
                const double *res = m.promote_every ? t->outer : t->acc;
                for (int64_t r = 0; r < valid; r++)
                    for (int64_t c = 0; c < LP_NC && n0 + c < N; c++) {
                        const int64_t row = m0 + r, col = n0 + c, o = row * N + col;
                        const float partial = (float)res[r * LP_NC + c];   /* exact: <= 23 fraction bits */
                        if (!scale_a) { out[o] = partial; continue; }
                        const float p = ieee && !isfinite(ieee[blk * M * N + o]) ? ieee[blk * M * N + o] : partial;
                        out[o] = lp_scaled_fold(blk ? out[o] : 0.0f, scale_a[row * nblocks + blk],
                                                scale_b[blk * N + col], p);
                    }
            }
        }
        free(t);
    }
    free(Ap);
    free(EAp);
    free(Bp);
    free(EBp);
}

/* The model's seed + a @ b (out: M x N float32; seed NULL: zero) by the header's scalar lp_dot_block, one output
 * element at a time: the code each thread of the CUDA kernel (accum_cuda.cu) runs, built here so that tests check
 * its bits on machines without a GPU. Not a fast path. */
void lp_emulated_matmul_scalar(const float *a, const float *b, const double *seed, int64_t M, int64_t K, int64_t N,
                               const lp_accum_model *model, const int32_t *xa, const int32_t *xb, int64_t xblock,
                               float *out) {
    const int64_t nx = xa ? (K + xblock - 1) / xblock : 0;
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < M * N; i++) {
        const int64_t row = i / N, col = i % N;
        out[i] = (float)lp_dot_block(a + row * K, 1, b + col, N, 0, K, seed ? seed[i] : 0.0, model,
                                     xa ? xa + row * nx : NULL, xb ? xb + col : NULL, N, xblock);   /* exact */
    }
}
