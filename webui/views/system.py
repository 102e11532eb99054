"""The System page."""

from __future__ import annotations

from flask import Blueprint

from webui.views.common import render
from webui.views.nav import Page

bp = Blueprint("system", __name__, url_prefix="/" if "system" == "overview" else "/system")
PAGE = Page("System", "system.index")


@bp.get("/")
def index() -> str:
    return render("system.html")
