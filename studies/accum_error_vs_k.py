"""FP8 GEMM error vs K under the Hopper-style accumulator, with and without FP32 promotion.

The study lives in ``lowprec.lab.accum_vs_k`` (so ``lowprec lab`` can run it); this is its script.
Results go to a results store under --out (default lowprec_runs/, git-ignored): a re-run reuses every
point whose full configuration is unchanged and computes the rest. See --help for the parameters.
"""

from lowprec.lab.accum_vs_k import main
from lowprec.lab.common import run_script

if __name__ == "__main__":
    run_script(main)
