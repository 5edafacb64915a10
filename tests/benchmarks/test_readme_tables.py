"""README's results blocks are verbatim copies of the files the benchmark scripts write."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("readme_tables", REPO / "benchmarks" / "readme_tables.py")
readme_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_tables)


def test_a_block_is_refreshed_from_its_file_and_text_around_it_is_kept(tmp_path):
    (tmp_path / "table.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    readme = "intro\n<!-- my table: table.md -->\n| a | b |\n| 1 | 3 |\n<!-- end my table -->\noutro\n"
    assert readme_tables.stale_blocks(readme, tmp_path) == ["my table"]
    updated = readme_tables.refreshed(readme, tmp_path)
    assert updated == ("intro\n<!-- my table: table.md -->\n| a | b |\n|---|---|\n| 1 | 2 |\n"
                       "<!-- end my table -->\noutro\n")
    assert readme_tables.stale_blocks(updated, tmp_path) == []


def test_the_readme_holds_the_current_results_files():
    readme = (REPO / "README.md").read_text()
    assert len(list(readme_tables.BLOCK.finditer(readme))) >= 4
    assert readme_tables.stale_blocks(readme) == [], "run python benchmarks/readme_tables.py"
