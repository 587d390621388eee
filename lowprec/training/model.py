"""A small decoder-only MoE transformer over bytes, whose linear layers follow a training recipe.

Architecture (DeepSeek-style, small): byte embedding -> ``n_layers`` x [RMSNorm -> causal self-attention
with RoPE -> residual; RMSNorm -> MoE feed-forward -> residual] -> RMSNorm -> output head. The MoE
feed-forward is a shared expert plus ``n_experts`` routed experts (SwiGLU each), a softmax router that
picks ``top_k`` experts per token and weights their outputs by the renormalised router probabilities,
and a switch-style load-balancing loss (``aux_loss_weight``). The expert inputs are the tokens that an
expert-parallel system would DISPATCH; the expert outputs are what it would COMBINE.

Precision (DeepSeek-V3, SPEC 3): the linear layers of attention (``qkv``, ``out``) and of every expert
(``gate_up``, ``down``) are ``QuantizedLinear`` (three GEMMs by the recipe); the embedding, output head,
router, norms and the attention score/softmax/value products stay float32. Master weights are float32.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..nn import GemmObserver, QuantizedLinear, TrainingRecipe

ActivationObserver = Callable[[str, str, torch.Tensor], None]   # (layer, "dispatch" | "combine", tensor)


@dataclass(frozen=True)
class ModelConfig:
    vocab: int = 256
    d_model: int = 256
    n_layers: int = 2
    n_heads: int = 4
    n_experts: int = 4
    top_k: int = 2
    d_expert: int = 256
    d_shared: int = 256
    rope_base: float = 10000.0
    aux_loss_weight: float = 0.01

    def __post_init__(self) -> None:
        for name, v in asdict(self).items():
            if isinstance(v, int) and v < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {v}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model={self.d_model} must split into {self.n_heads} heads of even size")
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k={self.top_k} exceeds n_experts={self.n_experts}")


def _rope(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotary position embedding over the last dim of (batch, heads, seq, head_dim), pairs (i, i + d/2)."""
    seq, d = x.shape[-2], x.shape[-1]
    inv = base ** (-torch.arange(0, d // 2, dtype=torch.float32) / (d // 2))
    ang = torch.arange(seq, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, recipe: TrainingRecipe, name: str, backend: str) -> None:
        super().__init__()
        self.cfg = cfg
        self.qkv = QuantizedLinear(cfg.d_model, 3 * cfg.d_model, recipe, backend=backend, name=f"{name}.qkv")
        self.out = QuantizedLinear(cfg.d_model, cfg.d_model, recipe, backend=backend, name=f"{name}.out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H = self.cfg.n_heads
        q, k, v = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
        q, k = _rope(q, self.cfg.rope_base), _rope(k, self.cfg.rope_base)
        att = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(att.transpose(1, 2).reshape(B, T, D))


class Expert(nn.Module):
    """SwiGLU: down(silu(gate) * up), gate and up in one fused linear."""

    def __init__(self, d_model: int, d_ff: int, recipe: TrainingRecipe, name: str, backend: str) -> None:
        super().__init__()
        self.gate_up = QuantizedLinear(d_model, 2 * d_ff, recipe, backend=backend, name=f"{name}.gate_up")
        self.down = QuantizedLinear(d_ff, d_model, recipe, backend=backend, name=f"{name}.down")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(nn.functional.silu(gate) * up)


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig, recipe: TrainingRecipe, name: str, backend: str) -> None:
        super().__init__()
        self.cfg, self.name = cfg, name
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)          # float32 (SPEC 3)
        self.shared = Expert(cfg.d_model, cfg.d_shared, recipe, f"{name}.shared", backend)
        self.experts = nn.ModuleList(Expert(cfg.d_model, cfg.d_expert, recipe, f"{name}.expert{e}", backend)
                                     for e in range(cfg.n_experts))
        self.activation_observer: ActivationObserver | None = None
        self.aux_loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        h = x.reshape(-1, shape[-1])
        probs = self.router(h).softmax(dim=-1)
        top_p, top_e = probs.topk(self.cfg.top_k, dim=-1)
        top_p = top_p / top_p.sum(dim=-1, keepdim=True)
        out = self.shared(h)
        combined: list[torch.Tensor] = []
        for e, expert in enumerate(self.experts):
            tok, slot = (top_e == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            y = expert(h[tok])
            combined.append(y)
            out = out.index_add(0, tok, y * top_p[tok, slot, None])
        if self.activation_observer is not None:
            self.activation_observer(self.name, "dispatch", h.detach())
            self.activation_observer(self.name, "combine", torch.cat(combined).detach())
        frac = torch.zeros(self.cfg.n_experts).index_add_(0, top_e.flatten(), torch.ones(top_e.numel()))
        self.aux_loss = self.cfg.n_experts * (frac / top_e.numel() * probs.mean(0)).sum()
        return out.reshape(shape)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, recipe: TrainingRecipe, i: int, backend: str) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(cfg.d_model), nn.RMSNorm(cfg.d_model)
        self.attn = Attention(cfg, recipe, f"layers.{i}.attn", backend)
        self.moe = MoE(cfg, recipe, f"layers.{i}.moe", backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.moe(self.norm2(x))


class MoETransformer(nn.Module):
    def __init__(self, cfg: ModelConfig, recipe: TrainingRecipe, backend: str = "auto") -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, recipe, i, backend) for i in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        nn.init.normal_(self.embed.weight, std=1.0)
        nn.init.normal_(self.head.weight, std=cfg.d_model ** -0.5)
        for block in self.blocks():    # residual branches start small (scaled by depth)
            experts = [e for e in block.moe.experts if isinstance(e, Expert)]
            for lin in (block.attn.out, block.moe.shared.down, *(e.down for e in experts)):
                lin.weight.data.mul_(1 / math.sqrt(2 * cfg.n_layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks():
            x = block(x)
        return self.head(self.norm(x))

    def blocks(self) -> list[Block]:
        """The transformer blocks, in order (``layers`` typed)."""
        return [b for b in self.layers if isinstance(b, Block)]

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(training objective = cross-entropy + aux load-balancing loss, the cross-entropy alone) in nats/byte."""
        logits = self.forward(tokens)
        ce = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        aux = sum(block.moe.aux_loss for block in self.blocks())
        return ce + self.cfg.aux_loss_weight * aux, ce

    def set_observers(self, gemm: GemmObserver | None, activations: ActivationObserver | None) -> None:
        """Route every quantised linear's operands to ``gemm`` and the MoE dispatch/combine activations to
        ``activations`` (None switches recording off)."""
        for m in self.modules():
            if isinstance(m, QuantizedLinear):
                m.observer = gemm
            elif isinstance(m, MoE):
                m.activation_observer = activations

    def describe(self) -> dict[str, Any]:
        n = sum(p.numel() for p in self.parameters())
        quantised = sum(m.weight.numel() for m in self.modules() if isinstance(m, QuantizedLinear))
        return {"parameters": n, "quantised_linear_parameters": quantised}
