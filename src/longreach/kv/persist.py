"""Save and load a session's memory: safetensors tensors plus a JSON manifest.

A saved memory is a directory holding `memory.safetensors` (every tensor of the session's
KV store: segments and method buffers, as `KVStore.state_dict` names them) and
`manifest.json` (token ids, position, the model/method fingerprint and checksums).

Writes are atomic: everything goes to a hidden temporary directory that is renamed into
place only once complete and synced, so a crash never leaves a half memory visible.
Loading memory-maps the tensors file (copy-on-write) and adopts the tensors without
reading them: pages come from disk only when attention touches them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from ..errors import LongreachError
from .tensorfile import TensorFileError, file_sha256, header_sha256, map_tensors, write_tensors

FORMAT = "longreach-memory"
VERSION = 1
TENSORS_FILE = "memory.safetensors"
MANIFEST_FILE = "manifest.json"
LAST_LOGITS = "__last_logits__"  # logits after the last token, so a continuation's first token can be scored
TEMP_PREFIX = ".tmp-"

class PersistError(LongreachError):
    """A saved memory cannot be used."""


class CorruptMemory(PersistError):
    """Files are missing, truncated, unreadable or fail their checksum."""


class IncompatibleMemory(PersistError):
    """The memory was computed by another model or method configuration."""


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What a memory depends on: the model's weights and config, dtype, and the method's options."""

    model: str
    dtype: str
    method: str
    method_options: dict = field(default_factory=dict)

    @classmethod
    def of(cls, lm) -> Fingerprint:
        """The fingerprint of a LongLM (hashes a sample of every weight; about 0.1 s for 135M params)."""
        return cls(_model_hash(lm), str(lm.adapter.dtype).removeprefix("torch."), lm.method.name,
                   _jsonable(lm.method.memory_options()))

    def describe(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in sorted(self.method_options.items()))
        return f"method {self.method}({options}) on model {self.model[:12]} ({self.dtype})"

    def mismatch(self, other: Fingerprint) -> str | None:
        """Why `other` (a saved memory's fingerprint) cannot be used here, or None."""
        if other.model != self.model or other.dtype != self.dtype:
            return f"it was computed by another model ({other.model[:12]}, {other.dtype})"
        if other.method != self.method or other.method_options != self.method_options:
            return f"it was computed with {other.describe()}, not {self.describe()}"
        return None


def _jsonable(options: dict) -> dict:
    return json.loads(json.dumps(options, sort_keys=True, default=str))


