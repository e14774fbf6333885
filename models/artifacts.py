"""Model directories: ``weights.pt`` (a plain state dict, loaded with ``weights_only=True`` so no
pickle from a file is ever executed), the same weights as ``weights.npz`` (numpy arrays, loaded
with ``allow_pickle=False``: what a scoring-only process reads, without importing torch) and
``card.json`` (spec, normalisation, calibration, training data digest, validation metrics,
version)."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from models.calibration import Calibration
from models.detector import Detector
from models.features import FeatureSpec
from models.scorer import GRUScorer

__all__ = ["CARD_FORMAT", "ModelError", "load_detector", "save_detector", "shipped_model_dir"]

CARD_FORMAT = 1
_SHIPPED = Path(__file__).parent / "shipped"


class ModelError(ValueError):
    """A model directory is missing, corrupt, or of another kind."""


def shipped_model_dir(kind: str) -> Path:
    """The small pre-trained default of a kind, shipped inside the package."""
    return _SHIPPED / kind


def save_detector(detector: Detector, directory: Path, extra: dict[str, Any] | None = None) -> None:
    import torch

    if detector.model is None:
        raise ModelError("a scoring-only detector (loaded without torch) cannot be saved")
    directory.mkdir(parents=True, exist_ok=True)
    state = detector.model.state_dict()
    torch.save(state, directory / "weights.pt")
    np.savez(directory / "weights.npz", **{name: t.detach().numpy() for name, t in state.items()})
    card = {
        "format": CARD_FORMAT,
        "name": detector.name,
        "version": detector.version,
        "kind": detector.spec.kind,
        "hidden": detector.model.hidden,
        "seed": detector.model.seed,
        "spec": detector.spec.to_dict(),
        "calibration": detector.calibration.to_dict(),
        **(extra or {}),
    }
    (directory / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def load_detector(directory: Path, kind: str | None = None, scoring_only: bool = False) -> Detector:
    """Load a model directory; ``kind`` (when given) must match the card's. ``scoring_only`` reads
    ``weights.npz`` without importing torch: the detector scores but cannot be trained or saved
    (a directory saved before there was a ``weights.npz`` loads through torch instead)."""
    card_path = directory / "card.json"
    scoring_only = scoring_only and (directory / "weights.npz").is_file()
    weights_path = directory / ("weights.npz" if scoring_only else "weights.pt")
    if not directory.is_dir():
        raise ModelError(f"model directory {directory} does not exist")
    if not card_path.is_file() or not weights_path.is_file():
        raise ModelError(f"{directory} is not a model directory (needs card.json and {weights_path.name})")
    try:
        card = json.loads(card_path.read_text())
        if card.get("format") != CARD_FORMAT:
            raise ModelError(f"{card_path}: unsupported card format {card.get('format')!r}")
        if kind is not None and card["kind"] != kind:
            raise ModelError(f"{directory} is a {card['kind']} model, not {kind}")
        spec = FeatureSpec.from_dict(card["spec"])
        calibration = Calibration.from_dict(card["calibration"])
        name, version = str(card["name"]), str(card["version"])
        if scoring_only:
            with np.load(weights_path, allow_pickle=False) as arrays:
                weights = {key: arrays[key] for key in arrays.files}
            scorer = GRUScorer(weights, spec.n_targets, spec.log_scale_floor)
            if scorer.hidden != int(card["hidden"]):
                raise ModelError(f"{weights_path}: hidden size {scorer.hidden}, the card says {card['hidden']}")
            return Detector(spec, None, calibration, name=name, version=version, scorer=scorer)
        import torch

        from models.gru import GRUDetector

        model = GRUDetector(
            spec.n_inputs,
            spec.n_targets,
            hidden=int(card["hidden"]),
            seed=int(card.get("seed", 0)),
            log_scale_min=spec.log_scale_floor,
        )
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except ModelError:
        raise
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        RuntimeError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
    ) as exc:
        raise ModelError(f"{directory} is corrupt: {type(exc).__name__}: {str(exc)[:200]}") from exc
    return Detector(spec, model, calibration, name=name, version=version)
