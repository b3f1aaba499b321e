"""corralctl's tables fitted to a width (cli/render.py): the widest columns are cut first, a
cut cell ends with "…", headers are never cut, and no width means every cell in full."""

from __future__ import annotations

import io

import pytest

from corral.cli.render import Output, fit_widths, table, terminal_width

HEADERS = ["AGENT", "AI", "MCP SERVERS", "EXECUTES"]
ROWS = [
    ["fs-agent", "yes", "@modelcontextprotocol/server-filesystem 2025.8.21, " * 3, "shell"],
    ["batch", "no", "-", "interpreter,shell,tool"],
]


def test_no_width_keeps_every_cell() -> None:
    text = table(HEADERS, ROWS)
    assert "…" not in text and ROWS[0][2].rstrip() in text


@pytest.mark.parametrize("width", [60, 80, 100])
def test_a_table_fits_the_width(width: int) -> None:
    lines = table(HEADERS, ROWS, width).splitlines()
    assert all(len(ln) <= width for ln in lines), lines
    assert lines[0].split() == ["AGENT", "AI", "MCP", "SERVERS", "EXECUTES"]
    assert lines[1].startswith("fs-agent  yes  @modelcontextprotocol")
    assert "…" in lines[1] and lines[2].startswith("batch     no   -")


def test_the_widest_columns_are_cut_first() -> None:
    assert fit_widths([10, 50, 40], [5, 5, 5], 64) == [10, 25, 25]
    assert fit_widths([10, 50, 40], [5, 5, 5], 65) == [10, 26, 25]  # the spare one: leftmost
    assert fit_widths([10, 50, 40], [5, 5, 5], 200) == [10, 50, 40]
    assert fit_widths([10, 50, 40], [10, 30, 30], 20) == [10, 30, 30]  # floors win


def test_names_are_cut_last_and_headers_never() -> None:
    rows = [["prod/Deployment/chatbot/agent", "yes", "x" * 40, "-"], *ROWS]
    lines = table(HEADERS, rows, 80, keep=1).splitlines()  # the other columns make room
    assert lines[1].startswith("prod/Deployment/chatbot/agent  yes  xxxx")
    assert max(map(len, lines)) <= 80 and "…" in lines[1]
    assert table(HEADERS, rows, 80).splitlines()[1].startswith("prod/Deployment/chatbot/…")
    lines = table(HEADERS, rows, 10, keep=1).splitlines()  # they cannot: the name is cut too
    assert lines[0].split() == ["AGENT", "AI", "MCP", "SERVERS", "EXECUTES"]
    assert lines[1].startswith("prod/De…  yes  xxxxxxxxxx…")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_width_is_the_terminals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "72")
    assert terminal_width(Terminal()) == 72
    assert Output("table", Terminal()).width == 72
    assert Output("wide", Terminal()).width is None  # -o wide: nothing is cut
    assert terminal_width(io.StringIO()) is None  # a pipe or a file: nothing is cut either
    assert Output("table", io.StringIO()).width is None
