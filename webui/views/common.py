"""What every page's view uses: the Control, rendering with the shared
context, and applying a config section with field-level errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import render_template

from homegw.control import ApplyResult, ConfigRejected, Control
from webui.security import state


def control() -> Control:
    return state().control


def render(template: str, **context: Any) -> str:
    return render_template(template, **context)


@dataclass
class FormResult:
    """The outcome of a form: the ApplyResult, or the problems by key path
    (``nat.port_forwards.0.external_port``) for the template to put next to
    their fields, with the user's input kept."""

    applied: ApplyResult | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.applied is not None


def apply_section(section: str, document: Any) -> FormResult:
    """Apply one config section as the API's PUT /config/<section> does; a
    refusal comes back as errors keyed by the full dotted key path."""
    try:
        return FormResult(applied=control().config_apply(document, section=section))
    except ConfigRejected as rejected:
        errors: dict[str, str] = {}
        for problem in rejected.problems:
            errors.setdefault(problem.loc or section, problem.msg)
        return FormResult(errors=errors)
