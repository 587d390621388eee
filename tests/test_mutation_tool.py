"""tools/mutate.py itself: on a tiny fake project it must tell killed, survived, timed-out, equivalent and
inapplicable mutants apart, score them as documented and exit non-zero on a survivor or an error, so that it
can never silently report 100%. Also: the AST generator's edits, and the real catalogue's health."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "mutate.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("lowprec_mutate_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod            # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


mutate = load_tool()

CALC = '''"""A tiny module to mutate."""


def add(a, b):
    return a + b


def is_positive(x):
    return x > 0


def spin(n):
    return n
'''

TESTS = '''from calc import add, is_positive, spin


def test_add():
    assert add(2, 3) == 5


def test_is_positive():
    assert is_positive(5) and not is_positive(-5)


def test_spin():
    assert spin(3) == 3
'''

CATALOGUE = '''
[settings]
package = "calc"

[[mutant]]
id = "killed"
file = "calc/__init__.py"
original = "return a + b"
replacement = "return a - b"
why = "plus to minus"
tests = ["tests/test_calc.py::test_add"]
smoke = true

[[mutant]]
id = "survives"
file = "calc/__init__.py"
original = "return x > 0"
replacement = "return x >= 0"
why = "boundary: no test at zero"
tests = ["tests/test_calc.py::test_is_positive"]

[[mutant]]
id = "missing"
file = "calc/__init__.py"
original = "return a * b"
replacement = "return a / b"
why = "the snippet is not in the file"
tests = ["tests/test_calc.py"]

[[mutant]]
id = "ambiguous"
file = "calc/__init__.py"
original = "return"
replacement = "yield"
why = "the snippet occurs three times"
tests = ["tests/test_calc.py"]

[[mutant]]
id = "equivalent"
file = "calc/__init__.py"
original = "return n"
replacement = "return n + 0"
why = "adds zero"
tests = ["tests/test_calc.py::test_spin"]
equivalent = "n + 0 == n for the ints the tests pass"

[[mutant]]
id = "hangs"
file = "calc/__init__.py"
original = "return n"
replacement = """while True:
        pass"""
why = "an endless loop"
tests = ["tests/test_calc.py::test_spin"]
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "calc").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "calc" / "__init__.py").write_text(CALC)
    (root / "tests" / "test_calc.py").write_text(TESTS)
    (root / "mutants.toml").write_text(CATALOGUE)
    return root


def run_tool(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), "--root", str(root),
                           "--catalogue-file", str(root / "mutants.toml"), *args],
                          capture_output=True, text=True, timeout=300)


def test_each_outcome_is_told_apart_and_scored(project: Path):
    out = project / "report" / "m.md"
    p = run_tool(project, "--catalogue", "--timeout", "30", "--jobs", "2", "--out", str(out))
    assert p.returncode == 1, p.stdout + p.stderr                 # a survivor and errors: not a pass
    data = json.loads(out.with_suffix(".json").read_text())
    status = {m["id"]: m["status"] for m in data["mutants"]}
    assert status == {"killed": "killed", "survives": "survived", "missing": "error", "ambiguous": "error",
                      "equivalent": "equivalent", "hangs": "timeout"}
    detail = {m["id"]: m["detail"] for m in data["mutants"]}
    assert "occurs 0 times" in detail["missing"] and "occurs 3 times" in detail["ambiguous"]
    assert detail["killed"] == "tests/test_calc.py::test_add"
    # score = (killed + timeout) / (run - equivalent) = 2 / 5; the errors count against it
    assert data["summary"]["all"]["score"] == pytest.approx(2 / 5)
    md = out.read_text()
    assert "**Score: 2 / 5 = 40.0%**" in md
    assert "-    return x > 0" in md and "+    return x >= 0" in md     # the survivor's diff
    assert "n + 0 == n" in md                                          # the equivalent's reason
    assert out.with_suffix(".csv").read_text().count("\n") == 7        # header + 6 mutants
    assert (project / "calc" / "__init__.py").read_text() == CALC      # the project itself is never edited


def test_smoke_runs_only_its_list_and_fails_on_a_survivor(project: Path):
    p = run_tool(project, "--smoke")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1/1 killed" in p.stdout
    cat = project / "mutants.toml"
    cat.write_text(cat.read_text().replace('why = "boundary: no test at zero"', 'why = "boundary"\nsmoke = true'))
    p = run_tool(project, "--smoke")
    assert p.returncode == 1 and "SURVIVED: survives" in p.stdout, p.stdout + p.stderr


def test_a_failing_baseline_aborts(project: Path):
    (project / "tests" / "test_calc.py").write_text(TESTS.replace("== 5", "== 6"))
    p = run_tool(project, "--smoke")
    assert p.returncode == 3 and "unmutated tests fail" in p.stderr


def test_bad_catalogue_is_refused(project: Path):
    cat = project / "mutants.toml"
    cat.write_text(cat.read_text().replace('why = "plus to minus"', 'why = "plus to minus"\nwhy_not = 1'))
    p = run_tool(project, "--smoke")
    assert p.returncode == 2 and "unknown keys ['why_not']" in p.stderr


def test_systematic_generator_edits(tmp_path: Path):
    """One mutant per operator, comparison boundary, boolean and integer constant (+-1), none in the
    docstring, the annotations or the error message; each snippet occurs once and yields valid Python
    whose syntax tree differs from the original's."""
    src = '''"""Doc 1 < 2."""
def f(x: int = 3, flag: bool = True) -> int:
    if x < 10 and flag:
        return x + 1
    raise ValueError(f"bad {x - 1}")
'''
    (tmp_path / "m.py").write_text(src)
    ms = mutate.systematic_mutants(tmp_path, "m", "m.py", ("tests",))
    labels = sorted(m.id.split(":", 3)[3] for m in ms)
    assert labels == sorted(["3 -> 4", "3 -> 2", "True -> False", "< -> <=", "10 -> 11", "10 -> 9", "and -> or",
                             "+ -> -", "1 -> 2", "1 -> 0"])
    for m in ms:
        assert src.count(m.original) == 1 and m.tests == ("tests",)
        mutated = src.replace(m.original, m.replacement)
        assert ast.dump(ast.parse(mutated)) != ast.dump(ast.parse(src))
    edits = {m.id.split(":", 3)[3]: src.replace(m.original, m.replacement) for m in ms}
    assert "if x <= 10 and flag:" in edits["< -> <="] and "return x - 1" in edits["+ -> -"]
    assert "if x < 10 or flag:" in edits["and -> or"] and 'f"bad {x - 1}"' in edits["+ -> -"]


def test_the_catalogue_loads_and_its_smoke_mutants_apply():
    """The real catalogue parses, every test file it names exists, and every smoke mutant still applies
    to the code (a refactoring that moves one must update tools/mutants.toml)."""
    mutants, settings = mutate.load_catalogue(REPO / "tools" / "mutants.toml")
    assert 12 <= sum(m.smoke for m in mutants) <= 15
    for m in mutants:
        for t in m.tests:
            assert (REPO / t.split("::")[0]).is_file(), f"{m.id}: {t} does not exist"
    for m in mutants:
        if m.smoke:
            assert not isinstance(mutate.apply_mutant(REPO, m), str), f"{m.id} does not apply"
    assert set(settings.module_files) == {"formats", "rounding", "scaling", "accum", "logfmt", "packing"}
