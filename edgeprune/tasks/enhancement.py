"""Speech enhancement from two microphones (air conduction, noisy; bone conduction, band-limited but quiet):
log-magnitude STFT frames of both in, a magnitude mask for the noisy STFT out; loss on power-compressed
magnitudes; SI-SDR improvement (the noisy phase is kept), STOI and PESQ where the `pesq` package builds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.tasks.base import Task

SAMPLE_RATE = 16000
N_FFT, HOP = 256, 128
CLIP_SECONDS = 2.0
LOG_FLOOR = 1e-4  # features are log(|STFT| + LOG_FLOOR): about -9.2 for silence


def log_magnitude(spec: np.ndarray) -> np.ndarray:
    """The feature of a complex STFT (or a magnitude)."""
    return np.log(np.abs(spec) + LOG_FLOOR).astype(np.float32)


def magnitude(logmag: np.ndarray) -> np.ndarray:
    """Inverse of `log_magnitude` for magnitudes."""
    return np.maximum(np.exp(logmag) - LOG_FLOOR, 0.0).astype(np.float32)


@dataclass(frozen=True)
class EnhancementTask(Task):
    """y: the clean magnitude [N, F, T]; meta["noisy_wave"], meta["clean_wave"]: [N, samples] for the metrics."""

    def check_targets(self, y: np.ndarray, n: int, where: str) -> np.ndarray:
        y = np.asarray(y)
        shape = self.inputs[0].shape
        if y.shape != (n, *shape) or not np.issubdtype(y.dtype, np.floating):
            raise EdgepruneError(f"{where}: clean magnitudes have shape {list(y.shape)} and dtype {y.dtype}; "
                                 f"expected float [{n}, {', '.join(map(str, shape))}]")
        if not np.isfinite(y).all():
            raise EdgepruneError(f"{where}: clean magnitudes contain NaN or infinite values")
        return y.astype(np.float32, copy=False)

    def loss_targets(self, inputs: dict[str, np.ndarray], y: np.ndarray, meta: dict[str, np.ndarray]) -> np.ndarray:
        """[N, 2, F, T]: the clean magnitude and the noisy magnitude the mask multiplies."""
        return np.stack([y, magnitude(inputs[self.inputs[0].name])], axis=1)

    def evaluate(self, outputs: np.ndarray, y: np.ndarray | None, meta: dict[str, np.ndarray],
                 classes: list[str] | None = None, full: bool = False) -> dict[str, Any]:
        from benchmarks.metrics import enhance

        report = super().evaluate(outputs, y, meta, classes)
        if full and "noisy_wave" in meta and "clean_wave" in meta:
            enhanced = enhance(outputs, meta["noisy_wave"], N_FFT, HOP)
            report.update(perceptual(enhanced, meta["noisy_wave"], meta["clean_wave"]))
        return report

    def metric_names(self) -> list[str]:
        return ["si_sdri", "si_sdr", "stoi", "pesq"]


def perceptual(enhanced: np.ndarray, noisy: np.ndarray, clean: np.ndarray) -> dict[str, Any]:
    """STOI (pystoi) and wide-band PESQ (pesq, when it is installed) of the enhanced and the noisy waves."""
    from pystoi import stoi

    out: dict[str, Any] = {
        "stoi": float(np.mean([stoi(c, e, SAMPLE_RATE) for c, e in zip(clean, enhanced)])),
        "stoi_noisy": float(np.mean([stoi(c, n, SAMPLE_RATE) for c, n in zip(clean, noisy)])),
    }
    try:
        from pesq import pesq
    except ImportError:
        out["pesq"] = None
        return out

    def score(ref, deg):
        try:
            return pesq(SAMPLE_RATE, ref, deg, "wb")
        except Exception:  # noqa: BLE001 - PESQ refuses silent or too-short clips; they are left out
            return np.nan

    p = np.array([score(c, e) for c, e in zip(clean, enhanced)])
    q = np.array([score(c, n) for c, n in zip(clean, noisy)])
    out["pesq"] = float(np.nanmean(p)) if np.isfinite(p).any() else None
    out["pesq_noisy"] = float(np.nanmean(q)) if np.isfinite(q).any() else None
    return out
