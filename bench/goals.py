"""The goals of issue 14 as one table: each benchmark (bench.fanout, bench.soak, bench.api)
records the rows it measured in .run/bench/goals-<bench>.json; `make bench` runs them all and
then this, which prints every row with the benchmark and the time it was measured.

    .venv/bin/python -m bench.goals
"""

import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOALS = ROOT / ".run" / "bench"
ORDER = ("fanout", "soak", "api")  # as the issue lists them

# (goal, what was measured, met: True, False, or None for a figure the issue only asks printed)
Row = tuple[str, str, bool | None]


def record(bench: str, rows: list[Row]) -> None:
    """Keep ``bench``'s rows (replacing its last run's) and print them."""
    GOALS.mkdir(parents=True, exist_ok=True)
    at = time.strftime("%Y-%m-%d %H:%M")
    (GOALS / f"goals-{bench}.json").write_text(json.dumps({"at": at, "rows": rows}))
    print(f"goals (issue 14) measured by bench.{bench}:")
    _print(rows)


def _print(rows: list[Row]) -> None:
    for goal, measured, met in rows:
        verdict = "-" if met is None else "met" if met else "NOT MET"
        print(f"  {goal:<62} {measured:<42} {verdict}")


def main() -> None:
    print("the goals of issue 14 on this machine")
    for bench in ORDER:
        path = GOALS / f"goals-{bench}.json"
        if not path.exists():
            print(f"bench.{bench}: not run (python -m bench.{bench})")
            continue
        measured = json.loads(path.read_text())
        print(f"bench.{bench}, {measured['at']}:")
        _print([tuple(row) for row in measured["rows"]])


if __name__ == "__main__":
    main()
