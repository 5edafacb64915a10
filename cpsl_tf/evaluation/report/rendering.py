"""How the report is written: Markdown blocks (a section is a list of them), the HTML page that
markdown-it-py renders from the same Markdown, number formats, and the report's folder."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from markdown_it import MarkdownIt


def heading(text: str, level: int = 2) -> str:
    return f"{'#' * level} {text}"


def bullets(items: Sequence[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A pipe table: the first column left-aligned, the others (numbers) right-aligned."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    alignment = "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"
    return "\n".join([line(header), alignment, *(line(row) for row in rows)])


def figure(file: str, caption: str) -> str:
    return f"![{caption}]({file})\n\n*{caption}*"


def markdown(blocks: Sequence[str]) -> str:
    return "\n\n".join(blocks) + "\n"


_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px}"
          "img{max-width:100%}p>em:only-child{color:#555}code{background:#f4f4f4}")


def _image(renderer, tokens, index, options, env) -> str:
    # The figures keep the markup of earlier reports (tests/evaluation/test_report.py matches it).
    token = tokens[index]
    caption = renderer.renderInlineAsText(token.children or [], options, env)
    return f"<img src='{html.escape(token.attrGet('src') or '')}' alt='{html.escape(caption)}'>"


def _markdown_renderer() -> MarkdownIt:
    # Raw HTML is off: text read from a run folder (error messages, names) is shown, never interpreted.
    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    renderer.add_render_rule("image", _image)
    return renderer


def to_html(text: str, title: str) -> str:
    """A self-contained HTML page of the Markdown ``text``."""
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n{_markdown_renderer().render(text)}</body></html>\n")


def is_number(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def percent(value, digits: int = 2) -> str:
    return f"{100 * value:.{digits}f}" if is_number(value) else "n/a"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


class ReportFolder:
    """The report's folder. It hands out the paths of the files a build writes, and then removes the figures
    and JSON files of an earlier build that this one did not write: a rerun with ``--no-model`` leaves no
    confusion matrix or examples of older models beside the new report."""

    def __init__(self, path: Path):
        self.path = path
        self.written: set[str] = set()

    def file(self, name: str) -> Path:
        self.written.add(name)
        return self.path / name

    def remove_stale(self) -> list[Path]:
        stale = [path for path in self.path.iterdir()
                 if path.is_file() and path.suffix in (".png", ".json") and path.name not in self.written]
        for path in stale:
            path.unlink()
        return stale
