"""pytest plugin (the ``pytest11`` entry point ``lowprec``): property-test your own quantiser or GEMM against the
lab's reference in your project's CI.

Installing lowprec with its ``test`` extra registers the plugin; a test then asks for a fixture::

    def test_my_cast(assert_matches_reference):
        assert_matches_reference(my_quantize, "deepseek_v3", role="activation")

    def test_my_gemm(assert_gemm_matches):
        assert_gemm_matches(lambda a, b: my_fp8_gemm(a, b), "hopper_fp8")

Fixtures: ``assert_matches_reference`` and ``assert_gemm_matches`` (``lowprec.testing.checks``, whose module doc
lists the accepted kernel signatures and results; every keyword, ``settings=`` and ``examples=`` included, can
be passed per call) with the settings of ``lowprec_settings``: ``lowprec.testing.check_settings()``, its example
budget from ``--lowprec-examples N`` when given, else from the active hypothesis profile (100 by default).
Without pytest, call the same functions from ``lowprec.testing``.

What the default budget catches (``tests/test_testing_plugin.py``: each mutant is one edit away from a correct
hand-written kernel; examples run up to and including the first failing one, derandomised; in 8 random runs
each of the four scale-op/tie mutants needed at most 33; 100 examples of typical heavy-tailed data alone
catch none of those four):

    mutant                                                   reference     examples
    1x128 true division x / (amax / 448)                     deepseek_v3   12
    1x128 x * (448 / amax), a true division                  deepseek_v3   50
    1x128 x * (448 * (1 / amax))                             deepseek_v3   12
    1x128 ties away from zero                                deepseek_v3   12
    1x128 amax floor 1e-3 instead of 1e-4                    deepseek_v3   3
    MXFP8 shared exponent + 1                                mxfp8         1
    MXFP8 shared exponent - 1                                mxfp8         1
    MXFP8 saturation off                                     mxfp8         3
    hopper_fp8 with 14 alignment bits                        hopper_fp8    3
    hopper_fp8 with groups of 16                             hopper_fp8    10
    hopper_fp8 with RNE alignment                            hopper_fp8    3

The plugin imports hypothesis, torch and the lab only when a fixture is used, so it costs nothing in test runs
that do not use it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from hypothesis import settings as Settings


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lowprec", "lowprec reference checks")
    group.addoption("--lowprec-examples", type=int, default=None, metavar="N",
                    help="example budget of the lowprec fixtures' property checks (default: the hypothesis profile's)")


@pytest.fixture
def lowprec_settings(request: pytest.FixtureRequest) -> Settings:
    """The hypothesis settings of the lowprec checks in this run (``--lowprec-examples`` applied)."""
    from lowprec.testing.checks import check_settings

    budget = request.config.getoption("lowprec_examples")
    return check_settings(**({"max_examples": budget} if budget is not None else {}))


@pytest.fixture
def assert_matches_reference(lowprec_settings: Settings) -> Callable[..., None]:
    """``lowprec.testing.assert_matches_reference`` with this run's settings (a ``settings=`` keyword overrides)."""
    from lowprec.testing.checks import assert_matches_reference as check

    return partial(check, settings=lowprec_settings)


@pytest.fixture
def assert_gemm_matches(lowprec_settings: Settings) -> Callable[..., Any]:
    """``lowprec.testing.assert_gemm_matches`` with this run's settings (a ``settings=`` keyword overrides)."""
    from lowprec.testing.checks import assert_gemm_matches as check

    return partial(check, settings=lowprec_settings)
