"""Dependency drift checks for ``.ci/run``, from ``pyproject.toml`` alone.

``python3 .ci/deps.py lowest``
    Prints pip constraints pinning every runtime dependency (and the ``demo`` extra) to
    the lowest release ``pyproject.toml`` allows, for the lowest-versions test run: a
    floor we claim but never test is a floor that lies.
``python3 .ci/deps.py majors``
    Asks the package index for the newest release of every dependency with an upper
    bound and fails when one is outside it: a new upstream major turns CI red here,
    before a user's fresh install meets it (rq 3.0 broke the worker that way). Lift
    the bound once the suite passes with the new release.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
#: ``name[extras]>=low,<high`` (the forms pyproject uses; anything else is an error).
REQUIREMENT = re.compile(
    r"^(?P<name>[A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*(?P<low>[0-9][^,<\s]*)"
    r"(?:\s*,\s*<\s*(?P<high>[0-9][^,\s]*))?$"
)


def requirements(extras: tuple[str, ...]) -> list[re.Match[str]]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    out = []
    for line in lines:
        if line.startswith("flask-obitox["):
            continue  # an extra including another one
        match = REQUIREMENT.match(line.strip())
        if match is None:
            sys.exit(f"deps.py: cannot read the requirement {line!r} (use name>=low[,<high])")
        out.append(match)
    return out


def release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def lowest() -> None:
    for match in requirements(("demo",)):
        print(f"{match['name']}=={match['low']}")


def majors() -> None:
    outside = []
    for match in requirements(("demo",)):
        high = match["high"]
        if high is None:
            continue
        answer = subprocess.run(  # noqa: S603 - pip, with a name from pyproject
            [sys.executable, "-m", "pip", "index", "versions", match["name"]],
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.search(r"\(([^)]+)\)", answer.stdout)
        if answer.returncode != 0 or found is None:
            sys.exit(f"deps.py: the index did not say the newest {match['name']}: {answer.stderr}")
        newest = found.group(1)
        status = "ok" if release(newest) < release(high) else "OUTSIDE"
        print(
            f"  {match['name']:<20} newest {newest:<12} allowed >={match['low']},<{high}  {status}"
        )
        if status != "ok":
            outside.append(f"{match['name']} {newest}")
    if outside:
        sys.exit(
            "deps.py: new upstream releases outside pyproject's ranges: "
            + ", ".join(outside)
            + ". Test them (raise the bound locally, run the suite), then lift the bound."
        )


if __name__ == "__main__":
    commands = {"lowest": lowest, "majors": majors}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit("usage: python3 .ci/deps.py lowest|majors")
    commands[sys.argv[1]]()
