"""Communication formats for MoE dispatch and combine: FP8 (1x128 scales), LogFMT-n and BF16.

DeepSeek-V3's hardware paper (ISCA 2025, sec. 3.2) reports that FP8 dispatch with 1x128 scales halves
EP traffic vs BF16, that LogFMT-8 trained better than E4M3/E5M2 at the same bits when used for the
combine-like residual-branch output, and that LogFMT-10 was close to BF16 there. This study measures
the numerical side on activations and the bytes side on a DeepSeek-V3-sized configuration.

Data, one of two sources, named in every output:

* Synthetic (default): a SYNTHETIC stand-in, labelled as such: a Student-t(3) body with a few
  per-channel outliers (x 30-300), the heavy-tailed shape LLM activations are known to have. Dispatch =
  the activation entering the expert's first GEMM (W1: hidden x ffn); combine = the expert's output
  (h @ W2), whose error is measured directly and after a following projection (hidden x ``NEXT_OUT``).
  A point is (stage, format, tokens, hidden, ffn, next_out, seed, data).
* A recorded training trace (``trace=DIR``, ``--trace DIR``; ``lowprec.training.traces``), labelled
  "recorded BF16 training trace (step S, run key K)". Per recorded step and MoE layer:
  dispatch = the recorded ``<layer>.dispatch`` (the normalised MoE input, one row per token: each token
  is sent to its top-k experts, the same quantised row to each, so the cast is measured once per
  token); its GEMM = each routed expert's ``gate_up`` weight (from the trace, as (in, out)) applied to
  the tokens routed to that expert. The routing is replayed exactly: every row of the expert's recorded
  ``gate_up.x`` is found, bit for bit, among the dispatch rows, and the GEMM error is
  ||(q(x) - x)[rows_e] W_e|| / ||x[rows_e] W_e|| summed over experts (1x128 and LogFMT tiles run along
  a row, so quantising the whole dispatch tensor is quantising each copy).
  combine = the recorded ``<layer>.combine`` (every routed expert output, (tokens * top_k) x d_model,
  before the router weighting); its GEMM = the next layer's ``attn.qkv`` weight, the next quantised
  GEMM the residual stream meets (a proxy: in the model the router weighting, the shared expert, the
  residual add and an RMSNorm come between). After the LAST layer the next GEMM is the output head,
  which is float32 and not traced, so the last layer's combine uses its own layer's ``attn.qkv``
  weight (a trained projection of the same residual stream); the ``gemm_weight`` column names the
  weight used. A point is (stage, format, data, trace_sha256, step, layer): one point per MoE layer,
  not all layers concatenated, because layers differ (their activation scales and outliers differ)
  and a pooled number would hide the worst one; each row also stores its sums of squares so the
  layers are pooled exactly (``pool_layers``: SNR = 10 log10(sum ||x||^2 / sum ||q(x) - x||^2)). The
  key holds the trace's content identity (``common.trace_sha256``), never its path: another trace
  recomputes, the same trace (wherever it lies) is reused. BF16 on a BF16 trace is exact (the recorded
  values are the BF16 values the GEMMs consumed): SNR inf, GEMM error 0, drawn as text, not as a bar.
  Outputs: ``comm_formats_trace.csv`` (pooled over layers), ``comm_formats_trace_layers.csv`` (per
  layer) and ``comm_formats_trace.png``, beside (not over) the synthetic run's ``comm_formats.*``.

Every row holds the bytes per element (payload + scales / metadata per 128 elements), the relative RMS
error and SNR of the cast, the mean elementwise relative error, and the relative error of the following
GEMM. References are float64. The byte volumes per token (``volume_table``) follow from the definitions
and the MoE configuration and are not stored.

Usage: python studies/comm_formats.py [--quick] [--out lowprec_runs] [--seed 0] [--jobs N]
       [--dask ADDRESS|local] [--tokens 256] [--hidden 7168] [--ffn 2048] [--top-k 8 ...]
       python studies/comm_formats.py --trace RUN_DIR/trace [--formats ...] [--top-k 8 ...]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib import ticker  # noqa: E402

from .. import logfmt  # noqa: E402
from ..report import Figure, Table  # noqa: E402
from ..rounding import quantize  # noqa: E402
from ..scaling import quantize_tensor  # noqa: E402
from ..training.traces import TraceError  # noqa: E402
from .common import (  # noqa: E402
    StudyOutput, TraceData, load_checked_trace, open_trace, prepare_out_dir, resolve_params, run_from_args, student_t,
    study_parser,
)
from .store import ResultStore  # noqa: E402
from .sweep import run_sweep  # noqa: E402

STUDY = "comm_formats"
DATA_ID = "synthetic_student_t3_channel_outliers"
DATA_LABEL = "synthetic heavy-tailed stand-in (Student-t(3) + channel outliers), not a training trace"
NEXT_OUT = 512
STAGES = ("dispatch", "combine")
TRACE_DATA_ID = "recorded_trace"
SYNTHETIC_ONLY = ("tokens", "hidden", "ffn")      # parameters that size the synthetic data only


@dataclass(frozen=True)
class CommFormat:
    name: str
    bits_per_element: float          # payload bits
    meta_bytes_per_tile: float       # scales / metadata per 128 elements
    fn: Callable[[torch.Tensor], torch.Tensor]

    def bytes_per_element(self, tile: int = 128) -> float:
        return self.bits_per_element / 8 + self.meta_bytes_per_tile / tile


FORMATS = [
    CommFormat("bf16", 16, 0, lambda x: quantize(x, "bf16", out_dtype=torch.float32)),
    CommFormat("e4m3_1x128", 8, 4, lambda x: quantize_tensor(x, "deepseek_v3").dequantize()),
    CommFormat("e4m3_1x128_pow2", 8, 4, lambda x: quantize_tensor(x, "deepseek_v3_ue8m0").dequantize()),
    CommFormat("e5m2_1x128", 8, 4, lambda x: quantize_tensor(x, "deepseek_v3", fmt="e5m2").dequantize()),
    CommFormat("logfmt8", 8, 8, lambda x: logfmt.quantize(x, 8, 128)),
    CommFormat("logfmt10", 10, 8, lambda x: logfmt.quantize(x, 10, 128)),
]
_BY_NAME = {f.name: f for f in FORMATS}


@dataclass(frozen=True)
class MoEConfig:
    """What sets EP traffic per token. DeepSeek-V3: hidden 7168, top-8 of 256 routed experts, each
    token sent to at most 4 nodes, 61 layers of which the first 3 are dense (58 MoE layers)."""

    name: str = "DeepSeek-V3"
    hidden: int = 7168
    top_k: int = 8
    max_nodes: int = 4
    moe_layers: int = 58


QUICK = {"tokens": 64}
FULL = {"tokens": 256}
COMMON = {"hidden": 7168, "ffn": 2048, "formats": [f.name for f in FORMATS], "top_k": 8, "max_nodes": 4,
          "moe_layers": 58, "trace": None}


def synthetic_activations(tokens: int, hidden: int, g: torch.Generator) -> torch.Tensor:
    x = student_t((tokens, hidden), g, 3.0)
    outlier_channels = torch.randperm(hidden, generator=g)[: max(1, hidden // 500)]
    x[:, outlier_channels] *= torch.exp(torch.rand(outlier_channels.numel(), generator=g) * math.log(10) + math.log(30))
    return x.float()


@functools.lru_cache(maxsize=2)
def _stage_data(tokens: int, hidden: int, ffn: int, next_out: int, seed: int) -> dict[str, tuple[torch.Tensor,
                                                                                                  torch.Tensor]]:
    """Per stage, (the activation sent, the weight of the GEMM that follows): shared by the points of one
    configuration in a process, never modified."""
    g = torch.Generator().manual_seed(seed)
    x = synthetic_activations(tokens, hidden, g)
    w1 = torch.randn(hidden, ffn, generator=g, dtype=torch.float64) / math.sqrt(hidden)
    w2 = torch.randn(ffn, hidden, generator=g, dtype=torch.float64) / math.sqrt(ffn)
    y = (torch.nn.functional.silu(x.double() @ w1) @ w2).float()        # the expert output that combine sends
    w_next = torch.randn(hidden, next_out, generator=g, dtype=torch.float64) / math.sqrt(hidden)
    return {"dispatch": (x, w1), "combine": (y, w_next)}


def _metrics(x: torch.Tensor, q: torch.Tensor, w: torch.Tensor) -> dict[str, float]:
    x64, q64 = x.double(), q.double()
    err = q64 - x64
    nz = x64 != 0
    ref_out = x64 @ w
    return {
        "rel_rms_err": (err.norm() / x64.norm()).item(),
        "snr_db": 20 * math.log10(x64.norm().item() / max(err.norm().item(), 1e-300)),
        "gemm_rel_err": ((q64 @ w - ref_out).norm() / ref_out.norm()).item(),
        "mean_elem_rel_err": (err[nz].abs() / x64[nz].abs()).mean().item(),
    }


def points(*, tokens: int, hidden: int, ffn: int, seed: int, formats: Sequence[str]) -> list[dict]:
    return [{"stage": s, "format": f, "tokens": tokens, "hidden": hidden, "ffn": ffn, "next_out": NEXT_OUT,
             "seed": seed, "data": DATA_ID} for s in STAGES for f in formats]


def compute_point(config: Mapping[str, Any], trace: str | None = None) -> list[dict]:
    """The row of one point. A trace point (``data == TRACE_DATA_ID``) needs ``trace``, the trace
    directory's path on this machine (bound with ``functools.partial``; it is not part of the key): its
    content must be the point's ``trace_sha256`` (``TraceError`` otherwise)."""
    f = _BY_NAME[config["format"]]
    if config["data"] == TRACE_DATA_ID:
        if trace is None:
            raise ValueError(f"{STUDY}: point {dict(config)} is on a recorded trace; pass its path as trace=")
        return [{"bytes_per_element": f.bytes_per_element(), **_trace_metrics(config, trace, f)}]
    data, w = _stage_data(config["tokens"], config["hidden"], config["ffn"], config["next_out"],
                          config["seed"])[config["stage"]]
    return [{"bytes_per_element": f.bytes_per_element(), **_metrics(data, f.fn(data), w)}]