def _model_hash(lm) -> str:
    digest = hashlib.sha256()
    config = lm.adapter.config.to_dict()
    for key in ("_name_or_path", "transformers_version", "dtype", "torch_dtype"):
        config.pop(key, None)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, param in lm.adapter.hf_model.named_parameters():
        flat = param.detach().reshape(-1)
        step = max(flat.numel() // 4096, 1)
        digest.update(f"{name}:{tuple(param.shape)}".encode())
        digest.update(flat[::step][:4096].float().cpu().numpy().tobytes())
    tokenizer = lm.tokenizer
    digest.update(f"{type(tokenizer).__name__}:{len(tokenizer) if hasattr(tokenizer, '__len__') else 0}"
                  .encode())
    digest.update(str(getattr(tokenizer, "chat_template", None)).encode())
    return digest.hexdigest()


@dataclass(slots=True)
class Manifest:
    """What `manifest.json` holds about one saved memory."""

    position: int
    token_ids: list[int]
    fingerprint: dict
    tensors_bytes: int
    tensors_sha256: str
    header_sha256: str
    tokens_sha256: str
    created: float
    seconds: float = 0.0          # time spent computing the memory
    prefill_chunk: int = 0
    extra: dict = field(default_factory=dict)  # the caller's data (e.g. a context's name and format)
    format: str = FORMAT
    version: int = VERSION

    @property
    def model_fingerprint(self) -> Fingerprint:
        return Fingerprint(**self.fingerprint)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CorruptMemory(f"manifest has unknown keys: {', '.join(unknown)}")
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise CorruptMemory(f"not a {FORMAT} v{VERSION} manifest")
        try:
            manifest = cls(**data)
            Fingerprint(**manifest.fingerprint)
        except TypeError as exc:
            raise CorruptMemory(f"bad manifest: {exc}") from None
        ints = isinstance(manifest.position, int) and isinstance(manifest.tensors_bytes, int)
        if not ints or not isinstance(manifest.token_ids, list) or not isinstance(manifest.extra, dict):
            raise CorruptMemory("bad manifest: wrong field types")
        return manifest


def _tokens_sha256(token_ids: list[int]) -> str:
    return hashlib.sha256(json.dumps(token_ids).encode()).hexdigest()


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_session(session, directory: Path, fingerprint: Fingerprint, token_ids: list[int], *,
                 last_logits: torch.Tensor | None = None, seconds: float = 0.0, prefill_chunk: int = 0,
                 extra: dict | None = None, should_stop: Callable[[], bool] | None = None) -> Manifest:
    """Save a session's memory to `directory` (which must not exist) atomically.

    Args:
        session: the Session whose KV store is saved (it is not modified).
        directory: final location; written under a temporary name, then renamed.
        fingerprint: `Fingerprint.of(lm)` for the model that computed the memory.
        token_ids: the tokens the session holds (kept in the manifest).
        last_logits: logits [V] after the last token, to score a continuation's first token.
        seconds, prefill_chunk, extra: recorded in the manifest.
        should_stop: polled between tensors; when true the write is abandoned (InterruptedError).
    Returns:
        The manifest written.
    Raises:
        FileExistsError if `directory` exists.
    """
    directory = Path(directory)
    if directory.exists():
        raise FileExistsError(str(directory))
    temp = directory.parent / f"{TEMP_PREFIX}{directory.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp.mkdir(parents=True)
    try:
        tensors = dict(session.store.state_dict())
        if last_logits is not None:
            tensors[LAST_LOGITS] = last_logits.detach().float().reshape(-1)
        nbytes, sha, header_sha = write_tensors(temp / TENSORS_FILE, tensors, should_stop)
        manifest = Manifest(position=session.position, token_ids=list(token_ids),
                            fingerprint=asdict(fingerprint), tensors_bytes=nbytes, tensors_sha256=sha,
                            header_sha256=header_sha, tokens_sha256=_tokens_sha256(list(token_ids)),
                            created=time.time(), seconds=seconds, prefill_chunk=prefill_chunk,
                            extra=dict(extra or {}))
        with open(temp / MANIFEST_FILE, "w") as f:
            json.dump(manifest.to_dict(), f)
            f.flush()
            os.fsync(f.fileno())
        _sync_directory(temp)
        try:
            os.rename(temp, directory)
        except OSError as exc:  # another writer won the race (rename onto a non-empty directory)
            raise FileExistsError(str(directory)) from exc
        _sync_directory(directory.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return manifest


def read_manifest(directory: Path) -> Manifest:
    """The manifest of a saved memory; CorruptMemory when it is missing or unreadable."""
    path = Path(directory) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptMemory(f"{MANIFEST_FILE} is missing") from None
    except (OSError, ValueError) as exc:
        raise CorruptMemory(f"{MANIFEST_FILE} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise CorruptMemory(f"{MANIFEST_FILE} is not an object")
    manifest = Manifest.from_dict(data)
    if _tokens_sha256(manifest.token_ids) != manifest.tokens_sha256:
        raise CorruptMemory("token ids fail their checksum")
    return manifest


def check_files(directory: Path, manifest: Manifest, verify: bool = False) -> None:
    """Check the tensors file's size, and with `verify` its full sha256 (reads the whole file)."""
    path = Path(directory) / TENSORS_FILE
    try:
        size = path.stat().st_size
    except OSError:
        raise CorruptMemory(f"{TENSORS_FILE} is missing") from None
    if size != manifest.tensors_bytes:
        raise CorruptMemory(f"{TENSORS_FILE} has {size} bytes, expected {manifest.tensors_bytes}")
    if not verify:
        return
    try:
        sha = file_sha256(path)
    except OSError as exc:
        raise CorruptMemory(f"cannot read {TENSORS_FILE}: {exc.strerror}") from None
    if sha != manifest.tensors_sha256:
        raise CorruptMemory(f"{TENSORS_FILE} fails its checksum")


class StoredMemory:
    """A saved memory mapped into this process, usable as `context=` of `LongLM.run`.

    `fork()` builds a fresh session that adopts the mapped tensors without copying them:
    the KV store never writes into a tensor it adopted (appends reallocate once the
    adopted capacity is full), so every fork shares the same read-only pages.
    """

    def __init__(self, lm, manifest: Manifest, state: dict[str, torch.Tensor],
                 last_logits: torch.Tensor | None):
        self.lm, self.manifest, self.state, self.last_logits = lm, manifest, state, last_logits
        self.position = manifest.position
        self.nbytes = manifest.tensors_bytes

    @property
    def token_ids(self) -> list[int]:
        return self.manifest.token_ids

    def fork(self):
        """A new Session holding this memory (shared, copy-on-write) at `position`."""
        session = self.lm.new_session()
        session.store.load_state_dict(self.state)
        session.position = self.position
        return session


def load_session(lm, directory: Path, fingerprint: Fingerprint | None = None, verify: bool = False,
                 manifest: Manifest | None = None) -> StoredMemory:
    """Map a saved memory for `lm`, refusing one computed by another model or method.

    Args:
        lm: the LongLM that will continue from the memory.
        directory: a directory written by `save_session`.
        fingerprint: `Fingerprint.of(lm)`, computed once by the caller (computed here if None).
        verify: also check the full sha256 of the tensors (reads the whole file).
        manifest: an already-read manifest of `directory`.
    """
    directory = Path(directory)
    manifest = manifest or read_manifest(directory)
    fingerprint = fingerprint or Fingerprint.of(lm)
    reason = fingerprint.mismatch(manifest.model_fingerprint)
    if reason:
        raise IncompatibleMemory(reason)
    check_files(directory, manifest, verify)
    path = directory / TENSORS_FILE
    try:
        if header_sha256(path) != manifest.header_sha256:
            raise CorruptMemory(f"{TENSORS_FILE}: header fails its checksum")
        state = map_tensors(path, prefetch=_read_ahead)
    except (OSError, TensorFileError) as exc:
        raise CorruptMemory(str(exc)) from None
    last_logits = state.pop(LAST_LOGITS, None)
    try:
        lm.new_session().store.load_state_dict(state)  # structural check: every key names a layer/part
    except (ValueError, IndexError, KeyError) as exc:
        raise CorruptMemory(f"{TENSORS_FILE}: unexpected tensor layout ({exc})") from None
    return StoredMemory(lm, manifest, state, last_logits)


def _read_ahead(name: str) -> bool:
    """Every tensor a question reads whole: keys (block selection scores all of them), recent and
    sink tokens, method buffers; not the values of offloaded memory, of which a question reads
    only the blocks it selects."""
    parts = name.split(".")
    return not (len(parts) > 2 and parts[1] == "cold" and parts[-1].startswith("value"))


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete temporary directories left by writers that died (their pid is gone)."""
    removed = []
    for path in Path(root).glob(f"{TEMP_PREFIX}*"):
        try:
            pid = int(path.name.rsplit("-", 2)[1])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
