"""The benchmark's Markdown report and JSON helpers: setup, evaluators, who owns the frontier per prompt set
(and, when a peer does, what DGLM would need), the system tables, steering's layer sweep, compositions,
runtime, the topic-switch reference, targets and notes.

Example:
    >>> _f(0.12345), _f(None), _clean({"a": float("nan")})
    ('0.123', '-', {'a': None})
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import numpy as np
import torch

DGLM_FAMILIES = ("dglm", "dglm-plan-scale", "dglm-guided", "dglm-guided+prompting")


def machine_info(device: str) -> dict:
    """CPU model, cores, load, platform, library versions, GPU name.

    Example:
        >>> info = machine_info("cpu")
        >>> info["device"], info["cpu_cores"] == os.cpu_count(), info["torch"] == torch.__version__
        ('cpu', True, True)
        >>> "gpu" in info  # only on a CUDA device
        False
    """
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": device}
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def write_report(result: dict, markdown: str, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a recipe's result as JSON at ``out`` and its Markdown report beside it (same name, ``.md``),
    creating the folder; returns the JSON path. Both are written atomically; an existing ``out`` is replaced
    only when it is an earlier report of the same recipe (a JSON object with the same keys), and an existing
    ``.md`` only beside such a report, unless ``overwrite`` (:func:`dglm.io.write_output`).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = write_report({"a": 1}, "# A\\n", Path(d, "sub", "r.json"))
        ...     path = write_report({"a": 2}, "# A\\n", Path(d, "sub", "r.json"))  # a rerun
        ...     sorted(p.name for p in path.parent.iterdir()), json.loads(path.read_text())
        (['r.json', 'r.md'], {'a': 2})
    """
    from dglm.io import check_output_file, read_json, write_output

    out = Path(out)

    def same_report(path: Path) -> bool:
        try:
            return set(read_json(path)) == set(result)
        except (ValueError, OSError):
            return False

    ours = out.is_file() and same_report(out)
    md = out.with_suffix(".md")
    check_output_file(out, overwrite=overwrite, owns=same_report)  # both checked before either is written
    check_output_file(md, overwrite=overwrite, owns=lambda _: ours)
    write_output(out, json.dumps(result, indent=2) + "\n", overwrite=overwrite, owns=same_report)
    write_output(md, markdown, overwrite=ours or overwrite)
    return out


