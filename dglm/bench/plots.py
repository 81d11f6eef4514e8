"""The benchmark's plots (matplotlib, Agg): one control-vs-perplexity Pareto plot per prompt set, runtime per
sample, and the sigma^2 sweep when one ran. Legends sit outside the data, markers follow the system family,
perplexity is on a log axis where it spans more than 3x, and points carry 95% intervals."""

from __future__ import annotations

from pathlib import Path

# Marker and colour per family; DGLM-guided variants share the marker and differ in colour.
STYLE = {"plain": ("X", "black"), "dglm": ("o", "tab:gray"), "dglm-plan-scale": ("o", "tab:brown"),
         "dglm-guided": ("o", "tab:blue"), "steering": ("^", "tab:red"), "fudge": ("s", "tab:green"),
         "prompting": ("D", "tab:purple"), "best-of-n": ("v", "tab:orange"),
         "dglm-guided+prompting": ("P", "tab:olive")}
VARIANT_COLOURS = ["tab:blue", "tab:cyan", "navy", "tab:pink"]


def curves(systems: dict[str, dict]) -> dict[str, list[tuple[str, dict]]]:
    """Systems grouped into curves: one per family, DGLM-guided split by (plan_scale, control_scale), each
    ordered by its strength-like parameter.

    Example:
        >>> s = {"a": {"family": "fudge", "params": {"strength": 2}}, "b": {"family": "fudge", "params": {"strength": 1}}}
        >>> [n for n, _ in curves(s)["fudge"]]
        ['b', 'a']
    """
    out: dict[str, list[tuple[str, dict]]] = {}
    for name, m in systems.items():
        key = m["family"]
        p = m["params"]
        if key == "dglm-guided" and (p.get("plan_scale", 1) != 1 or p.get("control_scale", 1) != 1):
            key += f" plan_scale={p.get('plan_scale', 1):g} control_scale={p.get('control_scale', 1):g}"
        out.setdefault(key, []).append((name, m))
    order = ("strength", "scale", "n", "sigma2", "plan_scale")
    for key in out:
        out[key].sort(key=lambda nm: next((float(nm[1]["params"][k]) for k in order if k in nm[1]["params"]), 0.0))
    return out


def write_plots(result: dict, out: Path, stem: str) -> list[str]:
    """Write the PNGs into ``out`` and return their file names.

    Example (one prompt set with two systems: its Pareto plot and the runtime plot):
        >>> import tempfile
        >>> from dglm.bench.scoring import frontier
        >>> def system(family, success, ppl, seconds):
        ...     return {"family": family, "params": {}, "control_success": success,
        ...             "perplexity": {"mean": ppl}, "seconds_per_sample": seconds, "relative_time": 1.0}
        >>> systems = {"plain": system("plain", 0.2, 20.0, 0.1), "fudge": system("fudge", 0.6, 24.0, 0.3)}
        >>> result = {"config": {"control": "topic('sports')", "time_limit": 1.5},
        ...           "prompt_sets": {"neutral": {"systems": systems,
        ...                                       "frontier": frontier(systems, 20.0, 1.25, 1.5)}}}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_plots(result, Path(d), "bench")
        ['bench_pareto_neutral.png', 'bench_runtime.png']
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []

    def save(fig, suffix):
        name = f"{stem}_{suffix}.png"
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        files.append(name)

    c = result["config"]
    panels = [(f"pareto_{name}", f"{name} prompts: {c['control']}", s["systems"], s["frontier"])
              for name, s in result["prompt_sets"].items()]
    for task_name, t in (result.get("tasks") or {}).items():
        if t.get("systems") and task_name not in ("neutral", "continuation"):  # those two: the sets' plots
            slug = "task_" + "".join(ch if ch.isalnum() else "_" for ch in task_name).strip("_")
            title = f"task {task_name}" + (f": {t['control']}" if t.get("control") and t["task"] != "composition" else "")
            panels.append((slug, title, t["systems"], t["within"][f"{c['ppl_limit']:g}"]))
    for suffix, title, systems, f in panels:
        if not any(m.get("control_success") is not None and (m.get("perplexity") or {}).get("mean")
                   for m in systems.values()):
            continue
        fig, ax = plt.subplots(figsize=(8, 5))
        variant = 0
        for key, members in curves(systems).items():
            family = members[0][1]["family"]
            marker, colour = STYLE.get(family, ("o", None))
            if key.startswith("dglm-guided "):
                variant += 1
                colour = VARIANT_COLOURS[variant % len(VARIANT_COLOURS)]
            pts = [(m["perplexity"]["mean"], m["control_success"], m["perplexity"].get("ci95"),
                    m.get("control_success_ci95")) for _, m in members
                   if m.get("control_success") is not None and (m.get("perplexity") or {}).get("mean") is not None]
            if not pts:
                continue
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            xerr = [[max(0.0, x - (p[2] or [x, x])[0]) for x, p in zip(xs, pts, strict=True)],
                    [max(0.0, (p[2] or [x, x])[1] - x) for x, p in zip(xs, pts, strict=True)]]
            yerr = [[max(0.0, y - (p[3] or [y, y])[0]) for y, p in zip(ys, pts, strict=True)],
                    [max(0.0, (p[3] or [y, y])[1] - y) for y, p in zip(ys, pts, strict=True)]]
            ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt=marker + ("-" if len(pts) > 1 else ""), color=colour,
                        label=key, capsize=2, elinewidth=0.7, alpha=0.9, markersize=7)
        if f["reference_perplexity"]:
            ax.axvline(f["ppl_limit"] * f["reference_perplexity"], ls="--", color="gray", lw=1,
                       label=f"{f['ppl_limit']:g}x reference perplexity")
        xs = [m["perplexity"]["mean"] for m in systems.values() if (m.get("perplexity") or {}).get("mean")]
        if xs and max(xs) > 3 * min(xs):
            ax.set_xscale("log")
        ax.set_xlabel("evaluator perplexity (continuation given the prompt)")
        ax.set_ylabel("control success (independent evaluator)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        save(fig, suffix)

    sets = list(result["prompt_sets"].items())
    if sets:
        fig, axes = plt.subplots(1, len(sets), figsize=(7 * len(sets), 0.28 * max(len(s["systems"]) for _, s in sets) + 1.5),
                                 squeeze=False)
        for ax, (set_name, s) in zip(axes[0], sets, strict=True):
            names = list(s["systems"])
            ys = [s["systems"][n]["seconds_per_sample"] for n in names]
            colours = [STYLE.get(s["systems"][n]["family"], ("o", "gray"))[1] for n in names]
            ax.barh(range(len(names)), ys, color=colours)
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels(names, fontsize=7)
            ax.invert_yaxis()
            ax.axvline(s["systems"]["plain"]["seconds_per_sample"] * c["time_limit"], ls="--", color="gray", lw=1)
            if max(ys) > 3 * min(ys):
                ax.set_xscale("log")
            ax.set_xlabel(f"wall seconds per sample ({set_name}; dashed: {c['time_limit']:g}x plain)")
            ax.grid(alpha=0.3, axis="x", which="both")
        save(fig, "runtime")

    from dglm.bench.scoring import sigma2_sweep

    for set_name, s in sets:
        sweep = sigma2_sweep(s["systems"])
        if len(sweep) < 2:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, key in zip(axes, ("plan_fidelity", "dist3"), strict=True):
            ax.plot([x for x, _ in sweep], [m[key]["mean"] if isinstance(m[key], dict) else m[key] for _, m in sweep],
                    "o-")
            ax.set_xlabel("sigma^2")
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
        save(fig, f"sigma2_{set_name}")
    return files
