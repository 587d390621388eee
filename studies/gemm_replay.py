"""Replay every GEMM of a training trace through scaling recipes x accumulators.

Usage: python studies/gemm_replay.py --help   (the lab's `lowprec lab` runs it with its quick defaults)
"""

from lowprec.lab.replay import main

if __name__ == "__main__":
    main()
