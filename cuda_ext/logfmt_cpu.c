/* CPU build of the LogFMT-n codec (lowprec/logfmt.py: its module doc is the contract), transcribed step for
 * step from the torch reference so that it gives the same codes, metadata and values. The reference's float64
 * functions are libm's log and exp here (``lp_ref_level``, ``log``); two faster, vectorisable routes give
 * exactly their results and hand every case they cannot decide to them:
 *   - levels float32(exp(min + step * (K - 1))): ``lp_fast_exp`` is within 2 ulps of exp (1 ulp of libm's
 *     over 2e7 random arguments); its float32 rounding is taken only when the float64 result lies more than
 *     64 ulps from a float32 rounding boundary (and in float32's normal range), so libm's exp rounds the same;
 *   - the candidate level K0 = floor((ln|x| - min) / step + 1): ``lp_fast_log`` is within 4 ulps of log; K0 is
 *     taken only when the position lies farther from an integer than the error bound, else recomputed by log.
 * The tile's max and min of ln|x| are the logs of its largest and smallest non-zero magnitude (log is monotonic).
 * A tile's levels are computed once into a table when the tile has at least as many elements as levels, else
 * per element: the same values either way. Build without -ffast-math and with -ffp-contract=off. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* floating-point exception flags are never read here: let the compiler if-convert and vectorise comparisons
 * (the values computed are the same) */
#pragma GCC optimize("no-trapping-math")

/* exp(d) for |d| < 700 (Cody-Waite reduction by ln 2, degree-13 Taylor polynomial), branch-free */
static inline double lp_fast_exp(double d) {
    const double inv_ln2 = 1.4426950408889634074, ln2_hi = 6.93147180369123816490e-01,
                 ln2_lo = 1.90821492927058770002e-10, shift = 6755399441055744.0;   /* 2^52 + 2^51: rint */
    const double n = (d * inv_ln2 + shift) - shift;
    const double r = (d - n * ln2_hi) - n * ln2_lo;                 /* |r| <= ln(2) / 2 */
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    const uint64_t sb = (uint64_t)((int64_t)n + 1023) << 52;       /* 2^n */
    double sc; memcpy(&sc, &sb, 8);
    return p * sc;
}

/* ln(a) of a positive normal double (a = 2^e m, m in [sqrt(1/2), sqrt(2)): 2 atanh((m - 1) / (m + 1))),
 * branch-free */
static inline double lp_fast_log(double a) {
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    uint64_t b; memcpy(&b, &a, 8);
    int64_t e = (int64_t)((b >> 52) & 0x7FF) - 1023;
    const uint64_t mb = (b & 0xFFFFFFFFFFFFFull) | 0x3FF0000000000000ull;
    double m; memcpy(&m, &mb, 8);
    const int64_t big = m > 1.4142135623730951;
    e += big;
    m = big ? m * 0.5 : m;
    const double f = m - 1.0, s = f / (2.0 + f), z = s * s;
    double p = 1.0 / 23;
    p = p * z + 1.0 / 21;
    p = p * z + 1.0 / 19;
    p = p * z + 1.0 / 17;
    p = p * z + 1.0 / 15;
    p = p * z + 1.0 / 13;
    p = p * z + 1.0 / 11;
    p = p * z + 1.0 / 9;
    p = p * z + 1.0 / 7;
    p = p * z + 1.0 / 5;
    p = p * z + 1.0 / 3;
    const double de = (double)e;
    return de * ln2_hi + (de * ln2_lo + 2.0 * s * (1.0 + z * p));
}

static inline float lp_ref_level(double m, double s, int32_t k) { return (float)exp(m + s * (double)(k - 1)); }

/* 1 when y rounds to float32 as every value within 64 ulps of it does: y in float32's normal range and its
 * bits below float32's last place farther than 64 from the half-way pattern */
static inline int32_t lp_f32_decided(double y) {
    uint64_t b; memcpy(&b, &y, 8);
    const int64_t dist = (int64_t)(b & 0x1FFFFFFFull) - (1 << 28);
    return ((dist > 64) | (dist < -64)) & (y >= 0x1p-126) & (y < 0x1p128);
}

static inline float lp_level(double m, double s, int32_t k) {
    const double y = lp_fast_exp(m + s * (double)(k - 1));
    return lp_f32_decided(y) ? (float)y : lp_ref_level(m, s, k);
}

