from .generator import GenerationRun, LongLM, Session
from .results import GenerationResult, GenerationStats
from .sampling import SamplingParams

__all__ = ["GenerationRun", "GenerationResult", "GenerationStats", "LongLM", "SamplingParams", "Session"]
