"""Rendering the Russian texts: every customer- and staff-facing word lives in templates/."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import (Environment, PackageLoader, StrictUndefined, TemplateNotFound,
                    select_autoescape)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("mailbot", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # templates are package data: no stat() of the file per mail
    )
    env.globals["m"] = env.get_template("_macros.j2").module  # duration(), level_name()
    return env


def render(name: str, **context: Any) -> Rendered:
    """Render ``<name>.txt.j2`` (blocks ``subject`` and ``body``) and its HTML twin.

    The HTML part is ``<name>.html.j2`` when a template needs its own layout,
    else the text body laid out by ``base.html.j2`` (escaped, paragraphs kept).
    """
    env = environment()
    text_template = env.get_template(f"{name}.txt.j2")
    ctx = text_template.new_context(context)
    subject = "".join(text_template.blocks["subject"](ctx)).strip()
    text = "".join(text_template.blocks["body"](ctx)).strip() + "\n"
    try:
        html = env.get_template(f"{name}.html.j2").render(**context)
    except TemplateNotFound:
        html = env.get_template("base.html.j2").render(body=text)
    return Rendered(" ".join(subject.split()), text, html)
