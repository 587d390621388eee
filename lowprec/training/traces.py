"""GEMM traces of real training: every quantised GEMM's operands and the MoE dispatch/combine activations.

On-disk format (``TRACE_FORMAT``, version ``TRACE_VERSION``), a directory with:

* ``step_<NNNNNNNN>.safetensors``, one per recorded step: the high-precision tensors the layers saw
  before quantisation, named ``<layer>.x`` (input, tokens x in), ``<layer>.w`` (weight, out x in),
  ``<layer>.dy`` (output gradient, tokens x out) for every quantised linear, and
  ``<moe layer>.dispatch`` (the tokens sent to the experts, tokens x d_model) and ``<moe layer>.combine``
  (every expert output sent back, (tokens * top_k) x d_model). Stored in ``dtype``: bfloat16 for a BF16
  run -- exact for the GEMM operands (the values the BF16 GEMMs consumed); the dispatch/combine
  activations are rounded to BF16 when stored, as a BF16 all-to-all sends them -- float32 otherwise.
* ``index.json``: ``format``, ``version``, the run's ``config`` and ``corpus_sha256``, and per file its
  ``step``, ``sha256``, ``bytes`` and ``tensors`` (name -> dtype, shape), the GEMMs (``gemms``: layer,
  kind fprop/dgrad/wgrad, and which stored tensors form A (M x K) and B (K x N), transposed or not),
  and what the size cap left out (``skipped``).

The three GEMMs of a linear (see ``lowprec.nn``): Fprop A = x, B = w^T; Dgrad A = dy, B = w; Wgrad
A = dy^T, B = x. ``load_trace`` refuses an index of another format/version, a missing, truncated or
edited file (size and SHA-256 checked before any tensor is read).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file

TRACE_FORMAT = "lowprec-gemm-trace"
TRACE_VERSION = 1
GEMM_OPERANDS = {   # kind -> ((tensor, transposed) for A, (tensor, transposed) for B)
    "fprop": (("x", False), ("w", True)),
    "dgrad": (("dy", False), ("w", False)),
    "wgrad": (("dy", True), ("x", False)),
}


_ENTRY_KEYS = frozenset({"file", "step", "sha256", "bytes", "gemms", "tensors"})


class TraceError(ValueError):
    """A trace that cannot be trusted: wrong format or version, missing, truncated or edited files."""


class TraceRecorder:
    """Collects one step's tensors (``GemmObserver`` and activation observer of ``MoETransformer``) up to
    ``max_bytes`` over the whole trace; tensors past the cap are listed in the index as skipped."""

    def __init__(self, out_dir: Path, *, dtype: torch.dtype = torch.float32, max_bytes: int = 64 << 20,
                 meta: dict[str, Any] | None = None) -> None:
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"trace dtype must be float32 or bfloat16, got {dtype}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.out_dir, self.dtype, self.max_bytes = Path(out_dir), dtype, max_bytes
        self.meta = dict(meta or {})
        self.files: list[dict[str, Any]] = []
        self.skipped: list[str] = []
        self._tensors: dict[str, torch.Tensor] = {}
        self._step: int | None = None
        self._bytes = 0

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps so that a resumed run records exactly what an uninterrupted one would."""
        return {"files": list(self.files), "skipped": list(self.skipped), "bytes": self._bytes}

    def restore(self, state: dict[str, Any]) -> None:
        self.files, self.skipped, self._bytes = list(state["files"]), list(state["skipped"]), int(state["bytes"])

    @property
    def bytes_written(self) -> int:
        return sum(f["bytes"] for f in self.files)

    def start(self, step: int) -> None:
        if self._step is not None:
            raise RuntimeError(f"step {self._step} is still being recorded")
        self._step, self._tensors = step, {}

    def observe(self, layer: str, tensors: dict[str, torch.Tensor]) -> None:
        for kind, t in tensors.items():
            self._add(f"{layer}.{kind}", t)

    def observe_activation(self, layer: str, kind: str, t: torch.Tensor) -> None:
        self._add(f"{layer}.{kind}", t)

    def _add(self, name: str, t: torch.Tensor) -> None:
        if self._step is None:
            return
        t = t.detach().to(self.dtype, copy=True).contiguous()
        size = t.numel() * t.element_size()
        if self._bytes + size > self.max_bytes:
            self.skipped.append(f"step {self._step}: {name}")
            return
        if name in self._tensors:
            raise RuntimeError(f"{name} recorded twice in step {self._step}")
        self._tensors[name] = t
        self._bytes += size

    def finish(self) -> Path | None:
        """Write the step's tensors (atomically) and the updated index; None when nothing fitted."""
        step, tensors = self._step, self._tensors
        self._step, self._tensors = None, {}
        if step is None or not tensors:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"step_{step:08d}.safetensors"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file(tensors, str(tmp))
        data = tmp.read_bytes()
        tmp.replace(path)
        self.files.append({"file": path.name, "step": step, "sha256": hashlib.sha256(data).hexdigest(),
                           "bytes": len(data), "gemms": _gemms(tensors),
                           "tensors": {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)}
                                       for k, v in tensors.items()}})
        self._write_index()
        return path

    def _write_index(self) -> None:
        index = {"format": TRACE_FORMAT, "version": TRACE_VERSION, **self.meta, "files": self.files,
                 "skipped": self.skipped, "max_bytes": self.max_bytes}
        tmp = self.out_dir / f"index.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
        tmp.replace(self.out_dir / "index.json")


