"""Read and write the tables people bring: CSV/TSV (also gzip-compressed),
Parquet and Excel.

Shared by the CLI and the platform's upload path, so it knows nothing of
either: every problem is a `DataError` whose code the caller renders.

Behaviour, documented for users:

- Format. The content decides first (Parquet, Excel .xlsx, old Excel .xls and
  gzip have signatures), then the extension. Text files are read as delimited
  text when they are named .csv, .tsv, .tab, .txt, .dat or have no extension
  (each optionally followed by .gz). Any other name is refused as an
  unsupported format, and a file named .parquet/.xlsx/.xls whose content is
  something else is refused rather than guessed at.
- Encoding. UTF-8 (with or without BOM) first, UTF-16 when the file starts
  with its BOM (Excel's "Unicode text"). A file that is not valid UTF-8 is read
  as Windows-1252 (Excel's "CSV" on Western-European Windows; it covers
  ISO-8859-1's printable characters) when every byte decodes. ISO-8859-1 itself
  is never tried: it accepts any byte sequence, so it could not tell text from
  binary. A file holding control characters (NUL, ...) is binary and refused.
- Delimiter. Detected among `,` `;` tab `|` as the one that splits the header
  into at least two fields and gives the same number of fields on the most
  lines of the first 64 KiB. With `;` (French Excel), columns whose every value
  is a number written with a decimal comma ("3,5") become numbers.
- Missing values. Empty cells, cells holding only spaces, and the markers in
  MISSING_MARKERS are missing; any other text (e.g. "None", "-") is a value.
- Excel. Only the first sheet is read; the sheet names are kept in
  `df.attrs["source"]` so that a caller can say so.
- Refused with a DataError: missing file, empty file, header without rows,
  duplicate column names, undecodable text, binary data, ragged rows, files
  larger than `max_bytes` (counted uncompressed for gzip and Excel).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import importlib.util
import io
import re
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import pandas as pd

from .errors import AutoMLError, DataError

TEXT_EXTENSIONS = (".csv", ".tsv", ".tab", ".txt", ".dat", "")
PARQUET_EXTENSIONS = (".parquet", ".pq")
EXCEL_EXTENSIONS = (".xlsx", ".xlsm")
XLS_EXTENSIONS = (".xls",)
DELIMITERS = (",", ";", "\t", "|")
MISSING_MARKERS = ("", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "#N/A")
SUPPORTED = "CSV, TSV, Parquet, Excel (.xlsx)"
EXCEL_MAX_ROWS = 1_048_575  # a sheet has 1,048,576 rows, one of them for the header

_PARQUET_MAGIC = b"PAR1"
_ZIP_MAGIC = b"PK\x03\x04"
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # .xls, and password-protected .xlsx
_GZIP_MAGIC = b"\x1f\x8b"
# C0 control characters other than tab, newline, form feed, carriage return and
# the DOS end-of-file mark: text files do not hold them, binary files do.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0e-\x19\x1b-\x1f]")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x19\x1b-\x1f]")
_DECIMAL_COMMA = r"[+-]?\d+(,\d+)?"
_BAD_ROW = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_SAMPLE_CHARS = 64 * 1024
_CHUNK_BYTES = 1 << 20


def read_table(path, *, max_bytes: int | None = None, name: str | None = None) -> pd.DataFrame:
    """Read one table from `path`; see the module docstring for the rules. `name`
    is what messages call the file (an upload's own name, not the server's path);
    its extension counts as the file's."""
    path = Path(path)
    shown = name or str(path)
    if not path.exists():
        raise DataError("file_not_found", path=shown)
    if not path.is_file():
        raise DataError("file_not_a_file", path=shown)
    try:
        size = path.stat().st_size
        _check_size(size, max_bytes, shown)
        if size == 0:
            raise DataError("file_empty", path=shown)
        kind = _detect_format(path, shown)
        if kind == "parquet":
            df = _read_parquet(path, shown)
        elif kind == "excel":
            df = _read_excel(path, shown, max_bytes)
        elif kind == "xls":
            df = _read_xls(path, shown)
        else:
            df = _read_text(path, shown, kind == "gzip", max_bytes)
    except AutoMLError:
        raise
    except OSError as error:
        raise DataError("file_unreadable", path=shown, reason=error.strerror or str(error)) from error
    return _tidy(df, shown)