# -- recorded traces -----------------------------------------------------------------------------
def trace_layout(index: Mapping[str, Any]) -> dict[tuple[int, str], dict[str, Any]]:
    """Per (step, MoE layer) of a trace index, the tensor names a point reads: ``dispatch``,
    ``combine``, ``experts`` ((gate_up.x, gate_up.w) per routed expert that received tokens) and
    ``next_w`` (the following attn.qkv weight, see the module doc). ``TraceError`` naming what is
    missing (e.g. left out by the trace's size cap), so a trace that cannot serve is refused before work."""
    n_layers = index.get("config", {}).get("model", {}).get("n_layers")
    out: dict[tuple[int, str], dict[str, Any]] = {}
    problems = []
    for f in index["files"]:
        names = f["tensors"]
        for name in sorted(names, key=_natural):
            if not name.endswith(".moe.dispatch"):
                continue
            layer = name.removesuffix(".dispatch")                   # layers.<i>.moe
            i = int(layer.split(".")[1])
            experts = sorted({n.removesuffix(".gate_up.x") for n in names
                              if n.startswith(f"{layer}.expert") and n.endswith(".gate_up.x")}, key=_natural)
            nxt, own = f"layers.{i + 1}.attn.qkv.w", f"layers.{i}.attn.qkv.w"
            last = n_layers is not None and i + 1 >= n_layers or (n_layers is None and nxt not in names)
            want = [f"{layer}.combine", *(f"{e}.gate_up.w" for e in experts), own if last else nxt]
            missing = [n for n in want if n not in names]
            if not experts:
                missing.append(f"{layer}.expert<e>.gate_up.x")
            if missing:
                problems.append(f"step {f['step']}: {', '.join(missing)}")
                continue
            out[(f["step"], layer)] = {
                "dispatch": name, "combine": f"{layer}.combine", "file": f["file"],
                "experts": [(f"{e}.gate_up.x", f"{e}.gate_up.w") for e in experts],
                "next_w": own if last else nxt,
                "next_w_label": f"{own} (last layer: its own; the output head is not traced)" if last else nxt,
                "hidden": names[name]["shape"][1]}
    if problems:
        raise TraceError(f"{STUDY}: the trace lacks tensors the study needs ({'; '.join(problems)}); "
                         "was it recorded with a size cap (trace_max_bytes) too small?")
    if not out:
        raise TraceError(f"{STUDY}: the trace has no MoE dispatch / combine activations")
    return out


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in name.replace(".", " . ").split()]


