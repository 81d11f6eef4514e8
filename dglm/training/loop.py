"""Pieces shared by the training loops: learning-rate schedule, optimizer groups, resumable state, the
accelerator, and the sharded example stream that makes data parallelism exact.

Training state (weights, optimizer moments, step) is saved as safetensors + JSON, never pickled, into a
folder written atomically, so a run killed at any moment resumes from its last complete save.

Example:
    >>> lr_at(step=99, base=1e-3, warmup=100, total=1000)
    0.001
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dglm.io import atomic_directory, load_tensors, read_json, save_tensors, write_json

logger = logging.getLogger(__name__)


def lr_at(step: int, base: float, warmup: int, total: int, final_fraction: float = 0.1) -> float:
    """Linear warmup for ``warmup`` steps, then cosine decay to ``final_fraction * base`` at ``total``.

    Example:
        >>> [round(lr_at(step, 1e-3, warmup=10, total=110), 6) for step in (0, 9, 60, 110)]
        [0.0001, 0.001, 0.00055, 0.0001]
    """
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups with weight decay on matrices only (not on biases, norms or embeddings vectors).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
        >>> [(len(g["params"]), g["weight_decay"]) for g in param_groups(model, 0.1)]
        [(1, 0.1), (3, 0.0)]
    """
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def save_state(folder: str | os.PathLike, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
               step: int, extra: dict | None = None) -> None:
    """Atomically write ``state.safetensors`` (module weights and optimizer moments) and ``state.json``.

    Example (load_state reads it back):
        >>> import tempfile
        >>> model = torch.nn.Linear(2, 2)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_state(d + "/state", {"model": model}, torch.optim.AdamW(model.parameters()), step=5)
        ...     sorted(os.listdir(d + "/state"))
        ['.dglm', 'state.json', 'state.safetensors']
    """
    tensors = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, s in opt["state"].items():
        for k, v in s.items():
            tensors[f"optimizer.{idx}.{k}"] = torch.as_tensor(v)
    with atomic_directory(folder, "training state") as tmp:
        save_tensors(tmp / "state.safetensors", tensors)
        write_json(tmp / "state.json", {"step": step, "param_groups": opt["param_groups"], **(extra or {})})


def load_state(folder: str | os.PathLike, modules: dict[str, torch.nn.Module],
               optimizer: torch.optim.Optimizer) -> dict:
    """Restore what :func:`save_state` wrote; returns the JSON part (``step`` and extras).

    Example:
        >>> import tempfile
        >>> model = torch.nn.Linear(2, 2)
        >>> opt = torch.optim.AdamW(model.parameters())
        >>> model(torch.ones(1, 2)).sum().backward()
        >>> opt.step()
        >>> fresh = torch.nn.Linear(2, 2)
        >>> fresh_opt = torch.optim.AdamW(fresh.parameters())
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_state(d, {"model": model}, opt, step=1, extra={"note": "demo"})
        ...     meta = load_state(d, {"model": fresh}, fresh_opt)
        >>> meta["step"], meta["note"], torch.equal(fresh.weight, model.weight)
        (1, 'demo', True)
        >>> torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
        True
    """
    folder = Path(folder)
    tensors, meta = load_tensors(folder / "state.safetensors"), read_json(folder / "state.json")
    for name, m in modules.items():
        m.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optimizer."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite; the run's last saved state (from before) is kept.

    Example:
        >>> check_finite_loss(0.5, step=3, folder="run/state")
        >>> check_finite_loss(float("nan"), step=4, folder="run/state")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        dglm.training.loop.TrainingDiverged: the training loss is nan at step 4: training stopped; nothing was saved. ...
    """


def check_finite_loss(loss: float, step: int, folder: str | os.PathLike | None) -> None:
    """Stop training (raise :class:`TrainingDiverged`) on a non-finite loss, before anything is saved, so
    ``folder`` (the resumable state) keeps its last good step.

    Example:
        >>> check_finite_loss(float("inf"), step=1, folder=None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        dglm.training.loop.TrainingDiverged: the training loss is inf at step 1: training stopped; ...
    """
    if math.isfinite(loss):
        return
    kept = "nothing was saved"
    if folder is not None and (Path(folder) / "state.json").is_file():
        kept = f"the last good state (step {read_json(Path(folder) / 'state.json').get('step')}) is kept in {folder}"
    raise TrainingDiverged(f"the training loss is {loss} at step {step}: training stopped; {kept}. Lower --lr "
                           f"(or --lora-lr), raise --warmup, or check the data for empty or extreme texts")


def process_layout(accelerator) -> dict:
    """How a run is spread over processes, recorded in every line of its ``log.jsonl`` and in its result:
    ``world_size`` (processes), ``ranks`` (their indices; the main process writes for all of them) and
    ``accumulation`` (micro-steps per optimizer step). Each process also logs its rank (INFO).

    Example:
        >>> process_layout(make_accelerator("no"))
        {'world_size': 1, 'ranks': [0], 'accumulation': 1}
    """
    logger.info("process %d of %d (accumulation %d)", accelerator.process_index, accelerator.num_processes,
                accelerator.gradient_accumulation_steps)
    return {"world_size": accelerator.num_processes, "ranks": list(range(accelerator.num_processes)),
            "accumulation": accelerator.gradient_accumulation_steps}


def make_accelerator(mixed_precision: str | None = None):
    """The ``accelerate.Accelerator`` of one training loop.

    ``mixed_precision`` ("no", "bf16", "fp16") wins; None takes it from the accelerate config
    (``accelerate launch --mixed_precision ...`` or ``accelerate config``; "no" without one). Gradient
    accumulation always comes from the accelerate config (``--gradient_accumulation_steps``, default 1). Under
    ``accelerate launch`` / ``torchrun`` with several processes this joins their process group (DDP; gloo on
    CPU). A process that trains twice with different precisions (two stages in one script) gets the second one:
    accelerate's shared state is reset first, the process group is kept.

    Example:
        >>> make_accelerator("no").num_processes, make_accelerator("no").mixed_precision
        (1, 'no')
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if mixed_precision not in (None, "no", "bf16", "fp16"):
        raise ValueError(f"mixed_precision={mixed_precision!r}; accepted: None (the accelerate config), 'no', "
                         f"'bf16', 'fp16'")
    shared = AcceleratorState._shared_state
    if shared and mixed_precision is not None and shared.get("_mixed_precision") != mixed_precision:
        AcceleratorState._reset_state()  # keeps PartialState (the process group)
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())


