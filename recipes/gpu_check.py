"""Runtime check on one GPU: the ``paper`` preset with random weights, DGLM against plain decoding.

Builds the paper-shaped pipeline (T5-XL-shaped encoder, 12 x 768 denoiser, 6 x 768 prompt generator,
8 soft tokens, GPT-2-large-shaped decoder) with random weights in bf16, then, per batch size, times the
encoder, planning without and with constraint guidance (a random linear probe through
:class:`dglm.constraints.ConstraintGuidance`), and decoding exactly N new tokens with and without the
soft tokens. Prints and writes a markdown table of seconds per call and of DGLM's total relative to plain
decoding, next to the reference's measured anchors. Ends within ~5 minutes on an H100/H200 (a time
budget skips what would not fit, and says so in the table).

    PYTHONPATH=. python recipes/gpu_check.py                      # on a CUDA machine
    PYTHONPATH=. python recipes/gpu_check.py --batch-sizes 1 --new-tokens 32 --out /tmp/check.md

Without CUDA it says so and runs the same measurements on a tiny random pipeline on the CPU (seconds),
writes nothing, and exits 0. ``--device cpu`` runs the given preset on the CPU instead.
"""

from __future__ import annotations

import time

START = time.perf_counter()  # the time budget counts from here, imports included

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from dglm.constraints import Control, Probe  # noqa: E402
from dglm.pipeline import DEFAULT_GENERATE_KWARGS, DGLM  # noqa: E402
from dglm.presets import random_pipeline, random_texts  # noqa: E402