def trace_points(td: TraceData, formats: Sequence[str]) -> list[dict]:
    return [{"stage": s, "format": f, "data": TRACE_DATA_ID, "trace_sha256": td.sha256, "step": step, "layer": layer}
            for (step, layer) in trace_layout(td.index) for s in STAGES for f in formats]


@functools.lru_cache(maxsize=8)
def _trace_stage(path: str, sha256: str, step: int, layer: str, stage: str) -> dict[str, Any]:
    """The activation of one (step, layer, stage) and its following GEMM(s): a list of (row indices or
    None for all rows, weight as (in, out) float64); shared by the formats' points in a process."""
    from safetensors import safe_open

    trace = load_checked_trace(path, sha256)
    spec = trace_layout(trace.index)[(step, layer)]
    with safe_open(str(trace.path / spec["file"]), framework="pt") as st:
        x = st.get_tensor(spec[stage]).float()
        gemms: list[tuple[torch.Tensor | None, torch.Tensor]]
        if stage == "combine":
            gemms = [(None, st.get_tensor(spec["next_w"]).double().t())]
            label = spec["next_w_label"]
        else:
            rows = {r.numpy().tobytes(): i for i, r in enumerate(x)}
            gemms = []
            for xe_name, we_name in spec["experts"]:
                xe = st.get_tensor(xe_name).float()
                idx = [rows.get(r.numpy().tobytes()) for r in xe]
                if any(i is None for i in idx):
                    raise TraceError(f"{STUDY}: {xe_name} has rows that are not in {spec['dispatch']} (step {step}): "
                                     "the routing cannot be replayed")
                gemms.append((torch.tensor(idx), st.get_tensor(we_name).double().t()))
            label = f"{layer}.expert<e>.gate_up.w on the tokens routed to expert e"
    return {"x": x, "gemms": gemms, "gemm_weight": label}