def writable_format(path) -> str:
    """The format `write_table` will use for `path`, or a DataError if none fits.

    Lets a caller refuse a bad output name before doing the work."""
    name = Path(path).name.lower()
    for kind, suffixes in (
        ("csv", (".csv", ".csv.gz")),
        ("tsv", (".tsv", ".tsv.gz", ".tab")),
        ("parquet", PARQUET_EXTENSIONS),
        ("excel", (".xlsx",)),
    ):
        if name.endswith(suffixes):
            return kind
    raise DataError("file_out_format", path=str(path), formats=".csv, .csv.gz, .tsv, .parquet, .xlsx")


def write_table(df: pd.DataFrame, path) -> None:
    """Write `df` in the format its file name asks for; missing values become empty cells."""
    kind = writable_format(path)
    if kind == "csv":
        df.to_csv(path, index=False)
    elif kind == "tsv":
        df.to_csv(path, index=False, sep="\t")
    elif kind == "parquet":
        _pyarrow_parquet()
        df.to_parquet(path, index=False)
    else:
        if len(df) > EXCEL_MAX_ROWS:
            raise DataError("file_excel_too_many_rows", path=str(path), rows=len(df), limit=EXCEL_MAX_ROWS)
        df.to_excel(path, index=False)


# --- format -------------------------------------------------------------------


def _check_size(size: int, max_bytes: int | None, shown: str) -> None:
    if max_bytes is not None and size > max_bytes:
        raise DataError("file_too_large", path=shown, size_mb=size / 1e6, limit_mb=max_bytes / 1e6)


