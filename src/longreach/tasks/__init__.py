from .base import Sample, wrap_prompt
from .passkey import passkey_sample, score_passkey

__all__ = ["Sample", "passkey_sample", "score_passkey", "wrap_prompt"]
