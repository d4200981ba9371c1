"""Rendering the Russian texts: every customer- and staff-facing word lives in templates/."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import (Environment, PackageLoader, StrictUndefined, Template, TemplateNotFound,
                    select_autoescape)
from markupsafe import Markup, escape

from .parsers.visible import one_line, visible


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


_building = threading.Lock()


def environment() -> Environment:
    """The templates' environment (made once; a thread that asks while another makes it waits)."""
    with _building:
        return _environment()


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("mailbot", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # templates are package data: no stat() of the file per mail
        finalize=shown,
    )
    env.globals["m"] = env.get_template("_macros.j2").module  # duration(), level_name()
    env.filters["paragraphs"] = paragraphs
    env.filters["one_line"] = one_line
    env.filters["latin"] = latin
    return env


def shown(value: Any) -> Any:
    """Every value a template prints, as people may see it: no controls but line breaks and
    tabs, no bidi controls (names, subjects and file names stored before they were cleaned)."""
    if not isinstance(value, str):
        return value
    return Markup(visible(value)) if isinstance(value, Markup) else visible(value)


_LATIN = dict(zip(map(ord, "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"), (
    "a", "b", "v", "g", "d", "e", "e", "zh", "z", "i", "y", "k", "l", "m", "n", "o", "p", "r", "s",
    "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "", "y", "", "e", "yu", "ya")))
_LATIN.update({ord(chr(code).upper()): spelled.capitalize() for code, spelled in _LATIN.items()})


def latin(text: str) -> str:
    """A Russian name in Latin letters, as a passport writes it («Пётр Сидоров» → "Petr Sidorov"),
    for mail to a customer who writes in English."""
    return text.translate(_LATIN)


def localized(name: str, language: str) -> str:
    """The template for a customer who writes in ``language``: ``<name>.en`` when it exists."""
    return f"{name}.{language}" if language != "ru" and _exists(f"{name}.{language}.txt.j2") else name


@lru_cache(maxsize=None)
def _exists(template: str) -> bool:
    return template in environment().list_templates(extensions=("j2",))


def paragraphs(text: str) -> Markup:
    """Plain text as HTML paragraphs (blank lines between them, line breaks kept), escaped."""
    return Markup("\n".join(
        "<p>" + "<br>\n".join(escape(line) for line in paragraph.strip("\n").split("\n")) + "</p>"
        for paragraph in text.split("\n\n")))


def describe_problems(problems: Sequence[Any]) -> list[str]:
    """Staff command problems (:class:`~mailbot.parsers.commands.Problem`) in words, as the
    mail to the staff member gives them (for the command line)."""
    say = environment().get_template("_problems.j2").module.say
    return [" ".join(str(say(p)).split()) for p in problems]


def load_templates() -> None:
    """Compile every template now (the daemon does it at start, not with its first mail)."""
    env = environment()
    for name in env.list_templates(extensions=("j2",)):
        env.get_template(name)


def render(name: str, *, with_html: bool = True, language: str = "ru", **context: Any) -> Rendered:
    """Render ``<name>.txt.j2`` (blocks ``subject`` and ``body``) and, ``with_html``, its HTML twin;
    for a customer who writes in English (``language``) the English template, when there is one.

    The HTML part is ``<name>.html.j2`` when a template needs its own layout,
    else the text body laid out by ``base.html.j2`` (escaped, paragraphs kept).
    Customers get both; staff mail is plain text (commands are typed above it).
    """
    env = environment()
    name = localized(name, language)
    text_template = env.get_template(f"{name}.txt.j2")
    ctx = text_template.new_context(context)
    subject = "".join(text_template.blocks["subject"](ctx)).strip()
    text = "".join(text_template.blocks["body"](ctx)).strip() + "\n"
    html = None
    if with_html:
        own = _html_twin(name)
        html = (own.render(**context) if own
                else env.get_template("base.html.j2").render(body=text, lang=language))
    return Rendered(" ".join(subject.split()), text, html)


@lru_cache(maxsize=None)
def _html_twin(name: str) -> Template | None:
    """``<name>.html.j2``, or None (Jinja2 looks for a missing template anew on every call)."""
    try:
        return environment().get_template(f"{name}.html.j2")
    except TemplateNotFound:
        return None
