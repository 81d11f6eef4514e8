"""The model card (README.md) that ``dglm train assemble`` writes into a checkpoint: its parts, its data and
how it was trained, and the plan-use numbers that say whether the decoder follows its plans.

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


def model_card(pipe, work: Path, run: Path) -> str:
    """Markdown describing the checkpoint of ``pipe`` trained in ``work`` (prompt run ``run``)."""
    prepared = json.loads((work / "prepare.json").read_text()) if (work / "prepare.json").is_file() else {}
    result = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else {}
    plan_use = json.loads((run / "plan_use.json").read_text()) if (run / "plan_use.json").is_file() else \
        result.get("eval", {})
    diffusion = _last(work / "runs" / "diffusion" / "log.jsonl")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    parts = [
        f"| encoder | `{pipe.encoder.config.name_or_path}` ({pipe.encoder.dim}-d, frozen; weights not copied) |",
        f"| decoder | `{pipe.decoder.config.name_or_path}` (frozen; weights not copied) |",
        f"| diffusion | `SemanticDiffuser` {pipe.diffuser.config.model_dump()} ({count(pipe.diffuser):,} params) |",
        f"| prompt generator | `PromptGenerator` {pipe.prompt_generator.config.model_dump()} "
        f"({count(pipe.prompt_generator):,} params) |",
    ]
    if pipe.decoder.has_adapter:
        parts.append("| decoder adapter | LoRA trained with the prompt generator, active only with soft prompts |")
    if pipe.probes is not None and len(pipe.probes):
        parts.append(f"| probes | {', '.join(pipe.probes.names)} |")
    sections = [
        "# DGLM checkpoint", "",
        "Built by `dglm train` (prepare, diffusion, prompt, assemble); load it with "
        "`DGLM.from_pretrained(folder)`.", "",
        "## Parts", "", "| part | what |", "|---|---|", *parts, "",
        "## Data", "", _table(prepared) if prepared else "(no prepare.json in the work folder)", "",
        "## Training", "", "Diffusion, last log record:", "", _table(diffusion) if diffusion else "(reused or no log)",
        "", "Prompt run settings:", "", _table(result.get("config", {}).get("training", {})) if result else "(none)",
        "", "## Plan use (held-out NLL per token; `gap` = shuffled - true, > 0 means the plan is used)", "",
        _table(plan_use) if plan_use else "(not evaluated)", "",
    ]
    return "\n".join(sections)
