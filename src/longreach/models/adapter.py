"""Our own layer loop over a Hugging Face decoder's modules and weights.

The adapter projects q/k/v, runs norms and the MLP; attention is handed to a policy
(the method) with pre-RoPE queries and keys and their true positions.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ..errors import LongreachError
from ..rope import RotaryEmbedding

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")


class AttentionPolicy(Protocol):
    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               positions: torch.Tensor) -> torch.Tensor: ...


class DecoderAdapter:
    """A Llama-family decoder (Llama, Mistral, Qwen2, Qwen3) driven layer by layer."""

    def __init__(self, hf_model, device: torch.device | str | None = None):
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

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                policy: AttentionPolicy) -> torch.Tensor:
        """Final hidden states [B, n, hidden] for `input_ids` [B, n] at `positions` [n]."""
        batch, n = input_ids.shape
        x = self.embed_tokens(input_ids.to(self.device))
        for index, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(batch, n, self.n_heads, self.head_dim)
            k = attn.k_proj(h).view(batch, n, self.n_kv_heads, self.head_dim)
            v = attn.v_proj(h).view(batch, n, self.n_kv_heads, self.head_dim)
            if hasattr(attn, "q_norm"):  # Qwen3 normalises each head before RoPE
                q, k = attn.q_norm(q), attn.k_norm(k)
            out = policy.attend(index, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), positions)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(batch, n, self.n_heads * self.head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.norm(x)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits for hidden states [..., hidden]."""
        return self.lm_head(hidden).float()

    def flops_per_token(self, context: int = 0) -> float:
        """Multiply-adds x2 per token for the projections and MLP, plus attention over `context` keys."""
        weights = sum(p.numel() for p in self.layers[0].parameters() if p.dim() == 2)
        linear = 2.0 * weights * self.n_layers
        attention = 4.0 * self.n_heads * self.head_dim * context * self.n_layers
        return linear + attention