/* table[1..kmax] = the tile's levels (a vectorised pass, then libm for the few it cannot decide) */
static void lp_fill_levels(float *table, double *work, int32_t kmax, double m, double s) {
    int32_t undecided = 0;
    for (int32_t k = 1; k <= kmax; k++) work[k] = lp_fast_exp(m + s * (double)(k - 1));
    for (int32_t k = 1; k <= kmax; k++) {
        uint64_t b; memcpy(&b, &work[k], 8);
        const int64_t dist = (int64_t)(b & 0x1FFFFFFFull) - (1 << 28);
        undecided |= (dist <= 64) & (dist >= -64);
        undecided |= (work[k] < 0x1p-126) | (work[k] >= 0x1p128);
        table[k] = (float)work[k];
    }
    if (undecided)
        for (int32_t k = 1; k <= kmax; k++)
            if (!lp_f32_decided(work[k])) table[k] = lp_ref_level(m, s, k);
}

static inline int32_t lp_sign(float v) { uint32_t b; memcpy(&b, &v, 4); return (int32_t)(b >> 31); }

/* codes (R x C int32: sign in bit nbits-1) and per-tile float32 min/step (R x ceil(C / tile)) of x */
void lp_logfmt_encode(const float *x, int64_t R, int64_t C, int32_t nbits, int32_t tile, double log_range,
                      int32_t *codes, float *mins, float *steps) {
    const int32_t kmax = (1 << (nbits - 1)) - 1;
    const int64_t nt = (C + tile - 1) / tile;
    #pragma omp parallel
    {
        float *table = malloc(sizeof(float) * (size_t)(kmax + 1));
        double *work = malloc(sizeof(double) * (size_t)(kmax + 1));
        double *pos = malloc(sizeof(double) * (size_t)tile);
        int32_t *kh = malloc(sizeof(int32_t) * (size_t)tile), *kl = malloc(sizeof(int32_t) * (size_t)tile);
        float *hw = malloc(sizeof(float) * (size_t)tile), *lw = malloc(sizeof(float) * (size_t)tile);
        float *lv = malloc(sizeof(float) * 4 * (size_t)tile);
        #pragma omp for schedule(static) collapse(2)
        for (int64_t i = 0; i < R; i++) {
            for (int64_t j = 0; j < nt; j++) {
                const float *xr = x + i * C;
                int32_t *cr = codes + i * C;
                const int64_t c0 = j * tile, c1 = c0 + tile < C ? c0 + tile : C, n = c1 - c0;
                uint32_t top = 0, small = 0xFFFFFFFFu;   /* |v| of a float orders like its bits */
                const uint32_t *xb = (const uint32_t *)(xr + c0);     /* the floats' bits (may alias) */
                for (int64_t c = 0; c < n; c++) {
                    const uint32_t b = xb[c] & 0x7FFFFFFFu;
                    const uint32_t nz = b | (0u - (uint32_t)(b == 0));    /* a zero counts as the largest */
                    top = b > top ? b : top;
                    small = nz < small ? nz : small;
                }
                const int32_t finite = top < 0x7F800000u, any_nz = finite && top != 0;
                mins[i * nt + j] = finite ? 0.0f : NAN;
                steps[i * nt + j] = finite ? 0.0f : NAN;
                if (!any_nz) {                           /* all zero, or NaN/Inf: codes are the sign bits */
                    for (int64_t c = c0; c < c1; c++) cr[c] = lp_sign(xr[c]) << (nbits - 1);
                    continue;
                }
                float fbig, fsmall; memcpy(&fbig, &top, 4); memcpy(&fsmall, &small, 4);
                const double hi = log((double)fbig);
                double lo = log((double)fsmall);
                if (hi - log_range > lo) lo = hi - log_range;
                const float m32 = (float)lo, s32 = (float)((hi - lo) / (double)(kmax - 1));
                mins[i * nt + j] = m32;
                steps[i * nt + j] = s32;
                const double m = (double)m32, s = (double)s32;
                const int32_t tabled = n >= kmax;
                if (tabled) lp_fill_levels(table, work, kmax, m, s);
                /* the log position of each element: vectorised, then libm where it could decide K0 otherwise */
                int64_t near = 0;           /* 64-bit like the doubles it is computed from: vectorises */
                if (s > 0) {
                    const double inv_s = 1.0 / s;
                    for (int64_t c = 0; c < n; c++) {
                        const double mag = fabs((double)xr[c0 + c]);
                        const double lf = lp_fast_log(mag + (double)(mag == 0));       /* ln 1 = 0 for zeros */
                        const double p = (lf - m) / s + 1;
                        const double frac = p - floor(p);
                        const double tol = (fabs(lf) + 1.0) * 8e-16 * inv_s + fabs(p) * 1e-15;
                        near |= (mag > 0) & ((frac <= tol) | (frac >= 1.0 - tol));
                        pos[c] = p;
                    }
                } else {
                    for (int64_t c = 0; c < n; c++) pos[c] = 1.0;
                }
                if (near)
                    for (int64_t c = 0; c < n; c++) {
                        const double mag = fabs((double)xr[c0 + c]);
                        if (mag > 0) pos[c] = (log(mag) - m) / s + 1;
                    }
                /* the reference's candidate window K0 - 1 .. K0 + 2 (clamped to [1, kmax]), the levels at or below
                 * |x| among them and the nearer of the two neighbours (0 below level 1), ties to the larger: in
                 * loops of one width each (selects only), which vectorise */
                const double kmaxd = (double)kmax;
                for (int64_t c = 0; c < n; c++) {
                    const double pc = pos[c] < 1.0 ? 1.0 : pos[c] > kmaxd ? kmaxd : pos[c];
                    const int32_t k0 = (int32_t)pc;               /* floor(pos) clamped to [1, kmax] */
                    kl[c] = k0 - 1 < 1 ? 1 : k0 - 1;
                }
                for (int32_t q = 0; q < 4; q++)                   /* the candidates' levels */
                    for (int64_t c = 0; c < n; c++) {
                        const int32_t kq = kl[c] + q < kmax ? kl[c] + q : kmax;
                        lv[q * tile + c] = tabled ? table[kq] : lp_level(m, s, kq);
                    }
                for (int64_t c = 0; c < n; c++) {      /* float32 compares: the values are float32 */
                    const float mag = fabsf(xr[c0 + c]);
                    const float l0 = lv[c], l1 = lv[tile + c], l2 = lv[2 * tile + c], l3 = lv[3 * tile + c];
                    const int32_t below = (l0 <= mag) + (l1 <= mag) + (l2 <= mag) + (l3 <= mag);
                    const int32_t idx_lo = below - 1 < 0 ? 0 : below - 1, idx_hi = below < 3 ? below : 3;
                    const int32_t zero_below = (below == 0) & (kl[c] == 1);
                    hw[c] = idx_hi == 0 ? l0 : idx_hi == 1 ? l1 : idx_hi == 2 ? l2 : l3;
                    lw[c] = zero_below ? 0.0f : idx_lo == 0 ? l0 : idx_lo == 1 ? l1 : idx_lo == 2 ? l2 : l3;
                    kh[c] = kl[c] + idx_hi < kmax ? kl[c] + idx_hi : kmax;
                    kl[c] = zero_below ? 0 : kl[c] + idx_lo < kmax ? kl[c] + idx_lo : kmax;
                }
                for (int64_t c = 0; c < n; c++) {
                    const double mag = fabs((double)xr[c0 + c]);
                    const int32_t k = ((double)hw[c] - mag) <= (mag - (double)lw[c]) ? kh[c] : kl[c];
                    cr[c0 + c] = (mag > 0 ? k : 0) | (lp_sign(xr[c0 + c]) << (nbits - 1));
                }
            }
        }
        free(table); free(work); free(pos); free(kh); free(kl); free(hw); free(lw); free(lv);
    }
}

