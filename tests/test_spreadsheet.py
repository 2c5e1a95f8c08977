"""models.core.spreadsheet: the one CSV writer neutralises formula-leading text cells, keeps numbers."""

import csv

from models.core import spreadsheet


def test_formula_leading_text_cells_get_a_quote_numbers_stay(tmp_path):
    rows = [["=1+1", "+Paris", "-London", "@SUM(A1)", "\tx", "\rx", "London", -0.5, 3, None, "a,b\"c"]]
    path = spreadsheet.write_csv(tmp_path / "x.csv", ["=head", "ok"], rows)
    header, row = list(csv.reader(open(path, newline="")))
    assert header == ["'=head", "ok"]
    assert row == ["'=1+1", "'+Paris", "'-London", "'@SUM(A1)", "'\tx", "'\rx", "London", "-0.5", "3", "", "a,b\"c"]
