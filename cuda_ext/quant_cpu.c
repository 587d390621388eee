/* CPU build of per-tile scaling (lowprec/scaling.py, current amax, float32 scales): the amax of each
 * (tr x tc) tile over its finite values, the scale, the scaled values and one rounding per element, all
 * in float32 as the torch path computes them. Codes are uint8 (formats of <= 8 bits). */
#include <math.h>
#include <stdint.h>
#include "lowprec_round.h"

enum { LP_MUL_INV = 0, LP_MUL_RATIO = 1, LP_MUL_RCP_RATIO = 2, LP_DIV = 3 };

typedef struct {
    int32_t tr, tc, scale_op, pow2, tile_nan;
    float target, amax_floor;        /* target = fmt max / 2^margin, in float32 */
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

/* codes and per-tile scales of x; when deq is not NULL also the dequantised values deq = table[code] * scale
 * (one float32 multiply, correctly rounded: QuantizedTensor.dequantize's bits; table = the format's decode
 * table, 256 floats; NaN tiles have a NaN scale, so their values are NaN). */
static inline float lp_finite_or_zero(float v) {    /* a bit test, not isfinite(): keeps the loop branch-free */
    uint32_t b; memcpy(&b, &v, 4);
    return (b & 0x7FFFFFFFu) < 0x7F800000u ? v : 0.0f;
}

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
                for (int64_t c = c0; c < c1; c++) {
                    uint32_t b; memcpy(&b, &x[r * C + c], 4);
                    b &= 0x7FFFFFFFu;
                    const uint32_t m = b < 0x7F800000u ? b : 0u;
                    amax_bits = m > amax_bits ? m : amax_bits;
                    top_bits = b > top_bits ? b : top_bits;
                }
            }
            const int32_t nonfinite = top_bits >= 0x7F800000u;
            float amax; memcpy(&amax, &amax_bits, 4);
            if (s->amax_floor > 0.0f && amax < s->amax_floor) amax = s->amax_floor;
            const int32_t ok = amax > 0.0f;
            float sf, mult;
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
            scales[i * nc + j] = s->tile_nan && nonfinite ? NAN : sf;
            const int32_t div = s->scale_op == LP_DIV;
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
