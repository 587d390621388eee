"""Communication formats for MoE dispatch and combine: FP8 (1x128 scales), LogFMT-n and BF16.

DeepSeek-V3's hardware paper (ISCA 2025, sec. 3.2) reports that FP8 dispatch with 1x128 scales halves
EP traffic vs BF16, that LogFMT-8 trained better than E4M3/E5M2 at the same bits when used for the
combine-like residual-branch output, and that LogFMT-10 was close to BF16 there. This study measures
the numerical side on activations and the bytes side on a DeepSeek-V3-sized configuration.

Data: until the lab records real BF16 training traces, the activations are a SYNTHETIC stand-in,
labelled as such in every output: a Student-t(3) body with a few per-channel outliers (x 30-300), the
heavy-tailed shape LLM activations are known to have. Dispatch = the activation entering the expert's
first GEMM (W1: hidden x ffn); combine = the expert's output (h @ W2), whose error is measured
directly and after a following projection. References are float64.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from .. import logfmt  # noqa: E402
from ..rounding import quantize  # noqa: E402
from ..scaling import quantize_tensor  # noqa: E402
from .common import ResultsCSV, student_t  # noqa: E402

DATA_LABEL = "synthetic heavy-tailed stand-in (Student-t(3) + channel outliers), not a training trace"


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


def synthetic_activations(tokens: int, hidden: int, g: torch.Generator) -> torch.Tensor:
    x = student_t((tokens, hidden), g, 3.0)
    outlier_channels = torch.randperm(hidden, generator=g)[: max(1, hidden // 500)]
    x[:, outlier_channels] *= torch.exp(torch.rand(outlier_channels.numel(), generator=g) * math.log(10) + math.log(30))
    return x.float()


def _metrics(x: torch.Tensor, q: torch.Tensor, w: torch.Tensor) -> dict[str, float]:
    x64, q64 = x.double(), q.double()
    err = q64 - x64
    nz = x64 != 0
    ref_out = x64 @ w
    return {
        "mean_rel_err": (err[nz].abs() / x64[nz].abs()).mean().item(),
        "rel_rms_err": (err.norm() / x64.norm()).item(),
        "snr_db": 20 * math.log10(x64.norm().item() / max(err.norm().item(), 1e-300)),
        "gemm_rel_err": ((q64 @ w - ref_out).norm() / ref_out.norm()).item(),
    }


def run_formats(out: Path, tokens: int, hidden: int, ffn: int, seed: int) -> Path:
    csv = ResultsCSV(out / "comm_formats.csv", key=("stage", "format"))
    g = torch.Generator().manual_seed(seed)
    x = synthetic_activations(tokens, hidden, g)
    w1 = torch.randn(hidden, ffn, generator=g, dtype=torch.float64) / math.sqrt(hidden)
    w2 = torch.randn(ffn, hidden, generator=g, dtype=torch.float64) / math.sqrt(ffn)
    h = torch.nn.functional.silu(x.double() @ w1)
    y = (h @ w2).float()                                   # the expert output that combine sends
    w_next = torch.randn(hidden, 512, generator=g, dtype=torch.float64) / math.sqrt(hidden)
    for stage, data, w in (("dispatch", x, w1), ("combine", y, w_next)):
        for f in FORMATS:
            if csv.has(stage=stage, format=f.name):
                continue
            row = {"stage": stage, "format": f.name, "bytes_per_element": f.bytes_per_element(),
                   **_metrics(data, f.fn(data), w), "data": DATA_LABEL}
            csv.add(row)
            print(f"{stage:9s} {f.name:16s} {row['bytes_per_element']:.4f} B/elem  SNR {row['snr_db']:6.2f} dB  "
                  f"GEMM rel err {row['gemm_rel_err']:.3e}", flush=True)
    return csv.path


@dataclass(frozen=True)
class MoEConfig:
    """What sets EP traffic per token. DeepSeek-V3: hidden 7168, top-8 of 256 routed experts, each
    token sent to at most 4 nodes, 61 layers of which the first 3 are dense (58 MoE layers)."""

    name: str = "DeepSeek-V3"
    hidden: int = 7168
    top_k: int = 8
    max_nodes: int = 4
    moe_layers: int = 58


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


def plot(formats_csv: Path, out: Path) -> Path:
    df = pd.read_csv(formats_csv)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, stage in zip(axes, ["dispatch", "combine"]):
        sub = df[df["stage"] == stage]
        ax.scatter(sub["bytes_per_element"], sub["snr_db"])
        for _, r in sub.iterrows():
            ax.annotate(r["format"], (r["bytes_per_element"], r["snr_db"]), fontsize=8,
                        xytext=(4, 2), textcoords="offset points")
        ax.set(title=f"{stage}", xlabel="bytes per element (scales / metadata included)", ylabel="SNR (dB)")
    fig.suptitle(f"Communication formats on {DATA_LABEL}", fontsize=9)
    fig.tight_layout()
    path = out / "comm_formats.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("reports"))
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=7168)
    ap.add_argument("--ffn", type=int, default=2048, help="expert intermediate size (DeepSeek-V3: 2048)")
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--max-nodes", type=int, default=4)
    ap.add_argument("--moe-layers", type=int, default=58)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = run_formats(args.out, args.tokens, args.hidden, args.ffn, args.seed)
    tables = [volume_table(MoEConfig())]
    user = MoEConfig("user", args.hidden, args.top_k, args.max_nodes, args.moe_layers)
    if user != MoEConfig("user"):
        tables.append(volume_table(user))
    vol = pd.concat(tables)
    vol.to_csv(args.out / "comm_volume.csv", index=False)
    print(vol[["config", "format", "bytes_per_token_copy", "vs_bf16", "bytes_per_token_inter_node"]]
          .to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {csv_path}, {args.out / 'comm_volume.csv'} and {plot(csv_path, args.out)}")


if __name__ == "__main__":
    main()
