"""The training section of the model card that ``dglm train assemble`` writes into a checkpoint (after the
parts and metadata that :func:`dglm.hub.model_card` writes for every checkpoint): its data, how it was trained,
and the plan-use numbers that say whether the decoder follows its plans.

Example:
    >>> print(_table({"gap": 0.1234, "n": 200}))
    | key | value |
    |---|---|
    | gap | 0.1234 |
    | n | 200 |
"""

from __future__ import annotations

import json
from pathlib import Path


def _table(values: dict) -> str:
    rows = [f"| {k} | {round(v, 4) if isinstance(v, float) else v} |" for k, v in values.items()
            if not isinstance(v, dict | list)]
    return "\n".join(["| key | value |", "|---|---|", *rows])


def _last(path: Path) -> dict:
    lines = path.read_text().splitlines() if path.is_file() else []
    return json.loads(lines[-1]) if lines else {}


def training_report(work: Path, run: Path) -> str:
    """Markdown describing how a checkpoint was trained in ``work`` (prompt run ``run``).

    Example (a work folder with only its prepare.json):
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = Path(d, "prepare.json").write_text(json.dumps({"windows": 1200}))
        ...     report = training_report(Path(d), Path(d, "runs", "r1"))
        >>> print(report.split("## Training")[0].strip())
        Built by `dglm train` (prepare, diffusion, prompt, assemble).
        <BLANKLINE>
        ## Data
        <BLANKLINE>
        | key | value |
        |---|---|
        | windows | 1200 |
        >>> "(not evaluated)" in report
        True
    """
    prepared = json.loads((work / "prepare.json").read_text()) if (work / "prepare.json").is_file() else {}
    result = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else {}
    plan_use = json.loads((run / "plan_use.json").read_text()) if (run / "plan_use.json").is_file() else \
        result.get("eval", {})
    diffusion = _last(work / "runs" / "diffusion" / "log.jsonl")
    sections = [
        "Built by `dglm train` (prepare, diffusion, prompt, assemble).", "",
        "## Data", "", _table(prepared) if prepared else "(no prepare.json in the work folder)", "",
        "## Training", "", "Diffusion, last log record:", "", _table(diffusion) if diffusion else "(reused or no log)",
        "", "Prompt run settings:", "", _table(result.get("config", {}).get("training", {})) if result else "(none)",
        "", "## Plan use (held-out NLL per token; `gap` = shuffled - true, > 0 means the plan is used)", "",
        _table(plan_use) if plan_use else "(not evaluated)", "",
    ]
    return "\n".join(sections)
