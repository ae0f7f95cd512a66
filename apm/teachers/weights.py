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

from ..env import hf_cache_dir, hf_cache_variable, offline_reason, torch_cache_dir
from ..errors import APMError, WeightsUnavailableError

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


# cache locations

def cache_dir_for(source: WeightSource) -> Path:
    """The cache folder a weight source is stored in."""
    return torch_cache_dir() if isinstance(source, UrlWeights) else hf_cache_dir()


def _cache_env(source: WeightSource) -> str:
    return "TORCH_HOME" if isinstance(source, UrlWeights) else hf_cache_variable()


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
    reason = offline_reason()
    if reason:
        raise weights_unavailable(teacher, model_id, source, reason)
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