/* float32 values (R x C) of codes with per-tile min/step: sign * level(K), 0 for K = 0, NaN in NaN tiles */
void lp_logfmt_decode(const int32_t *codes, const float *mins, const float *steps, int64_t R, int64_t C,
                      int32_t nbits, int32_t tile, float *out) {
    const int32_t kmax = (1 << (nbits - 1)) - 1;
    const int64_t nt = (C + tile - 1) / tile;
    #pragma omp parallel
    {
        float *table = malloc(sizeof(float) * (size_t)(kmax + 1));
        double *work = malloc(sizeof(double) * (size_t)(kmax + 1));
        #pragma omp for schedule(static) collapse(2)
        for (int64_t i = 0; i < R; i++) {
            for (int64_t j = 0; j < nt; j++) {
                const int32_t *cr = codes + i * C;
                float *orow = out + i * C;
                const int64_t c0 = j * tile, c1 = c0 + tile < C ? c0 + tile : C;
                const float m32 = mins[i * nt + j];
                const double m = (double)m32, s = (double)steps[i * nt + j];
                const int32_t tabled = !isnan(m32) && c1 - c0 >= kmax;
                if (tabled) {
                    table[0] = 0.0f;
                    lp_fill_levels(table, work, kmax, m, s);
                    for (int64_t c = c0; c < c1; c++) {
                        const float v = table[cr[c] & kmax];
                        orow[c] = (cr[c] >> (nbits - 1)) & 1 ? -v : v;
                    }
                    continue;
                }
                for (int64_t c = c0; c < c1; c++) {
                    const int32_t k = cr[c] & kmax, neg = (cr[c] >> (nbits - 1)) & 1;
                    const float v = isnan(m32) ? NAN : k == 0 ? 0.0f : lp_level(m, s, k);
                    orow[c] = neg ? -v : v;
                }
            }
        }
        free(table); free(work);
    }
}
