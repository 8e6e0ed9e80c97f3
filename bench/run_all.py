"""Run every benchmark script in bench/ as a subprocess and collect their JSON into one report.

Writes bench/out/report.json and bench/out/report.md and prints the JSON; a failing script is recorded
as an error entry, never a crash. `make bench` calls this.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
TIMEOUT_S = 3600
"""Per script. accuracy.py (seven learners, fine-tuning included) took 15-17 min on 2 Zen 5 cores and over 30 on
2 Zen 3 ones; a script stopped at the limit keeps the figures it had printed."""


def parse_json(stdout: str) -> dict:
    """The script's report: its whole stdout as JSON, else its last line that parses as a JSON object."""
    try:
        value = json.loads(stdout)
        if isinstance(value, dict):
            return value
    except json.JSONDecodeError:
        pass
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("no JSON object in its output")


def run_script(script: Path) -> dict:
    """Run one benchmark; return its JSON, or {"error", "returncode", "stderr_tail"} when it fails."""
    env = dict(os.environ, VISIONDB_PROGRESS="0")
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                              cwd=BENCH.parent, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        stopped = {"error": f"timed out after {TIMEOUT_S} s", "seconds": round(time.perf_counter() - start, 1)}
        partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        try:  # a script that prints its figures as it goes (accuracy.py) keeps those it had
            return {**parse_json(partial), **stopped}
        except ValueError:
            return stopped
    seconds = round(time.perf_counter() - start, 1)
    if proc.returncode != 0:
        return {"error": f"exited with status {proc.returncode}", "returncode": proc.returncode,
                "stderr_tail": proc.stderr[-2000:], "seconds": seconds}
    try:
        return {**parse_json(proc.stdout), "seconds": seconds}
    except ValueError as exc:
        return {"error": str(exc), "stdout_tail": proc.stdout[-2000:], "seconds": seconds}


def markdown(report: dict[str, dict]) -> str:
    """One table per script: its top-level scalar figures (nested objects stay in the JSON)."""
    lines = ["# Benchmark report", ""]
    for name, result in report.items():
        lines += [f"## {name}", "", "| figure | value |", "|---|---|"]
        for key, value in result.items():
            if isinstance(value, (dict, list)):
                continue
            text = str(value).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {key} | {text[:300]} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    scripts = sorted(p for p in BENCH.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    report = {script.stem: run_script(script) for script in scripts}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.json").write_text(json.dumps(report, indent=2))
    (OUT / "report.md").write_text(markdown(report))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
