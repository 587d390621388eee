"""FP8 GEMM error vs K under the Hopper-style accumulator, with and without FP32 promotion.

The study lives in ``lowprec.lab.accum_vs_k`` (so ``lowprec lab`` can run it); this is its script.
Usage: python studies/accum_error_vs_k.py [--out reports] [--quick] [--backend eager|compiled]
"""

from lowprec.lab.accum_vs_k import main

if __name__ == "__main__":
    main()
