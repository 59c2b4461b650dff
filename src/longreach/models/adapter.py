"""Our own layer loop over a Hugging Face decoder's modules and weights.

The adapter projects q/k/v, runs norms and the MLP; attention is handed to a policy
(the method) with pre-RoPE queries and keys and their true positions.

`decode_weights="float16"` (a float32 model only) keeps a float16 copy of every projection, MLP and
lm-head matrix for passes over a single token (decode steps, and the logits of one position):
decoding reads the weights from memory at every step, and on a CPU that read is most of its time,
so half the bytes decode up to twice as fast. Prompts of several tokens still run in float32, so
the stored KV of a prefilled prompt is unchanged. The inputs of those matrices are rounded to
float16 too: a model whose activations exceed float16's range (65504) must not use it.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ..errors import LongreachError
from ..rope import RotaryEmbedding

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
DECODE_WEIGHTS = (None, "float16")


def check_decode_weights(value, name: str = "decode_weights") -> None:
    """Refuse a `decode_weights` value other than float16 or None (`name`: how the caller spells it)."""
    if value not in DECODE_WEIGHTS:
        raise LongreachError(f"{name} must be float16 (or left out), not {value!r}")


class AttentionPolicy(Protocol):
    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               positions: torch.Tensor) -> torch.Tensor: ...


class DecoderAdapter:
    """A Llama-family decoder (Llama, Mistral, Qwen2, Qwen3) driven layer by layer."""

    def __init__(self, hf_model, device: torch.device | str | None = None, decode_weights: str | None = None):
        config = hf_model.config
        model_type = getattr(config, "model_type", "?")
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise LongreachError(
                f"unsupported architecture {model_type!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
        self.hf_model = hf_model.eval()
        self.config = config
        self.model_type = model_type
        self.device = torch.device(device) if device else next(hf_model.parameters()).device
        self.dtype = next(hf_model.parameters()).dtype
        self.n_layers = config.num_hidden_layers
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = getattr(config, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.hidden_size = config.hidden_size
        self.vocab_size = config.vocab_size
        self.trained_window = int(getattr(config, "max_position_embeddings", 0) or 0)
        self.scale = self.head_dim ** -0.5
        body = hf_model.model
        self.embed_tokens = body.embed_tokens
        self.layers = list(body.layers)
        self.norm = body.norm
        self.lm_head = hf_model.lm_head
        self.rope = RotaryEmbedding(config, self.head_dim, self.device)
        check_decode_weights(decode_weights)
        self.decode_weights = decode_weights
        self._half = self._half_weights() if decode_weights else {}

    def _half_weights(self) -> dict:
        """Float16 (weight, bias) of every linear layer a one-token pass uses, by module."""
        if self.dtype != torch.float32:
            raise LongreachError(f"decode_weights=float16 needs a float32 model (this one is {self.dtype}); "
                                 "a half-precision model already decodes with half the bytes")
        modules = [self.lm_head]
        for layer in self.layers:
            attn, mlp = layer.self_attn, layer.mlp
            modules += [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        return {m: (m.weight.detach().half(), None if m.bias is None else m.bias.detach().half()) for m in modules}

    def _linear(self, module, x: torch.Tensor, one_token: bool) -> torch.Tensor:
        if one_token and module in self._half:
            weight, bias = self._half[module]
            return torch.nn.functional.linear(x.half(), weight, bias).to(x.dtype)
        return module(x)

    def _mlp(self, mlp, x: torch.Tensor, one_token: bool) -> torch.Tensor:
        if not (one_token and self._half):
            return mlp(x)
        gate, up = self._linear(mlp.gate_proj, x, True), self._linear(mlp.up_proj, x, True)
        return self._linear(mlp.down_proj, mlp.act_fn(gate) * up, True)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                policy: AttentionPolicy) -> torch.Tensor:
        """Final hidden states [B, n, hidden] for `input_ids` [B, n] at `positions` [n]."""
        batch, n = input_ids.shape
        one = n == 1
        x = self.embed_tokens(input_ids.to(self.device))
        for index, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = self._linear(attn.q_proj, h, one).view(batch, n, self.n_heads, self.head_dim)
            k = self._linear(attn.k_proj, h, one).view(batch, n, self.n_kv_heads, self.head_dim)
            v = self._linear(attn.v_proj, h, one).view(batch, n, self.n_kv_heads, self.head_dim)
            if hasattr(attn, "q_norm"):  # Qwen3 normalises each head before RoPE
                q, k = attn.q_norm(q), attn.k_norm(k)
            out = policy.attend(index, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), positions)
            out = out.transpose(1, 2).reshape(batch, n, self.n_heads * self.head_dim)
            x = x + self._linear(attn.o_proj, out, one)
            x = x + self._mlp(layer.mlp, layer.post_attention_layernorm(x), one)
        return self.norm(x)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits for hidden states [..., hidden] (float16 weights for one position when
        `decode_weights` asks for them)."""
        one = hidden.numel() == hidden.shape[-1]
        return self._linear(self.lm_head, hidden, one).float()

    def flops_per_token(self, context: int = 0) -> float:
        """Multiply-adds x2 per token for the projections and MLP, plus attention over `context` keys."""
        weights = sum(p.numel() for p in self.layers[0].parameters() if p.dim() == 2)
        linear = 2.0 * weights * self.n_layers
        attention = 4.0 * self.n_heads * self.head_dim * context * self.n_layers
        return linear + attention
