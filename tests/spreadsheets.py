"""Workbooks as spreadsheet programs save them, written in the tests with dev-only writer libraries."""

from __future__ import annotations

import io
import zipfile

Cell = str | int | float | None


def xlsx(rows: list[list[Cell]], *, title: str = "Hospitals", more_sheets: tuple[str, ...] = ()) -> bytes:
    """An .xlsx workbook (openpyxl) whose first sheet holds `rows`; strings stay strings."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = title
    for r, row in enumerate(rows, 1):
        for c, value in enumerate(row, 1):
            if value not in (None, ""):
                cell = sheet.cell(row=r, column=c, value=value)
                if isinstance(value, str):
                    cell.data_type = "s"  # never read "=..." as a formula: a person typed text
    for name in more_sheets:
        book.create_sheet(name).append([name])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def ods(rows: list[list[Cell]], *, title: str = "Hospitals", formulas: dict[tuple[int, int], str] | None = None) -> bytes:
    """An .ods workbook (odfpy); `formulas` gives (row, column) cells a formula beside their computed value."""
    from odf import teletype
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    document = OpenDocumentSpreadsheet()
    table = Table(name=title)
    for r, row in enumerate(rows):
        table_row = TableRow()
        for c, value in enumerate(row):
            if value in (None, ""):
                table_row.addElement(TableCell())
                continue
            numeric = isinstance(value, (int, float))
            extra = {"formula": formulas[(r, c)]} if formulas and (r, c) in formulas else {}
            cell = (TableCell(valuetype="float", value=value, **extra) if numeric
                    else TableCell(valuetype="string", **extra))
            paragraph = P()
            teletype.addTextToElement(paragraph, str(value))
            cell.addElement(paragraph)
            table_row.addElement(cell)
        table.addElement(table_row)
    document.spreadsheet.addElement(table)
    buffer = io.BytesIO()
    document.write(buffer)
    return buffer.getvalue()


def xls(rows: list[list[Cell]], *, title: str = "Hospitals") -> bytes:
    """An Excel 97-2003 .xls workbook (xlwt)."""
    import xlwt

    book = xlwt.Workbook()
    sheet = book.add_sheet(title)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if value not in (None, ""):
                sheet.write(r, c, value)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def with_sheet_xml(workbook: bytes, edit) -> bytes:
    """The .xlsx with its first sheet's XML passed through `edit` (to build hostile workbooks)."""
    source = zipfile.ZipFile(io.BytesIO(workbook))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in source.namelist():
            data = source.read(name)
            archive.writestr(name, edit(data.decode()) if name == "xl/worksheets/sheet1.xml" else data)
    return buffer.getvalue()


def zip_bomb(unpacked_mib: int = 256) -> bytes:
    """An .xlsx-looking archive whose sheet unpacks to `unpacked_mib` MiB of one repeated byte."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
        chunk = b"<" * 2**20
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            for _ in range(unpacked_mib):
                sheet.write(chunk)
    return buffer.getvalue()
