"""Train the default ``mini`` checkpoint (MiniLM-L6 encoder, SmolLM2-135M decoder) on the packaged corpus:
``dglm train`` with the ``mini`` preset and this recipe's defaults (work folder ``cache/mini``, corpus
``cache/corpus``, the shipped checkpoint's folder for ``assemble``).

Stages, run in order (each resumable); the exact commands that built the shipped checkpoint are in
results/mini/README.md:

    python recipes/build_corpus.py --out cache/corpus
    python recipes/train_mini.py prepare     # windows, word-boundary splits, cached encoder embeddings, stats
    python recipes/train_mini.py diffusion --steps 6000 --batch-size 128
    python recipes/train_mini.py prompt --run NAME ...   # the prompt generator (see --help for the designs)
    python recipes/train_mini.py evaluate --run NAME     # held-out plan use (true vs shuffled NLL) -> JSON
    python recipes/train_mini.py export --run NAME       # generator of a run stopped early, from its state
    python recipes/train_mini.py assemble --run NAME     # -> dglm/checkpoints/mini (fp16 safetensors + JSON)

Every option of ``dglm train STAGE`` is accepted (``python recipes/train_mini.py STAGE --help``), plus two
spellings kept from this recipe's earlier versions: ``--corpus`` (= ``--data``) and ``--time-budget MINUTES``
(= ``--time-budget-s`` in seconds). Each command equals ``dglm train STAGE`` with the arguments
``recipe_arguments`` prepends.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dglm.config import preset_config

CONFIG = preset_config("mini")
WORK = "cache/mini"
# Per stage: this recipe's defaults, placed before the user's arguments (a later option wins in argparse).
DEFAULTS = {
    "prepare": ["--data", "cache/corpus", "--encoder", CONFIG.encoder.name_or_path,
                "--decoder", CONFIG.decoder.name_or_path],
    "diffusion": ["--preset", "mini", "--steps", "3000", "--save-every", "500"],
    "prompt": ["--preset", "mini", "--decoder", CONFIG.decoder.name_or_path, "--head", "linear", "--vocab-size", "0",
               "--steps", "3000", "--eval-every", "250"],
    "evaluate": ["--decoder", CONFIG.decoder.name_or_path, "--out-json", "plan_use.json"],
    "export": ["--decoder", CONFIG.decoder.name_or_path, "--preset", "mini", "--head", "linear", "--vocab-size", "0"],
    # The card's results section is results/mini/card.md; both base models (and dglm) are Apache-2.0.
    "assemble": ["--preset", "mini", "--decoder", CONFIG.decoder.name_or_path, "--out", "dglm/checkpoints/mini",
                 "--license", "apache-2.0", "--card", "results/mini/card.md"],
}


def recipe_arguments(argv: Sequence[str]) -> list[str]:
    """``dglm train`` arguments of a ``train_mini.py`` command line.

    Example:
        >>> recipe_arguments(["prompt", "--run", "vm2", "--time-budget", "25"])[-4:]
        ['--run', 'vm2', '--time-budget-s', '1500.0']
    """
    if not argv or argv[0] not in DEFAULTS:
        return list(argv)  # --help, or an unknown stage (dglm train says which are accepted)
    stage, rest, out = argv[0], list(argv[1:]), []
    while rest:
        arg = rest.pop(0)
        if arg == "--corpus":
            out.append("--data")
        elif arg == "--time-budget":
            out += ["--time-budget-s", str(float(rest.pop(0)) * 60)]
        else:
            out.append(arg)
    return [stage, "--work", WORK, *DEFAULTS[stage], *out]


def main(argv: Sequence[str] | None = None) -> int:
    from dglm.training.cli import main as train

    return train(recipe_arguments(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