@dataclass(frozen=True)
class Shard:
    """One process's part of one optimizer step: flat example indices and the seed of its random draws.

    Example:
        >>> shard = Shard(index=np.array([4, 6]), seed=7)
        >>> shard.rng().integers(0, 100, 3).tolist() == np.random.default_rng(7).integers(0, 100, 3).tolist()
        True
        >>> first = torch.rand(2, generator=shard.generator())
        >>> torch.equal(first, torch.rand(2, generator=shard.generator()))
        True
    """

    index: np.ndarray
    seed: int

    def rng(self) -> np.random.Generator:
        """A numpy generator for this shard's draws (prefix dropout, topic switches).

        Example:
            >>> Shard(np.array([0, 1]), seed=3).rng().random() == Shard(np.array([5]), seed=3).rng().random()
            True
        """
        return np.random.default_rng(self.seed)

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """A torch generator on ``device`` for this shard's draws (noise levels and noise).

        Example:
            >>> g = Shard(np.array([0, 1]), seed=3).generator()
            >>> g.initial_seed(), g.device
            (3, device(type='cpu'))
        """
        return torch.Generator(device).manual_seed(self.seed)


class ShardedStream:
    """Which examples each process trains on at each step, identical on every process and after a resume.

    The examples form an endless stream: epoch ``e`` is a permutation of ``range(n)`` seeded by ``(seed, e)``.
    Optimizer step ``s`` trains on the global batch at positions ``[s * B, (s + 1) * B)``, cut into
    ``K = num_processes * accumulation`` shards of ``B / K`` consecutive examples; process ``r`` computes
    shards ``r * accumulation ... (r + 1) * accumulation - 1``, one per micro-step, so within an epoch no two
    processes ever see the same example. Shard ``k`` of step ``s`` draws its noise from its own seed
    ``(seed, s, k)``: a run depends on the global batch and ``K``, not on which process computes which shard
    (two processes train like one process accumulating two micro-batches, on the same examples and noise), and
    resuming at step ``s`` restores every process's data position and random draws with nothing saved but ``s``.

    Example (10 examples, global batch 4, two processes):
        >>> ranks = [ShardedStream(10, 4, seed=0, num_processes=2, process_index=r) for r in (0, 1)]
        >>> [[s.index.tolist() for s in stream.shards(step=0)] for stream in ranks]
        [[[4, 6]], [[2, 7]]]
        >>> ShardedStream(10, 4, seed=0, accumulation=2).shards(step=0)[1].index.tolist()  # one process
        [2, 7]
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, num_processes: int = 1, process_index: int = 0,
                 accumulation: int = 1):
        shards = num_processes * accumulation
        if n < 1:
            raise ValueError(f"the training set is empty (n={n}); prepare some training windows first")
        if batch_size % shards:
            raise ValueError(f"batch_size={batch_size} (the global batch per optimizer step) must be divisible by "
                             f"processes x accumulation steps = {num_processes} x {accumulation}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_shard, self.first, self.accumulation = batch_size // shards, process_index * accumulation, accumulation
        self._perms: dict[int, np.ndarray] = {}

    def _positions(self, start: int, count: int) -> np.ndarray:
        out = []
        while count:
            epoch, offset = divmod(start, self.n)
            if epoch not in self._perms:
                self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
            take = min(count, self.n - offset)
            out.append(self._perms[epoch][offset:offset + take])
            start, count = start + take, count - take
        return np.concatenate(out)

    def shards(self, step: int) -> list[Shard]:
        """This process's shards of optimizer step ``step``, one per accumulation micro-step.

        Example (10 examples, global batch 4 in 2 micro-steps: epoch 0 is steps 0 and 1, then it wraps):
            >>> stream = ShardedStream(10, 4, seed=0, accumulation=2)
            >>> [[len(s.index) for s in stream.shards(step)] for step in range(3)]
            [[2, 2], [2, 2], [2, 2]]
            >>> first = [i for step in (0, 1) for s in stream.shards(step) for i in s.index.tolist()]
            >>> len(set(first))  # no example twice within an epoch
            8
        """
        out = []
        for k in range(self.first, self.first + self.accumulation):
            index = self._positions(step * self.batch_size + k * self.per_shard, self.per_shard)
            seed = int(np.random.SeedSequence([self.seed, step, k]).generate_state(1)[0])
            out.append(Shard(index, seed))
        return out