def _extension(path: Path) -> str:
    """The extension that names the content: 'data.csv.gz' -> '.csv'."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _detect_format(path: Path, shown: str) -> str:
    with path.open("rb") as f:
        head = f.read(8)
    ext = _extension(path)
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_OLE2_MAGIC):
        if importlib.util.find_spec("xlrd") is None or ext not in XLS_EXTENSIONS:
            raise DataError("file_xls_unsupported", path=shown)
        return "xls"
    if head.startswith(_ZIP_MAGIC):
        if _is_xlsx(path):
            return "excel"
        if ext in EXCEL_EXTENSIONS:
            raise DataError("file_corrupt", path=shown, format="Excel", reason="no workbook inside")
        raise DataError("file_format_unsupported", path=shown, found=ext or "zip", formats=SUPPORTED)
    if ext in TEXT_EXTENSIONS:
        return "text"
    for suffixes, name in ((PARQUET_EXTENSIONS, "Parquet"), (EXCEL_EXTENSIONS + XLS_EXTENSIONS, "Excel")):
        if ext in suffixes:
            raise DataError("file_wrong_content", path=shown, format=name)
    raise DataError("file_format_unsupported", path=shown, found=ext, formats=SUPPORTED)


def _is_xlsx(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return "xl/workbook.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


# --- Parquet and Excel ------------------------------------------------------------


def _pyarrow_parquet():
    """pyarrow is the `parquet` extra: without it, say how to get it."""
    try:
        import pyarrow.parquet
    except ImportError as error:
        raise DataError("parquet_needs_pyarrow") from error
    return pyarrow.parquet


def _read_parquet(path: Path, shown: str) -> pd.DataFrame:
    pq = _pyarrow_parquet()
    try:
        names = pq.read_schema(path).names
        _refuse_duplicates(names, shown)
        df = pd.read_parquet(path)
    except AutoMLError:
        raise
    except Exception as error:  # pyarrow raises several unrelated types for a damaged file
        raise DataError("file_corrupt", path=shown, format="Parquet", reason=_first_line(error)) from error
    df.attrs["source"] = {"format": "parquet"}
    return df


def _read_excel(path: Path, shown: str, max_bytes: int | None) -> pd.DataFrame:
    with zipfile.ZipFile(path) as archive:
        _check_size(sum(info.file_size for info in archive.infolist()), max_bytes, shown)
    try:
        with pd.ExcelFile(path, engine="openpyxl") as book:
            sheets = list(book.sheet_names)
            header = pd.read_excel(book, sheet_name=0, header=None, nrows=1)
            if header.empty:
                raise DataError("file_empty", path=shown)
            _refuse_duplicates([v for v in header.iloc[0].tolist() if pd.notna(v)], shown)
            df = pd.read_excel(book, sheet_name=0, keep_default_na=False, na_values=list(MISSING_MARKERS))
    except AutoMLError:
        raise
    except Exception as error:  # openpyxl raises several unrelated types for a damaged file
        raise DataError("file_corrupt", path=shown, format="Excel", reason=_first_line(error)) from error
    df.attrs["source"] = {"format": "excel", "sheet": sheets[0], "sheets": sheets}
    return df


def _read_xls(path: Path, shown: str) -> pd.DataFrame:
    try:
        with pd.ExcelFile(path, engine="xlrd") as book:
            sheets = list(book.sheet_names)
            df = pd.read_excel(book, sheet_name=0, keep_default_na=False, na_values=list(MISSING_MARKERS))
    except Exception as error:
        raise DataError("file_corrupt", path=shown, format="Excel", reason=_first_line(error)) from error
    df.attrs["source"] = {"format": "excel", "sheet": sheets[0], "sheets": sheets}
    return df


# --- delimited text -------------------------------------------------------------


def _open_binary(path: Path, gz: bool):
    return gzip.open(path, "rb") if gz else path.open("rb")


def _read_text(path: Path, shown: str, gz: bool, max_bytes: int | None) -> pd.DataFrame:
    encoding = _detect_encoding(path, shown, gz, max_bytes)
    with _open_binary(path, gz) as raw, io.TextIOWrapper(raw, encoding=encoding, newline="") as text:
        sample = text.read(_SAMPLE_CHARS)
        truncated = bool(text.read(1))
    if not sample.strip():
        raise DataError("file_empty", path=shown)
    preferred = "\t" if _extension(path) in (".tsv", ".tab") else ","
    delimiter = _detect_delimiter(sample, truncated, preferred)
    rows = csv.reader(io.StringIO(sample), delimiter=delimiter)
    header = next((row for row in rows if any(c.strip() for c in row)), [])
    _refuse_duplicates(header, shown)
    try:
        df = pd.read_csv(
            path,
            sep=delimiter,
            encoding=encoding,
            compression="gzip" if gz else None,
            keep_default_na=False,
            na_values=list(MISSING_MARKERS),
            skipinitialspace=True,
            index_col=False,  # a delimiter ending every data line must not shift the columns
            low_memory=False,
        )
    except pd.errors.EmptyDataError as error:
        raise DataError("file_empty", path=shown) from error
    except pd.errors.ParserError as error:
        raise _parser_error(error, shown, delimiter) from error
    if df.shape[1] == 1:
        column = str(df.columns[0])
        for other in DELIMITERS:
            if other in column:
                raise DataError("file_delimiter", path=shown, column=column[:60], delimiter=_show(other))
    if delimiter == ";":
        df = _decimal_commas(df)
    df.attrs["source"] = {"format": "text", "delimiter": delimiter, "encoding": encoding, "gzip": gz}
    return df


def _detect_encoding(path: Path, shown: str, gz: bool, max_bytes: int | None) -> str:
    with _open_binary(path, gz) as f:
        start = _read_gzip_safe(f, 4, shown) if gz else f.read(4)
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ("utf-16",)
    else:
        candidates = ("utf-8-sig", "cp1252")
    for encoding in candidates:
        if _decodes(path, shown, gz, encoding, max_bytes):
            return encoding
    raise DataError("file_encoding", path=shown)


def _decodes(path: Path, shown: str, gz: bool, encoding: str, max_bytes: int | None) -> bool:
    """Stream the whole file through the decoder: True if it decodes, False if
    not, DataError if it holds control characters (binary data)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    eight_bit = encoding != "utf-16"
    total = 0
    with _open_binary(path, gz) as f:
        while chunk := (_read_gzip_safe(f, _CHUNK_BYTES, shown) if gz else f.read(_CHUNK_BYTES)):
            total += len(chunk)
            _check_size(total, max_bytes, shown)
            if eight_bit and _CONTROL_BYTES.search(chunk):
                raise DataError("file_not_text", path=shown)
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError:
                return False
            if not eight_bit and _CONTROL_CHARS.search(text):
                raise DataError("file_not_text", path=shown)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _read_gzip_safe(f, size: int, shown: str) -> bytes:
    try:
        return f.read(size)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError("file_corrupt", path=shown, format="gzip", reason=_first_line(error)) from error


