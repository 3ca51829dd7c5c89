"""The training Python: which interpreter trains, what it offers (probe), and the saved setting.

A packaged app carries no PyTorch, so training runs in a separate Python: the one given
explicitly, ``$FLUKEID_TRAINING_PYTHON``, the ``training_python`` setting
(``retraining.json`` under :func:`app.paths.config_dir`), or this interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from app.paths import config_dir
from app.services.retraining.process import _repo_root
from model.api import FlukeidError

# The environment variable that overrides the Python used for training (packaged apps have no torch).
TRAINING_PYTHON_ENV = "FLUKEID_TRAINING_PYTHON"


class TrainingPythonError(FlukeidError):
    """The configured training Python cannot run training (missing, or no PyTorch)."""


# --- the training Python ------------------------------------------------------------------------


def _frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def default_training_python() -> str | None:
    """The Python that runs training: $FLUKEID_TRAINING_PYTHON, else this interpreter.

    A packaged (frozen) app carries no torch, so it returns None there unless the variable is set.
    """
    env = os.environ.get(TRAINING_PYTHON_ENV)
    if env:
        return env
    return None if _frozen() else sys.executable


_PROBE = (
    "import json, sys\n"
    "try:\n"
    "    import torch\n"
    "except Exception as exc:\n"
    "    print(json.dumps({'torch': None, 'error': repr(exc)})); sys.exit(3)\n"
    "cuda = torch.cuda.is_available()\n"
    "gpus = []\n"
    "if cuda:\n"
    "    for i in range(torch.cuda.device_count()):\n"
    "        p = torch.cuda.get_device_properties(i)\n"
    "        gpus.append({'name': p.name, 'memory_gb': round(p.total_memory / 2**30, 1)})\n"
    "try:\n"
    "    import app, model  # noqa\n"
    "    flukeid = True\n"
    "except Exception:\n"
    "    flukeid = False\n"
    "print(json.dumps({'torch': torch.__version__, 'cuda': cuda, 'gpus': gpus, 'flukeid': flukeid}))\n"
)


@dataclass(frozen=True)
class TrainingEnvironment:
    """What the training Python offers: torch version, CUDA, the GPUs (name, memory in GiB)."""

    python: str
    torch_version: str
    cuda: bool
    gpus: tuple[tuple[str, float], ...] = ()
    flukeid: bool = True

    def describe(self) -> str:
        if self.gpus:
            gpu = ", ".join(f"{name} ({mem:.0f} GB)" for name, mem in self.gpus)
            return f"PyTorch {self.torch_version}, GPU: {gpu}"
        return f"PyTorch {self.torch_version}, no CUDA GPU (training runs on the CPU)"


def probe_training_python(python: str | None, timeout: float = 120.0) -> TrainingEnvironment:
    """Run ``python`` once to find torch, CUDA and the GPUs (torch is never imported here).

    Raises:
        TrainingPythonError: naming the Python and the problem (not configured, not found,
            not runnable, no PyTorch, no flukeid package).
    """
    if not python:
        raise TrainingPythonError(
            "no training Python is configured: this program carries no PyTorch. Create a Python "
            "environment with `pip install flukeid` and set it as the training Python "
            f"(or set {TRAINING_PYTHON_ENV})"
        )
    try:
        proc = subprocess.run(
            [python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout, cwd=_repo_root()
        )
    except FileNotFoundError:
        raise TrainingPythonError(f"{python}: training Python not found") from None
    except PermissionError:
        raise TrainingPythonError(f"{python}: training Python is not executable") from None
    except OSError as exc:
        raise TrainingPythonError(f"{python}: cannot run the training Python ({exc})") from None
    except subprocess.TimeoutExpired:
        raise TrainingPythonError(f"{python}: the training Python did not answer within {timeout:.0f} s") from None
    info = None
    for line in reversed(proc.stdout.splitlines()):
        try:
            info = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    if not isinstance(info, dict):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise TrainingPythonError(f"{python}: not a usable Python ({tail[0]})")
    if not info.get("torch"):
        raise TrainingPythonError(
            f"{python}: PyTorch is not installed in this Python ({info.get('error', 'import torch failed')}); "
            "install it with `pip install flukeid` (which brings torch) in that environment"
        )
    env = TrainingEnvironment(
        python=python,
        torch_version=str(info["torch"]),
        cuda=bool(info.get("cuda")),
        gpus=tuple((str(g["name"]), float(g["memory_gb"])) for g in info.get("gpus", [])),
        flukeid=bool(info.get("flukeid", True)),
    )
    if not env.flukeid:
        raise TrainingPythonError(
            f"{python}: has PyTorch {env.torch_version} but not the flukeid package; "
            "install it there with `pip install flukeid`"
        )
    return env


def check_training_python(path: str | None) -> tuple[bool, str]:
    """Check that ``path`` is a Python that can train: returns (ok, message for the user)."""
    try:
        env = probe_training_python(path)
    except TrainingPythonError as exc:
        return False, str(exc)
    return True, env.describe()



# --- settings -----------------------------------------------------------------------------------


def settings_path() -> Path:
    """The per-user settings file holding ``training_python``: ``retraining.json`` in the config folder."""
    return config_dir() / "retraining.json"


def load_training_python() -> str | None:
    """The configured training Python (setting ``training_python``), or None."""
    try:
        data = json.loads(settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("training_python") if isinstance(data, dict) else None
    return str(value) if value else None


def save_training_python(path: str | None) -> None:
    """Remember the training Python (None forgets it). Written atomically."""
    p = settings_path()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data["training_python"] = path
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, p)


def resolve_training_python(explicit: str | None = None) -> str | None:
    """The Python to train with: ``explicit``, $FLUKEID_TRAINING_PYTHON, the setting, this Python."""
    return explicit or os.environ.get(TRAINING_PYTHON_ENV) or load_training_python() or default_training_python()
