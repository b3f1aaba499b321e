"""The one place that renders output: tables (fitted to the terminal's width when asked),
key: value mappings, times as "2m ago", JSON and YAML, and Output, which prints a command's
result in the format chosen with -o."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TextIO

import yaml


def visible(text: str) -> str:
    """text safe for a terminal and unambiguous: control and format characters (ESC, newline,
    right-to-left overrides...) and bytes that were not UTF-8 (lone surrogates from the path's
    surrogateescape) are written as escapes, and a backslash as two, so a path cannot clear the
    screen, forge a row or pass for another. JSON and YAML output stay exact."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape(c) for c in text)


def _escape(c: str) -> str:
    if c == "\\":
        return "\\\\"
    if c.isprintable():
        return c
    n = ord(c)
    if 0xDC80 <= n <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{n - 0xDC00:02x}"
    if n < 0x100:
        return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(c, f"\\x{n:02x}")
    return f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def visible_data(data: Any) -> Any:
    """Every string of an answer (keys too) through visible(), for the table format."""
    if isinstance(data, str):
        return visible(data)
    if isinstance(data, dict):
        return {visible_data(k): visible_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [visible_data(v) for v in data]
    return data


def _json_text(data: Any, indent: int | None = 2) -> str:
    """Exact JSON; a string that was not UTF-8 (surrogate escapes) keeps its \\udcXX escape
    (the whole text is then ASCII), where the raw character could not be printed at all."""
    text = json.dumps(data, indent=indent, sort_keys=True, ensure_ascii=False)
    if _encodable(text):
        return text
    return json.dumps(data, indent=indent, sort_keys=True)


def _yaml_text(data: Any) -> str:
    text = yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True)
    if _encodable(text):
        return text
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False)  # "\\uDCFF" escapes


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_time_key(key: str) -> bool:
    k = key.lower()
    return (
        k in ("ts", "time", "timestamp", "seen", "since")
        or k.startswith("last_")
        or k.endswith(("_ts", "_ns", "_time", "_at", "_seen", "_since"))
    )


def _epoch_seconds(key: str, value: Any, *, force: bool = False) -> float | None:
    """A timestamp as seconds since the epoch, when the field looks like one."""
    if not (force or _is_time_key(key)) or isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        if value > 10**17:  # nanoseconds
            return value / 1e9
        return float(value) if value > 10**8 else None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def ago(epoch: float, now: float | None = None) -> str:
    """2m ago, 3h ago, in 5s ..."""
    delta = (time.time() if now is None else now) - epoch
    future, delta = delta < 0, abs(delta)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            text = f"{int(delta // size)}{unit}"
            break
    else:
        text = f"{int(delta)}s"
    return f"in {text}" if future else f"{text} ago"


