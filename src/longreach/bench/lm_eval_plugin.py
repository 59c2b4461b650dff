"""Make `longreach` a model name lm-eval knows, without editing lm-eval.

lm-eval (0.4.x) finds models only in its own registry, filled when `lm_eval.models` is imported.
Two ways in:
- `longreach lm-eval ARGS...` registers the model, then runs lm-eval's own command line;
- `longreach lm-eval --install-plugin` writes a one-line .pth file into site-packages so that a plain
  `lm_eval --model longreach` works: at interpreter start it only installs an import hook, which
  registers a lazy entry (`longreach.bench.lm_eval_adapter:LongreachLM`) right after lm-eval's
  model registry is imported. Nothing of longreach or lm-eval is imported by other programs.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from ..errors import LongreachError

PTH_NAME = "longreach-lm-eval.pth"
TARGET = "longreach.bench.lm_eval_adapter:LongreachLM"

# Runs at every interpreter start once installed: keep it cheap and failure-proof.
HOOK = r'''
import sys
class _LongreachLmEvalHook:
    """Registers `longreach` with lm-eval right after lm_eval.models is imported."""
    def find_spec(self, name, path=None, target=None):
        if name != "lm_eval.models":
            return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            try:
                from lm_eval.api.registry import model_registry
                if "longreach" not in model_registry:
                    model_registry.register("longreach", target="longreach.bench.lm_eval_adapter:LongreachLM")
            except Exception:
                pass
        spec.loader.exec_module = exec_module
        return spec
if not any(type(f).__name__ == "_LongreachLmEvalHook" for f in sys.meta_path):
    sys.meta_path.insert(0, _LongreachLmEvalHook())
'''


def pth_line() -> str:
    """The .pth line: exec the hook (a .pth runs only lines that start with `import`)."""
    return f"import sys; exec({HOOK!r})\n"


def site_dir() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def install(directory: str | Path | None = None) -> Path:
    """Write the .pth hook into site-packages (or `directory`); returns its path."""
    path = Path(directory or site_dir()) / PTH_NAME
    try:
        path.write_text(pth_line(), encoding="utf-8")
    except OSError as exc:
        raise LongreachError(f"cannot write {path}: {exc.strerror}") from None
    return path


def uninstall(directory: str | Path | None = None) -> Path:
    path = Path(directory or site_dir()) / PTH_NAME
    path.unlink(missing_ok=True)
    return path


def register() -> None:
    """Register `longreach` in lm-eval's registry of this process (lm-eval's own models kept)."""
    try:
        import lm_eval.models  # noqa: F401 - fills the registry with lm-eval's models first
        from lm_eval.api.registry import model_registry
    except ImportError:
        raise LongreachError("lm-eval is not installed: pip install 'longreach[lm-eval]'") from None
    if "longreach" not in model_registry:
        model_registry.register("longreach", target=TARGET)


def run_cli(argv: list[str]) -> int:
    """lm-eval's command line with `longreach` registered; returns its exit code."""
    register()
    from lm_eval.__main__ import cli_evaluate

    args = list(argv)
    if args[:1] == ["--"]:
        args = args[1:]
    saved = sys.argv
    sys.argv = ["lm-eval", *args]
    try:
        cli_evaluate()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return 0
