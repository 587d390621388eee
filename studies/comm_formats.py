"""Dispatch/combine formats (FP8 + 1x128 scales, LogFMT-8/10, BF16): error, SNR, GEMM error, bytes.

The study lives in ``lowprec.lab.comm`` (``lowprec lab`` runs it too); this is its script. Results go
to a results store under --out (default lowprec_runs/, git-ignored): a re-run reuses every point whose
full configuration is unchanged and computes the rest. See --help for the parameters.
"""

from lowprec.lab.comm import main
from lowprec.lab.common import run_script

if __name__ == "__main__":
    run_script(main)
