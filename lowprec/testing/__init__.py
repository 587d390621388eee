"""Reusable testing helpers for other projects' CI: hypothesis strategies (``lowprec.testing.strategies``), the
checks ``assert_matches_reference`` / ``assert_gemm_matches`` (``lowprec.testing.checks``) and a pytest plugin
offering them as fixtures (``lowprec.testing.plugin``, registered as the ``pytest11`` entry point ``lowprec``).
Needs ``hypothesis`` (the ``test`` extra)."""

from .checks import MismatchError, assert_gemm_matches, assert_matches_reference, check_settings

__all__ = ["MismatchError", "assert_gemm_matches", "assert_matches_reference", "check_settings"]
