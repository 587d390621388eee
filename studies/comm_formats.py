"""Dispatch/combine formats (FP8 + 1x128 scales, LogFMT-8/10, BF16): error, SNR, GEMM error, bytes.

The study lives in ``lowprec.lab.comm`` (``lowprec lab`` runs it too); this is its script.
Usage: python studies/comm_formats.py [--out reports] [--tokens 256] [--hidden 7168 --top-k 8 ...]
"""

from lowprec.lab.comm import main

if __name__ == "__main__":
    main()
