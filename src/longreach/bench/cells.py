"""The sweep grid: lengths, depths and methods parsed from the command line, and the cells they span.

A *cell* is one prompt (task, subtask, length, depth, sample index); each method runs on it once,
and (cell, method) is what a results line records and what resume skips.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..errors import LongreachError
from ..units import parse_count
from .tasks.niah import grid


def _range(text: str, what: str, parse) -> list:
    """'a:b:n' (n evenly spaced values, rounded) or 'a,b,c'."""
    text = text.strip()
    if not text:
        raise LongreachError(f"no {what} given")
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise LongreachError(f"{what} range {text!r} is not START:STOP:COUNT (e.g. 2k:64k:8)")
        start, stop = parse(parts[0]), parse(parts[1])
        try:
            count = int(parts[2])
        except ValueError:
            raise LongreachError(f"{what} range {text!r}: COUNT must be a whole number") from None
        if count < 1 or stop < start:
            raise LongreachError(f"{what} range {text!r} is empty")
        return grid(start, stop, count)
    return sorted({parse(part) for part in text.split(",") if part.strip()})


def parse_lengths(text: str) -> list[int]:
    """'4k,8k,16k' or '2k:64k:8' -> token budgets."""
    lengths = _range(text, "lengths", parse_count)
    if any(length < 1 for length in lengths):
        raise LongreachError(f"lengths must be positive: {text!r}")
    return lengths


def parse_depths(text: str) -> list[float]:
    """Depths in percent, '0:100:11' or '10,50,90' -> fractions 0..1."""
    def percent(part: str) -> int:
        try:
            value = float(part)
        except ValueError:
            raise LongreachError(f"depth {part!r} is not a number of percent") from None
        if not 0 <= value <= 100:
            raise LongreachError(f"depth {part}% is outside 0..100")
        return value
    return [round(value / 100, 4) for value in _range(text, "depths", percent)]


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """A method name with the options the user set (as given; validated by `config()`)."""
    name: str
    options: tuple[tuple[str, str], ...] = ()

    def config(self):
        from ..methods import method_config
        return method_config(self.name, dict(self.options))

    @property
    def label(self) -> str:
        """'infllm' or 'infllm[selection=question,topk_blocks=8]': the method's key in results."""
        if not self.options:
            return self.name
        return f"{self.name}[{','.join(f'{k}={v}' for k, v in self.options)}]"

    def to_dict(self) -> dict:
        return {"name": self.name, "options": dict(self.options)}


def _normalized(name: str, options: dict) -> MethodSpec:
    """Validate and canonicalize: values as the method parses them, options at their default dropped."""
    from ..methods import method_config

    config = method_config(name, options)
    defaults = type(config)()
    kept = {key: getattr(config, key) for key in options if getattr(config, key) != getattr(defaults, key)}
    return MethodSpec(name, tuple(sorted((k, _text(v)) for k, v in kept.items())))


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_methods(items: list[str], shared: dict | None = None) -> list[MethodSpec]:
    """Methods from '--methods dense,infllm:selection=question,topk_blocks=8' (repeatable) and -o options.

    A comma-separated piece holding '=' before any ':' continues the options of the method before it.
    Shared options (-o) go to every listed method that has them; one no method has is an error.
    """
    from ..methods import METHODS, method_config

    parsed: list[tuple[str, dict]] = []
    for item in items:
        for piece in (p.strip() for p in item.split(",")):
            if not piece:
                continue
            name, _, rest = piece.partition(":")
            if "=" in name:  # 'key=value' continuing the previous method's options
                if not parsed:
                    raise LongreachError(f"method option {piece!r} comes before any method name")
                rest, name = piece, None
            if name is not None:
                if name not in METHODS:
                    raise LongreachError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
                parsed.append((name, {}))
            for pair in filter(None, rest.split(":") if name is not None else [rest]):
                key, sep, value = pair.partition("=")
                if not sep or not key.strip():
                    raise LongreachError(f"method option {pair!r} is not KEY=VALUE")
                parsed[-1][1][key.strip().replace("-", "_")] = value.strip()
    if not parsed:
        raise LongreachError("no method given (e.g. --methods dense,infllm)")
    shared = dict(shared or {})
    used = set()
    for name, options in parsed:
        known = {f.name for f in fields(METHODS[name])}
        for key, value in shared.items():
            if key in known:
                options.setdefault(key, value)
                used.add(key)
    unused = sorted(set(shared) - used)
    if unused:
        raise LongreachError(f"option(s) {', '.join(unused)} apply to none of the methods "
                             f"{', '.join(name for name, _ in parsed)}")
    specs = []
    for name, options in parsed:
        method_config(name, options)
        spec = _normalized(name, options)
        if spec not in specs:
            specs.append(spec)
    return specs


@dataclass(frozen=True, slots=True)
class Cell:
    """One prompt of the sweep; `depth` is None for tasks without a needle depth."""
    task: str
    subtask: str
    length: int
    depth: float | None
    sample: int

    def key(self, method: str) -> str:
        depth = "-" if self.depth is None else f"{self.depth:g}"
        return f"{self.task}/{self.subtask}/{self.length}/{depth}/{self.sample}/{method}"


@dataclass(slots=True)
class Unit:
    """A cell and the methods that still have to run on it."""
    cell: Cell
    methods: list[MethodSpec] = field(default_factory=list)
