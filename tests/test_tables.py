import gzip
import importlib.util
import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from automl.errors import DataError
from automl.tables import read_table, writable_format, write_table


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def refused(path, code, **kwargs):
    """The DataError raised, after checking that it renders fully in both languages."""
    with pytest.raises(DataError) as caught:
        read_table(path, **kwargs)
    error = caught.value
    assert error.code == code
    for lang in ("fr", "en"):
        text = error.message(lang)
        assert "{" not in text and text != code
    return error


# --- formats --------------------------------------------------------------------


def test_csv_types_and_empty_cells_missing(tmp_path):
    df = read_table(write(tmp_path, "a.csv", "x,y,z\n1,a,2.5\n2,,3\n"))
    assert df.columns.tolist() == ["x", "y", "z"]
    assert df["x"].tolist() == [1, 2]
    assert df["y"].iloc[0] == "a" and pd.isna(df["y"].iloc[1])
    assert df["z"].dtype == float


def test_missing_markers_spaces_and_text_that_stays(tmp_path):
    df = read_table(write(tmp_path, "a.csv", "a,b\n1,NA\n2,   \n3,None\n4,NULL\n"))
    assert df["b"].isna().tolist() == [True, True, False, True]
    assert df["b"].iloc[2] == "None"


def test_tsv(tmp_path):
    df = read_table(write(tmp_path, "a.tsv", "a\tb c\n1\tx, y; z\n"))
    assert df.columns.tolist() == ["a", "b c"]
    assert df["b c"].iloc[0] == "x, y; z"


def test_gzip_csv(tmp_path):
    path = tmp_path / "a.csv.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"a,b\n1,2\n3,4\n")
    df = read_table(path)
    assert df.to_dict("list") == {"a": [1, 3], "b": [2, 4]}
    assert df.attrs["source"]["gzip"] is True


def test_parquet_keeps_types(tmp_path):
    original = pd.DataFrame({"d": pd.to_datetime(["2024-01-01", "2024-02-01"]), "n": [1.5, None], "s": ["x", None]})
    original.to_parquet(tmp_path / "a.parquet")
    df = read_table(tmp_path / "a.parquet")
    assert pd.api.types.is_datetime64_any_dtype(df["d"])
    assert df["n"].isna().tolist() == [False, True]
    assert df["s"].isna().tolist() == [False, True]


def test_excel_reads_first_sheet_and_says_so(tmp_path):
    path = tmp_path / "book.xlsx"
    with pd.ExcelWriter(path) as writer:
        pd.DataFrame({"a": [1, 2], "b": ["x", None]}).to_excel(writer, sheet_name="first", index=False)
        pd.DataFrame({"other": [9]}).to_excel(writer, sheet_name="second", index=False)
    df = read_table(path)
    assert df.columns.tolist() == ["a", "b"]
    assert df["a"].tolist() == [1, 2] and pd.isna(df["b"].iloc[1])
    assert df.attrs["source"]["sheets"] == ["first", "second"]
    assert df.attrs["source"]["sheet"] == "first"


def test_excel_numeric_headers_become_strings(tmp_path):
    pd.DataFrame({2023: [1, 2], 2024: [3, 4]}).to_excel(tmp_path / "a.xlsx", index=False)
    assert read_table(tmp_path / "a.xlsx").columns.tolist() == ["2023", "2024"]


def test_content_decides_over_extension(tmp_path):
    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "really_parquet.csv")
    assert read_table(tmp_path / "really_parquet.csv")["a"].tolist() == [1, 2]


# --- delimiters -------------------------------------------------------------------


def test_semicolon_csv_with_decimal_commas(tmp_path):
    df = read_table(write(tmp_path, "fr.csv", "nom;prix;quantité;code\nbé;3,5;2;01,02x\nça;4;1;7\n"))
    assert df.columns.tolist() == ["nom", "prix", "quantité", "code"]
    assert df["prix"].tolist() == [3.5, 4.0]
    assert df["code"].tolist() == ["01,02x", "7"]  # not every value is a number: left as text


