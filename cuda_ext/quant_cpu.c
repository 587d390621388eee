/* CPU build of per-tile scaling (lowprec/scaling.py, current amax) and of the elementwise cast
 * (lowprec/rounding.py encode/quantize). Per tile, in one pass over the tile's data while it is in cache:
 * the amax of its finite values, the scale -- float32 (scale ops of lowprec_codes.h, optional power of two)
 * or E8M0 (the MX exponent rules of lowprec_codes.h) -- and one rounding per element, all in float32 as
 * the torch path computes them. Codes are uint8 (formats of <= 8 bits). */
#include <math.h>
#include <stdint.h>
#include "lowprec_round.h"

typedef struct {
    int32_t tr, tc, scale_op, pow2, tile_nan;
    int32_t e8m0, mx_rule, emax;     /* e8m0: MX scales by mx_rule; emax: the element format's largest exponent */
    float target, amax_floor;        /* target = fmt max / 2^margin, in float32 (not used by MX) */
    double fmax;                     /* the element format's max (MX rceil) */
} lp_scaling;

static inline float lp_pow2_up(float sf) {          /* exponent + 1 when any mantissa bit is set */
    uint32_t b; memcpy(&b, &sf, 4);
    int32_t e = (int32_t)((b >> 23) & 0xFF) + ((b & 0x7FFFFF) != 0);
    e = e < 1 ? 1 : e > 254 ? 254 : e;
    uint32_t o = (uint32_t)e << 23; float r; memcpy(&r, &o, 4); return r;
}

static inline float lp_pow2_down(float m) {
    uint32_t b; memcpy(&b, &m, 4); b &= 0xFF800000u; float r; memcpy(&r, &b, 4); return r;
}

/* floor(log2(v)) of a positive normal double, from its exponent bits; *exact: v is a power of two */
static inline int32_t lp_floor_log2(double v, int32_t *exact) {
    uint64_t b; memcpy(&b, &v, 8);
    *exact = (b & 0xFFFFFFFFFFFFFull) == 0;
    return (int32_t)((b >> 52) & 0x7FF) - 1023;
}

/* the MX shared exponent of a block whose finite amax is `amax` (>= 0; every float32 is a normal double):
 * floor (OCP) floor(log2 amax) - emax; ceil: ceil(log2 amax) - emax; even: amax rounded to the element's
 * mantissa width (nearest even) first, then floor; rceil (TE): ceil(log2(amax / max)) with the quotient
 * rounded to float64. Clamped to [-127, 127]; an all-zero block gets -127. */
static inline int32_t lp_mx_exponent(float amax, const lp_scaling *s, int32_t mbits) {
    if (!(amax > 0.0f)) return -127;
    double a = (double)amax;
    int32_t exact, e;
    if (s->mx_rule == LP_MX_FLOOR) {
        e = lp_floor_log2(a, &exact) - s->emax;
    } else if (s->mx_rule == LP_MX_CEIL) {
        e = lp_floor_log2(a, &exact); e += !exact; e -= s->emax;
    } else if (s->mx_rule == LP_MX_EVEN) {
        uint64_t b; memcpy(&b, &a, 8);
        const int32_t drop = 52 - mbits;
        const uint64_t mask = ((uint64_t)1 << drop) - 1;
        b += (mask >> 1) + ((b >> drop) & 1);           /* nearest even; a carry bumps the exponent */
        b &= ~mask;
        memcpy(&a, &b, 8);
        e = lp_floor_log2(a, &exact) - s->emax;
    } else {                                            /* LP_MX_RCEIL */
        e = lp_floor_log2(a / s->fmax, &exact); e += !exact;
    }
    return e < -127 ? -127 : e > 127 ? 127 : e;
}

static inline float lp_pow2_f32(int32_t e) {        /* 2^e as a float32 from its bits, e in [-149, 127] */
    const uint32_t b = e >= -126 ? (uint32_t)(e + 127) << 23 : 1u << (e + 149);
    float r; memcpy(&r, &b, 4); return r;
}

static inline float lp_finite_or_zero(float v) {    /* a bit test, not isfinite(): keeps the loop branch-free */
    uint32_t b; memcpy(&b, &v, 4);
    return (b & 0x7FFFFFFFu) < 0x7F800000u ? v : 0.0f;
}

/* (sf, multiplier) of a tile from its finite amax: float32 scale ops, or 2^e for MX (1 / 2^e is exact
 * in float32 for e in [-127, 127], so x * mult is x / sf rounded once, as the torch path divides) */
static inline void lp_tile_scale(float amax, const lp_scaling *s, int32_t mbits, float *sf_out, float *mult_out) {
    float sf, mult;
    if (s->e8m0) {
        const int32_t e = lp_mx_exponent(amax, s, mbits);
        sf = lp_pow2_f32(e);
        mult = lp_pow2_f32(-e);
    } else {
        if (s->amax_floor > 0.0f && amax < s->amax_floor) amax = s->amax_floor;
        const int32_t ok = amax > 0.0f;
        if (s->scale_op == LP_MUL_RATIO || s->scale_op == LP_MUL_RCP_RATIO) {
            mult = !ok ? 1.0f : s->scale_op == LP_MUL_RATIO ? s->target / amax : s->target * (1.0f / amax);
            if (isinf(mult)) mult = 3.4028234663852886e38f;
            if (s->pow2) mult = lp_pow2_down(mult);
            sf = 1.0f / mult;
        } else {
            sf = ok ? amax / s->target : 1.0f;
            if (s->scale_op == LP_MUL_INV && sf < 1.17549435e-38f) sf = 1.17549435e-38f;
            if (s->pow2) sf = lp_pow2_up(sf);
            mult = 1.0f / sf;
        }
    }
    *sf_out = sf; *mult_out = mult;
}