def _trace_metrics(config: Mapping[str, Any], path: str, f: CommFormat) -> dict[str, Any]:
    d = _trace_stage(str(path), config["trace_sha256"], config["step"], config["layer"], config["stage"])
    x = d["x"]
    x64 = x.double()
    err = f.fn(x).double() - x64
    nz = x64 != 0
    sq_ref, sq_err = x64.square().sum().item(), err.square().sum().item()
    g_ref = g_err = 0.0
    for idx, w in d["gemms"]:
        xs, es = (x64, err) if idx is None else (x64[idx], err[idx])
        g_ref += (xs @ w).square().sum().item()
        g_err += (es @ w).square().sum().item()     # q(x) W - x W, without cancellation
    elem = (err[nz].abs() / x64[nz].abs())
    return {"rel_rms_err": math.sqrt(sq_err / sq_ref), "snr_db": _db(sq_ref, sq_err),
            "gemm_rel_err": math.sqrt(g_err / g_ref), "mean_elem_rel_err": elem.mean().item(),
            "rows": x.shape[0], "hidden": x.shape[1], "gemm_weight": d["gemm_weight"],
            "gemm_out": d["gemms"][0][1].shape[1], "sq_ref": sq_ref, "sq_err": sq_err, "gemm_sq_ref": g_ref,
            "gemm_sq_err": g_err, "n_nonzero": int(nz.sum()), "sum_elem_rel_err": elem.sum().item()}


def _db(sq_ref: float, sq_err: float) -> float:
    """SNR in dB; infinite for an exact cast (BF16 of a BF16 trace), not a made-up large number."""
    return math.inf if sq_err == 0 else 10 * math.log10(sq_ref / sq_err)