def _gemms(tensors: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    layers = sorted({name.rsplit(".", 1)[0] for name in tensors if name.endswith(".w")})
    out = []
    for layer in layers:
        for kind, ((a, a_t), (b, b_t)) in GEMM_OPERANDS.items():
            if f"{layer}.{a}" in tensors and f"{layer}.{b}" in tensors:
                out.append({"layer": layer, "kind": kind, "a": f"{layer}.{a}", "a_transposed": a_t,
                            "b": f"{layer}.{b}", "b_transposed": b_t})
    return out


@dataclass(frozen=True)
class TracedGemm:
    """One recorded GEMM: ``a`` (M x K) @ ``b`` (K x N), float32, as the layer's quantiser received them."""

    step: int
    layer: str
    kind: str
    a: torch.Tensor
    b: torch.Tensor

    @property
    def layer_type(self) -> str:
        """The layer's role without its index: ``attn.qkv``, ``moe.shared.down``, ``moe.expert.gate_up``..."""
        parts = self.layer.split(".")[2:]
        return ".".join("expert" if p.startswith("expert") else p for p in parts)


class Trace:
    """A validated trace directory (see ``load_trace``)."""

    def __init__(self, path: Path, index: dict[str, Any]) -> None:
        self.path, self.index = path, index

    @property
    def steps(self) -> list[int]:
        return [f["step"] for f in self.index["files"]]

    @property
    def nbytes(self) -> int:
        return sum(f["bytes"] for f in self.index["files"])

    def gemms(self, kind: str | None = None) -> Iterator[TracedGemm]:
        if kind is not None and kind not in GEMM_OPERANDS:
            raise ValueError(f"unknown GEMM kind {kind!r}; expected one of {tuple(GEMM_OPERANDS)}")
        for f in self.index["files"]:
            with safe_open(str(self.path / f["file"]), framework="pt") as st:
                for g in f["gemms"]:
                    if kind is None or g["kind"] == kind:
                        a, b = st.get_tensor(g["a"]).float(), st.get_tensor(g["b"]).float()
                        yield TracedGemm(f["step"], g["layer"], g["kind"], a.t() if g["a_transposed"] else a,
                                         b.t() if g["b_transposed"] else b)

    def activations(self, kind: str) -> Iterator[tuple[int, str, torch.Tensor]]:
        """(step, MoE layer, tensor) for ``kind`` ``dispatch`` or ``combine``, float32."""
        if kind not in ("dispatch", "combine"):
            raise ValueError(f"kind must be 'dispatch' or 'combine', got {kind!r}")
        for f in self.index["files"]:
            with safe_open(str(self.path / f["file"]), framework="pt") as st:
                for name in sorted(f["tensors"]):
                    if name.endswith(f".{kind}"):
                        yield f["step"], name.rsplit(".", 1)[0], st.get_tensor(name).float()


def load_trace(path: Path | str) -> Trace:
    """Open a trace directory, refusing (``TraceError``) anything that does not validate."""
    path = Path(path)
    idx_path = path / "index.json"
    if not idx_path.is_file():
        raise TraceError(f"{path} is not a trace: no index.json")
    try:
        index = json.loads(idx_path.read_text())
    except json.JSONDecodeError as e:
        raise TraceError(f"{idx_path} is not valid JSON: {e}") from None
    if not isinstance(index, dict) or index.get("format") != TRACE_FORMAT:
        raise TraceError(f"{idx_path} is not a {TRACE_FORMAT} index")
    if index.get("version") != TRACE_VERSION:
        raise TraceError(f"{idx_path} has trace version {index.get('version')!r}; this lab reads version "
                         f"{TRACE_VERSION}")
    files = index.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and _ENTRY_KEYS <= set(f) for f in files):
        raise TraceError(f"{idx_path} lists files without the keys {sorted(_ENTRY_KEYS)}")
    for f in files:
        if not isinstance(f["file"], str) or Path(f["file"]).name != f["file"]:
            raise TraceError(f"{idx_path} names a file outside the trace directory: {f['file']!r}")
        p = path / f["file"]
        if not p.is_file():
            raise TraceError(f"{p} is listed in the index but missing")
        data = p.read_bytes()
        if len(data) != f["bytes"]:
            raise TraceError(f"{p} has {len(data)} bytes, the index says {f['bytes']}: truncated or replaced")
        if hashlib.sha256(data).hexdigest() != f["sha256"]:
            raise TraceError(f"{p} fails its SHA-256 check: the file was edited or corrupted")
    return Trace(path, index)
