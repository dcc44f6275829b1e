"""The README's figures table: made from the committed reports, written only between its markers."""

import re

import pytest

from benchmarks import readme_table, regenerate

BEGIN, END = readme_table.MARKERS


def test_rewrites_only_between_the_markers():
    before = "# Title\n\nprose | with a pipe\n"
    after = "\n## Next\n| a | table | outside |\n"
    text = f"{before}{BEGIN}\n| stale | row |\n{END}{after}"
    lines = ["| new | table |", "| --- | --- |"]
    new = readme_table.rewrite(text, lines)
    assert new == f"{before}{BEGIN}\n| new | table |\n| --- | --- |\n{END}{after}"
    assert readme_table.rewrite(new, lines) == new  # idempotent


@pytest.mark.parametrize(
    "text", ["no markers", f"{END}\n{BEGIN}\n", f"{BEGIN}\n{BEGIN}\n{END}\n", f"{BEGIN}\n"]
)
def test_markers_missing_or_out_of_order_are_refused(text):
    with pytest.raises(ValueError, match="figures:begin"):
        readme_table.rewrite(text, ["| x |"])


def test_every_row_names_a_cpu_and_a_date():
    header, rule, *rows = readme_table.table()
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == list(readme_table.COLUMNS) and rule.count("---") == len(columns)
    assert len(rows) == len(readme_table.ROWS)  # every report the table reads is committed
    for row in rows:
        cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|"))))
        assert cells["CPU"] and cells["CPU"] != "unknown", row
        assert re.fullmatch(r"20\d\d-\d\d-\d\d", cells["date"]), row
        assert re.search(r"\d", cells["figure"]), row


def test_every_row_is_remade_by_make_benchmarks_and_the_readme_is_current(tmp_path):
    assert set(readme_table.ROWS) <= set(regenerate.REPORTS)
    with open(readme_table.README) as f:
        text = f.read()
    assert readme_table.rewrite(text, readme_table.table()) == text, (
        "python -m benchmarks.readme_table"
    )
    copy = tmp_path / "README.md"
    copy.write_text(text.replace(BEGIN, f"{BEGIN}\n| stale |"))
    assert readme_table.update(str(copy)) and copy.read_text() == text
    assert not readme_table.update(str(copy))
