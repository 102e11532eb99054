"""The Devices page."""

from __future__ import annotations

from flask import Blueprint

from webui.views.common import render
from webui.views.nav import Page

bp = Blueprint("devices", __name__, url_prefix="/" if "devices" == "overview" else "/devices")
PAGE = Page("Devices", "devices.index")


@bp.get("/")
def index() -> str:
    return render("devices.html")
