"""The native backend as a user gets it: shipped in the package, built on first use with a cache key that
covers the toolchain, and a compiler that fails or is missing gives one warning and the pure-torch path."""

import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import warnings
from pathlib import Path

import pytest
import torch

import lowprec as lp
from lowprec import native, rounding, scaling
from lowprec.cli import main

ROOT = Path(__file__).resolve().parent.parent
FAILING_CC = """#!/bin/sh
case "$*" in
  *--version*) echo "failcc 1.0"; exit 0;;
  *-dM*) echo "#define __FAILCC__ 1"; exit 0;;
esac
echo "failcc: fatal error: omp.h: No such file or directory" >&2
exit 1
"""


def script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """An empty build cache and no remembered build outcome (forgotten again afterwards); yields the
    monkeypatch, to set ``$CC``."""
    monkeypatch.setenv("LOWPREC_CACHE", str(tmp_path / "cache"))
    native.reset()
    yield monkeypatch
    native.reset()


def native_cpu_or_skip() -> None:
    if native.native_status(False) is not None:
        pytest.skip("no working C compiler here")


@pytest.mark.parametrize("cc,message", [("failing", "omp.h: No such file or directory"),
                                        ("/no/such/cc", "not found on PATH")])
def test_a_compiler_that_fails_or_is_missing_warns_once_and_keeps_the_bits(fresh_native, tmp_path, cc, message):
    fresh_native.setenv("CC", script(tmp_path / "cc", FAILING_CC) if cc == "failing" else cc)
    x = torch.randn(300, 256, generator=torch.Generator().manual_seed(0))      # big enough for "auto" to try native
    x[0, :3] = torch.tensor([float("nan"), float("inf"), 1e-30])
    with pytest.warns(native.NativeBuildWarning, match=message) as caught:
        first, second = lp.quantize_tensor(x, "deepseek_v3"), lp.quantize_tensor(x, "deepseek_v3", "weight")
        assert native.compiler(False) is None
    assert len([w for w in caught if issubclass(w.category, native.NativeBuildWarning)]) == 1
    for got, role in ((first, "activation"), (second, "weight")):
        ref = lp.quantize_tensor(x, "deepseek_v3", role, backend="eager")
        assert torch.equal(got.codes, ref.codes) and torch.equal(got.scales.isnan(), ref.scales.isnan())
        assert torch.equal(got.scales.nan_to_num(), ref.scales.nan_to_num())
    with pytest.raises(ValueError, match=message):
        lp.quantize_tensor(x, "deepseek_v3", backend="native")
    with pytest.raises(native.NativeBuildError, match=message):
        native.library("quant_cpu")
    assert not list((tmp_path / "cache").glob("*"))             # no build, no temporary file left behind


