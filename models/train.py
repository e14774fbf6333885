"""Training: truncated back-propagation through time over whole streams, split by stream.

Events labelled anomalous (label 1) are fed to the GRU but excluded from the loss, so the model
learns normal behaviour; unlabelled data is used as it is.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.calibration import Calibration
from models.detector import Detector
from models.evaluate import ScoredEvent, evaluate
from models.features import FeatureSpec, latest_before
from models.gru import GRUDetector

__all__ = ["StreamData", "TrainConfig", "train_detector"]

StreamData = Sequence[tuple[int, Mapping[str, float], int | None]]  # (ts ms, values, label)


@dataclass
class TrainConfig:
    hidden: int = 64
    epochs: int = 30
    patience: int = 4
    chunk: int = 64  # time steps per truncated-BPTT window
    batch_streams: int = 64
    lr: float = 3e-3
    # After an epoch with no better validation loss, the learning rate is multiplied by this (1:
    # constant). A step that keeps overshooting the minimum otherwise looks like a plateau.
    lr_decay: float = 1.0
    val_fraction: float = 0.2
    far: float = 1e-4  # per event: with incidents at ~0.3 % of events, 1e-3 gave ~40 % false alerts
    warmup: int = 10
    cooldown: int = 20
    seed: int = 0


@dataclass
class _Arrays:
    x: np.ndarray  # (L, I)
    y: np.ndarray  # (L, T)
    mask: np.ndarray  # (L,) 1 = in the loss


def _targets(spec: FeatureSpec, events: StreamData) -> np.ndarray:
    ts = np.array([e[0] for e in events], dtype=np.int64)
    return spec.targets([e[1] for e in events], spec.gaps(ts, latest_before(ts, -1)))


def _arrays(spec: FeatureSpec, events: StreamData) -> _Arrays:
    ts = np.array([e[0] for e in events], dtype=np.int64)
    y, _, _, _ = spec.normalise_sequence(_targets(spec, events), spec.new_norm())
    mask = np.array([0.0 if e[2] == 1 else 1.0 for e in events])
    return _Arrays(spec.inputs(y, ts).astype(np.float32), y.astype(np.float32), mask.astype(np.float32))


def _batch(streams: list[_Arrays]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    length = max(len(s.x) for s in streams)
    x = np.zeros((len(streams), length, streams[0].x.shape[1]), np.float32)
    y = np.zeros((len(streams), length, streams[0].y.shape[1]), np.float32)
    m = np.zeros((len(streams), length), np.float32)
    for i, s in enumerate(streams):
        x[i, : len(s.x)], y[i, : len(s.y)], m[i, : len(s.mask)] = s.x, s.y, s.mask
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(m)


def _mean_nll(model: GRUDetector, streams: list[_Arrays]) -> float:
    total, count = 0.0, 0.0
    with torch.inference_mode():
        for start in range(0, len(streams), 256):
            x, y, m = _batch(streams[start : start + 256])
            terms, _, _, _ = model.sequence(x, y)
            total += float((terms.sum(-1) * m).sum())
            count += float(m.sum())
    return total / max(count, 1.0)


def _choose_rule(
    detector: Detector, calibration: Calibration, off: Mapping[str, Any], val: Mapping[str, StreamData]
) -> Calibration:
    """Keep a rule (the sustained lift, the per-feature terms) only if it finds incidents better on
    the labelled validation streams (harmonic mean of incident recall and alert precision) than
    the calibration with ``off`` applied; unlabelled data keeps it."""
    if not any(e[2] == 1 for events in val.values() for e in events):
        return calibration
    without = Calibration.from_dict({**calibration.to_dict(), **off})
    if without.to_dict() == calibration.to_dict():  # the rule is off already
        return calibration

    def quality(candidate: Calibration) -> float:
        detector.calibration = candidate
        scored = []
        streams = detector.score_streams([[(e[0], e[1]) for e in events] for events in val.values()])
        for (key, events), results in zip(val.items(), streams, strict=True):
            scored += [
                ScoredEvent(key, e[0], int(e[2] or 0), r.score, r.anomalous, r.alert)
                for e, r in zip(events, results, strict=True)
            ]
        metrics = evaluate(scored)
        # Open incidents count as misses here, as when the shipped models were built.
        recall, precision = metrics["incident_recall_with_open"] or 0.0, metrics["alert_precision"] or 0.0
        return 2 * recall * precision / (recall + precision) if recall + precision else 0.0

    return calibration if quality(calibration) >= quality(without) else without


# A warm-up event must be this much rarer than the false-alarm rate to alert (1e-8 at 1e-4).
# Chosen on a development seed (9): the sensor kind's normal readings in their streams' first
# ten reach 4e-7 (2,987 of them), its incidents there 1e-12 to 1e-174.
_WARMUP_SHARE = 1e-4

# Events this close after a labelled one are not calibration material: the model's state still
# carries the incident (a stuck channel's flag has just dropped), so they score like its tail.
_AFTERMATH = 10


def _settled(events: StreamData) -> list[bool]:
    """Per event: normal, and at least _AFTERMATH events past the stream's last labelled one."""
    out, since = [], _AFTERMATH
    for e in events:
        since = 0 if e[2] == 1 else since + 1
        out.append(since > _AFTERMATH)
    return out


