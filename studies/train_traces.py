"""Train the small MoE transformer under every recipe on the standard library, write loss curves and a GEMM trace.

Usage: python studies/train_traces.py --help   (the lab's `lowprec lab` runs it with its quick defaults)
"""

from lowprec.lab.training import main
from lowprec.lab.common import run_script

if __name__ == "__main__":
    run_script(main)
