"""Level classification benchmark: accuracy per level, ОП3 recall and the confusion matrix.

Usage (from the repository root)::

    .venv/bin/python benchmarks/classify.py [--data FILE.toml ...] [--errors tune|check|all]

Without ``--data`` it reads the labelled set (tests/data/levels/*.toml) and
prints the figures for the whole set, its tune split (what the cues were tuned on) and its
check split (one sample in five, never looked at while tuning). With ``--data`` it reads
those files only (the same format; e.g. a hold-out set) and prints their figures. Every
sample goes through the real parser and :class:`~mailbot.rules.level.LevelClassification`'s
:func:`~mailbot.rules.level.assess`. ``--errors`` lists the wrong ones with their cues.
See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailbot.config import load_config  # noqa: E402
from mailbot.rules.level import Assessment, assess  # noqa: E402
from tests.levelset import Figures, load, measure  # noqa: E402

LEVELS = (1, 2, 3)


def report(title: str, figures: Figures) -> str:
    lines = [f"{title}: {figures.count} requests",
             f"  accuracy     {figures.accuracy:6.1%}  ({figures.correct}/{figures.count})",
             f"  ОП3 recall   {figures.recall(3):6.1%}"]
    for level in LEVELS:
        lines.append(f"  ОП{level}  recall {figures.recall(level):6.1%}   "
                     f"precision {figures.precision(level):6.1%}")
    sure = figures.count - figures.unsure
    sure_right = figures.correct - (figures.unsure - figures.unsure_wrong)
    lines.append(f"  unsure       {figures.unsure / figures.count if figures.count else 0:6.1%}  "
                 f"({figures.unsure}; {figures.unsure_wrong} of them wrong); "
                 f"accuracy when sure {sure_right / sure if sure else 0:.1%}")
    lines.append("  confusion (rows: true level, columns: found)")
    lines.append("           " + "".join(f"{'ОП' + str(lvl):>6}" for lvl in LEVELS))
    for true in LEVELS:
        lines.append(f"    ОП{true}    " + "".join(
            f"{figures.confusion.get((true, found), 0):>6}" for found in LEVELS))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", type=Path, help="labelled TOML files (default: the set)")
    parser.add_argument("--errors", choices=("tune", "check", "all"),
                        help="list the wrong ones of this split")
    args = parser.parse_args()
    config = load_config(None, environ={}).classify
    samples = load(args.data)
    problems = [s.mail.problem for s in samples]  # parsed before timing
    uncached = assess.__wrapped__  # time the work, not the cache of repeated texts
    started = time.perf_counter()
    results: list[Assessment] = [uncached(p, config) for p in problems]
    cold = time.perf_counter() - started
    started = time.perf_counter()
    for problem in problems:
        uncached(problem, config)
    warm = time.perf_counter() - started
    found = [(a.level, a.unsure) for a in results]
    groups = [("all", samples)] if args.data else [
        ("all", samples), ("tune split", [s for s in samples if s.split == "tune"]),
        ("check split", [s for s in samples if s.split == "check"])]
    by_id = {s.id: f for s, f in zip(samples, found)}
    for title, group in groups:
        print(report(title, measure(group, [by_id[s.id] for s in group])))
        print()
    print(f"classification: {warm / len(samples) * 1e6:.0f} µs per request, "
          f"{cold / len(samples) * 1e6:.0f} µs on the first pass (cues compiled, words "
          f"stemmed); {len(samples)} requests, parsing not counted")
    if args.errors:
        print()
        for sample, assessment in zip(samples, results):
            if sample.level != assessment.level and args.errors in ("all", sample.split):
                text = " ".join(f"{sample.subject} | {sample.body}".split())
                print(f"{sample.id} [{sample.split}] true ОП{sample.level}, found "
                      f"{assessment.reason}\n    {text[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
