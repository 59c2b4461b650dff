from .adapter import SUPPORTED_ARCHITECTURES, DecoderAdapter
from .loading import default_model_path, load_hf_model, load_tokenizer

__all__ = ["SUPPORTED_ARCHITECTURES", "DecoderAdapter", "default_model_path", "load_hf_model", "load_tokenizer"]
