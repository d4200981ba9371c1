"""The labelled set of requests for the level classification (tests/data/levels/, README.md there).

Each sample becomes a real mail (subject, plain-text body) and goes through the parser, so
the classifier sees what it sees in production: ``ParsedMail.problem``, the subject and the
new text without quoted history and signature separators.
"""
from __future__ import annotations

import tomllib
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from functools import cached_property
from pathlib import Path

from mailbot.parsers import ParsedMail, parse_mail

LEVEL_DIR = Path(__file__).parent / "data" / "levels"
CHECK_SHARE = 5  # one sample in five (by a hash of its id) is the check split


@dataclass(frozen=True)
class Sample:
    id: str  # "<file stem>:<index>"
    level: int
    subject: str
    body: str
    why: str = ""

    @property
    def split(self) -> str:
        """'check' (never looked at while tuning) or 'tune'."""
        return "check" if zlib.crc32(self.id.encode()) % CHECK_SHARE == 0 else "tune"

    @cached_property
    def mail(self) -> ParsedMail:
        message = EmailMessage()
        message["From"] = "Клиент <client@teplo.example>"
        message["To"] = "support@tecon-d.example"
        message["Subject"] = self.subject
        message["Message-ID"] = f"<{zlib.crc32(self.id.encode())}@teplo.example>"
        message.set_content(self.body or "\n")
        return parse_mail(message.as_bytes())


def load(paths: Iterable[Path] | None = None) -> list[Sample]:
    """The samples of ``paths`` (default: every tests/data/levels/*.toml)."""
    if paths is None:
        paths = sorted(LEVEL_DIR.glob("*.toml"))
    samples = []
    for path in paths:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        for index, entry in enumerate(data["request"]):
            if entry["level"] not in (1, 2, 3):
                raise ValueError(f"{path} request {index}: level must be 1, 2 or 3")
            samples.append(Sample(f"{Path(path).stem}:{index}", entry["level"], entry["subject"],
                                  entry.get("body", ""), entry.get("why", "")))
    return samples


@dataclass(frozen=True)
class Figures:
    """Accuracy, recall per level and the confusion matrix of some samples."""

    count: int
    correct: int
    confusion: dict[tuple[int, int], int]  # (true level, found level) -> count
    unsure: int
    unsure_wrong: int  # wrong ones among the unsure

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else 0.0

    def recall(self, level: int) -> float:
        total = sum(n for (true, _), n in self.confusion.items() if true == level)
        return self.confusion.get((level, level), 0) / total if total else 0.0

    def precision(self, level: int) -> float:
        total = sum(n for (_, found), n in self.confusion.items() if found == level)
        return self.confusion.get((level, level), 0) / total if total else 0.0


def measure(samples: Sequence[Sample], found: Sequence[tuple[int, bool]]) -> Figures:
    """Figures for ``samples`` and what was found for each: (level, unsure)."""
    confusion: dict[tuple[int, int], int] = {}
    for sample, (level, _) in zip(samples, found):
        confusion[sample.level, level] = confusion.get((sample.level, level), 0) + 1
    return Figures(
        count=len(samples),
        correct=sum(s.level == level for s, (level, _) in zip(samples, found)),
        confusion=confusion,
        unsure=sum(unsure for _, unsure in found),
        unsure_wrong=sum(unsure and s.level != level for s, (level, unsure) in zip(samples, found)))
