"""A pipeline job's report.md as HTML: Markdown rendered with markdown-it-py with raw HTML
disabled (an HTML tag in the report is shown as text), its figures and links pointed at the
job's artifacts, and the verdicts of summary.json ("reliable" | "not converged", with
reasons) shown beside the numbers they judge."""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

REPORT = "report.md"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class Verdict:
    """The verdict on one reported quantity (``where``: its path in summary.json)."""

    where: str
    verdict: str
    reasons: list[str] = field(default_factory=list)
    value: str = ""
    advice: list[str] = field(default_factory=list)

    @property
    def reliable(self) -> bool:
        return self.verdict.strip().lower() == "reliable"


def _fmt(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return "-"
    if isinstance(x, int | float):
        return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.4g}"
    return str(x)


def _strings(x: Any) -> list[str]:
    if isinstance(x, str):
        return [x]
    return [str(r) for r in x] if isinstance(x, list | tuple) else []


def _verdict_of(row: dict[str, Any]) -> tuple[str, list[str], list[str]] | None:
    """(label, reasons, advice) of a summary entry's ``verdict``: a string (reasons and advice
    beside it) or an object (``boltzgen.diagnostics.Verdict.to_dict()``: status, reasons,
    advice)."""
    v = row.get("verdict")
    if isinstance(v, dict):
        label = v.get("status") or v.get("verdict") or v.get("label")
        reasons, advice = v.get("reasons", row.get("reasons")), v.get("advice", row.get("advice"))
    else:
        label, reasons, advice = v, row.get("reasons"), row.get("advice")
    if not isinstance(label, str) or not label:
        return None
    return label, _strings(reasons), _strings(advice)


def _value_of(row: dict[str, Any]) -> str:
    if "df_kT" in row:
        return f"dF {_fmt(row['df_kT'])} +- {_fmt(row.get('err_kT'))} kT"
    if "value" in row:
        return (
            f"{_fmt(row['value'])} +- {_fmt(row['error'])}"
            if "error" in row
            else _fmt(row["value"])
        )
    return ""


def verdicts(summary: Any, where: str = "") -> Iterator[Verdict]:
    """Every object in summary.json that carries a ``verdict``, depth first."""
    if isinstance(summary, dict):
        found = _verdict_of(summary)
        if found is not None:
            yield Verdict(where or "summary", found[0], found[1], _value_of(summary), found[2])
        for k, v in summary.items():
            if k != "verdict":
                yield from verdicts(v, f"{where}.{k}" if where else str(k))
    elif isinstance(summary, list):
        for i, v in enumerate(summary):
            yield from verdicts(v, f"{where}[{i}]")


def free_energy_verdicts(summary: Any) -> dict[str, Verdict]:
    """CV name -> verdict, for the rows of ``summary["free_energies"]`` that have one."""
    rows = summary.get("free_energies") if isinstance(summary, dict) else None
    out = {}
    for cv, row in (rows or {}).items() if isinstance(rows, dict) else ():
        found = _verdict_of(row) if isinstance(row, dict) else None
        if found is not None:
            out[str(cv)] = Verdict(
                f"free_energies.{cv}", found[0], found[1], _value_of(row), found[2]
            )
    return out


def _text_token(kind: str, text: str, attrs: dict[str, str] | None = None) -> list[Token]:
    """open, inline (plain text: escaped when rendered), close tokens of one table cell."""
    open_ = Token(f"{kind}_open", kind, 1)
    for k, v in (attrs or {}).items():
        open_.attrSet(k, v)
    inline = Token("inline", "", 0, content=text, children=[Token("text", "", 0, content=text)])
    return [open_, inline, Token(f"{kind}_close", kind, -1)]


def _add_verdict_column(tokens: list[Token], by_cv: dict[str, Verdict]) -> list[Token]:
    """A 'verdict' column after the free-energy table's cells: the table whose first header
    cell is 'CV'; each row's verdict found by its first cell (the CV name)."""
    out: list[Token] = []
    in_fe = False
    first_cell: str | None = None
    cell_index = -1
    for i, tok in enumerate(tokens):
        if tok.type == "table_open":
            in_fe = False
        elif tok.type == "tr_open":
            cell_index, first_cell = -1, None
        elif tok.type in ("th_open", "td_open"):
            cell_index += 1
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if cell_index == 0 and nxt is not None and nxt.type == "inline":
                first_cell = nxt.content.strip()
                if tok.type == "th_open" and first_cell == "CV":
                    in_fe = True
        elif tok.type == "tr_close" and in_fe and first_cell is not None:
            if first_cell == "CV":
                out += _text_token("th", "verdict")
            else:
                v = by_cv.get(first_cell)
                if v is None:
                    out += _text_token("td", "-")
                else:
                    attrs = {"class": "verdict " + ("ok" if v.reliable else "bad")}
                    if v.reasons:
                        attrs["title"] = "; ".join(v.reasons)
                    text = v.verdict + (f" ({'; '.join(v.reasons)})" if v.reasons else "")
                    out += _text_token("td", text, attrs)
        out.append(tok)
    return out


def _artifact_path(src: str) -> str | None:
    """A relative link of the report as an artifact name ('plots/fes.png'), else None."""
    if not src or "://" in src or src.startswith(("/", "#", "?")) or ":" in src.split("/")[0]:
        return None
    name = posixpath.normpath(src.split("#")[0].split("?")[0])
    return None if name.startswith("..") or name == "." else name


def render_report(
    markdown: str, artifact_url: Callable[[str], str | None], summary: Any = None
) -> str:
    """HTML of a report. ``artifact_url(name)`` is the URL of the job's artifact of that name
    (None: no such artifact: the image is dropped, its alt text kept; the link unlinked)."""
    md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
    tokens = md.parse(markdown)
    by_cv = free_energy_verdicts(summary)
    if by_cv:
        tokens = _add_verdict_column(tokens, by_cv)
    for tok in tokens:
        for child in tok.children or ():
            if child.type == "image":
                name = _artifact_path(str(child.attrGet("src") or ""))
                url = artifact_url(name) if name else None
                if url is None:
                    alt = "".join(c.content for c in child.children or ()) or child.content
                    child.type, child.tag, child.content, child.children = "text", "", alt, None
                    child.attrs = {}
                else:
                    child.attrSet("src", url)
                    child.attrSet("loading", "lazy")
            elif child.type == "link_open":
                href = str(child.attrGet("href") or "")
                name = _artifact_path(href)
                if name is not None:
                    url = artifact_url(name)
                    child.attrSet("href", url or "#")
                else:
                    child.attrSet("rel", "noopener noreferrer")
    return md.renderer.render(tokens, md.options, {})