def _cell(key: str, value: Any, *, times: bool = False) -> str:
    epoch = _epoch_seconds(key, value, force=times)
    if epoch is not None:
        return ago(epoch)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(_cell("", v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={_cell(k, v, times=times)}" for k, v in value.items()) or "-"
    return str(value)


ELLIPSIS = "…"
MIN_CUT = 8  # a cut column keeps at least this many characters (or its header's, if longer)
GAP = 2  # spaces between columns


def terminal_width(stream: TextIO) -> int | None:
    """How wide a table may be: for a terminal, $COLUMNS if set, else the terminal's width
    (shutil.get_terminal_size); None (no limit) when the output goes to a pipe or a file, so
    that scripts and grep see every cell whatever $COLUMNS says (a Python parent that loaded
    readline exports COLUMNS=80 to every child)."""
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return None
    return shutil.get_terminal_size().columns


def fit_widths(natural: Sequence[int], floors: Sequence[int], limit: int) -> list[int]:
    """Column widths whose sum, with GAP between columns, fits limit: the widest columns are cut
    to a common width first, none below its floor (if the floors alone do not fit, the floors;
    the table is then wider than limit)."""
    budget = limit - GAP * (len(natural) - 1)
    if sum(natural) <= budget:
        return list(natural)

    def total(cap: int) -> int:
        return sum(max(f, min(w, cap)) for w, f in zip(natural, floors, strict=True))

    lo, hi = 0, max(natural)
    while lo < hi:  # the widest cap that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if total(mid) <= budget else (lo, mid - 1)
    widths = [max(f, min(w, lo)) for w, f in zip(natural, floors, strict=True)]
    spare = budget - sum(widths)
    for i, w in enumerate(natural):  # what is left goes to the cut columns, left to right
        if spare > 0 and widths[i] < w:
            widths[i] += 1
            spare -= 1
    return widths


def _floors(widths: list[int], headers: Sequence[str], width: int, keep: int) -> list[int]:
    """How narrow each column may be cut: MIN_CUT or its header; the first keep columns not at
    all, if the table can fit that way."""
    floors = [min(w, max(len(h), MIN_CUT)) for w, h in zip(widths, headers, strict=True)]
    firm = widths[:keep] + floors[keep:]
    return firm if sum(firm) + GAP * (len(firm) - 1) <= width else floors


def clip(cell: str, width: int) -> str:
    """cell cut to width characters, the last one "…" when something was cut."""
    return cell if len(cell) <= width else cell[: max(width - 1, 0)] + ELLIPSIS


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], width: int | None = None, keep: int = 0
) -> str:
    """Aligned columns, two spaces apart; the last column is not padded. width: the table fits
    that many characters, the widest columns cut first (a cut cell ends with "…", none below
    MIN_CUT or its header: headers are never cut, so a table can stay wider than width); the
    first keep columns (names to type in the next command) only when the others alone cannot
    make it fit. None: every cell in full."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    if width is not None:
        widths = fit_widths(widths, _floors(widths, headers, width, keep), width)
        rows = [[clip(c, w) for c, w in zip(row, widths, strict=True)] for row in rows]
    lines = []
    for row in [list(headers), *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _is_table(value: Any) -> bool:
    return bool(value) and isinstance(value, list) and all(isinstance(v, dict) for v in value)


def _dict_table(items: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for item in items:
        keys += [k for k in item if k not in keys]
    rows = [[_cell(k, item.get(k)) for k in keys] for item in items]
    return table([k.upper().replace("_", " ") for k in keys], rows)


class Lines(list):  # type: ignore[type-arg]
    """A list render_mapping prints one item per line ("- item"), not joined with commas."""


def render_mapping(data: dict[str, Any], indent: int = 0, *, times: bool = False) -> list[str]:
    """Nested key: value lines; lists of objects become small tables, Lines one item per
    line. times: the values are timestamps (a parent like mode_since)."""
    pad = " " * indent
    width = max((len(str(k)) for k in data), default=0) + 1
    lines: list[str] = []
    for key, value in data.items():
        label = f"{key}:"
        if isinstance(value, Lines) and value:
            lines.append(f"{pad}{label}")
            lines += [f"{pad}  - {_cell('', v)}" for v in value]
        elif isinstance(value, dict) and value:
            lines.append(f"{pad}{label}")
            lines += render_mapping(value, indent + 2, times=times or _is_time_key(str(key)))
        elif _is_table(value):
            lines.append(f"{pad}{label}")
            lines += [f"{pad}  {ln}" for ln in _dict_table(value).splitlines()]
        else:
            lines.append(f"{pad}{label.ljust(width)} {_cell(str(key), value, times=times)}")
    return lines


def _render_mapping_text(data: Any) -> str:
    if isinstance(data, dict):
        return "\n".join(render_mapping(data))
    if _is_table(data):
        return _dict_table(data)
    return _cell("", data)


def _fixed(row: list[str], widths: list[int], header: list[str] | None) -> str:
    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False)]
        return "  ".join([*padded, cells[-1]])

    return (line(header) + "\n" if header else "") + line(row)


class Output:
    """Prints results in the chosen format."""

    def __init__(self, fmt: str, stream: TextIO | None = None) -> None:
        self.fmt = fmt  # table, wide (a table, no cell cut), json, yaml, cyclonedx
        self.stream = stream or sys.stdout
        # what tables that fit (table(width=...)) may take; None: no limit
        self.width = None if fmt == "wide" else terminal_width(self.stream)

    def write_bytes(self, raw: bytes) -> None:
        """Bytes exactly as the daemon sent them (exports: byte-for-byte round trips)."""
        buffer = getattr(self.stream, "buffer", None)
        self.stream.flush()
        if buffer is None:
            self.stream.write(raw.decode("utf-8"))
        else:
            buffer.write(raw)
            buffer.flush()

    def emit(
        self,
        data: Any,
        render: Callable[[Any], str],
        yaml_render: Callable[[Any], str] | None = None,
    ) -> None:
        """yaml_render: a command's own YAML layout (review_yaml) instead of the generic one."""
        if self.fmt == "json":
            text = _json_text(data)
        elif self.fmt == "yaml":
            dump = yaml_render if yaml_render is not None and isinstance(data, dict) else _yaml_text
            text = dump(data).rstrip("\n")
        else:
            text = render(visible_data(data))
        print(text, file=self.stream, flush=True)
