"""The cast-error table: reproducible from its seed, and ordered as rounding theory says."""

import pandas as pd

from lowprec.lab.common import cast_error_table


def test_cast_error_table_is_seeded_and_rne_beats_rtz():
    df = cast_error_table(2048, seed=5)
    pd.testing.assert_frame_equal(df, cast_error_table(2048, seed=5))          # no global RNG involved
    assert not df["rel_rms_error"].equals(cast_error_table(2048, seed=6)["rel_rms_error"])
    wide = df.pivot_table(index=["format", "data"], columns="rounding", values="rel_rms_error")
    assert (wide["rne"] <= wide["rtz"]).all()
    e4m3 = wide.loc[("e4m3fn", "normal")]
    assert 0.01 < e4m3["rne"] < 0.05 and wide.loc[("fp32", "normal")].eq(0).all()