# Measured anchors of the reference (docs: ../shared/dglm-reference.md, "Measured runtime anchors"): one
# H200, bf16, eager PyTorch, random weights, paper-shaped models. Seconds per call at batch 1 / batch 25.
ANCHORS = [
    ("encode 32-token prefix", "0.03", "0.03"),
    ("250 unguided DDPM steps", "0.60", "0.65"),
    ("250 guided steps, CFG as two passes, 32 MC samples", "8.0", "8.9"),
    ("50 guided steps, CFG batched into one pass", "0.80", "0.74"),
    ("same, `torch.compile`", "0.42", "0.40"),
    ("decode 32 / 64 / 128 / 256 new tokens, HF `generate`", "0.52 / 1.26 / 2.08 / 5.0", "0.57 / 1.37 / 2.35 / 4.8"),
    ("same with 8 soft tokens after the prefix", "the same within noise", "the same within noise"),
]
ANCHOR_DECODE = {1: {32: 0.52, 64: 1.26, 128: 2.08, 256: 5.0}, 25: {32: 0.57, 64: 1.37, 128: 2.35, 256: 4.8}}
ANCHOR_PLAN_GUIDED_50 = {1: 0.03 + 0.80, 25: 0.03 + 0.74}  # encode + 50 guided steps, CFG batched
PREFIX_TOKENS = 32  # the reference's evaluation prefixes (one synthetic-tokenizer token per word)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="paper", help="paper, mini or tiny (random weights)")
    p.add_argument("--device", default="cuda", help="cuda (falls back to a tiny CPU run without CUDA) or cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 25],
                   help="rows per call: B prefixes x 1 sample each")
    p.add_argument("--new-tokens", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--steps", type=int, default=50, help="diffusion steps")
    p.add_argument("--sampler", default="ddpm", choices=["ddpm", "ddim"])
    p.add_argument("--cfg-scale", type=float, default=2.0, help="classifier-free guidance weight (1 = off)")
    p.add_argument("--strength", type=float, default=20.0, help="constraint-guidance strength lambda")
    p.add_argument("--mc-samples", type=int, default=32, help="Monte-Carlo samples per row for guidance")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per cell (the median is reported)")
    p.add_argument("--adapter-rank", type=int, default=16,
                   help="give the decoder a LoRA adapter of this rank (random weights; 0 = none), as checkpoints "
                        "carry: decoding with soft tokens then runs with it merged (Decoder.adapter_merged)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also time the guided plan with the diffusion network under torch.compile "
                        "(GenerationConfig.compile; default: on with CUDA, off on the CPU)")
    p.add_argument("--compile-modes", nargs="+", default=["default", "reduce-overhead"],
                   help="torch.compile modes to time the guided plan under ('reduce-overhead' replays CUDA graphs)")
    p.add_argument("--fewer-steps", type=int, nargs="*", default=[20],
                   help="also time the guided plan at these step counts (eager and each compile mode)")
    p.add_argument("--profile", default=None,
                   help="folder: write torch.profiler tables of one guided plan and one plain decode (largest batch)")
    p.add_argument("--time-budget", type=float, default=270.0,
                   help="seconds from start after which remaining cells are skipped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/gpu_check.md", help="markdown report (not written on the "
                                                                       "CPU fallback)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the report's command line
    return args


def log(*parts) -> None:
    print(*parts, flush=True)


# ------------------------------------------------------------------------------------------------ timing


@dataclass
class Cell:
    """One measurement: the median seconds of the timed calls, or why there is none."""

    seconds: float | None = None
    error: str | None = None

    def __str__(self) -> str:
        return f"{self.seconds:.3f}" if self.seconds is not None else (self.error or "-")

    def ratio(self, baseline: Cell) -> str:
        if self.seconds is None or not baseline.seconds:
            return "-"
        return f"{self.seconds / baseline.seconds:.2f}x"

    def __add__(self, other: Cell) -> Cell:
        if self.seconds is None or other.seconds is None:
            return Cell(error="-")
        return Cell(self.seconds + other.seconds)


class Timer:
    """Times a callable ``repeats`` times with device synchronisation; never raises (a failure becomes
    the cell's text), and skips work once the time budget is spent."""

    def __init__(self, device: torch.device, repeats: int, deadline: float):
        self.device, self.repeats, self.deadline = device, repeats, deadline

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, label: str, fn: Callable[[], object]) -> tuple[Cell, object]:
        if time.perf_counter() > self.deadline:
            log(f"  {label}: skipped (time budget)")
            return Cell(error="skipped (time budget)"), None
        times, out = [], None
        try:
            for _ in range(self.repeats):
                self.sync()
                t0 = time.perf_counter()
                out = fn()
                self.sync()
                times.append(time.perf_counter() - t0)
                if time.perf_counter() > self.deadline:
                    break
            cell = Cell(statistics.median(times))
        except Exception as e:  # one failed cell must not end the one GPU run: report it and go on
            traceback.print_exc(file=sys.stdout)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            cell = Cell(error=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}")
        log(f"  {label}: {cell}" + (f" s (median of {len(times)})" if cell.seconds is not None else ""))
        return cell, out


# ----------------------------------------------------------------------------------------- measurements


@dataclass
class Report:
    """Everything measured, keyed by batch size (and number of new tokens)."""

    setup: dict[str, str] = field(default_factory=dict)
    planning: dict[int, dict[str, Cell]] = field(default_factory=dict)
    decoding: dict[tuple[int, int], dict[str, Cell]] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        cells = [c for row in self.planning.values() for c in row.values()]
        cells += [c for row in self.decoding.values() for c in row.values()]
        return [c.error for c in cells if c.error and c.error.startswith("failed")]


def random_probe_control(pipe: DGLM, strength: float, num_samples: int, seed: int) -> Control:
    """Constraint guidance toward the "yes" side of a random linear probe on the raw embedding space."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(1, pipe.encoder.dim, generator=gen) * pipe.encoder.dim ** -0.5
    probe = Probe(weight, torch.zeros(1), ("no", "yes"), pipe.encoder.identity, name="random_probe")
    return Control(probe("yes"), strength, guidance_samples=num_samples)


def tokenize_for_hf(pipe: DGLM, prefixes: list[str]) -> dict:
    """The prefixes as transformers' generate takes them: left-padded input ids and their mask."""
    ids = pipe.decoder._pad(pipe.decoder.tokenize(prefixes), "left")  # (B, T), -1 where padded
    return {"input_ids": ids.masked_fill(ids < 0, pipe.decoder.pad_token_id), "attention_mask": (ids >= 0).long()}


def hf_generate(pipe: DGLM, ids, n: int):
    """Plain decoding as transformers does it (input ids, its own repetition penalty): the reference for
    :meth:`dglm.decoder.Decoder.generate`'s overhead."""
    with pipe.decoder.adapter_off():
        return pipe.decoder.model.generate(**ids, do_sample=True, top_p=0.9, repetition_penalty=1.2,
                                           max_new_tokens=n, min_new_tokens=n,
                                           pad_token_id=pipe.decoder.pad_token_id)


def profile(folder: Path, calls: dict[str, Callable[[], object]]) -> None:
    """One profiled call of each, written as operator tables sorted by device time (or CPU time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    folder.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    for name, fn in calls.items():
        try:
            with torch_profile(activities=activities) as prof:
                fn()
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
            key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
            table = prof.key_averages().table(sort_by=key, row_limit=40)
            (folder / f"profile_{name}.txt").write_text(table)
            log(f"profile {name}: written ({len(prof.key_averages())} operators)")
        except Exception:  # a profile is a bonus: never end the run for it
            traceback.print_exc(file=sys.stdout)


def measure(pipe: DGLM, args: argparse.Namespace, timer: Timer, report: Report, write: Callable[[], None]) -> None:
    device = pipe.device
    dtype = next(pipe.diffuser.parameters()).dtype
    # The diffusion and prompt networks' noise-level MLP takes float32 input: run them under autocast.
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    control = random_probe_control(pipe, args.strength, args.mc_samples, args.seed)
    plan_kwargs = dict(steps=args.steps, sampler=args.sampler, cfg_scale=args.cfg_scale, seed=args.seed)

    def plan(prefixes, guided: bool, **overrides):
        with autocast:
            return pipe.plan(prefixes, **{**plan_kwargs, **overrides}, control=control if guided else None)

    def decode_kwargs(n: int) -> dict:
        return {**DEFAULT_GENERATE_KWARGS, "max_new_tokens": n, "min_new_tokens": n}

    for batch in args.batch_sizes:
        log(f"batch {batch}:")
        prefixes = random_texts(batch, PREFIX_TOKENS, seed=args.seed + batch)
        warm = Timer(timer.device, 1, timer.deadline)  # first calls: kernel selection, caches, allocator
        warm("warm-up plan", partial(plan, prefixes, False, steps=2))
        warm("warm-up guided plan", partial(plan, prefixes, True, steps=2))
        warm("warm-up decode", partial(pipe.decoder.generate, prefixes, seed=0, **decode_kwargs(max(args.new_tokens))))
        ids = tokenize_for_hf(pipe, prefixes)

        row = report.planning[batch] = {}
        row["encode"], _ = timer("encode", partial(pipe.encoder.encode, prefixes))
        row["plan"], the_plan = timer("plan, unguided", partial(plan, prefixes, False))
        row["plan_guided"], _ = timer("plan, guided", partial(plan, prefixes, True))
        for steps in args.fewer_steps:
            row[f"plan_guided {steps}"], _ = timer(f"plan, guided, {steps} steps", partial(plan, prefixes, True,
                                                                                          steps=steps))
        for n in args.new_tokens:
            cells = report.decoding[(batch, n)] = {}
            cells["hf"], _ = timer(f"HF generate on input ids, {n} tokens", partial(hf_generate, pipe, ids, n))
            cells["plain"], _ = timer(f"plain decode, {n} tokens",
                                      partial(pipe.decoder.generate, prefixes, seed=0, **decode_kwargs(n)))
            if the_plan is None:
                cells["soft"] = Cell(error=f"no plan ({row['plan']})")
            else:
                cells["soft"], _ = timer(f"decode with soft tokens, {n} tokens",
                                         partial(pipe.decode, the_plan, seed=0, **decode_kwargs(n)))
        write()
        if args.profile and batch == max(args.batch_sizes):
            profile(Path(args.profile), {
                "guided_plan": partial(plan, prefixes, True),
                "plain_decode": partial(pipe.decoder.generate, prefixes, seed=0, **decode_kwargs(args.new_tokens[0])),
                "hf_decode": partial(hf_generate, pipe, ids, args.new_tokens[0])})
        for mode in (args.compile_modes if args.compile else []):
            pipe.diffuser.compiled(mode=mode)  # built now, kept for the plans
            eager_sampling = pipe.sampling
            pipe.sampling = eager_sampling.model_copy(update={"compile": True})
            try:  # the first call compiles (forward and guidance backward; shapes of this batch)
                row[f"compile_s {mode}"], _ = warm(f"compile {mode} (first guided plan)", partial(plan, prefixes, True))
                cell, _ = timer(f"plan, guided, torch.compile {mode}", partial(plan, prefixes, True))
                if pipe.diffuser.compiled().failed:
                    cell = Cell(error="compile failed: ran eagerly")
                row[f"plan_guided_compiled {mode}"] = cell
                for steps in args.fewer_steps:
                    warm(f"warm-up {steps} steps", partial(plan, prefixes, True, steps=steps))
                    row[f"plan_guided_compiled {mode} {steps}"], _ = timer(
                        f"plan, guided, {steps} steps, torch.compile {mode}", partial(plan, prefixes, True, steps=steps))
            finally:
                pipe.sampling = eager_sampling
        write()


# -------------------------------------------------------------------------------------------- reporting


def render(report: Report, args: argparse.Namespace) -> str:
    s = report.setup
    lines = [f"# DGLM runtime check: `{args.preset}` preset, random weights", "",
             f"Device: {s.get('device')}; torch {torch.__version__}; {s.get('versions')}.", "",
             f"Setup: {s.get('setup')}", "",
             f"Built in {s.get('build_s')} s; peak GPU memory {s.get('peak_memory', '-')}; "
             f"total wall time {time.perf_counter() - START:.0f} s.", "",
             "Command: `" + " ".join(["python", "recipes/gpu_check.py", *args.argv]) + "`", "",
             "## Planning, seconds per call", ""]
    columns = []
    for row in report.planning.values():
        columns += [k for k in row if k not in columns]
    names = {"encode": "encode", "plan": f"plan, unguided ({args.steps} steps)",
             "plan_guided": f"plan, guided ({args.steps} steps)"}
    heading = [names.get(k, k.replace("plan_guided_compiled", "guided, compiled").replace("plan_guided", "guided")
                         .replace("compile_s", "first compiled call (compiles)")) for k in columns]
    lines += ["| batch | " + " | ".join(heading) + " |", "|---" * (len(columns) + 1) + "|"]
    for batch, row in report.planning.items():
        lines.append(f"| {batch} | " + " | ".join(str(row.get(k, "-")) for k in columns) + " |")
    lines += ["", "Columns `guided, compiled MODE [STEPS]`: the guided plan with the diffusion network under "
              "`torch.compile` in that mode (`default`, or `reduce-overhead` = CUDA graphs), at the default "
              f"{args.steps} steps unless a step count follows."]
    lines += ["", "Plan = encode + diffusion + prompt generator. DGLM total = plan + decode with soft tokens; "
              "ratio = DGLM total / plain decode.", "",
              "## Decoding and totals, seconds per call", "",
              "| batch | new tokens | HF generate (input ids) | plain decode | decode with soft tokens | DGLM unguided "
              "| ratio | DGLM guided | ratio | DGLM guided, fastest compiled plan | ratio |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (batch, n), cells in report.decoding.items():
        plans = report.planning[batch]
        unguided, guided = plans["plan"] + cells["soft"], plans["plan_guided"] + cells["soft"]
        compiled = [c for k, c in plans.items() if k.startswith("plan_guided_compiled") and k.count(" ") == 1
                    and c.seconds is not None]
        fast = min(compiled, key=lambda c: c.seconds) + cells["soft"] if compiled else Cell(error="-")
        lines.append(f"| {batch} | {n} | {cells['hf']} | {cells['plain']} | {cells['soft']} | {unguided} | "
                     f"{unguided.ratio(cells['plain'])} | {guided} | {guided.ratio(cells['plain'])} | {fast} | "
                     f"{fast.ratio(cells['plain'])} |")
    lines += ["", "## Reference anchors for comparison", "",
              "From `dglm-reference.md` (one H200, bf16, eager PyTorch, random weights, paper-shaped models), "
              "seconds per call:", "", "| work | batch 1 | batch 25 |", "|---|---|---|"]
    lines += [f"| {work} | {b1} | {b25} |" for work, b1, b25 in ANCHORS]
    lines += ["", "Ratio implied by the anchors, (encode + 50 guided steps with batched CFG + decode) / decode "
              "(the paper reports about 1.7x GPT-2 overall):", "",
              "| batch | " + " | ".join(f"{n} tokens" for n in ANCHOR_DECODE[1]) + " |", "|---|---|---|---|---|"]
    for batch, decode in ANCHOR_DECODE.items():
        ratios = [(ANCHOR_PLAN_GUIDED_50[batch] + t) / t for t in decode.values()]
        lines.append(f"| {batch} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    if report.failures:
        lines += ["", f"{len(report.failures)} cell(s) failed; the tracebacks are in the run's output."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- main


def run_check(args: argparse.Namespace, device: torch.device, out: Path | None) -> Report:
    """Build the pipeline, measure every cell, print the report and write it to ``out`` (if given)."""
    import sentence_transformers
    import transformers

    dtype = getattr(torch, args.dtype)
    report = Report()
    report.setup["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    report.setup["versions"] = (f"transformers {transformers.__version__}; "
                                f"sentence-transformers {sentence_transformers.__version__}")
    log(f"device: {report.setup['device']}; torch {torch.__version__}; {report.setup['versions']}")
    log(f"building the {args.preset!r} preset with random weights ({args.dtype}) on {device} ...")
    t0 = time.perf_counter()
    pipe = random_pipeline(args.preset, device=device, dtype=dtype, seed=args.seed)
    if args.adapter_rank:
        for p in pipe.decoder.add_adapter(args.adapter_rank):
            torch.nn.init.normal_(p, std=0.01)  # peft starts B at zero: make the adapter do something
        pipe.decoder.model.eval().requires_grad_(False)
    report.setup["build_s"] = f"{time.perf_counter() - t0:.1f}"
    params = {name: sum(p.numel() for p in part.parameters()) / 1e6 for name, part in
              (("encoder", pipe.encoder), ("diffuser", pipe.diffuser), ("prompt generator", pipe.prompt_generator),
               ("decoder", pipe.decoder))}
    log(f"built in {report.setup['build_s']} s; parameters (M): "
        + ", ".join(f"{k} {v:.1f}" for k, v in params.items()))
    report.setup["setup"] = (
        f"preset `{args.preset}` with random weights in {args.dtype}, eager PyTorch (parameters, millions: "
        + ", ".join(f"{k} {v:.1f}" for k, v in params.items()) + f"); {args.sampler} sampler, {args.steps} steps, "
        f"CFG w = {args.cfg_scale} batched into one pass; guided = ConstraintGuidance with a random linear probe, "
        f"{args.mc_samples} Monte-Carlo samples, lambda = {args.strength}; "
        f"{pipe.prompt_generator.config.num_soft_tokens} soft tokens; decoder LoRA adapter of rank "
        f"{args.adapter_rank or '- (none)'} (merged while decoding with soft tokens); decoding: top-p 0.9, repetition penalty 1.2, "
        f"exactly N new tokens (min_new_tokens = max_new_tokens = N); prefixes of {PREFIX_TOKENS} tokens; "
        f"batch = B prefixes x 1 sample; seconds are the median of {args.repeats} calls after a warm-up, "
        f"synchronised around each call.")

    def write() -> None:
        if device.type == "cuda":
            report.setup["peak_memory"] = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(render(report, args))

    timer = Timer(device, args.repeats, START + args.time_budget)
    measure(pipe, args, timer, report, write)
    write()
    log("\n" + render(report, args))
    if out is not None:
        log(f"written to {out}")
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.compile is None:
        args.compile = device.type == "cuda" and torch.cuda.is_available()
    if device.type == "cuda" and not torch.cuda.is_available():
        log("CUDA is not available: this is a CPU-only machine, so the paper-scale GPU check cannot run here. "
            "Running a tiny random pipeline end to end on the CPU instead (nothing is written).")
        tiny = ["--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--batch-sizes", "1", "2",
                "--new-tokens", "8", "--steps", "4", "--repeats", "1", "--seed", str(args.seed)]
        report = run_check(parse_args(tiny), torch.device("cpu"), out=None)
        log("CPU smoke run: " + ("all cells ran" if not report.failures else f"{len(report.failures)} failed"))
        return 0
    report = run_check(args, device, Path(args.out))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
