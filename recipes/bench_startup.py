"""Start-up cost of the README's main job: ``dglm generate "The match last night" --control ... -n 4``.

Two measurements, each in fresh processes with warm caches (the decoder already converted, files in the
page cache after one untimed run):

1. the whole command, from process start to the first printed continuation and to exit (wall time);
2. the same work split into stages, timed inside one process in the order the command does them: the
   imports (torch, transformers, sentence-transformers, peft, dglm), loading each model of the checkpoint
   (encoder, decoder including the cached GGUF conversion check, its adapter, diffusion and prompt networks,
   probes), and the first and a second ``generate`` call.

    PYTHONPATH=. python recipes/bench_startup.py --repeats 3 --out /tmp/startup.json

Prints a markdown table of medians over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PREFIX = "The match last night"
CONTROL = "toxicity.low() + topic('sports')"

# Runs in a fresh interpreter; prints one JSON line of stage -> seconds.
STAGES = r'''
import json, time
t = {}
s = time.perf_counter()
def mark(name):
    global s
    now = time.perf_counter(); t[name] = now - s; s = now
import torch; mark("import torch")
import transformers; mark("import transformers")
import sentence_transformers; mark("import sentence-transformers")
import peft; mark("import peft")
import dglm.cli; from dglm import DGLM, Controller; from dglm.constraints import parse_constraint; mark("import dglm")
from pathlib import Path
from dglm.assets import load_decoder, load_encoder
from dglm.encoder import SemanticEncoder
from dglm.diffusion import SemanticDiffuser
from dglm.prompt import PromptGenerator
from dglm.constraints import ProbeRegistry
from dglm.hub import PACKAGED
folder = PACKAGED / "mini"
meta = json.loads((folder / "dglm.json").read_text())
encoder = SemanticEncoder.from_pretrained_stats(folder / "encoder", model=load_encoder(meta["encoder"]).model); mark("load encoder")
decoder = load_decoder(meta["decoder"]); mark("load decoder (cached conversion)")
decoder.load_adapter(folder / "decoder_adapter"); mark("load decoder adapter")
diffuser = SemanticDiffuser.from_pretrained(folder / "diffusion")
prompt = PromptGenerator.from_pretrained(folder / "prompt"); mark("load diffusion + prompt networks")
probes = ProbeRegistry.load(folder / "probes"); mark("load probes")
pipe = DGLM(encoder, diffuser, prompt, decoder, None, probes)
ctl = Controller(parse_constraint(%(control)r), pipe)
kw = dict(max_new_tokens=32, top_p=0.9, repetition_penalty=1.2)
ctl.generate([%(prefix)r], 4, **kw); mark("first generate (4 x 32 tokens)")
ctl.generate([%(prefix)r], 4, **kw); mark("second generate (same)")
print("STAGES " + json.dumps(t))
'''


def run_command(env: dict) -> tuple[float, float]:
    """(seconds to the first printed continuation, seconds to exit) of the README's command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dglm", "generate", PREFIX, "--control", CONTROL, "-n", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    first = None
    for line in proc.stdout:
        if first is None and not line.startswith("---"):
            first = time.perf_counter() - t0
    proc.wait()
    if proc.returncode:
        raise SystemExit(f"dglm generate exited {proc.returncode}")
    return first, time.perf_counter() - t0


def run_stages(env: dict) -> dict[str, float]:
    code = STAGES % {"control": CONTROL, "prefix": PREFIX}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("STAGES "))[7:])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    run_command(env)  # untimed: warms the page cache and makes sure the decoder is converted
    firsts, totals, stages = [], [], {}
    for r in range(args.repeats):
        first, total = run_command(env)
        firsts.append(first)
        totals.append(total)
        for key, value in run_stages(env).items():
            stages.setdefault(key, []).append(value)
        print(f"repeat {r + 1}: first continuation {first:.1f} s, exit {total:.1f} s", flush=True)
    result = {"command": f'dglm generate "{PREFIX}" --control "{CONTROL}" -n 4',
              "first_continuation_s": statistics.median(firsts), "exit_s": statistics.median(totals),
              "stages_s": {k: statistics.median(v) for k, v in stages.items()},
              "load_average": os.getloadavg(), "cpus": os.cpu_count()}
    print(f"| stage | seconds (median of {args.repeats}) |\n|---|---|")
    for key, value in result["stages_s"].items():
        print(f"| {key} | {value:.2f} |")
    print(f"| **whole command: first continuation printed** | **{result['first_continuation_s']:.1f}** |")
    print(f"| whole command: exit | {result['exit_s']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
