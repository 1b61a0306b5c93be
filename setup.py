"""Package discovery, the one thing pyproject.toml cannot say: every subpackage of the four source folders.

One import name, ``mkdeploy``; the root folders ``cli/``, ``models/`` and ``exporters/`` are its
subpackages ``mkdeploy.cli``, ``mkdeploy.models`` and ``mkdeploy.exporters`` (docs/architecture.md).
A hand-written ``packages`` list once left ``mkdeploy.distributed`` out of the wheel, so a regular install
failed on every command while the editable one (whole folders) worked; ``find_packages`` under each mapped
folder cannot forget one. tests/test_packaging.py checks the list against the tree and the built wheel.
"""

import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

#: import name -> source folder
ROOTS = {"mkdeploy": "mkdeploy", "mkdeploy.cli": "cli", "mkdeploy.models": "models", "mkdeploy.exporters": "exporters"}


def discover() -> list[str]:
    """Every package under the mapped folders, by its import name."""
    packages = []
    for name, folder in ROOTS.items():
        packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]
    return sorted(packages)


class CleanBuildPy(build_py):
    """Start every build from an empty ``build/lib``: setuptools copies into it and never deletes, so a module
    removed from the tree would ship in the next wheel built in this checkout (it happened: the wheel built
    after ``mkdeploy/serve/load.py`` moved to ``mkdeploy/testing/`` still held it; the wheel rebuilt from the
    sdist did not, and tests/test_packaging.py caught the difference)."""

    def run(self) -> None:
        shutil.rmtree(self.build_lib, ignore_errors=True)
        super().run()


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import discover() alone
    setup(package_dir=ROOTS, packages=discover(), cmdclass={"build_py": CleanBuildPy})
