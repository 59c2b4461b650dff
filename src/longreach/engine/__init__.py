from .generator import LongLM, Session
from .results import GenerationResult, GenerationStats
from .sampling import SamplingParams

__all__ = ["GenerationResult", "GenerationStats", "LongLM", "SamplingParams", "Session"]