def test_auto_runs_native_on_large_tensors_with_the_same_bits(monkeypatch):
    native_cpu_or_skip()
    calls = []
    original = scaling._native_quantize

    def spy(x2, cfg, tile, dequantized):
        calls.append(tuple(x2.shape))
        return original(x2, cfg, tile, dequantized)

    monkeypatch.setattr(scaling, "_native_quantize", spy)
    g = torch.Generator().manual_seed(1)
    big = torch.randn(260, rounding.AUTO_NATIVE_MIN_NUMEL // 256, generator=g) * 100
    small = torch.randn(4, 64, generator=g)
    for x in (big, small):
        for recipe, role in (("deepseek_v3", "activation"), ("deepseek_v3_ue8m0", "weight"), ("te_current", "grad")):
            auto, eager = lp.quantize_tensor(x, recipe, role), lp.quantize_tensor(x, recipe, role, backend="eager")
            assert torch.equal(auto.codes, eager.codes) and torch.equal(auto.scales, eager.scales)
    assert calls == [tuple(big.shape)] * 3                      # the small tensor and every eager call: torch
    mx = lp.quantize_tensor(big, "mxfp8")                       # MX (E8M0 scales): native too
    assert torch.equal(mx.codes, lp.quantize_tensor(big, "mxfp8", backend="eager").codes) and len(calls) == 4
    delayed = lp.quantize_tensor(big, "te_delayed", history=lp.AmaxHistory())    # not covered: eager, no error
    assert torch.equal(delayed.codes, lp.quantize_tensor(big, "te_delayed", history=lp.AmaxHistory(),
                                                         backend="eager").codes) and len(calls) == 4


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        lp.quantize_tensor(torch.ones(2, 2), "deepseek_v3", backend="fast")
    with pytest.raises(ValueError, match="unknown native library"):
        native.library("quant_gpu")


def test_cache_key_covers_sources_compiler_version_flags_and_target(tmp_path):
    def fake_cc(name: str, version: str, macros: str) -> list[str]:
        return [script(tmp_path / name, f'#!/bin/sh\ncase "$*" in *--version*) echo "{version}";; '
                                        f'*) echo "{macros}";; esac\n')]

    src = tmp_path / "src"
    shutil.copytree(native.source_dir(), src)
    base = fake_cc("cc", "cc 12.2.0", "#define __znver3__ 1")

    def key(cmd=base, flags=native.CFLAGS, cuda=False):
        return native.build_key(src, cmd, flags, cuda)

    k = key()
    assert key() == k and len(k) == 16
    assert key(fake_cc("cc2", "cc 12.2.0", "#define __znver3__ 1")) != k             # another compiler path
    assert key(fake_cc("cc_v13", "cc 13.1.0", "#define __znver3__ 1")) != k          # another version
    assert key(fake_cc("cc_skx", "cc 12.2.0", "#define __skylake_avx512__ 1")) != k  # -march=native elsewhere
    assert key(flags=[*native.CFLAGS, "-DLP_EXTRA"]) != k
    assert key(flags=[f for f in native.CFLAGS if f != "-fopenmp"]) != k
    assert key(cmd=[*base, "-m64"]) != k
    assert key(cuda=True) != k
    (src / "quant_cpu.c").write_text((src / "quant_cpu.c").read_text() + "\n")
    assert key() != k
    with pytest.raises(native.NativeBuildError, match="exit status 1"):
        key(cmd=[script(tmp_path / "broken", "#!/bin/sh\necho 'broken: no such target' >&2\nexit 1\n")])


def test_a_fresh_cache_gets_one_build_per_library_and_no_temporary_file(fresh_native, tmp_path):
    native_cpu_or_skip()
    cpu_libraries = sorted(name for name, built_by_nvcc in native.LIBRARIES.items() if not built_by_nvcc)
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()) == cpu_libraries
    assert not list((tmp_path / "cache").glob(".*"))            # no temporary file left behind


def test_backends_command_reports_why_native_is_missing(fresh_native, tmp_path, capsys):
    fresh_native.setenv("CC", script(tmp_path / "cc", FAILING_CC))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # the command prints the reason, warns nothing
        assert main(["backends"]) == 0
    out = capsys.readouterr().out
    rows = {line[:12].strip(): line[13:17].strip() for line in out.splitlines() if line[:1].strip()}
    assert list(rows) == ["eager", "compiled", "native CPU", "native CUDA"]
    assert rows["eager"] == "yes" and rows["native CPU"] == "no"
    assert "omp.h: No such file or directory" in out


def test_the_package_lists_every_subpackage_and_ships_every_native_source():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lowprec").rglob("__init__.py")}
    assert set(conf["packages"]) == found | {"lowprec._native_src"}
    assert conf["package-dir"] == {"lowprec._native_src": "cuda_ext"}
    patterns = conf["package-data"]["lowprec._native_src"]
    assert {p.name for p in (ROOT / "cuda_ext").iterdir()} <= {p.name for pat in patterns
                                                              for p in (ROOT / "cuda_ext").glob(pat)}


def test_a_non_editable_install_runs_the_native_backend_outside_the_tree(tmp_path):
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler here")
    src = tmp_path / "src"                                      # a copy: the build writes nothing into the checkout
    src.mkdir()
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, src / part)
    for part in ("lowprec", "cuda_ext"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")                       # the torch already installed, via system site
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-build-isolation", str(src)],
                   check=True, capture_output=True)
    check = textwrap.dedent("""
        import sys, torch, lowprec as lp, lowprec.native as n
        assert sys.prefix in lp.__file__ and sys.prefix in str(n.source_dir()), (lp.__file__, n.source_dir())
        x = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
        a = lp.quantize_tensor(x, "deepseek_v3", backend="native")
        b = lp.quantize_tensor(x, "deepseek_v3", backend="eager")
        assert torch.equal(a.codes, b.codes) and torch.equal(a.scales, b.scales)
        print("native ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"LOWPREC_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([python, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "native ok" in out.stdout, out.stderr