def test_comma_csv_whose_text_holds_semicolons(tmp_path):
    lines = ["id,comment,score"] + [f"{i},\"a; b; c\",{i * 2}" if i % 2 else f"{i},plain; text,{i}" for i in range(20)]
    df = read_table(write(tmp_path, "c.csv", "\n".join(lines) + "\n"))
    assert df.columns.tolist() == ["id", "comment", "score"]
    assert len(df) == 20


def test_pipe_delimiter(tmp_path):
    df = read_table(write(tmp_path, "p.txt", "a|b|c\n1|2|3\n4|5|6\n"))
    assert df.columns.tolist() == ["a", "b", "c"]


def test_single_column_is_allowed(tmp_path):
    assert read_table(write(tmp_path, "one.csv", "value\n1\n2\n"))["value"].tolist() == [1, 2]


def test_delimiter_ending_every_line_adds_no_column(tmp_path):
    df = read_table(write(tmp_path, "t.csv", "a,b,\n1,2,\n3,,\n"))
    assert df.columns.tolist() == ["a", "b"]
    assert df["a"].tolist() == [1, 3]


def test_delimiter_ending_data_lines_only_does_not_shift_columns(tmp_path):
    df = read_table(write(tmp_path, "t.csv", "a,b\n1,2,\n3,4,\n"))
    assert df.to_dict("list") == {"a": [1, 3], "b": [2, 4]}


# --- encodings --------------------------------------------------------------------


def test_utf8_bom_is_not_part_of_the_first_name(tmp_path):
    df = read_table(write(tmp_path, "bom.csv", b"\xef\xbb\xbfid,b\n1,2\n"))
    assert df.columns.tolist() == ["id", "b"]


def test_windows_1252_fallback(tmp_path):
    df = read_table(write(tmp_path, "w.csv", "ville;prix\nGen\xe8ve;3\nSète €;4\n".encode("cp1252")))
    assert df["ville"].tolist() == ["Genève", "Sète €"]
    assert df.attrs["source"]["encoding"] == "cp1252"


def test_utf16_with_bom(tmp_path):
    df = read_table(write(tmp_path, "u.txt", "nom\tâge\nZoé\t7\n".encode("utf-16")))
    assert df.to_dict("list") == {"nom": ["Zoé"], "âge": [7]}


# --- refusals -------------------------------------------------------------------------


def test_missing_file(tmp_path):
    error = refused(tmp_path / "nope.csv", "file_not_found")
    assert "nope.csv" in error.message("en")


def test_folder(tmp_path):
    refused(tmp_path, "file_not_a_file")


@pytest.mark.parametrize(
    "name, content, code",
    [
        ("empty.csv", b"", "file_empty"),
        ("blank.csv", b"\n  \n\n", "file_empty"),
        ("header.csv", b"a,b,c\n", "file_no_rows"),
        ("nul.csv", b"a,b\n1,\x00\n", "file_not_text"),
        ("undecodable.csv", b"a,b\n1,\x81\x8d\n", "file_encoding"),
        ("ragged.csv", b"a,b\n1,2\n3,4,5\n", "file_bad_row"),
        ("quoted.csv", b'"a;b;c"\n"1;2;3"\n', "file_delimiter"),
        ("data.json", b'{"a": 1}', "file_format_unsupported"),
        ("csv_named.parquet", b"a,b\n1,2\n", "file_wrong_content"),
        ("csv_named.xlsx", b"a,b\n1,2\n", "file_wrong_content"),
        ("corrupt.parquet", b"PAR1" + b"\x01" * 100, "file_corrupt"),
        ("truncated.csv.gz", gzip.compress(b"a,b\n" + b"1,2\n" * 1000)[:-6], "file_corrupt"),
    ],
)
def test_refused(tmp_path, name, content, code):
    error = refused(write(tmp_path, name, content), code)
    assert name in error.message("fr")


def test_binary_garbage_is_refused_not_parsed(tmp_path):
    garbage = np.random.default_rng(0).bytes(10_000)
    refused(write(tmp_path, "garbage.csv", garbage), "file_not_text")


def test_binary_garbage_inside_gzip(tmp_path):
    garbage = gzip.compress(np.random.default_rng(1).bytes(10_000))
    refused(write(tmp_path, "garbage.csv.gz", garbage), "file_not_text")


