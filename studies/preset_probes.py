"""Every accumulator preset through closed-form probes (FPRev summation order, alignment bits, rounding of a
negative term's cut bits, accumulator precision and rounding, promotion): writes accumulator_presets.md and .csv.

The probes live in ``lowprec.lab.presets`` (their closed forms are stated there); this is their script. By default
it writes into reports/ (files there are tracked: regenerate and commit after changing a preset). See --help.
"""

from lowprec.lab.common import run_script
from lowprec.lab.presets import main

if __name__ == "__main__":
    run_script(main)
