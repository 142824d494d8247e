"""Facts about this machine and the local model, for ``aigc doctor``.

:func:`probe` never raises for a missing or broken piece: it reports it. torch is imported only when
``import_torch=True`` (importing it takes seconds); without it the report says what is installed, not what works.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from .models import DEFAULT_MODEL, INSTALL_HINT

if TYPE_CHECKING:
    from ...config import Settings

__all__ = ["GpuInfo", "LocalModelInfo", "HardwareReport", "probe", "count_parameters", "memory"]

# Distribution name -> import name of what the ``local`` extra installs.
LOCAL_PACKAGES = {
    "torch": "torch",
    "transformers": "transformers",
    "accelerate": "accelerate",
    "gguf": "gguf",
    "safetensors": "safetensors",
}
_OVERHEAD = 1.2  # activations, KV cache and allocator slack on top of the weights


class GpuInfo(BaseModel):
    index: int
    name: str
    memory_total_bytes: int
    memory_free_bytes: int | None = None
    bf16: bool | None = None


class LocalModelInfo(BaseModel):
    """The local model aigc would load, and whether this machine can hold it."""

    name: str
    kind: str | None = Field(None, description="gguf, folder or hub")
    location: str | None = None
    file_bytes: int | None = Field(None, description="size of the GGUF file or model folder")
    converted_path: str | None = None
    converted: bool | None = Field(None, description="GGUF only: the safetensors cache exists and is current")
    parameters: int | None = None
    memory_needed_bytes: int | None = Field(None, description="weights in the chosen dtype plus ~20%")
    fits: bool | None = None
    error: str | None = None


class HardwareReport(BaseModel):
    python_version: str
    platform: str
    aigc_version: str
    local_packages: dict[str, str | None] = Field(description="version, or None when not installed")
    local_extra_installed: bool
    install_hint: str | None = None
    torch_imported: bool = False
    torch_version: str | None = None
    torch_build: str | None = Field(None, description="'cuda 12.4', 'rocm 6.1' or 'cpu'")
    cuda_available: bool | None = None
    mps_available: bool | None = None
    gpus: list[GpuInfo] = Field(default_factory=list)
    device: str | None = Field(None, description="what the local backend would choose")
    dtype: str | None = None
    cpu_count: int | None = None
    ram_total_bytes: int | None = None
    ram_available_bytes: int | None = None
    model: LocalModelInfo
    problems: list[str] = Field(default_factory=list)


def _aigc_version() -> str:
    try:
        return importlib.metadata.version("aigc-toolkit")
    except importlib.metadata.PackageNotFoundError:
        return getattr(sys.modules.get("aigc"), "__version__", None) or "unknown (not installed as a package)"


def _package_version(dist: str, module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def memory() -> tuple[int | None, int | None]:
    """(total, available) system RAM in bytes; None where the OS does not say."""
    try:
        fields = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0]) * 1024
        return fields.get("MemTotal"), fields.get("MemAvailable", fields.get("MemFree"))
    except (OSError, ValueError, IndexError):
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = page * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None, None
    try:
        available = page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):
        available = None
    return total, available


# --- parameter counts from file headers (no torch, no tensor data read) ----------------------------------


def _safetensors_parameters(path: Path) -> int:
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    total = 0
    for name, entry in header.items():
        if name != "__metadata__":
            n = 1
            for d in entry["shape"]:
                n *= d
            total += n
    return total


_GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _gguf_parameters(path: Path) -> int:
    """Sum of tensor sizes from a GGUF header, skipping the metadata (vocabularies can be large)."""
    with path.open("rb") as f:

        def u(fmt: str) -> int:
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def skip(kind: int) -> None:
            if kind in _GGUF_SCALARS:
                f.seek(_GGUF_SCALARS[kind], 1)
            elif kind == 8:
                f.seek(u("<Q"), 1)
            elif kind == 9:
                item, count = u("<I"), u("<Q")
                if item in _GGUF_SCALARS:
                    f.seek(_GGUF_SCALARS[item] * count, 1)
                else:
                    for _ in range(count):
                        skip(item)
            else:
                raise ValueError(f"unknown GGUF value type {kind}")

        if f.read(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        version = u("<I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        tensors, kvs = u("<Q"), u("<Q")
        for _ in range(kvs):
            f.seek(u("<Q"), 1)  # key
            skip(u("<I"))
        total = 0
        for _ in range(tensors):
            f.seek(u("<Q"), 1)  # name
            n = 1
            for _ in range(u("<I")):
                n *= u("<Q")
            total += n
            f.seek(4 + 8, 1)  # type, offset
        return total


def count_parameters(path: str | Path) -> int | None:
    """Parameters of a model file or folder (.gguf or .safetensors), read from headers only."""
    path = Path(path)
    try:
        if path.is_file():
            return _gguf_parameters(path) if path.suffix.lower() == ".gguf" else _safetensors_parameters(path)
        files = sorted(path.glob("*.safetensors"))
        return sum(_safetensors_parameters(p) for p in files) if files else None
    except (OSError, ValueError, KeyError, struct.error):
        return None


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _model_info(name: str, cache_dir: Path | None) -> LocalModelInfo:
    from ... import errors
    from . import models as local_models

    info = LocalModelInfo(name=name)
    try:
        spec = local_models.resolve_model(name)
    except errors.AigcError as e:
        info.error = str(e)
        return info
    info.kind, info.location = spec.kind, spec.location
    if spec.kind == "hub":
        return info
    location = Path(spec.location)
    info.file_bytes = _disk_bytes(location)
    if spec.kind == "gguf" and cache_dir is not None:
        folder = local_models.converted_folder(spec, cache_dir)
        info.converted_path = str(folder)
        info.converted = local_models.is_converted(spec, cache_dir)
        if info.converted:
            info.parameters = count_parameters(folder)
    if info.parameters is None:
        info.parameters = count_parameters(location)
    return info


def probe(
    settings: Settings | None = None,
    *,
    import_torch: bool = True,
    model: str | None = None,
) -> HardwareReport:
    """What ``aigc doctor`` shows about this machine and the local model.

    The model is ``model``, else ``settings.model`` when the local backend is configured, else the built-in
    default; ``settings.cache_dir`` says where converted models live, ``settings.device``/``dtype`` what to use.
    """
    if model is None:
        local = settings is not None and settings.resolved_backend() == "local"
        model = (settings.model if local else None) or DEFAULT_MODEL
    packages = {dist: _package_version(dist, mod) for dist, mod in LOCAL_PACKAGES.items()}
    missing = [d for d, v in packages.items() if v is None]
    total, available = memory()
    report = HardwareReport(
        python_version=platform.python_version(),
        platform=platform.platform(),
        aigc_version=_aigc_version(),
        local_packages=packages,
        local_extra_installed=not missing,
        install_hint=INSTALL_HINT if missing else None,
        cpu_count=os.cpu_count(),
        ram_total_bytes=total,
        ram_available_bytes=available,
        model=_model_info(model, settings.cache_dir if settings else None),
    )
    if missing:
        report.problems.append(
            f"the local extra is incomplete (missing {', '.join(missing)}): {INSTALL_HINT}"
        )
    if report.model.error:
        report.problems.append(report.model.error)
    if import_torch and packages["torch"] is not None:
        _probe_torch(report, settings)
    _judge_fit(report)
    return report


def _probe_torch(report: HardwareReport, settings: Settings | None) -> None:
    try:
        import torch
    except Exception as e:  # a broken install is a fact to report, not a crash
        report.problems.append(f"torch is installed but does not import: {e}")
        return
    from ... import errors
    from . import models as local_models

    report.torch_imported = True
    report.torch_version = torch.__version__
    if torch.version.cuda:
        report.torch_build = f"cuda {torch.version.cuda}"
    elif getattr(torch.version, "hip", None):
        report.torch_build = f"rocm {torch.version.hip}"
    else:
        report.torch_build = "cpu"
    report.cuda_available = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None)
    report.mps_available = bool(mps and mps.is_available())
    if report.cuda_available:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpu = GpuInfo(index=i, name=props.name, memory_total_bytes=props.total_memory)
            try:
                gpu.memory_free_bytes = torch.cuda.mem_get_info(i)[0]
                with torch.cuda.device(i):
                    gpu.bf16 = torch.cuda.is_bf16_supported()
            except RuntimeError:
                pass
            report.gpus.append(gpu)
    try:
        report.device = local_models.choose_device(settings.device if settings else None)
        dtype = local_models.choose_dtype(report.device, settings.dtype if settings else None)
        report.dtype = str(dtype).removeprefix("torch.")
    except errors.AigcError as e:
        report.problems.append(str(e))


def _judge_fit(report: HardwareReport) -> None:
    info = report.model
    if info.parameters is None:
        return
    width = {"float16": 2, "bfloat16": 2}.get(report.dtype or "float32", 4)
    info.memory_needed_bytes = int(info.parameters * width * _OVERHEAD)
    free: int | None = report.ram_available_bytes
    if report.device and report.device.startswith("cuda"):
        index = int(report.device.partition(":")[2] or 0)
        gpu = next((g for g in report.gpus if g.index == index), None)
        free = gpu and (gpu.memory_free_bytes or gpu.memory_total_bytes)
    if free is not None:
        info.fits = info.memory_needed_bytes <= free
        if not info.fits:
            report.problems.append(
                f"{info.name} needs about {info.memory_needed_bytes / 2**30:.1f} GiB but only "
                f"{free / 2**30:.1f} GiB is free on {report.device or 'this machine'}"
            )
