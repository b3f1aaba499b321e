"""The Dockerfile, built without a Docker engine (there is none here).

The test parses the Dockerfile into stages and executes them: the build context is copied into
a temporary directory honouring .dockerignore, WORKDIR/COPY/COPY --from are done on per-stage
root directories, and every RUN command runs for real with bash (absolute image paths that a
COPY or WORKDIR created are mapped into the stage's root; the rest of the image filesystem is
this host, the same Debian release as the image's base). `apt-get` lines are the one thing not
run: their packages must be installed on this host (`make deps` does it) so that the other
commands run with exactly them. Each stage's `python` is a fresh virtualenv, as clean as the
image's. At the end the runtime stage's ENTRYPOINT runs: `corrald probe` from the installed
wheel.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral import config

REPO = Path(__file__).resolve().parents[2]
COMPILERS = {"clang", "gcc", "g++", "cc", "llvm", "make", "build-essential", "libbpf-dev"}


# ---------------------------------------------------------------------------------------------
# parsing


@dataclass
class Stage:
    image: str
    name: str
    steps: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instr: str) -> list[str]:
        return [rest for i, rest in self.steps if i == instr]


def logical_lines(text: str) -> list[str]:
    """Instructions with continuations joined and comment lines dropped (as BuildKit does)."""
    out, buf = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        line = raw.rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            out.append(" ".join(buf.split()))
        buf = ""
    return out


def parse(text: str) -> list[Stage]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name] = default
        elif instr == "FROM":
            parts = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], rest).split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(parts[0], name))
        else:
            stages[-1].steps.append((instr, rest))
    return stages


def apt_packages(run: str) -> list[str]:
    m = re.search(r"apt-get install ([^&;|]+)", run)
    return [w for w in (m.group(1).split() if m else []) if not w.startswith("-")]


# ---------------------------------------------------------------------------------------------
# .dockerignore


def _pattern(p: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile(out + r"\Z")


def ignore_rules(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            neg = line.startswith("!")
            rules.append((neg, _pattern(line.lstrip("!").strip("/"))))
    return rules


def ignored(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for neg, rx in rules:
        if any(rx.match(p) for p in prefixes):
            result = not neg
    return result


def copy_context(src: Path, dst: Path) -> list[str]:
    rules = ignore_rules(src / ".dockerignore")
    copied = []
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not ignored(rel_dir + d, rules)]
        for f in filenames:
            rel = rel_dir + f
            if not ignored(rel, rules):
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / rel, dst / rel, follow_symlinks=False)
                copied.append(rel)
    return copied


# ---------------------------------------------------------------------------------------------
# executing


@dataclass
class StageRun:
    stage: Stage
    root: Path
    python: Path
    cwd: str = "/"

    def host(self, image_path: str) -> Path:
        base = Path(self.cwd) if not image_path.startswith("/") else Path("/")
        return self.root / (base / image_path).relative_to("/")

    def map_command(self, cmd: str) -> str:
        """Absolute paths whose first component the stage created point into its root."""

        def sub(m: re.Match[str]) -> str:
            first = m.group(1)
            return str(self.root) + m.group(0) if (self.root / first).exists() else m.group(0)

        return re.sub(r"(?<![\w.\-/])/([\w.\-]+)(?:/[^\s;&|]*)?", sub, cmd)

    def run(self, cmd: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, PATH=f"{self.python.parent}:{os.environ['PATH']}")
        env.pop("VIRTUAL_ENV", None)
        cwd = self.host(self.cwd)
        cwd.mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            ["bash", "-ec", self.map_command(cmd)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )


def fresh_python(where: Path) -> Path:
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(where)], check=True)
    return where / "bin" / "python"


def execute(stages: list[Stage], tmp: Path, context: Path) -> dict[str, StageRun]:
    runs: dict[str, StageRun] = {}
    for st in stages:
        sr = StageRun(st, tmp / f"stage-{st.name}", fresh_python(tmp / f"python-{st.name}"))
        sr.root.mkdir()
        for instr, rest in st.steps:
            if instr == "WORKDIR":
                sr.cwd = rest if rest.startswith("/") else str(Path(sr.cwd) / rest)
                sr.host(sr.cwd).mkdir(parents=True, exist_ok=True)
            elif instr == "COPY":
                _copy(sr, rest, runs, context)
            elif instr == "RUN":
                if "apt-get" in rest:
                    missing = [p for p in apt_packages(rest) if not _installed(p)]
                    assert not missing, f"{st.name}: install {missing} here first (`make deps`)"
                    continue
                r = sr.run(rest)
                assert r.returncode == 0, (
                    f"{st.name}: RUN {rest}\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
                )
            elif instr not in ("LABEL", "ENTRYPOINT", "CMD", "ENV", "ARG", "EXPOSE", "USER"):
                raise AssertionError(f"the emulator does not know {instr}: teach it")
        runs[st.name] = sr
    return runs


def _installed(pkg: str) -> bool:
    return subprocess.run(["dpkg", "-s", pkg], capture_output=True).returncode == 0


def _copy(sr: StageRun, rest: str, runs: dict[str, StageRun], context: Path) -> None:
    args = shlex.split(rest)
    src_stage = None
    if args[0].startswith("--from="):
        src_stage = runs[args.pop(0).split("=", 1)[1]]
    *srcs, dest = args
    for src in srcs:
        if src_stage is None and src == ".":
            copy_context(context, sr.host(dest))
            continue
        origin = src_stage.host(src) if src_stage else context / src
        target = sr.host(dest)
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True)
        else:
            if dest.endswith("/"):
                target = target / origin.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)


# ---------------------------------------------------------------------------------------------
# tests


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse((REPO / "Dockerfile").read_text())


def test_multi_stage_with_no_compiler_at_run_time(stages: list[Stage]) -> None:
    assert len(stages) == 2, "build + runtime"
    build, runtime = stages
    assert build.image == runtime.image and "slim" in runtime.image
    build_pkgs = {p for r in build.args("RUN") for p in apt_packages(r)}
    runtime_pkgs = {p for r in runtime.args("RUN") for p in apt_packages(r)}
    assert {"clang", "libbpf-dev"} <= build_pkgs
    assert "libbpf1" in runtime_pkgs and not runtime_pkgs & COMPILERS
    assert any(a.startswith(f"--from={build.name}") for a in runtime.args("COPY"))
    assert all("rm -rf /var/lib/apt/lists" in r for r in runtime.args("RUN") if "apt-get" in r)
    assert json.loads(runtime.args("ENTRYPOINT")[0]) == ["corrald"]
    assert not runtime.args("USER"), "corrald needs root (see the Dockerfile's header)"


def test_dockerignore_keeps_what_the_build_needs_and_drops_host_objects() -> None:
    rules = ignore_rules(REPO / ".dockerignore")
    for needed in ("bpf/corral.bpf.c", "bpf/vmlinux.h", "bpf/corral.h", "pyproject.toml",
                   "setup.py", "Makefile", "README.md", "config/corral.yaml",
                   "daemon/corral/config.py", "bindings/bpfkit/_lib.py"):  # fmt: skip
        assert not ignored(needed, rules), needed
    dropped_paths = (
        "daemon/corral/bpf/corral.bpf.o",
        ".venv/bin/python",
        ".git/HEAD",
        "dist/x.whl",
        "daemon/corral/__pycache__/x.pyc",
        "tests/unit/x.py",
    )
    for dropped in dropped_paths:
        assert ignored(dropped, rules), dropped


@pytest.mark.skipif(os.geteuid() != 0, reason="corrald probe loads BPF programs: needs root")
def test_build_stages_really_build_and_the_image_runs(stages: list[Stage], tmp_path: Path) -> None:
    runs = execute(stages, tmp_path, REPO)
    build, runtime = runs[stages[0].name], runs[stages[1].name]

    # the builder compiled its own objects (host-built ones are .dockerignored) into the wheel
    src = build.host("/src")
    assert (src / "daemon/corral/bpf/corral.bpf.o").is_file()
    wheels = list((src / "dist").glob("corral-*.whl"))
    assert len(wheels) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    for member in ("corral/bpf/corral.bpf.o", "corral/bpf/probe.bpf.o", "corral/bpf/corral.h"):
        assert member in names

    # runtime: the wheel installed, the build directory gone, the config valid
    assert not runtime.host("/wheels").exists()
    config.load(runtime.host("/etc/corral/corral.yaml"))
    corrald = runtime.python.parent / "corrald"
    entry = json.loads(stages[1].args("ENTRYPOINT")[0])
    assert corrald.name == entry[0]
    r = subprocess.run([str(corrald), "probe", "-o", "json"], capture_output=True, text=True)
    assert r.returncode in (0, 3), r.stderr
    probe = json.loads(r.stdout)
    assert probe["checks"]["btf"]["ok"] and set(probe["capabilities"]) == {
        "exec",
        "open",
        "connect",
    }
    objs = subprocess.run(
        [str(runtime.python), "-c", "import corral.kernel.loader as k; print(k.object_path())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert objs.startswith(str(runtime.python.parent.parent)), "objects come from the wheel"
