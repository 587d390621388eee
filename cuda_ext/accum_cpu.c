/* CPU build of the group-aligned accumulator (see lowprec_accum.h). Loaded by lowprec/native.py.
 * a: sa (M x K float significands), ea (M x K int32 exponents); b: sb, eb (K x N); c (M x N double,
 * already rounded to the accumulator format, or the outer seed when promoting); out (M x N double).
 * The inner loops run over n (contiguous) so they vectorise. */
#include <stdlib.h>
#include "lowprec_accum.h"

void lp_emulated_matmul(const float *sa, const int32_t *ea, const float *sb, const int32_t *eb,
                        const double *c, double *out, int64_t M, int64_t K, int64_t N,
                        const lp_accum_model *model) {
    /* locals: stores to the work arrays must not force the model to be reloaded */
    const int32_t F = model->align_bits, acc_m = model->acc_mbits, acc_emin = model->acc_emin;
    const int32_t acc_rnd = model->acc_rounding, acc_ovf = model->acc_overflow_inf;
    const double acc_max = model->acc_max;
    #pragma omp parallel
    {
        int32_t *E = malloc(sizeof(int32_t) * N);
        float *units = malloc(sizeof(float) * N);
        double *acc = malloc(sizeof(double) * N);
        double *outer = malloc(sizeof(double) * N);
        double *total = malloc(sizeof(double) * N);
        int32_t *exceptional = malloc(sizeof(int32_t) * N);
        #pragma omp for schedule(static)
        for (int64_t m = 0; m < M; m++) {
            for (int64_t n = 0; n < N; n++) {
                outer[n] = model->promote_every ? c[m * N + n] : 0.0;
                acc[n] = model->promote_every ? 0.0 : c[m * N + n];
            }
            for (int64_t k0 = 0; k0 < K; k0 += model->group) {
                int64_t k1 = k0 + model->group < K ? k0 + model->group : K;
                if (model->promote_every && k0 && k0 % model->promote_every == 0) {
                    for (int64_t n = 0; n < N; n++) {
                        outer[n] = lp_round(lp_add_round_to_odd(outer[n], acc[n]), model->outer_mbits,
                                            model->outer_emin, model->outer_rounding, model->outer_max, 0);
                        acc[n] = 0.0;
                    }
                }
                for (int64_t n = 0; n < N; n++) { E[n] = model->e_floor; units[n] = 0.0f; }
                /* step 6: an Inf accumulator stays Inf -- computed with 0 in its place, restored below */
                for (int64_t k = k0; k < k1; k++) {
                    const int32_t ek = ea[m * K + k];
                    const int32_t *ebk = eb + k * N;
                    for (int64_t n = 0; n < N; n++) {
                        int32_t ep = ek + ebk[n];
                        E[n] = ep > E[n] ? ep : E[n];
                    }
                }
                if (model->align_with_acc) {
                    for (int64_t n = 0; n < N; n++) {
                        double s; int32_t e;
                        lp_split(isinf(acc[n]) ? 0.0 : acc[n], model->acc_emin, model->zero_exp, &s, &e);
                        if (e > E[n]) E[n] = e;
                        units[n] = lp_align((float)s, e - E[n], model);
                    }
                }
                for (int64_t k = k0; k < k1; k++) {
                    const float sak = sa[m * K + k];
                    const int32_t ek = ea[m * K + k] + F, lowest = F - 60;  /* -60: non-zero stays non-zero */
                    const float *sbk = sb + k * N;
                    const int32_t *ebk = eb + k * N;
                    /* one loop per rounding so that each vectorises (the branch is hoisted by hand) */
#define LP_TERMS(ROUND)                                                                   \
                    for (int64_t n = 0; n < N; n++) {                                     \
                        int32_t sh = ek + ebk[n] - E[n];                                  \
                        sh = sh < lowest ? lowest : sh;                                   \
                        units[n] += ROUND(sak * sbk[n] * lp_pow2f(sh));                   \
                    }
                    if (model->align_rounding == 0) { LP_TERMS(lp_trunc_small) }
                    else if (model->align_rounding == 1) { LP_TERMS(lp_floor_small) }
                    else { LP_TERMS(nearbyintf) }
#undef LP_TERMS
                }
                int32_t any_exceptional = 0;
                for (int64_t n = 0; n < N; n++) {
                    double t = (double)units[n] * lp_pow2(E[n] - F);      /* E >= e_floor: normal */
                    const double prev = acc[n], fin = isinf(prev) ? 0.0 : prev;
                    total[n] = model->align_with_acc ? t : lp_add_round_to_odd(fin, t);
                    acc[n] = lp_round_fast(total[n], acc_m, acc_emin, acc_rnd, acc_max, &exceptional[n]);
                    if (isinf(prev)) { acc[n] = prev; exceptional[n] = 0; }
                    any_exceptional |= exceptional[n];
                }
                if (any_exceptional)   /* zeros, tiny or overflowing sums: the general rounding */
                    for (int64_t n = 0; n < N; n++)
                        if (exceptional[n]) acc[n] = lp_round(total[n], acc_m, acc_emin, acc_rnd, acc_max, acc_ovf);
            }
            for (int64_t n = 0; n < N; n++)
                out[m * N + n] = model->promote_every
                    ? lp_round(lp_add_round_to_odd(outer[n], acc[n]), model->outer_mbits, model->outer_emin,
                               model->outer_rounding, model->outer_max, 0)
                    : acc[n];
        }
        free(E); free(units); free(acc); free(outer); free(total); free(exceptional);
    }
}
