"""The test mail corpus kept in the repository (tests/corpus/, origin and licences in its SOURCES.md)."""
from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
EXPECTED_MESSAGES = 124  # 96 Zammad + 28 Sisimai messages, each with its .yml expectation


def corpus_problem() -> str | None:
    """What is missing from the corpus, in one line; None when it is complete."""
    if not CORPUS.is_dir():
        return f"the test mail corpus {CORPUS} is missing (it is part of the repository: git checkout it)"
    missing = [name for name in ("SOURCES.md",) if not (CORPUS / name).is_file()]
    messages = sorted(CORPUS.glob("*.eml"))
    missing += [p.with_suffix(".yml").name for p in messages if not p.with_suffix(".yml").is_file()]
    if missing:
        return f"the test mail corpus {CORPUS} is incomplete: missing {', '.join(missing)}"
    if len(messages) < EXPECTED_MESSAGES:
        return (f"the test mail corpus {CORPUS} is incomplete: {len(messages)} of "
                f"{EXPECTED_MESSAGES} .eml messages")
    return None


def messages() -> list[Path]:
    """The corpus messages, in name order."""
    return sorted(CORPUS.glob("*.eml"))
