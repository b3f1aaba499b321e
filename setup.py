"""Build hook: `pip install .` and `pip wheel .` compile the BPF objects (`make bpf`) so that the
wheel always carries them as package data. Metadata lives in pyproject.toml."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
OBJECTS = ("corral.bpf.o", "probe.bpf.o")


class BuildPyWithBpf(build_py):
    """build_py that runs `make bpf` first (incremental), unless this is an editable install
    (`make venv`, where `make bpf` builds them in place)."""

    def run(self) -> None:
        if not getattr(self, "editable_mode", False):
            self._bpf()
        super().run()

    def _bpf(self) -> None:
        out = ROOT / "daemon" / "corral" / "bpf"
        built = all((out / o).is_file() for o in OBJECTS)
        tools = shutil.which("make") and shutil.which(os.environ.get("CLANG", "clang"))
        if tools and (ROOT / "Makefile").is_file() and (ROOT / "bpf").is_dir():
            subprocess.run(["make", "-C", str(ROOT), "bpf"], check=True)
        elif not built:
            raise SystemExit(
                "corral: the BPF objects are not built and clang or make is missing: install "
                "clang, llvm, libbpf-dev and make (Debian/Ubuntu: `make deps`), then retry"
            )


setup(cmdclass={"build_py": BuildPyWithBpf})
