from .quant import QuantizedSegment, QuantSpec
from .store import GrowingBuffer, KVSegment, KVStore, LayerKV

__all__ = ["GrowingBuffer", "KVSegment", "KVStore", "LayerKV", "QuantSpec", "QuantizedSegment"]