def pool_layers(layers: pd.DataFrame) -> pd.DataFrame:
    """Per (stage, format), the trace rows of every (step, layer) pooled exactly from their sums of
    squares: one row per stage x format with the columns of a synthetic run's rows."""
    out = []
    for (stage, fmt), g in layers.groupby(["stage", "format"], sort=False):
        out.append({"stage": stage, "format": fmt, "data": g["data"].iloc[0], "trace_sha256": g["trace_sha256"].iloc[0],
                    "steps": " ".join(map(str, sorted(set(g["step"])))), "layers": g["layer"].nunique(),
                    "rows": int(g["rows"].sum()), "hidden": int(g["hidden"].iloc[0]),
                    "bytes_per_element": g["bytes_per_element"].iloc[0],
                    "rel_rms_err": math.sqrt(g["sq_err"].sum() / g["sq_ref"].sum()),
                    "snr_db": _db(g["sq_ref"].sum(), g["sq_err"].sum()),
                    "gemm_rel_err": math.sqrt(g["gemm_sq_err"].sum() / g["gemm_sq_ref"].sum()),
                    "mean_elem_rel_err": g["sum_elem_rel_err"].sum() / g["n_nonzero"].sum(),
                    "min_layer_snr_db": g["snr_db"].min(), "max_layer_gemm_rel_err": g["gemm_rel_err"].max()})
    return pd.DataFrame(out)


def volume_table(cfg: MoEConfig) -> pd.DataFrame:
    """Bytes per token for dispatch and combine, per format: one copy, all top-k copies (what the
    receiving GPUs get), and the inter-node copies (one per node with node-limited routing)."""
    rows = []
    bf16 = FORMATS[0].bytes_per_element() * cfg.hidden
    for f in FORMATS:
        per_copy = f.bytes_per_element() * cfg.hidden
        rows.append({"config": cfg.name, **{k: v for k, v in asdict(cfg).items() if k != "name"},
                     "format": f.name, "bytes_per_token_copy": per_copy,
                     "vs_bf16": per_copy / bf16,
                     "bytes_per_token_all_experts": per_copy * cfg.top_k,
                     "bytes_per_token_inter_node": per_copy * cfg.max_nodes,
                     "MB_per_1k_tokens_all_moe_layers": per_copy * cfg.top_k * cfg.moe_layers * 1000 / 1e6})
    return pd.DataFrame(rows)


