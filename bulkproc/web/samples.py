"""GET /hospitals/template.csv: a file to start from, open to everyone like the page that links it."""

from __future__ import annotations

from flask import Blueprint

from ..files.headers import TEMPLATE_CSV
from .requests import csv_file

bp = Blueprint("samples", __name__)


@bp.get("/hospitals/template.csv")
def template_csv():
    return csv_file(iter([TEMPLATE_CSV]), "hospitals-template.csv")
