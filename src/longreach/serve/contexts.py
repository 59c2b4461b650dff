"""The context store: documents processed once, saved to a directory, reused by any request.

Each context is a subdirectory named by its id, written atomically by `kv.persist`.
Hidden entries (temporary writes, removals in progress) are never listed. A context whose
files are damaged is reported as corrupt; the others stay usable. Loaded contexts are
memory-mapped and kept in a least-recently-used cache bounded in bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import LongreachError
from ..kv.persist import (
    MANIFEST_FILE,
    TEMP_PREFIX,
    CorruptMemory,
    Fingerprint,
    IncompatibleMemory,
    Manifest,
    StoredMemory,
    check_files,
    load_session,
    read_manifest,
    remove_stale_temporaries,
    save_session,
)
from .prompts import ContextText, context_text

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ContextError(LongreachError):
    """A context request that cannot be served."""


class InvalidContextId(ContextError):
    pass


class ContextNotFound(ContextError):
    pass


class ContextExists(ContextError):
    pass


class ContextTooLong(ContextError):
    pass


def validate_id(context_id: str) -> str:
    """The id itself if it is a safe directory name (no separators, no '..', no leading dot)."""
    if not isinstance(context_id, str) or not _ID.fullmatch(context_id) or ".." in context_id:
        raise InvalidContextId(f"invalid context id {context_id!r}: use 1-64 letters, digits, '.', '_' "
                               "or '-', starting with a letter or digit")
    return context_id


@dataclass(slots=True)
class ContextInfo:
    """One context as listed: its status, size and what computed it."""

    id: str
    status: str            # ready | corrupt | incompatible
    tokens: int = 0
    bytes: int = 0
    created: float = 0.0
    seconds: float = 0.0   # time its prefill took
    format: str | None = None
    method: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class _Cached:
    stamp: tuple[int, int]
    memory: StoredMemory


class ContextStore:
    """Contexts under `root`, checked against `fingerprint` (the serving model and method).

    Args:
        root: the store directory (created if missing).
        fingerprint: `Fingerprint.of(lm)`; None only for listing and removing without a model.
        cache_bytes: bytes of mapped contexts kept between requests (least recently used go first).
        verify: check the full checksum of a context's tensors when it is loaded.
    """

    def __init__(self, root: Path, fingerprint: Fingerprint | None = None, cache_bytes: int = 8 << 30,
                 verify: bool = False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fingerprint, self.cache_bytes, self.verify = fingerprint, cache_bytes, verify
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._manifests: OrderedDict[str, tuple[tuple[int, int], Manifest]] = OrderedDict()
        self.loads_from_disk = 0
        remove_stale_temporaries(self.root)

    def path(self, context_id: str) -> Path:
        return self.root / validate_id(context_id)

    def ids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and _ID.fullmatch(p.name))

    def _stamp(self, context_id: str) -> tuple[int, int]:
        try:
            stat = (self.path(context_id) / MANIFEST_FILE).stat()
        except FileNotFoundError:
            if self.path(context_id).is_dir():
                raise CorruptMemory(f"{MANIFEST_FILE} is missing") from None
            raise ContextNotFound(f"no context {context_id!r}") from None
        return stat.st_ino, stat.st_mtime_ns

    def _read(self, context_id: str) -> Manifest:
        stamp = self._stamp(context_id)
        with self._lock:
            hit = self._manifests.get(context_id)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        manifest = read_manifest(self.path(context_id))
        with self._lock:
            self._manifests[context_id] = (stamp, manifest)
            while len(self._manifests) > 64:
                self._manifests.popitem(last=False)
        return manifest

    def manifest(self, context_id: str) -> Manifest:
        """The manifest of a usable context (NotFound, CorruptMemory or IncompatibleMemory otherwise)."""
        try:
            manifest = self._read(context_id)
        except CorruptMemory as exc:
            raise CorruptMemory(f"context {context_id!r} is corrupt: {exc}") from None
        reason = self.fingerprint.mismatch(manifest.model_fingerprint) if self.fingerprint else None
        if reason:
            raise IncompatibleMemory(f"context {context_id!r} cannot be used: {reason}; "
                                     "add it again with this model and method")
        return manifest

    def info(self, context_id: str, verify: bool = False) -> ContextInfo:
        """Status and size of one context; damage is reported in the result, not raised."""
        try:
            manifest = self._read(context_id)
            check_files(self.path(context_id), manifest, verify)
        except CorruptMemory as exc:
            return ContextInfo(context_id, "corrupt", error=str(exc))
        reason = self.fingerprint.mismatch(manifest.model_fingerprint) if self.fingerprint else None
        return _info(context_id, manifest, "incompatible" if reason else "ready", reason)

    def list(self, verify: bool = False) -> list[ContextInfo]:
        return [self.info(context_id, verify) for context_id in self.ids()]

    def load(self, lm, context_id: str) -> StoredMemory:
        """The context's memory mapped for `lm`, from the cache when its files did not change."""
        stamp = self._stamp(context_id)
        with self._lock:
            cached = self._cache.get(context_id)
            if cached is not None and cached.stamp == stamp:
                self._cache.move_to_end(context_id)
                return cached.memory
        manifest = self.manifest(context_id)
        try:
            memory = load_session(lm, self.path(context_id), self.fingerprint or Fingerprint.of(lm),
                                  self.verify, manifest)
        except CorruptMemory as exc:
            raise CorruptMemory(f"context {context_id!r} is corrupt: {exc}") from None
        with self._lock:
            self.loads_from_disk += 1
            self._cache[context_id] = _Cached(stamp, memory)
            self._cache.move_to_end(context_id)
            while len(self._cache) > 1 and self._cached_bytes() > self.cache_bytes:
                self._cache.popitem(last=False)
        return memory

    def _cached_bytes(self) -> int:
        return sum(entry.memory.nbytes for entry in self._cache.values())

    def add(self, lm, context_id: str, text: str, fmt: str = "chat", system: str | None = None, *,
            max_tokens: int | None = None, on_progress: Callable[[int, int], None] | None = None,
            should_stop: Callable[[], bool] | None = None, source: str | None = None) -> ContextInfo:
        """Tokenize `text`, prefill it with `lm` and save its memory as context `context_id`.

        Args:
            lm: the LongLM (its method computes the memory).
            context_id: the new context's id (must not exist).
            text: the document.
            fmt: "chat" (questions arrive as chat messages) or "raw" (prompts continue the text).
            system: the chat system message the context starts with (chat format only).
            max_tokens: refuse documents longer than this.
            on_progress: called with (tokens done, total) during the prefill.
            should_stop: polled while writing; true abandons the add.
            source: where the text came from (kept in the manifest).
        """
        if self.path(context_id).exists():  # before tokenizing a possibly long text
            raise ContextExists(f"context {context_id!r} already exists; remove it first")
        document = context_text(lm, text, fmt, system)
        return self.add_document(lm, context_id, document, fmt, system, max_tokens=max_tokens,
                                 on_progress=on_progress, should_stop=should_stop, source=source)

    def add_document(self, lm, context_id: str, document: ContextText, fmt: str = "chat",
                     system: str | None = None, *, max_tokens: int | None = None,
                     on_progress: Callable[[int, int], None] | None = None,
                     should_stop: Callable[[], bool] | None = None, source: str | None = None) -> ContextInfo:
        """`add` for an already tokenized document (see `prompts.context_text`)."""
        if self.path(context_id).exists():
            raise ContextExists(f"context {context_id!r} already exists; remove it first")
        if max_tokens is not None and len(document.ids) > max_tokens:
            raise ContextTooLong(f"the document has {len(document.ids)} tokens; this server accepts "
                                 f"at most {max_tokens} per context")
        extra = {"id": context_id, "format": fmt, "head": document.head, "system": system, "source": source}
        return self.add_ids(lm, context_id, document.ids, extra, on_progress, should_stop)

    def add_ids(self, lm, context_id: str, ids: list[int], extra: dict | None = None,
                on_progress: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> ContextInfo:
        """Prefill token ids and save them as a context (`add` without the tokenizing)."""
        fingerprint = self.fingerprint or Fingerprint.of(lm)
        path = self.path(context_id)
        session = lm.new_session()
        start = time.perf_counter()
        last_logits = session.prefill(ids, lm.prefill_chunk, on_progress, final=False)
        seconds = time.perf_counter() - start
        extra = {"id": context_id, "format": "raw", "head": "", **(extra or {})}
        try:
            save_session(session, path, fingerprint, ids, last_logits=last_logits, seconds=seconds,
                         prefill_chunk=lm.prefill_chunk, extra=extra, should_stop=should_stop)
        except FileExistsError:
            raise ContextExists(f"context {context_id!r} already exists; remove it first") from None
        return self.info(context_id)

    def remove(self, context_id: str) -> None:
        """Delete a context; it disappears from listings at once (a rename), then its files go."""
        path = self.path(context_id)
        if not path.is_dir():
            raise ContextNotFound(f"no context {context_id!r}")
        trash = self.root / f"{TEMP_PREFIX}{context_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            raise ContextNotFound(f"no context {context_id!r}") from None
        with self._lock:
            self._cache.pop(context_id, None)
            self._manifests.pop(context_id, None)
        shutil.rmtree(trash, ignore_errors=True)


def _info(context_id: str, manifest: Manifest, status: str, error: str | None = None) -> ContextInfo:
    return ContextInfo(context_id, status, tokens=manifest.position, bytes=manifest.tensors_bytes,
                       created=manifest.created, seconds=manifest.seconds,
                       format=manifest.extra.get("format"), method=manifest.fingerprint.get("method"),
                       error=error)
