"""Replay every GEMM of a training trace through scaling recipes x accumulators.

Usage: python studies/gemm_replay.py --help   (the lab's `lowprec lab` runs it with its quick defaults)
"""

from lowprec.lab.replay import main
from lowprec.lab.common import run_script

if __name__ == "__main__":
    run_script(main)
