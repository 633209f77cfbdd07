"""Training the wound U-Net on synthetic scans (needs the ``[train]`` extra: PyTorch).

Seeded end to end (initial weights, batch order, augmentation): the same arguments,
torch version, thread count and CPU give the same losses. The loss is cross-entropy
plus soft Dice over all classes, so the small tissues stay in view.
"""

from __future__ import annotations

import json
import math
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models._contract import classes
from models._dataset import augment_batch, build_dataset, generator_fingerprint
from models._errors import ModelRecipeError
from models._onnx import PathLike

if TYPE_CHECKING:
    import torch

__all__ = ["QUICK_EPOCHS", "QUICK_SCANS", "load_net", "train", "write_json"]

QUICK_SCANS = 24
QUICK_EPOCHS = 2


def write_json(path: Path, data: Any) -> None:
    """`data` as indented, key-sorted JSON."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean over classes of the batch's soft Dice; keeps the small tissues in view."""
    import torch

    probs = torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)
    onehot = onehot.to(probs.dtype)
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = (2 * inter + 1.0) / (total + 1.0)
    return 1.0 - dice.mean()


def train(
    out_dir: PathLike,
    *,
    seeds_train: range = range(0, 400),
    epochs: int = 30,
    seed: int = 0,
    quick: bool = False,
    frames_choices: Sequence[int] = (1, 3),
    cache_dir: PathLike | None = None,
    batch_size: int = 16,
    lr: float = 3e-3,
    widths: Sequence[int] | None = None,
    augment: bool = True,
    threads: int = 2,
    on_epoch: Callable[[Mapping[str, Any]], None] | None = None,
) -> Path:
    """Train the wound U-Net on synthetic scans; writes `model.pt` and `training_log.json`.

    Seeded end to end (initial weights, batch order, augmentation): the same arguments,
    torch version, thread count and CPU give the same losses.

    Args:
        out_dir: where the checkpoint and the log go (created).
        seeds_train: the training scans' seeds (refused scans are skipped).
        epochs: passes over the training set.
        seed: seeds torch and numpy.
        quick: a smoke run: the first 24 seeds and at most 2 epochs.
        frames_choices: frames per scan, taken in turn by seed (1 = a live frame).
        cache_dir: keep the rendered training set here (see `build_dataset`).
        batch_size: scans per step.
        lr: Adam's initial learning rate (cosine-annealed to zero).
        widths: U-Net channels per level; default `_net.DEFAULT_WIDTHS`.
        augment: dihedral flips/rotations and brightness/tint jitter per batch.
        threads: torch's intra-op threads while training (restored afterwards).
        on_epoch: called with each epoch's log entry (for progress output).

    Returns:
        The checkpoint's path.
    """
    import torch
    import torch.nn.functional as F

    from models._net import DEFAULT_WIDTHS, WoundUNet

    if quick:
        seeds_train = seeds_train[:QUICK_SCANS]
        epochs = min(epochs, QUICK_EPOCHS)
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    x, y = build_dataset(seeds_train, frames_choices=frames_choices, cache_dir=cache_dir)
    data_seconds = time.perf_counter() - started

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        net_widths = tuple(widths) if widths is not None else DEFAULT_WIDTHS
        net = WoundUNet(in_channels=x.shape[1], classes=len(classes()), widths=net_widths)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        steps_per_epoch = math.ceil(len(x) / batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs * steps_per_epoch
        )
        log: dict[str, Any] = {
            "config": {
                "seeds_train": [seeds_train.start, seeds_train.stop, seeds_train.step],
                "frames_choices": list(frames_choices),
                "epochs": epochs,
                "seed": seed,
                "quick": quick,
                "batch_size": batch_size,
                "lr": lr,
                "widths": list(net_widths),
                "augment": augment,
                "threads": threads,
                "loss": "cross-entropy + soft Dice (all classes)",
                "optimizer": "Adam, cosine-annealed per step",
            },
            "scans": len(x),
            "refused": len(seeds_train) - len(x),
            "parameters": sum(p.numel() for p in net.parameters()),
            "data_seconds": round(data_seconds, 2),
            "torch": torch.__version__,
            "generator_fingerprint": generator_fingerprint(),
            "epochs": [],
        }
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            net.train()
            order = rng.permutation(len(x))
            sums = np.zeros(3)
            for step in range(steps_per_epoch):
                idx = np.sort(order[step * batch_size : (step + 1) * batch_size])
                xb, yb = x[idx], y[idx]
                if augment:
                    xb, yb = augment_batch(xb, yb, rng)
                inputs = torch.from_numpy(np.ascontiguousarray(xb))
                target = torch.from_numpy(yb.astype(np.int64))
                logits = net(inputs)
                ce = F.cross_entropy(logits, target)
                dice = _soft_dice_loss(logits, target)
                loss = ce + dice
                optimizer.zero_grad(set_to_none=True)
                torch.autograd.backward(loss)
                optimizer.step()
                schedule.step()
                sums += np.array([loss.item(), ce.item(), dice.item()]) * len(idx)
            entry = {
                "epoch": epoch,
                "loss": float(sums[0] / len(x)),
                "cross_entropy": float(sums[1] / len(x)),
                "dice_loss": float(sums[2] / len(x)),
                "seconds": round(time.perf_counter() - t0, 2),
            }
            log["epochs"].append(entry)
            if on_epoch is not None:
                on_epoch(entry)
        log["train_seconds"] = round(sum(e["seconds"] for e in log["epochs"]), 2)
        checkpoint = out / "model.pt"
        torch.save(
            {
                "format": 1,
                "state_dict": net.state_dict(),
                "widths": list(net_widths),
                "in_channels": int(x.shape[1]),
                "classes": list(classes()),
                "input_size": int(x.shape[-1]),
            },
            checkpoint,
        )
        write_json(out / "training_log.json", log)
    finally:
        torch.set_num_threads(previous_threads)
    return checkpoint


def load_net(checkpoint: PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    import torch

    from models._net import WoundUNet

    try:
        state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
        net = WoundUNet(
            in_channels=int(state["in_channels"]),
            classes=len(state["classes"]),
            widths=state["widths"],
        )
        net.load_state_dict(state["state_dict"])
    except FileNotFoundError:
        raise ModelRecipeError(f"{checkpoint} is missing") from None
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, pickle.PickleError) as exc:
        # torch.load raises the unpickler's errors; a foreign dict lacks our keys.
        raise ModelRecipeError(f"{checkpoint} is not a wound model checkpoint: {exc}") from None
    net.eval()
    return net, state
