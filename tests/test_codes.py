"""The Python mirror of the native codes (lowprec/codes.py) against the one header that defines them
(cuda_ext/lowprec_codes.h), both ways, and the Python vocabularies the codes stand for."""

from __future__ import annotations

import re

import lowprec.accum as accum
import lowprec.scaling as scaling
from lowprec.codes import C_ENUMS, MxRuleCode, Rounding, RoundingCode, ScaleOpCode
from lowprec.native import source_dir


def header_enums() -> dict[str, dict[str, int]]:
    """Every ``typedef enum { A = 0, ... } name;`` of lowprec_codes.h: name -> {enumerator: value}."""
    src_dir = source_dir()
    assert src_dir is not None
    text = re.sub(r"/\*.*?\*/", "", (src_dir / "lowprec_codes.h").read_text(), flags=re.S)
    out: dict[str, dict[str, int]] = {}
    for body, name in re.findall(r"typedef\s+enum\s*\{(.*?)\}\s*(\w+)\s*;", text, flags=re.S):
        members = {}
        for item in filter(None, (i.strip() for i in body.split(","))):
            m = re.fullmatch(r"(\w+)\s*=\s*(-?\d+)", item)
            assert m, f"{name}: every enumerator needs an explicit value, got {item!r}"
            members[m.group(1)] = int(m.group(2))
        out[name] = members
    assert out, "no typedef enum found in lowprec_codes.h"
    return out


def test_every_header_enum_has_its_python_mirror_and_back():
    header = header_enums()
    assert set(header) == set(C_ENUMS)
    for c_name, (py_enum, prefix) in C_ENUMS.items():
        mirrored = {prefix + m.name.upper(): int(m) for m in py_enum}
        assert header[c_name] == mirrored, c_name


def test_codes_are_distinct_within_each_enum():
    for c_name, members in header_enums().items():
        assert len(set(members.values())) == len(members), c_name


def test_the_codes_name_every_value_of_the_python_vocabularies():
    assert {m.name for m in ScaleOpCode} == set(scaling.SCALE_OPS)
    assert {m.name for m in MxRuleCode} == set(scaling.MX_RULES)
    assert {m.name for m in RoundingCode} == {r.value for r in Rounding} - {"stochastic"}
    assert all(r.code is RoundingCode[r.value] for r in Rounding if r is not Rounding.STOCHASTIC)
    assert set(accum.ALIGN_ROUNDINGS) <= {m.name for m in RoundingCode}


def test_no_other_native_source_defines_codes_of_its_own():
    src_dir = source_dir()
    assert src_dir is not None
    names = {n for members in header_enums().values() for n in members}
    for p in sorted(src_dir.glob("*.*[chu]")):
        if p.name == "lowprec_codes.h":
            continue
        text = p.read_text()
        for n in names:
            assert not re.search(rf"\b{n}\s*=", text), f"{p.name} defines {n} again"
