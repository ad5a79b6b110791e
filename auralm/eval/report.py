"""Evaluation reports: a JSON with every number and the exact configuration, a Markdown table, a PNG chart, and
side-by-side comparisons (two runs, or a run against the papers' published numbers).

report.json:

    {"auralm_version": "0.1.0", "created": "2026-01-01T12:00:00+00:00",
     "config": {"model": ..., "suite": ..., "data": ..., "style": ..., "batch_size": ..., "limit": ...,
                "generation": {...}, "world_size": ..., "judge": {...} | null},
     "tasks": {"<task>": {"status": "scored", "primary": "wer", "value": 3.1, "higher_is_better": false,
                          "scores": {...every number...}, "count": 40, "failed": [...], "manifest_errors": [...],
                          "judge": {...} | null, "settings": {...the Task, prompt template included...},
                          "example_prompt": "..."}}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from auralm.eval.suites import PUBLISHED
from auralm.version import __version__


class ReportError(ValueError):
    """A file that is not an auralm evaluation report."""


def build_report(results: Sequence[Any], config: dict) -> dict:
    """The report of a run from the runner's TaskResults and the run's configuration."""
    return {
        "auralm_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "tasks": {r.task.name: r.to_json() for r in results},
    }


def load_report(path: str | Path) -> dict:
    """Read a report.json; raises ReportError naming the problem."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"report {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReportError(f"{path} is not JSON: {err}") from None
    if not isinstance(report, dict) or not isinstance(report.get("tasks"), dict):
        raise ReportError(f"{path} is not an auralm evaluation report (no 'tasks' table)")
    return report


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def _metric_label(task: dict) -> str:
    if not task.get("primary"):
        return "-"
    arrow = "↑" if task.get("higher_is_better") else "↓"
    return f"{task['primary']} {arrow}"


def markdown(report: dict) -> str:
    """A Markdown table of every task's headline number, the other scores, and what was skipped; with the
    paper's numbers alongside when the suite has published ones."""
    cfg = report.get("config", {})
    lines = [
        f"# auralm evaluation: {cfg.get('suite', '?')}",
        "",
        (
            f"model `{cfg.get('model', '?')}`, data `{cfg.get('data', '?')}`, "
            f"auralm {report.get('auralm_version', '?')}, {report.get('created', '')}"
        ),
        "",
        "| task | metric | value | items | other scores | notes |",
        "|---|---|---:|---:|---|---|",
    ]
    for name, task in report["tasks"].items():
        others = ", ".join(
            f"{k} {_fmt(v)}" for k, v in task.get("scores", {}).items() if k != task.get("primary")
        )
        notes = [] if task["status"] == "scored" else [task["status"]]
        if task.get("error"):
            notes.append(task["error"])
        if task.get("failed"):
            notes.append(f"{len(task['failed'])} items failed")
        if task.get("manifest_errors"):
            notes.append(f"{len(task['manifest_errors'])} bad manifest lines")
        if task.get("judge") and task["judge"].get("mean_score") is not None:
            notes.append(f"judge {_fmt(task['judge']['mean_score'])}/10 over {task['judge']['judged']}")
        row = [
            name,
            _metric_label(task),
            _fmt(task.get("value")),
            str(task.get("count", 0)),
            others,
            "; ".join(notes),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    if cfg.get("suite") in PUBLISHED:
        lines += ["", paper_markdown(report, cfg["suite"])]
    return "\n".join(lines) + "\n"


def _rows(a: dict, b: dict) -> list[tuple[str, dict, dict]]:
    names = list(a["tasks"]) + [n for n in b["tasks"] if n not in a["tasks"]]
    return [(n, a["tasks"].get(n, {}), b["tasks"].get(n, {})) for n in names]


def _better(x: float | None, y: float | None, higher: bool | None) -> str:
    if x is None or y is None or higher is None:
        return ""
    if x == y:
        return "="
    return "first" if (x > y) == higher else "second"


def comparison_markdown(a: dict, b: dict, labels: tuple[str, str] = ("A", "B")) -> str:
    """Two runs side by side: each task's headline number in both, the difference (second minus first) and
    which is better. Tasks present in only one run show "-" for the other."""
    lines = [
        f"| task | metric | {labels[0]} | {labels[1]} | Δ | better |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, x, y in _rows(a, b):
        vx, vy = x.get("value"), y.get("value")
        if x.get("primary") and y.get("primary") and x["primary"] != y["primary"]:
            vy = None  # different metrics are not comparable
        delta = vy - vx if vx is not None and vy is not None else None
        better = _better(vx, vy, x.get("higher_is_better", y.get("higher_is_better")))
        better = {"first": labels[0], "second": labels[1]}.get(better, better)
        lines.append(
            f"| {name} | {_metric_label(x or y)} | {_fmt(vx)} | {_fmt(vy)} | {_fmt(delta)} | {better} |"
        )
    return "\n".join(lines) + "\n"


def paper_report(suite: str) -> dict:
    """The papers' published numbers for `suite` in report form (so `comparison_markdown` can use them)."""
    if suite not in PUBLISHED:
        raise ReportError(f"no published numbers for suite {suite!r}; known: {', '.join(PUBLISHED)}")
    return {"tasks": {name: {"value": value} for name, value in PUBLISHED[suite].items()}}


def paper_markdown(report: dict, suite: str) -> str:
    """This run against the paper of `suite`, for the tasks the paper reports."""
    paper = paper_report(suite)
    ours = {"tasks": {n: t for n, t in report["tasks"].items() if n in paper["tasks"]}}
    if not ours["tasks"]:
        return f"No task of this run has a published {suite} number.\n"
    title = "Qwen2-Audio" if suite == "qwen2-audio" else "Qwen-Audio"
    return f"## Against the {title} paper\n\n" + comparison_markdown(
        ours, paper, ("auralm", f"{title} paper")
    )


def plot(reports: Sequence[dict], labels: Sequence[str], path: str | Path) -> Path:
    """A horizontal bar chart of each task's headline number (one bar per report), written as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(n for r in reports for n in r["tasks"]))
    height = 0.8 / max(1, len(reports))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(names) * max(1, len(reports)) ** 0.5))
    for k, (report, label) in enumerate(zip(reports, labels)):
        values = [report["tasks"].get(n, {}).get("value") for n in names]
        ys = [i + k * height for i in range(len(names))]
        bars = ax.barh(ys, [v or 0.0 for v in values], height=height, label=label)
        for bar, v in zip(bars, values):
            ax.annotate(_fmt(v), (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=7)  # fmt: skip
    first = next((r for r in reports), {"tasks": {}})
    ax.set_yticks([i + height * (len(reports) - 1) / 2 for i in range(len(names))])
    ax.set_yticklabels([f"{n} ({_metric_label(first['tasks'].get(n, {}))})" for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("headline metric (units per task: % for WER/accuracy, BLEU 0-100, CIDEr-D, AAS ms)")
    if len(reports) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(report: dict, out_dir: str | Path, compare_to: dict | None = None,
                 compare_label: str = "other") -> list[Path]:  # fmt: skip
    """Write report.json, report.md and report.png into `out_dir`; with `compare_to` (another report) also
    comparison.md and comparison.png. Returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "report.md", out / "report.png"]
    tmp = paths[0].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(paths[0])
    paths[1].write_text(markdown(report), encoding="utf-8")
    plot([report], ["this run"], paths[2])
    if compare_to is not None:
        labels = (compare_label, "this run")
        comparison = out / "comparison.md"
        comparison.write_text(comparison_markdown(compare_to, report, labels), encoding="utf-8")
        paths += [comparison, plot([compare_to, report], labels, out / "comparison.png")]
    return paths
