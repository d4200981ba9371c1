"""Body text: line endings, format=flowed, and a clean plain-text rendering of HTML."""
from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

_NEWLINES = re.compile(r"\r\n?")
_BLANK_RUN = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t\xa0]+\n")
_WS = re.compile(r"[ \t\r\n\f\v\xa0]+")
_TAG = re.compile(r"<[^>]*>")
_SKIPPED = re.compile(r"<(script|style|head|title)\b.*?</\1\s*>", re.I | re.S)


def normalize_newlines(text: str) -> str:
    """CRLF and lone CR become LF; NUL characters are dropped."""
    return _NEWLINES.sub("\n", text).replace("\x00", "")


def unflow(text: str, delsp: bool) -> str:
    """Join RFC 3676 format=flowed soft line breaks, respecting quote depth."""
    out: list[str] = []
    joining = False
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing
        flowed = content.endswith(" ") and content.rstrip() != "--"
        if delsp and flowed:
            content = content[:-1]
        if joining and out and out[-1][0] == depth:
            out[-1] = (depth, out[-1][1] + content)
        else:
            out.append((depth, content))
        joining = flowed
    return "\n".join((">" * d + " " if d else "") + c for d, c in out)


class _TextRenderer(HTMLParser):
    """Collects visible text with line structure; blockquotes become '> ' lines."""

    _BLOCK = frozenset("address article aside center dd div dl dt fieldset figure footer form h1 h2 h3 h4 h5 h6 "
                       "header hr li main nav ol p pre section table tbody thead tfoot tr ul".split())
    _HIDDEN = frozenset({"script", "style", "head", "title", "template", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.depth = 0
        self.hidden = 0
        self.pre = 0

    def _break(self) -> None:
        line = "".join(self.current).strip(" ")
        self.lines.append(("> " * self.depth) + line if self.depth else line)
        self.current = []

    def _block_edge(self) -> None:
        if self.current:
            self._break()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self.hidden += 1
        elif tag == "br":
            self._break()
        elif tag == "blockquote":
            self._block_edge()
            self.depth += 1
        elif tag in self._BLOCK:
            self._block_edge()
            if tag == "li":
                self.current.append("- ")
            elif tag == "pre":
                self.pre += 1
        elif tag in ("td", "th") and self.current:
            self.current.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "blockquote":
            self._block_edge()
            self.depth = max(0, self.depth - 1)
        elif tag in self._BLOCK:
            self._block_edge()
            if tag == "p":
                self.lines.append("> " * self.depth if self.depth else "")
            elif tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if self.pre:
            parts = data.replace("\r", "").split("\n")
            for part in parts[:-1]:
                self.current.append(part)
                self._break()
            self.current.append(parts[-1])
        else:
            self.current.append(_WS.sub(" ", data))

    def text(self) -> str:
        self._block_edge()
        return "\n".join(line.rstrip() for line in self.lines)


def html_to_text(html: str) -> str:
    """Visible text of an HTML document, without tags, scripts or styles."""
    renderer = _TextRenderer()
    try:
        renderer.feed(html)
        renderer.close()
        text = renderer.text()
    except Exception:  # noqa: BLE001 - html.parser can still trip on hostile markup
        text = strip_tags(html)
    return tidy(text.replace("\xa0", " "))


def tidy(text: str) -> str:
    """Trailing spaces off, at most one blank line in a row, no blank edges."""
    return _BLANK_RUN.sub("\n\n", _TRAILING_SPACE.sub("\n", text)).strip("\n")


def strip_tags(html: str) -> str:
    """Crude tag removal (for comparisons and fallbacks), whitespace collapsed."""
    return _WS.sub(" ", unescape(_TAG.sub(" ", _SKIPPED.sub(" ", html)))).strip()
