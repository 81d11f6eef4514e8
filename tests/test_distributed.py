"""Data parallelism is exact: two real processes (torchrun, gloo on CPU) train like one process that
accumulates the same global batch, on disjoint examples, with identical weights on both; resuming replays the
same examples and noise."""

import json
import os
import subprocess
import sys
from pathlib import Path

import ddp_worker
import pytest
import torch

from dglm.io import load_tensors

ROOT = Path(__file__).resolve().parents[1]


def _flat(rows):
    return [i for row in rows for i in row if i >= 0]  # -1: a prefix replaced by the CFG null embedding


def test_two_processes_train_like_one_process_accumulating_the_same_global_batch(tmp_path, monkeypatch):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", None)
    two = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            str(Path(ddp_worker.__file__)), str(tmp_path / "two")], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "2")  # the reference: 1 process, 2 micro-batches
    ddp_worker.run(tmp_path / "one")
    output = two.communicate(timeout=240)[0]
    assert two.returncode == 0, output[-3000:]

    seen = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    one = json.loads((tmp_path / "one" / "rank0.json").read_text())
    for stage in ("diffusion", "prompt"):
        ranks = [s[stage] for s in seen]
        assert len(ranks[0]) == len(ranks[1]) == 3  # one forward per step on each process
        consumed = _flat(ranks[0]) + _flat(ranks[1])
        assert len(consumed) == len(set(consumed)) > 8  # no example seen twice, by either process
        # Step s of the reference computes shard 0 then shard 1; process r computed shard r.
        assert one[stage][0::2] == ranks[0] and one[stage][1::2] == ranks[1]

    weights = [load_tensors(tmp_path / "two" / f"rank{r}.safetensors") for r in (0, 1)]
    assert any(k.startswith("decoder.") and "lora_" in k for k in weights[0])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # DDP kept the replicas equal

    for stage in ("diffusion", "prompt"):
        a = load_tensors(tmp_path / "two" / stage / "state" / "state.safetensors")
        b = load_tensors(tmp_path / "one" / stage / "state" / "state.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), (stage, k, (a[k] - b[k]).abs().max())


def test_a_resumed_run_replays_the_same_examples_and_noise(tmp_path):
    from dglm.config import DiffusionConfig
    from dglm.diffusion import SemanticDiffuser
    from dglm.training.train_diffusion import DiffusionTrainingConfig, train_diffuser

    prefix, cont = ddp_worker.diffusion_data()

    def model():
        torch.manual_seed(0)
        return SemanticDiffuser(DiffusionConfig(dim=ddp_worker.DIM, num_tokens=2, token_features=4, width=16,
                                                depth=2, heads=2))

    config = DiffusionTrainingConfig(steps=6, batch_size=8, warmup=1, save_every=3, mixed_precision="no")
    straight = train_diffuser(model(), prefix, cont, config, tmp_path / "straight", show_progress_bar=False)
    killed, calls = model(), []

    def kill_at_step_4(module, args):
        calls.append(1)
        if len(calls) == 4:  # after the state saved at step 3
            raise KeyboardInterrupt

    killed.prefix_in.register_forward_pre_hook(kill_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train_diffuser(killed, prefix, cont, config, tmp_path / "resumed", show_progress_bar=False)
    resumed = train_diffuser(model(), prefix, cont, config, tmp_path / "resumed", show_progress_bar=False)
    a = load_tensors(tmp_path / "straight" / "state" / "state.safetensors")
    b = load_tensors(tmp_path / "resumed" / "state" / "state.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-exact: data position and noise come from the step
    assert all(torch.equal(x, y) for x, y in zip(straight.state_dict().values(), resumed.state_dict().values(),
                                                  strict=True))
