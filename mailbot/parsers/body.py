"""Body text: line endings, format=flowed, and a clean plain-text rendering of HTML.

HTML is read by libxml2 (lxml's parser, events to a target, no tree): it takes linear
time on hostile markup that keeps Python's html.parser busy for hours (150,000 unclosed
``<script `` tags: 1.2 MB, quadratic there). Every function here is linear in its input.
"""
from __future__ import annotations

import re
from html import unescape

from lxml import etree

_NEWLINES = re.compile(r"\r\n?")
_BLANK_RUN = re.compile(r"\n{3,}")
_WS = re.compile(r"[ \t\r\n\f\v\xa0]+")
_TAG = re.compile(r"<[^<>]*>")  # not [^>]*: that rescans to the end from every unclosed '<'
_HIDDEN_OPEN = re.compile(r"<(script|style|head|title)\b", re.I)


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


def _unspaced(attrib) -> bool:
    """Outlook's and Word's paragraphs (``class=MsoNormal``, ``MsoPlainText``, …) have no margin:
    each is a line, and a blank line is a paragraph of its own (``<o:p>&nbsp;</o:p>``)."""
    return attrib.get("class", "").startswith("Mso")


class _TextRenderer:
    """A parser target that collects visible text with line structure; blockquotes become '> ' lines."""

    _BLOCK = frozenset("address article aside center dd div dl dt fieldset figure footer form h1 h2 h3 h4 h5 h6 "
                       "header hr li main nav ol p pre section table tbody thead tfoot tr ul".split())
    _HIDDEN = frozenset({"script", "style", "head", "title", "template", "noscript"})

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.current: list[str] = []
        self.pending: list[str] = []  # text since the last tag: libxml2 hands it over in pieces
        self.depth = 0
        self.hidden = 0
        self.pre = 0
        self.paragraphs: list[bool] = []  # per open <p>: is it spaced (not Outlook's MsoNormal)?

    def _break(self) -> None:
        line = "".join(self.current).strip(" ")
        self.lines.append(("> " * self.depth) + line if self.depth else line)
        self.current = []

    def _block_edge(self) -> None:
        if self.current:
            self._break()

    def start(self, tag: str, attrib: object) -> None:
        self._text()
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
            elif tag == "p":
                self.paragraphs.append(not _unspaced(attrib))
            elif tag == "pre":
                self.pre += 1
        elif tag in ("td", "th") and self.current:
            self.current.append(" ")

    def end(self, tag: str) -> None:
        self._text()
        if tag in self._HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "blockquote":
            self._block_edge()
            self.depth = max(0, self.depth - 1)
        elif tag in self._BLOCK:
            self._block_edge()
            if tag == "p" and (self.paragraphs.pop() if self.paragraphs else True):
                self.lines.append("> " * self.depth if self.depth else "")
            elif tag == "pre":
                self.pre = max(0, self.pre - 1)

    def data(self, data: str) -> None:
        self.pending.append(data)

    def _text(self) -> None:
        """The text since the last tag, as one piece (whitespace runs collapse across pieces)."""
        if not self.pending:
            return
        data, self.pending = "".join(self.pending), []
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

    def close(self) -> str:
        self._text()
        self._block_edge()
        return "\n".join(line.rstrip() for line in self.lines)


def html_to_text(html: str) -> str:
    """Visible text of an HTML document, without tags, scripts or styles."""
    parser = etree.HTMLParser(target=_TextRenderer(), encoding="utf-8", recover=True, no_network=True,
                              huge_tree=True, remove_comments=True, remove_pis=True)
    try:  # bytes with the encoding given: a <meta charset> in the text must not re-decode it
        parser.feed(html.encode("utf-8", "replace"))
        text = parser.close()
    except Exception:  # noqa: BLE001 - libxml2 refuses some input (an empty document, say)
        text = strip_tags(html)
    return tidy(text.replace("\xa0", " "))


def tidy(text: str) -> str:
    """Trailing spaces off, at most one blank line in a row, no blank edges."""
    unspaced = "\n".join(line.rstrip(" \t\xa0") for line in text.split("\n"))  # a regex backtracks
    return _BLANK_RUN.sub("\n\n", unspaced).strip("\n")


def strip_tags(html: str) -> str:
    """Crude tag removal (for comparisons and fallbacks), whitespace collapsed."""
    return _WS.sub(" ", unescape(_TAG.sub(" ", _without_hidden(html)))).strip()


def _without_hidden(html: str) -> str:
    """The HTML without its script, style, head and title elements (an unclosed one stays).

    Linear: a lazy regex from each opening to its closing tag rescans the rest of the text
    from every unclosed opening. Here each element's closing tag is searched for once; once
    one is missing, later openings of that element cannot be closed either.
    """
    kept, position, unclosed = [], 0, set()
    for opening in _HIDDEN_OPEN.finditer(html):
        name = opening.group(1).lower()
        if opening.start() < position or name in unclosed:
            continue
        closing = re.compile(rf"</{name}\s*>", re.I).search(html, opening.end())
        if closing is None:
            unclosed.add(name)
            continue
        kept.append(html[position:opening.start()])
        kept.append(" ")
        position = closing.end()
    kept.append(html[position:])
    return "".join(kept)