def test_ragged_row_names_the_line(tmp_path):
    error = refused(write(tmp_path, "r.csv", "a,b\n1,2\n3,4\n5,6,7\n"), "file_bad_row")
    assert error.params["line"] == 4 and error.params["found"] == 3 and error.params["expected"] == 2


def test_duplicate_columns_are_named(tmp_path):
    error = refused(write(tmp_path, "d.csv", "a,b,a, b\n1,2,3,4\n"), "file_duplicate_columns")
    assert "'a'" in error.params["columns"] and "'b'" in error.params["columns"]


def test_duplicate_columns_in_excel(tmp_path):
    path = tmp_path / "d.xlsx"
    pd.DataFrame([[1, 2]], columns=["x", "y"]).to_excel(path, index=False)
    import openpyxl

    book = openpyxl.load_workbook(path)
    book.active["B1"] = "x"
    book.save(path)
    assert "'x'" in refused(path, "file_duplicate_columns").params["columns"]


def test_duplicate_columns_in_parquet(tmp_path):
    pq.write_table(pa.table([pa.array([1]), pa.array([2])], names=["k", "k"]), tmp_path / "d.parquet")
    refused(tmp_path / "d.parquet", "file_duplicate_columns")


def test_excel_header_only_and_empty_workbook(tmp_path):
    pd.DataFrame(columns=["a", "b"]).to_excel(tmp_path / "h.xlsx", index=False)
    refused(tmp_path / "h.xlsx", "file_no_rows")
    import openpyxl

    openpyxl.Workbook().save(tmp_path / "e.xlsx")
    refused(tmp_path / "e.xlsx", "file_empty")


def test_zip_that_is_not_a_workbook(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        archive.writestr("a.csv", "a,b\n1,2\n")
    refused(tmp_path / "a.zip", "file_format_unsupported")
    (tmp_path / "a.zip").rename(tmp_path / "a.xlsx")
    refused(tmp_path / "a.xlsx", "file_corrupt")


def test_damaged_workbook(tmp_path):
    with zipfile.ZipFile(tmp_path / "bad.xlsx", "w") as archive:
        archive.writestr("xl/workbook.xml", "not xml at all")
    refused(tmp_path / "bad.xlsx", "file_corrupt")


@pytest.mark.skipif(importlib.util.find_spec("xlrd") is not None, reason="xlrd is installed: .xls is readable")
def test_old_excel_without_reader(tmp_path):
    ole2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504
    refused(write(tmp_path, "old.xls", ole2), "file_xls_unsupported")


def test_size_limit(tmp_path):
    path = write(tmp_path, "a.csv", "a,b\n" + "1,2\n" * 100)
    assert len(read_table(path, max_bytes=10_000)) == 100
    refused(path, "file_too_large", max_bytes=100)


def test_size_limit_counts_gzip_uncompressed(tmp_path):
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n" + b"1,2\n" * 250_000))
    assert path.stat().st_size < 10_000
    refused(path, "file_too_large", max_bytes=100_000)


# --- writing --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.csv", "out.csv.gz", "out.tsv", "out.parquet", "out.xlsx"])
def test_write_then_read_round_trip(tmp_path, name):
    df = pd.DataFrame({"prediction": ["yes", None, "no"], "proba_yes": [0.9, 0.2, np.nan]})
    write_table(df, tmp_path / name)
    back = read_table(tmp_path / name)
    assert back["prediction"].isna().tolist() == [False, True, False]
    assert back["prediction"].iloc[2] == "no"
    assert back["proba_yes"].tolist()[:2] == [0.9, 0.2] and pd.isna(back["proba_yes"].iloc[2])


def test_missing_values_are_written_as_empty_cells(tmp_path):
    write_table(pd.DataFrame({"a": [1.0, np.nan], "b": ["x", None]}), tmp_path / "o.csv")
    assert (tmp_path / "o.csv").read_text() == "a,b\n1.0,x\n,\n"


@pytest.mark.parametrize("name", ["out.json", "out", "out.xls"])
def test_write_refuses_unknown_extension(tmp_path, name):
    with pytest.raises(DataError) as caught:
        writable_format(tmp_path / name)
    assert caught.value.code == "file_out_format"
    assert "{" not in caught.value.message("fr")