def _clean(x):
    """JSON-safe: NaN/inf -> None, tensors/arrays -> lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return _clean(x.tolist())
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return _clean(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def _ci(ci, digits: int = 2) -> str:
    return f"[{_f(ci[0], digits)}, {_f(ci[1], digits)}]" if ci else ""


def verdict(name: str, s: dict, key: str, limit_text: str) -> list[str]:
    """Sentences on who owns the frontier under one limit, and what DGLM would need if a peer does.

    Example (a FUDGE system beats guided DGLM within the perplexity limit):
        >>> from dglm.bench.scoring import frontier
        >>> systems = {
        ...     "plain": {"family": "plain", "control_success": 0.1, "perplexity": {"mean": 10},
        ...               "relative_time": 1},
        ...     "dglm-guided strength=20": {"family": "dglm-guided", "control_success": 0.3,
        ...                                 "perplexity": {"mean": 11}, "relative_time": 2},
        ...     "fudge strength=2": {"family": "fudge", "control_success": 0.5, "perplexity": {"mean": 12},
        ...                          "relative_time": 3}}
        >>> s = {"frontier": frontier(systems, 10, 1.25, 1.5), "systems": systems}
        >>> lines = verdict("neutral", s, "within_ppl", "perplexity <= 1.25x reference")
        >>> print(lines[0].split(" (")[0])
        - perplexity <= 1.25x reference: **fudge** owns the frontier
        >>> print(lines[1].split(";")[0])
          A peer wins here: DGLM's best within the limit is 0.300 (dglm-guided strength=20)
    """
    f = s["frontier"]
    part = f[key]
    if part["owner"] is None:
        return [f"- {limit_text}: no system with a measured control success stays within the limit."]
    best = part["best"]
    top = best[part["owner"]]
    lines = [f"- {limit_text}: **{part['owner']}** owns the frontier ({top['system']}: control success "
             f"{_f(top['control_success'])} {_ci(top['ci95'])}, perplexity {_f(top['perplexity'], 1)}, "
             f"{_f(top['relative_time'], 2)}x plain's time). Best per family: "
             + "; ".join(f"{fam} {_f(b['control_success'])} ({b['system']})" for fam, b in best.items()) + "."]
    if part["owner"] not in DGLM_FAMILIES:
        ours = [b for fam, b in best.items() if fam in DGLM_FAMILIES]
        mine = max(ours, key=lambda b: b["control_success"], default=None)
        need = top["control_success"] - (mine["control_success"] if mine else 0.0)
        reach = [(m.get("perplexity", {}).get("mean"), n) for n, m in s["systems"].items()
                 if m["family"] in DGLM_FAMILIES and (m.get("control_success") or 0) >= top["control_success"]]
        reach = min((r for r in reach if r[0] is not None), default=None)
        ref = f["reference_perplexity"]
        mine_text = f"{_f(mine['control_success'])} ({mine['system']})" if mine else "none"
        reach_text = (f"; it reaches {_f(top['control_success'])} only at perplexity {_f(reach[0], 1)} "
                      f"({_f(reach[0] / ref, 2)}x the reference, {reach[1]})" if reach and ref else
                      "; no DGLM system reaches that success at any perplexity measured")
        lines.append(f"  A peer wins here: DGLM's best within the limit is {mine_text}; it would need {_f(need)} "
                     f"more control success at this perplexity{reach_text}.")
    return lines


def system_table(systems: dict[str, dict]) -> list[str]:
    """The Markdown table of every system's metrics on one prompt set (a header row, a rule, a row each).

    Example:
        >>> m = {"family": "plain", "params": {}, "control_success": 0.5, "control_success_ci95": [0.2, 0.8],
        ...      "probe": {"mean_p": 0.4}, "perplexity": {"mean": 20.0, "ci95": [18.0, 22.0], "median": 19.5},
        ...      "dist3": 0.9, "control": {"topic": {"sports_rate": 0.5}}, "seconds_per_sample": 0.1,
        ...      "relative_wall_time": 1.0, "relative_cpu_time": 1.0, "relative_time": 1.0,
        ...      "examples": [{"prefix": "The house", "continuations": [" stood on a hill"]}]}
        >>> table = system_table({"plain": m})
        >>> len(table), table[2].split(" | ")[:4]
        (3, ['| plain', '0.500 [0.20, 0.80]', '0.400', '20.0 [18.0, 22.0] / 19.5'])
    """
    lines = ["| system | control success [95% CI] | probe P | ppl mean [95% CI] / median | Dist-3 | MAUVE | "
             "plan fid. (plain) | toxic | positive | sports | s/sample | rel. time (wall / CPU) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in systems.items():
        ppl, mauve, ctl = s.get("perplexity", {}), s.get("mauve", {}), s["control"]
        pf, pfp = s.get("plan_fidelity"), s.get("plan_fidelity_plain")
        lines.append(
            f"| {name} | {_f(s['control_success'])} {_ci(s.get('control_success_ci95'))} | {_f(s['probe']['mean_p'])} | "
            f"{_f(ppl.get('mean'), 1)} {_ci(ppl.get('ci95'), 1)} / {_f(ppl.get('median'), 1)} | {_f(s['dist3'])} | "
            f"{_f(mauve.get('mean'))} | {_f(pf['mean']) if pf else '-'} ({_f(pfp['mean']) if pfp else '-'}) | "
            f"{_f(1 - ctl['toxicity']['rate'] if ctl.get('toxicity', {}).get('label') == 'non-toxic' else ctl.get('toxicity', {}).get('rate'))} | "
            f"{_f(ctl.get('sentiment', {}).get('rate') if ctl.get('sentiment', {}).get('label') == 'positive' else None)} | "
            f"{_f(ctl.get('topic', {}).get('sports_rate'))} | {_f(s['seconds_per_sample'], 2)} | "
            f"{_f(s['relative_wall_time'], 2)} / {_f(s['relative_cpu_time'], 2)} |")
    return lines


def _best_text(part: dict) -> str:
    if part["owner"] is None:
        return "-"
    top = part["best"][part["owner"]]
    return f"{_f(top['control_success'])} {_ci(top['ci95'])} {top['system']}"


def task_lines(result: dict) -> list[str]:
    """The tasks section: per task the best success within the strict and the main perplexity limit (Wilson
    intervals), the frontier's owner and what DGLM would need where a peer owns it; then per task every
    system's success, perplexity and CPU time, and the graded curves.

    Example:
        >>> from dglm.bench.tasks import task_summary
        >>> systems = {"plain": {"family": "plain", "params": {}, "control_success": 0.1,
        ...                      "control_success_ci95": [0.0, 0.3], "perplexity": {"mean": 10.0},
        ...                      "relative_time": 1.0, "cpu_s": 2.0}}
        >>> t = {"task": "avoidance", "systems": systems, "prompts": 1, "samples": 1,
        ...      **task_summary(systems, 10.0, "plain", 1.1, 1.25, 1.5)}
        >>> lines = task_lines({"config": {"strict_ppl_limit": 1.1, "ppl_limit": 1.25}, "tasks": {"avoidance": t}})
        >>> lines[0], lines[6].split(" | ")[:2]
        ('## Tasks: best success within 1.1x and 1.25x the reference perplexity', ['| avoidance', '1 x 1'])
    """
    c, tasks = result["config"], result.get("tasks") or {}
    if not tasks:
        return []
    strict, limit = f"{c['strict_ppl_limit']:g}", f"{c['ppl_limit']:g}"
    lines = [f"## Tasks: best success within {strict}x and {limit}x the reference perplexity", "",
             "Success: the independent (proxy) evaluators' verdict on the continuation, 95% Wilson interval. Reference: "
             "plain decoding's perplexity on the same prompts (continuation: the human topic-switch text). Owner: "
             "the family with the highest success within the limit.", "",
             f"| task | prompts x samples | reference ppl | best within {strict}x | owner {strict}x | best within "
             f"{limit}x | owner {limit}x | DGLM's best within {limit}x |", "|---|---|---|---|---|---|---|---|"]
    for name, t in tasks.items():
        w_strict, w = t["within"][strict]["within_ppl"], t["within"][limit]["within_ppl"]
        ours = [b for fam, b in w["best"].items() if fam in DGLM_FAMILIES]
        mine = max(ours, key=lambda b: b["control_success"], default=None)
        size = f"{t.get('prompts', '-')} x {t.get('samples', '-')}"
        if "prompts" not in t:
            ps = (result.get("prompt_sets") or {}).get(t.get("prompt_set", "neutral"), {})
            size = f"{ps.get('prompts', '-')} x {ps.get('samples', '-')}"
        lines.append(f"| {name} | {size} | {_f(t['reference_perplexity'], 1)} | {_best_text(w_strict)} | "
                     f"{w_strict['owner'] or '-'} | {_best_text(w)} | **{w['owner'] or '-'}** | "
                     + (f"{_f(mine['control_success'])} {_ci(mine['ci95'])} {mine['system']}" if mine else "-") + " |")
    lines.append("")
    for name, t in tasks.items():
        lines += [f"### Task: {name}" + (f" (`{t['control']}`)" if t.get("control") else ""), ""]
        if t.get("description"):
            lines += [f"Prompts: {t['description']}.", ""]
        if t.get("requests"):
            lines += ["Prompting asks: " + "; ".join(f"{k}: {v!r}" for k, v in t["requests"].items() if v), ""]
        all_systems = t.get("systems") or ((result.get("prompt_sets") or {}).get(t.get("prompt_set"), {})
                                            .get("systems", {}))
        for lim in (strict, limit):
            lines += verdict(name, {"frontier": t["within"][lim], "systems": all_systems}, "within_ppl",
                             f"perplexity <= {lim}x reference")
        st = t.get("steering") or {}
        if st.get("table"):
            best = {}
            for r in st["table"]:
                best.setdefault(r["layer"], []).append(f"r={r['scale']:g}: {_f(r['control_success'], 2)} @ "
                                                       f"{_f(r['perplexity'], 1)}")
            lines += [f"- Steering layer **{st['layer']}**, picked on the development split (plain perplexity "
                      f"{_f(st['table'][0]['plain_perplexity'], 1)}): " +
                      " | ".join(f"layer {k}: " + ", ".join(v) for k, v in best.items())]
        lines.append("")
        systems = t.get("systems") or {}
        plain_cpu = (systems.get("plain") or {}).get("cpu_s")
        if systems and name not in ("neutral", "continuation"):
            attrs = sorted({a for m in systems.values() for a in (m.get("attributes") or {})})
            lines += ["| system | success [95% CI] | " + "".join(f"{a} | " for a in attrs) +
                      "ppl | CPU s | x plain CPU |", "|---|---|" + "---|" * len(attrs) + "---|---|---|"]
            for n, m in systems.items():
                cpu = m.get("cpu_s")
                lines.append(f"| {n} | {_f(m.get('control_success'))} {_ci(m.get('control_success_ci95'))} | " +
                             "".join(f"{_f((m.get('attributes') or {}).get(a))} | " for a in attrs) +
                             f"{_f((m.get('perplexity') or {}).get('mean'), 1)} | {_f(cpu, 1)} | "
                             f"{_f(cpu / plain_cpu if cpu and plain_cpu else None, 2)} |")
            lines.append("")
        elif name in ("neutral", "continuation"):
            lines += ["CPU seconds per system: " + ", ".join(f"{n} {_f(v, 1)}" for n, v in t["cpu_s"].items()), ""]
        for kind, curve in (t.get("curves") or {}).items():
            if kind == "monotone" or not curve:
                continue
            what = "strength" if kind == "dglm" else "r (fraction of the residual norm)"
            lines += [f"Graded control, {kind} ({what}; monotone within intervals: "
                      f"{t['curves']['monotone'].get(kind)}):", "", f"| {what} | success [95% CI] | ppl |", "|---|---|---|"]
            lines += [f"| {p['strength']:g} | {_f(p['control_success'])} {_ci(p['ci95'])} | {_f(p['perplexity'], 1)} |"
                      for p in curve]
            lines.append("")
    return lines


def write_markdown(result: dict, path: Path) -> None:
    """The human-readable report.

    Example (a result with one prompt set and one system; :func:`~dglm.bench.run.run_benchmark` makes them):
        >>> import tempfile
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.scoring import frontier
        >>> m = {"family": "plain", "params": {}, "control_success": 0.5, "control_success_ci95": [0.2, 0.8],
        ...      "probe": {"mean_p": 0.4}, "perplexity": {"mean": 20.0, "ci95": [18.0, 22.0], "median": 19.5},
        ...      "dist3": 0.9, "control": {"topic": {"sports_rate": 0.5}}, "seconds_per_sample": 0.1,
        ...      "relative_wall_time": 1.0, "relative_cpu_time": 1.0, "relative_time": 1.0,
        ...      "examples": [{"prefix": "The house", "continuations": [" stood on a hill"]}]}
        >>> neutral = {"prompts": 1, "samples": 1, "description": "openers", "reference": "plain decoding",
        ...            "systems": {"plain": m}, "frontier": frontier({"plain": m}, 20.0, 1.25, 1.5)}
        >>> result = {"config": BenchConfig.for_quick().model_dump(), "machine": machine_info("cpu"),
        ...           "date": "2026-01-01", "total_s": 1.0, "prompt_sets": {"neutral": neutral},
        ...           "evaluators": {},
        ...           "targets_of_control": [("topic", "sports")], "targets": [], "notes": [], "plots": []}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_markdown(result, Path(d, "bench.md"))
        ...     lines = Path(d, "bench.md").read_text().splitlines()
        >>> lines[0]
        '# DGLM benchmark: DGLM and its peers (quick mode: tiny random models, a smoke test)'
        >>> [line for line in lines if line.startswith("## ")]  # doctest: +NORMALIZE_WHITESPACE
        ['## Who owns the frontier', '## Evaluators (proxies named as proxies)',
         '## Peers: how each was built and tuned', '## Systems: neutral prompts', '## Plots',
         "## One sample per system (neutral, first prompt: 'The house')"]
    """
    c, m = result["config"], result["machine"]
    lines = [f"# DGLM benchmark: DGLM and its peers{' (quick mode: tiny random models, a smoke test)' if c['quick'] else ''}",
             "", f"- date: {result['date']}",
             f"- machine: {m['cpu']}, {m['cpu_cores']} cores, torch threads {m['torch_threads']}, {m['platform']}"
             + (f", GPU {m['gpu']}" if "gpu" in m else "") + f"; load average at start {m.get('load_average_at_start')}",
             f"- torch {m['torch']}, transformers {m['transformers']}, device `{c['device']}`",
             f"- command: `{c['command']}`", f"- checkpoint: `{c['checkpoint']}`; control: `{c['control']}`",
             f"- {c['new_tokens']} new tokens, top-p {c['top_p']}, repetition penalty {c['repetition_penalty']}, seeds "
             f"{c['seeds']}; every system decodes with the checkpoint's decoder (base weights; DGLM adds its adapter "
             "with its soft prompts)"]
    if "sampling" in result:
        lines.append(f"- DGLM's defaults (the checkpoint's, unless the command sets them): {result['sampling']}")
    lines += [f"- total time: {result['total_s']:.0f} s", ""]
    for name, s in result["prompt_sets"].items():
        lines.append(f"- **{name} prompts** ({s['prompts']} x {s['samples']} samples): {s['description']}")
    lines += [""] + task_lines(result)
    lines += ["## Who owns the frontier", "",
              f"Control success = the independent evaluators' verdict on the continuation alone; perplexity = the "
              f"evaluator LM's on the continuation given the prompt. Limits: perplexity <= {c['ppl_limit']:g}x the "
              f"set's reference; time <= {c['time_limit']:g}x plain decoding's in this run (process CPU time on a CPU, "
              f"which other load on a shared machine does not inflate; wall time on a GPU).", ""]
    for name, s in result["prompt_sets"].items():
        f = s["frontier"]
        lines += [f"### {name} prompts (reference perplexity {_f(f['reference_perplexity'], 1)}: {s['reference']})", ""]
        lines += verdict(name, s, "within_ppl", f"perplexity <= {c['ppl_limit']:g}x reference")
        lines += verdict(name, s, "within_ppl_and_time", f"... and time <= {c['time_limit']:g}x plain")
        lines += [f"- Pareto-optimal systems (success up, perplexity down): {', '.join(f['pareto'])}", ""]
    lines += ["## Evaluators (proxies named as proxies)", ""]
    for name, info in result["evaluators"].items():
        if name == "prompts":
            continue
        if isinstance(info, dict):
            extra = ", ".join(f"{k} {_f(v) if isinstance(v, float) else v}" for k, v in info.items()
                              if k != "description" and not isinstance(v, dict))
            lines.append(f"- **{name}**: {info.get('description')}" + (f" ({extra})" if extra else ""))
        else:
            lines.append(f"- **{name}**: {info}")
    lines += ["", "## Peers: how each was built and tuned", ""]
    steer = result.get("steering") or {}
    if steer.get("table"):
        lines += [f"**Activation steering** (dglm.bench.steering, CAA mean difference of the decoder's residual stream, "
                  f"target-class passages minus the others', added after one block at every position): layer "
                  f"**{steer['layer']}** picked on {c['steering_pick_prompts']} neutral openers as the best control "
                  f"success within {c['ppl_limit']:g}x plain perplexity:", "",
                  "| layer | multiplier | control success | perplexity (plain) |", "|---|---|---|---|"]
        lines += [f"| {r['layer']} | {r['scale']:g} | {_f(r['control_success'])} | {_f(r['perplexity'], 1)} "
                  f"({_f(r['plain_perplexity'], 1)}) |" for r in steer["table"]]
        lines.append("")
    for probe, info in (result.get("peers") or {}).items():
        if "fudge" in info:
            ch = info["fudge"]["chosen"]
            lines.append(f"**FUDGE** discriminator for `{probe}`: {ch['features']} (chosen over "
                         f"{[d['features'] for d in info['fudge']['candidates']]} by held-out balanced accuracy), "
                         f"logistic regression on {ch['train_prefixes']} random prefixes (1-{ch['max_tokens']} tokens) "
                         f"of the probe's labelled passages; held-out balanced accuracy by prefix length: "
                         f"{ch.get('held_out')}; rescoring the top {c['fudge_top_k']} tokens per step.")
        if "steering" in info:
            lines.append(f"Steering passages for `{probe}`: {info['steering']['per_class']}.")
    lines += ["", "**Prompting**: the decoder given a topic header or a chat-template instruction before the prompt "
              "(scored after the original prompt only). **Best-of-N**: N plain samples, the probe keeps the best; N "
              "matched (rounded up) to each DGLM-guided variant's mean wall time, plus a fixed ceiling.", ""]
    for name, s in result["prompt_sets"].items():
        lines += [f"## Systems: {name} prompts", ""] + system_table(s["systems"]) + [""]
    lines += ["Control success: fraction of samples every target evaluator accepts "
              f"{result['targets_of_control']}, 95% Wilson interval (samples of one prompt counted as independent). "
              "ppl: evaluator-LM perplexity of the continuation given the prompt, mean with 1.96 standard errors. "
              "toxic / positive / sports: the proxy evaluators' rates. rel. time: wall and process CPU time over "
              "plain decoding's in the same run.", ""]
    for comp in result.get("compositions") or []:
        names = [f"{n}={label}" for n, label in comp["targets"]]
        lines += [f"## Composition: `{comp['control']}` (neutral openers)", "",
                  "| system | " + " | ".join(names) + " | joint [95% CI] | ppl | s/sample |",
                  "|---|" + "---|" * (len(names) + 3)]
        for sysname, row in comp["systems"].items():
            lines.append(f"| {sysname} | " + " | ".join(_f(row["attributes"].get(n)) for n in names) +
                         f" | {_f(row['joint'])} {_ci(row['joint_ci95'])} | {_f(row.get('perplexity'), 1)} | "
                         f"{_f(row['seconds_per_sample'], 2)} |")
        lines.append("")
    rt = result.get("runtime")
    if rt:
        lines += ["## Runtime", "", rt["note"], "", "| system | batch | new tokens | seconds | x plain | encode | "
                  "diffusion | prompt | decode | score |", "|---|---|---|---|---|---|---|---|---|---|"]
        for x in rt["cells"]:
            t = x.get("timings") or {}
            lines.append(f"| {x['system']} | {x['batch']} | {x['new_tokens']} | {_f(x.get('seconds'), 2)} | "
                         f"{_f(x.get('relative'), 2)} | " + " | ".join(_f(t.get(k), 3) for k in
                                                                      ("encode", "diffusion", "prompt", "decode", "score"))
                         + " |")
        lines.append("")
    ts = result.get("topic_switch")
    if ts:
        own = ts["own"]["mean"]
        lines += ["## Topic-switch reference (human text, topical prompts)", "",
                  f"Evaluator-LM perplexity (mean / median) of the prompts' own held-out continuations: {_f(own, 1)} / "
                  f"{_f(ts['own']['median'], 1)}. The first {c['new_tokens']} tokens of the {ts['texts']} held-out "
                  f"{ts['label']!r} documents after the same prefixes: {_f(ts['switch']['mean'], 1)} "
                  f"({ts['switch']['mean'] / own:.2f}x) as is, {_f(ts['closed']['mean'], 1)} "
                  f"({ts['closed']['mean'] / own:.2f}x) after a full stop closing the prefix's sentence. The topic "
                  f"evaluator puts {ts['target_rate']:.0%} of these texts in {ts['label']!r}.", ""]
    if result["targets"]:
        lines += ["## Targets (reported, not asserted)", ""]
        lines += [f"- {'met' if t['met'] else 'NOT met'}: {t['target']} ({t['detail']})" for t in result["targets"]]
        lines.append("")
    if result["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in result["plots"]]
    for name, s in result["prompt_sets"].items():
        first = next(iter(s["systems"].values()))["examples"][0]
        lines += ["", f"## One sample per system ({name}, first prompt: {first['prefix']!r})", ""]
        lines += [f"- {n}: {m['examples'][0]['continuations'][0]!r}" for n, m in s["systems"].items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