def train_detector(
    spec: FeatureSpec,
    data: Mapping[str, StreamData],
    config: TrainConfig | None = None,
    name: str = "gru",
    version: str = "1",
    on_epoch: Callable[[int, float, float], None] = lambda epoch, train, val: None,
) -> tuple[Detector, dict[str, Any]]:
    """Fit normalisation, train the GRU with early stopping, calibrate on the validation streams."""
    config = config or TrainConfig()
    keys = sorted(k for k, events in data.items() if len(events) >= 2)
    if len(keys) < 2:
        raise ValueError("training needs at least two streams with two or more events each")
    rng = np.random.default_rng(config.seed)
    rng.shuffle(keys)
    n_val = max(1, round(len(keys) * config.val_fraction))
    val_keys, train_keys = keys[:n_val], keys[n_val:]

    spec.fit(np.concatenate([_targets(spec, data[k]) for k in train_keys]))
    train_streams = [_arrays(spec, data[k]) for k in train_keys]
    val_streams = [_arrays(spec, data[k]) for k in val_keys]

    torch.manual_seed(config.seed)
    model = GRUDetector(
        spec.n_inputs, spec.n_targets, hidden=config.hidden, seed=config.seed, log_scale_min=spec.log_scale_floor
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    best_state, best_val, stale, epochs_run = copy.deepcopy(model.state_dict()), math.inf, 0, 0
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(len(train_streams))
        losses = []
        for start in range(0, len(order), config.batch_streams):
            x, y, m = _batch([train_streams[i] for i in order[start : start + config.batch_streams]])
            h = model.initial_state(x.shape[0])
            for t in range(0, x.shape[1], config.chunk):
                xc, yc, mc = (
                    x[:, t : t + config.chunk],
                    y[:, t : t + config.chunk],
                    m[:, t : t + config.chunk],
                )
                if float(mc.sum()) == 0:
                    continue
                terms, _, _, h_last = model.sequence(xc, yc, h)
                loss = (terms.sum(-1) * mc).sum() / mc.sum()
                optimiser.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimiser.step()
                h = h_last.detach()
                losses.append(float(loss.detach()))
        model.eval()
        val_loss = _mean_nll(model, val_streams)
        train_loss = float(np.mean(losses)) if losses else math.nan
        history.append(
            {
                "epoch": epoch,
                "train_nll": round(train_loss, 4),
                "val_nll": round(val_loss, 4),
                "lr": optimiser.param_groups[0]["lr"],
            }
        )
        on_epoch(epoch, train_loss, val_loss)
        epochs_run = epoch
        if val_loss < best_val - 1e-4:
            best_val, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
            for group in optimiser.param_groups:
                group["lr"] *= config.lr_decay
    model.load_state_dict(best_state)
    model.eval()

    # Calibrate on normal validation events past the warm-up.
    placeholder = Calibration.fit([float(i) for i in range(100)], far=config.far)
    detector = Detector(spec, model, placeholder, name, version)
    normal_scores: list[float] = []
    normal_terms: list[np.ndarray] = []
    normal_residuals: list[np.ndarray] = []
    for key in val_keys:
        keep = np.array([i >= config.warmup and ok for i, ok in enumerate(_settled(data[key]))], dtype=bool)
        scored = detector.sequence_scores([(e[0], e[1]) for e in data[key]])
        normal_terms.append(scored.terms[keep])
        normal_scores.extend(scored.score[keep].tolist())
        normal_residuals.append(scored.residual[keep & (scored.residual > 0)])

    # The sustained-lift threshold is a far tail of a per-stream statistic: it takes every normal
    # stream there is (training streams too; a GRU this size barely overfits them).
    normal_streams = [
        detector.sequence_scores([(e[0], e[1]) for e in data[key]]).score.tolist()
        for key in keys
        if not any(e[2] == 1 for e in data[key])
    ]
    calibration = Calibration.fit(normal_scores, config.far, config.warmup, config.cooldown, streams=normal_streams)
    by_term = np.concatenate(normal_terms).astype(np.float64)
    calibration.terms = [Calibration.fit(list(by_term[:, j]), config.far) for j in range(by_term.shape[1])]
    val = {k: data[k] for k in val_keys}
    calibration = _choose_rule(detector, calibration, {"terms": None}, val)
    # The residual rule is the spec's to switch on or off, as the stuck and level rules are:
    # calibration only sets its threshold. (Judged on the validation streams, it went on and off
    # between equally good models; on five held-out and development files it gained 0.3-0.9
    # points of incident recall each time.)
    residuals = np.concatenate(normal_residuals)
    if spec.residual_rule and residuals.size >= 10:
        calibration.residual = Calibration.fit(residuals.tolist(), config.far)
    detector.calibration = _choose_rule(detector, calibration, {"sustain_h": None}, val)
    # A kind scaled by its training data judges a young stream's readings against that scale, so
    # a sure event may alert in the warm-up, if that finds incidents better on the validation
    # streams. A kind scaled by each stream's own statistics may not: those come from a handful of
    # readings, and normal young readings reach chances of 1e-12 (MEASUREMENTS.md).
    if not spec.stream_norm:
        detector.calibration.warmup_far = config.far * _WARMUP_SHARE
        detector.calibration = _choose_rule(detector, detector.calibration, {"warmup_far": 0.0}, val)
    report = {
        "epochs": epochs_run,
        "best_val_nll": round(best_val, 4),
        "history": history,
        "train_streams": len(train_keys),
        "val_streams": len(val_keys),
        "val_keys": sorted(val_keys),
        "events": int(sum(len(data[k]) for k in keys)),
    }
    return detector, report
