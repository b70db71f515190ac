"""Hidden states of a transformer encoder on calibration data, as numpy, with the mask of real frames, and the
layer-to-layer matrices of CoMFLP's layer criterion computed from them (`scoring.layer_similarity`).

Measures are named `svcca-U`, `svcca-T`, `dc`, `cka`, `bi`: the measure, then the pooling mode where it has one
(U: each utterance's mean over its real frames; T: every real frame a sample).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError

MEASURES = ("svcca-U", "svcca-T", "dc", "cka", "bi")


def parse_measure(name: str) -> tuple[str, str | None]:
    """'svcca-U' -> ('svcca', 'U'); 'dc' -> ('dc', None)."""
    if name not in MEASURES:
        raise EdgepruneError(f"layer measure '{name}'; expected one of {', '.join(MEASURES)}")
    measure, _, mode = name.partition("-")
    return measure, mode or None


def encoder_frames(frames: np.ndarray | None, n: int, t_in: int, t_out: int) -> np.ndarray:
    """[n, t_out] bool: the encoder frames computed from real input frames only (the front end maps t_in input
    frames to t_out; an encoder frame is real when every input frame it reads is)."""
    if frames is None:
        return np.ones((n, t_out), dtype=bool)
    valid = (np.asarray(frames) * t_out) // t_in
    return np.arange(t_out)[None, :] < valid[:, None]


def collect_states(model: Any, arrays: list[np.ndarray], frames: np.ndarray | None = None,
                   batch_size: int = 32) -> tuple[list[np.ndarray], np.ndarray]:
    """The N+1 hidden states ([B, T', d] float32 each; index 0 the encoder input, i the output of layer i) of a
    PyTorch encoder in eval mode for inputs laid out for it, and the [B, T'] mask of real frames (`frames`: each
    sample's valid input frames, e.g. the phones data's meta["frames"])."""
    import torch

    from edgeprune.models.encoder import hidden_states

    if len(arrays) != 1:
        raise EdgepruneError(f"layer scoring reads encoders of one input; this model takes {len(arrays)}")
    model.eval()
    chunks: list[list[np.ndarray]] = []
    with torch.no_grad():
        for start in range(0, len(arrays[0]), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(arrays[0][start:start + batch_size]))
            chunks.append([s.numpy().astype(np.float32) for s in hidden_states(model, x)])
    states = [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]
    n, t_out = states[0].shape[:2]
    return states, encoder_frames(frames, n, arrays[0].shape[-1], t_out)


def matrices(states: list[np.ndarray], mask: np.ndarray, measures: tuple[str, ...] = MEASURES,
             threshold: float = 0.99, dc_batch: int = 4) -> dict[str, dict[str, Any]]:
    """Each measure's (N+1) x (N+1) matrix (higher = the states are more alike) with its compute time in seconds."""
    from edgeprune.scoring.layer_similarity import layer_matrix

    out = {}
    for name in measures:
        measure, mode = parse_measure(name)
        start = time.perf_counter()
        m = layer_matrix(states, measure, mask=mask, mode=mode, threshold=threshold,
                         batch=dc_batch if measure == "dc" else None)
        out[name] = {"matrix": np.asarray(m, dtype=np.float64), "seconds": time.perf_counter() - start}
    return out
