"""``dglm train``: the training stages (:mod:`dglm.training.stages`) as a command, with options generated from
each stage's pydantic config fields (:mod:`dglm.options`), so every default is declared once.

Run it as one process, or data-parallel with ``accelerate launch`` (the training stages shard their batches
over the processes; see docs/training.md)::

    dglm train prepare --work W --data texts/ --encoder ENCODER --decoder DECODER
    dglm train diffusion --work W --steps 6000            # or: --from-checkpoint mini (same encoder)
    accelerate launch --multi_gpu --num_processes 4 -m dglm train prompt --work W --run r1 --lora-rank 16
    dglm train evaluate --work W --run r1
    dglm train assemble --work W --run r1 --out checkpoint

Example:
    >>> args = build_parser().parse_args(["prompt", "--work", "w", "--steps", "5", "--width", "64"])
    >>> config = stage_config(args)
    >>> config.training.steps, config.model, config.training.batch_size
    (5, {'width': 64}, 8)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from dglm.options import add_config_options, config_from_args

PROG = "dglm train"


def _parts(stage: str):
    """(stage config class, its function, network-shape config class or None, training config class or None)."""
    from dglm.config import DiffusionConfig, PromptConfig
    from dglm.training.stages import STAGES

    config_class, run = STAGES[stage]
    fields = config_class.model_fields
    shape = DiffusionConfig if stage == "diffusion" else PromptConfig if "model" in fields else None
    training = fields["training"].annotation if "training" in fields else None
    return config_class, run, shape, training


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of ``dglm train STAGE [options]``.

    Example:
        >>> args = build_parser().parse_args(["diffusion", "--work", "w", "--steps", "10", "--depth", "2"])
        >>> args.stage, args.work, args.steps, args.depth
        ('diffusion', 'w', 10, 2)
    """
    from dglm.training.stages import STAGES

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     epilog="examples:\n" + __doc__.split("::\n\n")[1].split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    common.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    stages = parser.add_subparsers(title="stages", dest="stage", required=True, metavar="STAGE")
    for name, (_, run) in STAGES.items():
        config_class, _, shape, training = _parts(name)
        doc = " ".join(run.__doc__.split())
        p = stages.add_parser(name, parents=[common], help=doc.split("; ")[0].split(". ")[0].rstrip("."),
                              description=doc)
        # --run-name: torchrun reads an abbreviated --run after `-m dglm` as its own --run-path.
        aliases = {"run": ["--run-name"]} if "run" in config_class.model_fields else None
        add_config_options(p, config_class, exclude={"model", "training"}, aliases=aliases)
        if shape is not None:
            add_config_options(p.add_argument_group(f"network shape ({shape.__name__} fields)"), shape,
                               exclude={"dim", "out_dim"}, defaults_from="the --preset's")
        if training is not None:
            add_config_options(p.add_argument_group(f"training ({training.__name__} fields)"), training)
    return parser


def stage_config(args: argparse.Namespace):
    """The validated stage config of parsed ``args``.

    Example:
        >>> config = stage_config(build_parser().parse_args(["diffusion", "--work", "w", "--depth", "2"]))
        >>> type(config).__name__, config.model, config.training.steps > 0
        ('DiffusionStageConfig', {'depth': 2}, True)
    """
    config_class, _, shape, training = _parts(args.stage)
    base = {}
    if shape is not None:
        base["model"] = {k: getattr(args, k) for k in shape.model_fields if k not in ("dim", "out_dim")
                         and hasattr(args, k)}
    if training is not None:
        base["training"] = config_from_args(training, args)
    return config_from_args(config_class, args, base=base, exclude={"model", "training"})


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dglm train`` (``argv`` defaults to ``sys.argv[2:]``); returns the exit status (2: a user error).

    Example:
        >>> main(["evaluate", "--work", "/nonexistent"])
        2
    """
    from pydantic import ValidationError

    from dglm.io import CheckpointError

    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[2:] if argv is None else list(argv))
    except SystemExit as e:  # --help, or a bad command line (argparse has printed why)
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    _, run, _, _ = _parts(args.stage)
    try:
        result = run(stage_config(args))
    except (ValidationError, ValueError, OSError, CheckpointError, ImportError) as e:
        # OSError: a model that cannot be found (dglm.io.ModelLoadError), a path that cannot be read or written
        if args.debug:
            raise
        print(f"{PROG} {args.stage}: error: {e}", file=sys.stderr)
        return 2
    if isinstance(result, dict) and result:
        print(json.dumps(result, indent=2))
    return 0
