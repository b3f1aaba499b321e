"""corralctl baseline show/export/import, diff and accept against a real API server on a unix
socket (fake services, real document module)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from corral import cli
from corral.api.server import ApiServer
from corral.cli.baselines import render_accept
from corral.cli.entry import _default_baseline_action
from tests.daemon.test_api_fakes import DIFF_VIEW, LONG_NAME, FakeController
from tests.daemon.test_cli import ctl_main
from tests.daemon.test_cli import quiet_daemon_logs as quiet_daemon_logs  # autouse fixture
from tests.daemon.test_cli import server as server  # fixture
from tests.daemon.test_review_api import doc

Capsys = pytest.CaptureFixture[str]


def test_baseline_name_means_show() -> None:
    f = _default_baseline_action
    assert f(["baseline", "demo"]) == ["baseline", "show", "demo"]
    assert f(["-o", "yaml", "baseline", "-o", "json", "demo"])[-2:] == ["show", "demo"]
    assert f(["--socket", "/s", "baseline", "--output=yaml", "x"])[-2:] == ["show", "x"]
    for argv in (["baseline", "export", "d"], ["baseline", "import", "d", "f"],
                 ["baseline", "show", "export"], ["baseline", "--help"], ["agents"],
                 ["run", "--agent", "baseline", "--", "baseline", "x"]):  # fmt: skip
        assert f(argv) == argv


async def test_show_is_the_default_action(capsys: Capsys, server: ApiServer) -> None:
    a = await ctl_main(capsys, server, "baseline", "demo")
    b = await ctl_main(capsys, server, "baseline", "show", "demo")
    assert a.code == b.code == 0 and "DIMENSION" in a.out
    assert a.out.replace("1h ago", "") == b.out.replace("1h ago", "")


async def test_show_yaml_is_one_line_per_entry(capsys: Capsys, server: ApiServer) -> None:
    r = await ctl_main(capsys, server, "baseline", "demo", "-o", "yaml")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    (entry,) = [ln for ln in lines if "/usr/bin/python3" in ln]
    assert entry.startswith("- {object: /usr/bin/python3, kind: exact, source: learned, hits: 4,")
    assert "first_seen: '20" in entry and "Z'" in entry  # UTC, to the second
    assert yaml.safe_load(r.out)["exec"][0]["object"] == "/usr/bin/python3"
    assert [k for k in (ln.split(":")[0] for ln in lines) if not k.startswith(("-", " "))] == [
        "agent", "connect", "exec", "learning_since", "open", "partial", "version"]  # fmt: skip


async def test_export_import_export_through_corralctl(
    capsys: Capsys, server: ApiServer, ctl: FakeController, tmp_path: Path
) -> None:
    src = tmp_path / "in.yaml"
    src.write_bytes(doc(LONG_NAME))
    r = await ctl_main(capsys, server, "baseline", "import", LONG_NAME, str(src), "--replace")
    assert r.code == 0, r.err
    assert r.out.startswith(f"{LONG_NAME}: imported {src} (replace, sha256:")
    assert "3 added, 0 removed, 0 kept; 3 entries" in r.out
    assert "modes: exec=enforce open=alert connect=enforce" in r.out
    r = await ctl_main(capsys, server, "baseline", "export", LONG_NAME)
    assert r.code == 0 and r.out.encode() == src.read_bytes()
    out = tmp_path / "out.yaml"
    out.write_text(r.out)
    r = await ctl_main(capsys, server, "baseline", "import", LONG_NAME, str(out), "--replace")
    assert r.code == 0 and "0 added, 0 removed, 3 kept" in r.out
    r = await ctl_main(capsys, server, "baseline", "export", LONG_NAME)
    assert r.out.encode() == src.read_bytes()
    r = await ctl_main(capsys, server, "baseline", "export", LONG_NAME, "-o", "json")
    assert r.code == 0 and r.out.startswith('{\n  "apiVersion": "corral.io/v3",')
    js = tmp_path / "out.json"
    js.write_text(r.out)
    r = await ctl_main(capsys, server, "baseline", "import", LONG_NAME, str(js), "-o", "json")
    assert r.code == 0 and '"kept": 3' in r.out


async def test_import_pre_seeds_and_reports_it(
    capsys: Capsys, server: ApiServer, ctl: FakeController, tmp_path: Path
) -> None:
    src = tmp_path / "seed.yaml"
    src.write_bytes(doc("seeded"))
    r = await ctl_main(capsys, server, "baseline", "import", "seeded", str(src), "--dry-run")
    assert r.code == 0 and "dry run, nothing changed: would import" in r.out
    assert "would be created" in r.out and "seeded" not in ctl.agents
    r = await ctl_main(capsys, server, "baseline", "import", "seeded", str(src), "--keep-modes")
    assert r.code == 0 and "was created" in r.out
    assert ctl.calls[-1] == ("import", "seeded", "merge", True, False)


async def test_import_errors_name_the_file(
    capsys: Capsys, server: ApiServer, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(doc().replace(b"/usr/bin/python3", b"bin/python3"))
    r = await ctl_main(capsys, server, "baseline", "import", "demo", str(bad))
    assert r.code == 1 and r.out == ""
    assert r.err.startswith(f"corralctl: {bad}: invalid baseline document: spec.exec[0]: path")
    r = await ctl_main(capsys, server, "baseline", "import", "demo", str(tmp_path / "nope"))
    assert r.code == 1 and "cannot read" in r.err and "No such file" in r.err
    r = await ctl_main(capsys, server, "baseline", "import", "demo", str(bad), "--merge",
                       "--replace")  # fmt: skip
    assert r.code == 2 and "not allowed with" in r.err
    other = tmp_path / "other.yaml"
    other.write_bytes(doc("other"))
    r = await ctl_main(capsys, server, "baseline", "import", "demo", str(other))
    assert r.code == 1 and "--rename" in r.err
    r = await ctl_main(capsys, server, "baseline", "import", "demo", str(other), "--rename")
    assert r.code == 0


async def test_import_from_stdin(server: ApiServer, tmp_path: Path) -> None:
    src = tmp_path / "seed.yaml"
    src.write_bytes(doc("piped"))
    proc = await ctl_proc_stdin(server, src, "baseline", "import", "piped", "-")
    assert proc[0] == 0 and "piped: imported stdin (merge" in proc[1]


async def ctl_proc_stdin(server: ApiServer, stdin: Path, *args: str) -> tuple[int, str, str]:
    import asyncio
    import os
    import sys

    with open(stdin, "rb") as f:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corral.cli", "--socket", str(server.path), *args,
            stdin=f, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ),
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_diff_table(capsys: Capsys, server: ApiServer, ctl: FakeController) -> None:
    r = await ctl_main(capsys, server, "diff", "demo")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == (f"demo: 8 deviation(s) beyond the baseline in 3 row(s), view {DIFF_VIEW} "
                        "(exec=observe open=observe connect=observe)")  # fmt: skip
    assert lines[2].split()[:4] == ["#", "DIMENSION", "OBJECT", "KIND"]
    assert lines[3].split()[:4] == ["1", "exec", "/usr/bin/curl", "exact"]
    assert lines[4].split()[:6] == ["2", "open", "/tmp/cache/", "group", "of", "6"]
    assert "10m ago" in lines[3] and "1m ago" in lines[3] and "would-deny" in lines[3]
    assert f"corralctl accept demo --index N[,M...] --view {DIFF_VIEW}" in r.out
    r = await ctl_main(capsys, server, "diff", "demo", "--flat", "-o", "yaml")
    assert r.code == 0 and ctl.calls[-1] == ("diff", "demo", True)
    rows = [ln for ln in r.out.splitlines() if ln.startswith("- {index: ")]
    assert len(rows) == 8 and rows[0].startswith("- {index: 1, dimension: exec, object: /usr/")
    r = await ctl_main(capsys, server, "diff", "nobody")
    assert r.code == 1 and "no agent named 'nobody'" in r.err


async def test_accept_selectors_and_rows(
    capsys: Capsys, server: ApiServer, ctl: FakeController
) -> None:
    r = await ctl_main(capsys, server, "accept", "demo", "--exec", "/usr/bin/curl", "--connect",
                       "10.0.0.1:443", "--open", "/etc/x", "--open", "/tmp/cache/")  # fmt: skip
    assert r.code == 0, r.err
    assert ctl.calls[-1] == ("accept", "demo", [
        {"dimension": "exec", "object": "/usr/bin/curl"},
        {"dimension": "open", "object": "/etc/x"},
        {"dimension": "open", "object": "/tmp/cache/"},
        {"dimension": "connect", "object": "10.0.0.1:443"},
    ])  # fmt: skip
    r = await ctl_main(capsys, server, "accept", "demo", "--index", "1,3-4", "--index", "3",
                       "--view", DIFF_VIEW, "--flat")  # fmt: skip
    assert r.code == 0 and ctl.calls[-1] == ("accept", "demo", None, [1, 3, 4], DIFF_VIEW, True)
    r = await ctl_main(capsys, server, "accept", "demo", "--index", "2", "--view", "0000aaaa")
    assert r.code == 1 and "changed since view 0000aaaa" in r.err
    r = await ctl_main(capsys, server, "accept", "demo", "--view", DIFF_VIEW)
    assert r.code == 2 and "go with --index" in r.err
    for bad in ("0", "3-1", "x", "1,,2"):
        r = await ctl_main(capsys, server, "accept", "demo", "--index", bad)
        assert r.code == 2 and "row numbers" in r.err, bad


def test_accept_output() -> None:
    text = render_accept("demo", {
        "agent": "demo", "accepted": 3, "remaining": 1, "skipped": ["1.2.3.4:0"],
        "entries": [{"dimension": "connect", "object": "10.0.0.1:443", "kind": "host"},
                    {"dimension": "open", "object": "/tmp/cache/", "kind": "prefix"}],
    })  # fmt: skip
    assert text.splitlines() == [
        "accepted 3 deviations into the baseline of demo: 2 entries added",
        "  + connect 10.0.0.1:443 (host)",
        "  + open /tmp/cache/ (prefix)",
        "  not added (cannot be an allow-list entry): 1.2.3.4:0",
        "1 deviation(s) remain (corralctl diff demo)",
    ]


def test_help(capsys: Capsys) -> None:
    for argv in (["baseline", "--help"], ["baseline", "import", "--help"], ["diff", "--help"],
                 ["baseline", "export", "--help"], ["accept", "--help"]):  # fmt: skip
        assert cli.main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())  # help text is wrapped to the terminal
    for text in ("short for `baseline show NAME`", "--replace", "(GitOps", "--index N[,M|N-M]",
                 "corralctl accept demo --exec /usr/bin/curl --connect 10.0.0.1:443",
                 "byte", "--flat"):  # fmt: skip
        assert text in out, text