def _detect_delimiter(sample: str, truncated: bool, preferred: str) -> str:
    """The delimiter that splits the header and gives the most lines of its width."""
    order = (preferred, *(d for d in DELIMITERS if d != preferred))
    best, best_key = preferred, None
    for rank, delimiter in enumerate(order):
        try:
            rows = [r for r in csv.reader(io.StringIO(sample), delimiter=delimiter) if any(c.strip() for c in r)]
        except csv.Error:
            continue
        if truncated and len(rows) > 1:
            rows.pop()  # may be cut in the middle
        width = len(rows[0]) if rows else 0
        if width < 2:
            continue
        same = sum(len(r) == width for r in rows) / len(rows)
        key = (same == 1.0, same, width, -rank)
        if best_key is None or key > best_key:
            best, best_key = delimiter, key
    return best


def _parser_error(error: Exception, shown: str, delimiter: str) -> DataError:
    found = _BAD_ROW.search(str(error))
    if found:
        expected, line, saw = (int(g) for g in found.groups())
        return DataError("file_bad_row", path=shown, line=line, found=saw, expected=expected, delimiter=_show(delimiter))
    return DataError("file_unreadable", path=shown, reason=_first_line(error))


def _decimal_commas(df: pd.DataFrame) -> pd.DataFrame:
    for column in df.columns:
        values = df[column]
        if not (pd.api.types.is_string_dtype(values) or pd.api.types.is_object_dtype(values)):
            continue
        present = values.dropna().astype(str).str.strip()
        if len(present) and present.str.fullmatch(_DECIMAL_COMMA).all() and present.str.contains(",").any():
            df[column] = pd.to_numeric(values.astype(str).str.strip().str.replace(",", ".", regex=False).where(values.notna()))
    return df


# --- common -------------------------------------------------------------------------


def _refuse_duplicates(names, shown: str) -> None:
    counts = Counter(str(n).strip() for n in names)
    duplicates = [n for n, c in counts.items() if c > 1 and n]
    if duplicates:
        raise DataError("file_duplicate_columns", path=shown, columns=", ".join(f"'{n}'" for n in duplicates))


def _tidy(df: pd.DataFrame, shown: str) -> pd.DataFrame:
    """Common clean-up: string column names, blank cells missing, no empty table."""
    source = df.attrs.get("source", {})
    df.columns = [str(c).strip() for c in df.columns]
    trailing = [c for c in df.columns if c.startswith("Unnamed: ") and df[c].isna().all()]
    df = df.drop(columns=trailing)  # an empty column from a delimiter at the end of every line
    _refuse_duplicates(df.columns, shown)
    if df.shape[1] == 0:
        raise DataError("file_empty", path=shown)
    if len(df) == 0:
        raise DataError("file_no_rows", path=shown)
    for column in df.columns:
        values = df[column]
        if pd.api.types.is_string_dtype(values) or pd.api.types.is_object_dtype(values):
            try:
                blank = values.str.strip().eq("")
            except AttributeError:  # an object column without any text
                continue
            if blank.any():
                df[column] = values.mask(blank)
    df.attrs["source"] = source
    return df


def _show(delimiter: str) -> str:
    return "\\t" if delimiter == "\t" else delimiter


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]
