"""Where pretrained teacher weights come from, and the one clear error when they cannot be had.

Weights live in the backing libraries' normal caches: the Hugging Face hub cache (DINOv2 through timm, CLIP
through open_clip; `HF_HOME` / `HF_HUB_CACHE`) and the torch hub cache (MViTv2 through torchvision;
`TORCH_HOME`). Loading is cache-first: a file already in the cache is used without touching the network, so
an offline machine with a filled cache just works. A missing file is downloaded with the hub's own client,
unless `HF_HUB_OFFLINE=1` (or `APM_OFFLINE=1`) is set or the host cannot be reached, in which case a
`WeightsUnavailableError` says at once which model is missing, where the cache is, and how to fill it
(`python -m apm download <name>`) or run without it (`--random-weights` / `APM_RANDOM_WEIGHTS=1`).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..errors import APMError, InputError, WeightsUnavailableError

logger = logging.getLogger(__name__)

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@dataclass(frozen=True)
class HubWeights:
    """A weight file on the Hugging Face hub."""

    repo_id: str  # e.g. 'timm/vit_small_patch14_dinov2.lvd142m'
    filenames: tuple[str, ...]  # candidate files in the repo, preferred first (safetensors before pickles)


@dataclass(frozen=True)
class UrlWeights:
    """A weight file at a plain URL, cached in the torch hub folder (torchvision's checkpoints)."""

    url: str  # e.g. 'https://download.pytorch.org/models/mvit_v2_s-ae3be167.pth'


WeightSource = HubWeights | UrlWeights


# cache locations and offline mode, resolved at call time (not at import) so a changed environment counts

def hf_cache_dir() -> Path:
    """The Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def torch_cache_dir() -> Path:
    """Where torchvision keeps downloaded checkpoints: $TORCH_HOME/hub/checkpoints by default."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _cache_env(source: WeightSource) -> str:
    if isinstance(source, UrlWeights):
        return "TORCH_HOME"
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return var
    return "HF_HOME"


def cache_dir_for(source: WeightSource) -> Path:
    """The cache folder a weight source is stored in."""
    return torch_cache_dir() if isinstance(source, UrlWeights) else hf_cache_dir()


def is_offline() -> bool:
    """True when HF_HUB_OFFLINE or APM_OFFLINE is set (read now), or huggingface_hub started offline."""
    for var in ("HF_HUB_OFFLINE", "APM_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # noqa: BLE001 - no huggingface_hub: only the variables count
        return False


def _offline_reason() -> str:
    for var in ("HF_HUB_OFFLINE", "APM_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var}={os.environ[var]} is set"
    return "huggingface_hub is in offline mode"


def _host(source: WeightSource) -> str:
    url = source.url if isinstance(source, UrlWeights) else os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return urlparse(url).hostname or "huggingface.co"


def _host_reachable(host: str, timeout: float = 3.0) -> bool:
    """A quick TCP connect to host:443, so a machine without network fails in seconds, not after retries.

    Behind a proxy the direct connect says nothing, so it is skipped (assumed reachable)."""
    if any(os.environ.get(var) for var in _PROXY_VARS):
        return True
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def weights_unavailable(teacher: str, model_id: str, source: WeightSource, reason: str) -> WeightsUnavailableError:
    """The user-facing error for weights that are neither cached nor downloadable (one line)."""
    env = _cache_env(source)
    return WeightsUnavailableError(
        f"pretrained weights for the {teacher} teacher ({model_id}) are not in the local cache "
        f"{cache_dir_for(source)} (set by {env}) and cannot be downloaded: {_one_line(reason)}. "
        f"Fetch them ahead with `python -m apm download {teacher}` on a machine with network (same {env}), "
        f"or run untrained with --random-weights / APM_RANDOM_WEIGHTS=1."
    )


def weights_broken(teacher: str, model_id: str, path: str | os.PathLike, exc: BaseException) -> WeightsUnavailableError:
    """The user-facing error for a cached weight file the library cannot load (damaged or wrong file)."""
    return WeightsUnavailableError(
        f"the cached weights for the {teacher} teacher ({model_id}) at {path} cannot be loaded "
        f"({type(exc).__name__}: {_one_line(exc, 160)}); delete the file and run `python -m apm download {teacher}`, "
        f"or run untrained with --random-weights / APM_RANDOM_WEIGHTS=1."
    )


# lookup and download

def cached_weights(source: WeightSource) -> str | None:
    """Local path of the weight file if it is already in the cache, else None. Never touches the network."""
    if isinstance(source, UrlWeights):
        path = torch_cache_dir() / os.path.basename(urlparse(source.url).path)
        return str(path) if path.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in source.filenames:
        found = try_to_load_from_cache(source.repo_id, filename, cache_dir=str(hf_cache_dir()))
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def fetch_weights(source: WeightSource, *, teacher: str, model_id: str) -> str:
    """Local path of the weight file: from the cache, else downloaded into it; else `WeightsUnavailableError`."""
    found = cached_weights(source)
    if found is not None:
        logger.debug("weights for %s found in cache: %s", model_id, found)
        return found
    if is_offline():
        raise weights_unavailable(teacher, model_id, source, _offline_reason())
    host = _host(source)
    if not _host_reachable(host):
        raise weights_unavailable(teacher, model_id, source, f"cannot reach {host} (no network?)")
    logger.info("downloading weights for %s (%s) into %s", teacher, model_id, cache_dir_for(source))
    try:
        return _download(source)
    except APMError:
        raise
    except Exception as exc:
        logger.debug("download of %s failed", model_id, exc_info=True)
        raise weights_unavailable(teacher, model_id, source, f"download failed ({type(exc).__name__}: {exc})") from None


def _download(source: WeightSource) -> str:
    if isinstance(source, UrlWeights):
        folder = torch_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        filename = os.path.basename(urlparse(source.url).path)
        dest = folder / filename
        match = re.search(r"-([a-f0-9]*)\.", filename)  # torchvision files carry a sha256 prefix: name-<hash>.pth
        torch.hub.download_url_to_file(source.url, str(dest), hash_prefix=match.group(1) if match else None)
        return str(dest)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    last: Exception | None = None
    for filename in source.filenames:
        try:
            return hf_hub_download(source.repo_id, filename, cache_dir=str(hf_cache_dir()))
        except EntryNotFoundError as exc:  # the repo has another of the candidate files
            last = exc
    raise FileNotFoundError(f"none of {', '.join(source.filenames)} in {source.repo_id}") from last


def download_weights(names: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Fetch teachers' pretrained weights into the normal caches (`python -m apm download dinov2 clip mvit`).

    Each name is a teacher ('dinov2') or teacher:variant ('dinov2:vit_base_patch14_dinov2.lvd142m',
    'dinov2:reg4'); none means every teacher's default. Returns one message per teacher; raises
    `WeightsUnavailableError` naming every teacher that could not be fetched (after trying them all).
    """
    from .base import list_teachers, resolve_variant, teacher_class

    wanted = list(names) if names else list_teachers()
    jobs = []
    for item in wanted:  # check every name before downloading anything
        name, _, variant = str(item).partition(":")
        cls = teacher_class(name)
        model_id = resolve_variant(cls, variant or None) or cls.Config().model_id
        jobs.append((cls, model_id))
    if not jobs:
        raise InputError(f"nothing to download; choose from: {', '.join(list_teachers())}")
    messages, failures = [], []
    for cls, model_id in jobs:
        source = cls.weight_source(model_id)
        was_cached = cached_weights(source) is not None
        try:
            path = fetch_weights(source, teacher=cls.name, model_id=model_id)
        except WeightsUnavailableError as exc:
            failures.append(str(exc))
            continue
        state = "already cached" if was_cached else "downloaded"
        messages.append(f"{cls.name}: {model_id} {state} at {path}")
    if failures:
        done = f" ({len(messages)} succeeded: {'; '.join(messages)})" if messages else ""
        raise WeightsUnavailableError(" | ".join(failures) + done)
    return messages