def _check(p: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    problems = [f"unknown format {f!r} (known: {', '.join(_BY_NAME)})" for f in p["formats"] if f not in _BY_NAME]
    if p["trace"] is not None and (synthetic := [k for k in SYNTHETIC_ONLY if given.get(k) is not None]):
        problems.append(f"{', '.join(synthetic)} size the synthetic data; with a trace the sizes are the trace's")
    problems += [f"{k} must be a positive int, got {p[k]!r}" for k in ("tokens", "hidden", "ffn", "top_k",
                                                                      "max_nodes", "moe_layers")
                 if not isinstance(p[k], int) or p[k] < 1]
    if not problems and p["hidden"] % 128:
        problems.append(f"hidden must be a multiple of 128 (the 1x128 scale and LogFMT tiles), got {p['hidden']}")
    if problems:
        raise ValueError(f"{STUDY}: " + "; ".join(problems))


def run(store: ResultStore, out_dir: Path, *, quick: bool = False, seed: int = 0, jobs: int = 1,
        dask: str | None = None, progress: bool = True, **params: Any) -> StudyOutput:
    """Run (or reuse) the sweep; write comm_formats.csv / .png and comm_volume.csv into ``out_dir``.
    ``params``: tokens (quick 64, full 256), hidden, ffn, formats, and top_k, max_nodes, moe_layers of the
    user MoE configuration whose volume table is added when it differs from DeepSeek-V3's; ``trace``: the
    path of a recorded trace directory (default None: the synthetic data), which replaces the synthetic
    data (then tokens, hidden, ffn may not be given) and names the outputs ``comm_formats_trace*``
    (frames ``comm_formats_trace``, pooled over layers, and ``comm_formats_trace_layers``). A trace that
    does not validate is a ``TraceError`` (a ValueError) before any work."""
    p = resolve_params(STUDY, params, {**(QUICK if quick else FULL), **COMMON})
    _check(p, params)
    td = open_trace(p["trace"]) if p["trace"] is not None else None
    if td is not None:
        pts = trace_points(td, p["formats"])
        if bad := sorted({s["hidden"] for s in trace_layout(td.index).values() if s["hidden"] % 128}):
            raise ValueError(f"{STUDY}: the trace's d_model {bad} is not a multiple of 128 (the 1x128 scale and "
                             "LogFMT tiles)")
    out_dir = prepare_out_dir(out_dir)
    if td is None:
        pts = points(tokens=p["tokens"], hidden=p["hidden"], ffn=p["ffn"], seed=seed, formats=p["formats"])
        fn, stem, label = compute_point, STUDY, DATA_LABEL
    else:
        fn, stem, label = functools.partial(compute_point, trace=str(td.path)), f"{STUDY}_trace", td.label
    sweep = run_sweep(STUDY, pts, fn, store, jobs=jobs, dask=dask, progress=progress,
                      desc="communication formats" + (" (trace)" if td is not None else ""))
    frames: dict[str, pd.DataFrame] = {}
    layers = None
    if td is None:
        df = sweep.rows
        sizes = f"{p['tokens']} tokens x hidden {p['hidden']}, ffn {p['ffn']}, seed {seed}"
    else:
        layers = sweep.rows
        frames[f"{stem}_layers"] = layers
        layers.to_csv(out_dir / f"{stem}_layers.csv", index=False)
        df = pool_layers(layers)
        sizes = (f"trace content sha256 {td.sha256[:12]}; {layers['layer'].nunique()} MoE layers x "
                 f"{layers['step'].nunique()} step(s), d_model {int(layers['hidden'].iloc[0])}; per-layer rows "
                 f"in {stem}_layers.csv")
    frames = {stem: df, **frames}
    df.to_csv(out_dir / f"{stem}.csv", index=False)
    user = MoEConfig("user", p["hidden"], p["top_k"], p["max_nodes"], p["moe_layers"])
    vol = pd.concat([volume_table(MoEConfig())] + ([volume_table(user)] if user != MoEConfig("user") else []),
                    ignore_index=True)
    vol.to_csv(out_dir / "comm_volume.csv", index=False)
    frames["comm_volume"] = vol
    source = f"store study '{STUDY}' ({store.path.name}); {label}; {sizes}; exported to {stem}.csv"
    png = plot(df, out_dir / f"{stem}.png", label, layers)
    caption = ("SNR of the cast (left, higher is better) and relative error of the GEMM that follows "
               "(right, log scale, lower is better) per communication format, for the dispatch and the "
               "combine activations; each format's label gives its bytes per element with scales. "
               + (f"Data: {label}, not synthetic. Dispatch = the recorded MoE input, followed by each routed "
                  "expert's gate_up weight on the tokens routed to it (routing replayed from the trace); "
                  "combine = the recorded routed-expert outputs, followed by the next layer's attn.qkv weight "
                  "(the last layer: its own attn.qkv, the output head being untraced). Bars pool all MoE "
                  "layers (from sums of squares); black markers are the single layers. A cast into the format the "
                  "trace was recorded in (BF16 into BF16) is exact: no bar, its SNR is infinite."
                  if td is not None else f"Data: {DATA_LABEL}."))
    vol_caption = ("Bytes per token per format: one copy, all top-k expert copies, the inter-node copies "
                   "(node-limited routing), and MB per 1000 tokens over all MoE layers")
    return {"frames": frames, "figures": [Figure(png, caption, source)],
            "tables": [Table(vol, vol_caption, "computed from the format definitions and the MoE configuration "
                             "(DeepSeek-V3: hidden 7168, top-8, <= 4 nodes, 58 MoE layers)")],
            "sweep": sweep}


def plot(df: pd.DataFrame, path: Path, data_label: str = DATA_LABEL, layers: pd.DataFrame | None = None) -> Path:
    """Grouped horizontal bars: one row per format (labelled with its bytes / element), one bar per stage;
    with ``layers`` (trace rows per layer) the bars are the pooled values and markers the single layers."""
    fmts = list(dict.fromkeys(df["format"]))
    stages = [s for s in STAGES if s in set(df["stage"])]
    looks = {"dispatch": ("#4c72b0", ""), "combine": ("#dd8452", "//")}
    bpe = df.drop_duplicates("format").set_index("format")["bytes_per_element"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.3 * len(fmts) * len(stages) + 1.8), sharey=True,
                             layout="constrained")
    y = np.arange(len(fmts))
    height = 0.8 / len(stages)
    any_exact = False
    for ax, metric, label in ((axes[0], "snr_db", "SNR of the cast (dB)"),
                              (axes[1], "gemm_rel_err", "relative error of the next GEMM")):
        # an exact cast (BF16 of data recorded in BF16) has no error: no bar (its SNR is infinite and its
        # error has no place on a log axis), but a text saying so where the bar would start
        exact = (lambda v: np.isinf(v)) if metric == "snr_db" else (lambda v: v == 0)
        for i, stage in enumerate(stages):
            vals = df[df["stage"] == stage].set_index("format").reindex(fmts)[metric]
            colour, hatch = looks[stage]
            yy = y + (i - (len(stages) - 1) / 2) * height
            shown = vals.where(~exact(vals))
            bars = ax.barh(yy, shown.fillna(0 if metric == "snr_db" else np.nan), height * 0.92, color=colour,
                           hatch=hatch, edgecolor="white", label=stage)
            ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.1f}" if metric == "snr_db" else f"{v:.1e}"
                                       for v in shown], padding=3 if layers is None else 7, fontsize=8)
            for yv, v in zip(yy, vals):
                if exact(v):
                    any_exact = True
                    ax.text(0.01, yv, f"{stage}: exact, 0 error", transform=ax.get_yaxis_transform(),
                            va="center", ha="left", fontsize=8, color=colour, fontstyle="italic")
            if layers is not None:
                sub = layers[(layers["stage"] == stage) & ~exact(layers[metric])]
                ys = y[[fmts.index(f) for f in sub["format"]]] + (i - (len(stages) - 1) / 2) * height
                ax.plot(sub[metric], ys, ls="none", marker="|", ms=9, mew=1.6, color="black", zorder=4,
                        label="single MoE layer" if i == 0 else None)
        ax.set_xlabel(label)
        ax.grid(True, axis="x", color="#e6e6e6", lw=0.6)
        ax.set_axisbelow(True)
        span = df[metric] if layers is None else pd.concat([df[metric], layers[metric]])
        span = span[~exact(span)]
        if metric == "gemm_rel_err":
            ax.set_xscale("log")
            lo, hi = (span.min(), span.max()) if len(span) else (1e-3, 1e-1)
            ax.set_xlim(10 ** np.floor(np.log10(lo)), hi * 6)                 # room for the value labels
            ax.xaxis.set_major_locator(ticker.LogLocator(base=10))
        else:
            ax.set_xlim(0, (span.max() if len(span) else 100) * 1.15)
    axes[0].set_yticks(y, [f"{f}\n{bpe[f]:.3f} B/elem" for f in fmts], fontsize=9)
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), frameon=False)
    pooled = f", {layers['layer'].nunique()} MoE layers pooled" if layers is not None else ""
    fig.suptitle(f"MoE communication formats on {data_label}{pooled}", fontsize=10)
    if any_exact:
        fig.text(0.5, 0.0, "exact, 0 error: the data are already in this format (a BF16 trace holds BF16 values)",
                 ha="center", va="bottom", fontsize=8, color="#555555")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = study_parser(__doc__)
    ap.add_argument("--tokens", type=int, help="tokens of activations (quick: 64, full: 256)")
    ap.add_argument("--hidden", type=int, help="hidden size (default: 7168)")
    ap.add_argument("--ffn", type=int, help="expert intermediate size (DeepSeek-V3: 2048)")
    ap.add_argument("--formats", nargs="+", help=f"formats (default: {' '.join(_BY_NAME)})")
    ap.add_argument("--top-k", type=int, help="experts per token, for the volume table (default: 8)")
    ap.add_argument("--max-nodes", type=int, help="nodes a token is sent to, for the volume table (default: 4)")
    ap.add_argument("--moe-layers", type=int, help="MoE layers, for the volume table (default: 58)")
    ap.add_argument("--trace", metavar="DIR", help="a recorded training trace directory (a run's trace/): measure "
                    "its dispatch / combine activations instead of the synthetic data")
    args = ap.parse_args(argv)
    res = run_from_args(run, args, ("tokens", "hidden", "ffn", "formats", "top_k", "max_nodes", "moe_layers", "trace"))
    stem = STUDY if args.trace is None else f"{STUDY}_trace"
    df, vol = res["frames"][stem], res["frames"]["comm_volume"]
    print(res["figures"][0].source)
    print(df[["stage", "format", "bytes_per_element", "snr_db", "gemm_rel_err"]]
          .to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(vol[["config", "format", "bytes_per_token_copy", "vs_bf16", "bytes_per_token_inter_node"]]
          .to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {res['figures'][0].path}, {args.out / (stem + '.csv')} and {args.out / 'comm_volume.csv'}")