/* codes and per-tile scales of x (R x C, row-major); when deq is not NULL also the dequantised values
 * deq = table[code] * scale (one float32 multiply, correctly rounded: QuantizedTensor.dequantize's bits;
 * table = the format's decode table, 256 floats; NaN tiles have a NaN scale, so their values are NaN). */
void lp_quantize_tiles(const float *x, int64_t R, int64_t C, const lp_format *fmt, const lp_scaling *s,
                       uint8_t *codes, float *scales, const float *table, float *deq) {
    const int64_t nr = (R + s->tr - 1) / s->tr, nc = (C + s->tc - 1) / s->tc;
    #pragma omp parallel for schedule(static) collapse(2)
    for (int64_t i = 0; i < nr; i++) {
        for (int64_t j = 0; j < nc; j++) {
            const int64_t r0 = i * s->tr, r1 = r0 + s->tr < R ? r0 + s->tr : R;
            const int64_t c0 = j * s->tc, c1 = c0 + s->tc < C ? c0 + s->tc : C;
            uint32_t amax_bits = 0, top_bits = 0;   /* |v| of a finite float orders like its bits: integer maxima
                                                       vectorise; a non-finite |v| has bits >= 0x7F800000 */
            for (int64_t r = r0; r < r1; r++) {
                const uint32_t *xb = (const uint32_t *)(x + r * C);     /* the float's bits (may alias) */
                uint32_t a = 0, t = 0;                  /* per row: reductions of a loop vectorise */
                for (int64_t c = c0; c < c1; c++) {
                    const uint32_t b = xb[c] & 0x7FFFFFFFu;
                    const uint32_t m = b & (0u - (uint32_t)(b < 0x7F800000u));  /* 0 for NaN/Inf, by a mask */
                    a = m > a ? m : a;
                    t = b > t ? b : t;
                }
                amax_bits = a > amax_bits ? a : amax_bits;
                top_bits = t > top_bits ? t : top_bits;
            }
            const int32_t nonfinite = top_bits >= 0x7F800000u;
            float amax, sf, mult; memcpy(&amax, &amax_bits, 4);
            lp_tile_scale(amax, s, fmt->mbits, &sf, &mult);
            scales[i * nc + j] = s->tile_nan && nonfinite ? NAN : sf;
            const int32_t div = !s->e8m0 && s->scale_op == LP_DIV;
            const lp_format f = *fmt;   /* a local copy: uint8 stores may alias anything, a local does not */
            for (int64_t r = r0; r < r1; r++) {
                const float *xr = x + r * C;
                uint8_t *cr = codes + r * C;
                if (div)                                  /* finite elements: branch-free, vectorises */
                    for (int64_t c = c0; c < c1; c++) cr[c] = (uint8_t)lp_encode_f32(lp_finite_or_zero(xr[c]) / sf, &f, LP_RNE, 1);
                else
                    for (int64_t c = c0; c < c1; c++) cr[c] = (uint8_t)lp_encode_f32(lp_finite_or_zero(xr[c]) * mult, &f, LP_RNE, 1);
                if (nonfinite)                            /* NaN/Inf: unsaturated, or 0 without a NaN code
                                                             (the tile's scale is NaN then) */
                    for (int64_t c = c0; c < c1; c++)
                        if (!isfinite(xr[c])) cr[c] = f.has_nan ? (uint8_t)lp_encode_f32(xr[c], &f, LP_RNE, 0) : 0u;
                if (deq) {
                    const float so = scales[i * nc + j];
                    float *dr = deq + r * C;
                    for (int64_t c = c0; c < c1; c++) dr[c] = table[cr[c]] * so;
                }
            }
        }
    }
}

/* the elementwise cast: codes[k] = lp_encode_f32(x[k]) for k < n (one rounding of `rounding`, a code of
 * lowprec_codes.h, saturating or not), and when deq is not NULL also deq[k] = table[codes[k]]. One
 * branch per mode outside the loop, so that each loop vectorises. */
#define LP_ENCODE_LOOP(MODE)                                                                        \
    for (int64_t k = k0; k < k1; k++) codes[k] = (uint8_t)lp_encode_f32(x[k], &f, MODE, saturate);
void lp_encode_tensor(const float *x, int64_t n, const lp_format *fmt, int32_t rounding, int32_t saturate,
                      uint8_t *codes, const float *table, float *deq) {
    const int64_t chunk = 1 << 14;
    #pragma omp parallel for schedule(static)
    for (int64_t k0 = 0; k0 < n; k0 += chunk) {
        const int64_t k1 = k0 + chunk < n ? k0 + chunk : n;
        const lp_format f = *fmt;
        switch (rounding) {
            case LP_RNE: LP_ENCODE_LOOP(LP_RNE) break;
            case LP_RNA: LP_ENCODE_LOOP(LP_RNA) break;
            case LP_RTZ: LP_ENCODE_LOOP(LP_RTZ) break;
            case LP_RUP: LP_ENCODE_LOOP(LP_RUP) break;
            case LP_RDOWN: LP_ENCODE_LOOP(LP_RDOWN) break;
            default: LP_ENCODE_LOOP(LP_RTO) break;
        }
        if (deq)
            for (int64_t k = k0; k < k1; k++) deq[k] = table[codes[k]];
    }
}
#undef LP_ENCODE_LOOP
