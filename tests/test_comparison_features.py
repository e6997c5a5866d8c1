"""The hand-written feature table of docs/comparison.md lives in benchmarks/features.md, which
benchmarks/compare.py puts into the page it writes: the two cannot drift apart."""

from __future__ import annotations

from docs_blocks import ROOT


def test_the_comparison_page_holds_the_feature_table_as_written() -> None:
    table = (ROOT / "benchmarks" / "features.md").read_text(encoding="utf-8").rstrip("\n")
    page = (ROOT / "docs" / "comparison.md").read_text(encoding="utf-8")
    assert table in page
    assert "| Token exchange (RFC 8693) |" in table
