"""Task metrics with numpy only: edgeprune's training and export use these, and so does the suite on a board.

- classification: accuracy, log-loss, confusion matrix;
- phones: greedy CTC decoding and the phone error rate (edits over reference phones, corpus level);
- enhancement: the STFT pair that builds the features and rebuilds waves, SI-SDR and its improvement over the
  noisy input (a mask is applied to the noisy magnitude and the noisy phase is kept).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

# --- classification ----------------------------------------------------------------------------------------------


def log_loss(probs: np.ndarray, y: np.ndarray, eps: float = 1e-7) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped and renormalised, as sklearn)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    p /= p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def classification(probs: np.ndarray, y: np.ndarray) -> Dict[str, float]:
    """Accuracy and log-loss of class probabilities [N, K] against labels [N]."""
    probs, y = np.asarray(probs), np.asarray(y).astype(np.int64)
    return {"accuracy": float((probs.argmax(axis=1) == y).mean()), "log_loss": log_loss(probs, y)}


# --- phones (CTC) --------------------------------------------------------------------------------------------------


def edit_distance(ref: Sequence[int], hyp: Sequence[int]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    prev = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, start=1):
        cur = np.empty_like(prev)
        cur[0] = i
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return int(prev[-1])


def ctc_greedy(logits: np.ndarray, length: Optional[int] = None, blank: int = 0) -> List[int]:
    """Best path of frame logits [T, K]: argmax per frame, repeats merged, blanks removed."""
    best = np.asarray(logits)[: length if length is not None else len(logits)].argmax(axis=1)
    out, last = [], None
    for k in best:
        if k != last and k != blank:
            out.append(int(k))
        last = k
    return out


def output_lengths(input_frames: np.ndarray, n_in: int, n_out: int) -> np.ndarray:
    """Valid output frames of a model that maps n_in input frames to n_out (e.g. stacking two frames halves it)."""
    return np.minimum(n_out, np.ceil(np.asarray(input_frames) * n_out / n_in)).astype(np.int64)


def phone_error_rate(frame_logits: np.ndarray, targets: np.ndarray, lengths: Optional[np.ndarray] = None,
                     blank: int = 0) -> Dict[str, float]:
    """PER of frame logits [N, T, K] against padded phone ids [N, L] (-1 pads): total edits / total reference
    phones. `lengths` gives each utterance's valid output frames (default: all)."""
    edits = phones = 0
    for i in range(len(frame_logits)):
        ref = [int(p) for p in targets[i] if p >= 0]
        hyp = ctc_greedy(frame_logits[i], None if lengths is None else int(lengths[i]), blank)
        edits += edit_distance(ref, hyp)
        phones += len(ref)
    return {"per": edits / max(phones, 1), "edits": int(edits), "phones": int(phones)}


def frame_agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """Share of frames whose argmax over the last axis agrees."""
    return float((np.asarray(ref).argmax(-1) == np.asarray(got).argmax(-1)).mean())


# --- enhancement ---------------------------------------------------------------------------------------------------


def _window(n_fft: int) -> np.ndarray:
    return np.hanning(n_fft + 1)[:-1]  # periodic Hann: overlap-adds to a constant at hop n_fft / 2


def stft(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Complex STFT [..., n_fft // 2 + 1, frames] of waves [..., samples]: periodic Hann window, frames centred
    (reflect padding), so frames = 1 + samples // hop."""
    wave = np.asarray(wave, dtype=np.float64)
    pad = [(0, 0)] * (wave.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    padded = np.pad(wave, pad, mode="reflect")
    n = 1 + (padded.shape[-1] - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    frames = padded[..., idx] * _window(n_fft)
    return np.swapaxes(np.fft.rfft(frames, axis=-1), -1, -2)


def istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Inverse of `stft` (weighted overlap-add), cropped to `length` samples."""
    spec = np.asarray(spec)
    frames = np.fft.irfft(np.swapaxes(spec, -1, -2), n=n_fft, axis=-1) * _window(n_fft)
    n = frames.shape[-2]
    total = n_fft + hop * (n - 1)
    out = np.zeros(spec.shape[:-2] + (total,))
    norm = np.zeros(total)
    w2 = _window(n_fft) ** 2
    for i in range(n):
        out[..., i * hop : i * hop + n_fft] += frames[..., i, :]
        norm[i * hop : i * hop + n_fft] += w2
    out /= np.where(norm > 1e-8, norm, 1.0)
    start = n_fft // 2
    return out[..., start : start + length]


def si_sdr(estimate: np.ndarray, reference: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Scale-invariant SDR in dB per row of [..., samples] (zero-mean, as Le Roux et al. 2019)."""
    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    est = est - est.mean(axis=-1, keepdims=True)
    ref = ref - ref.mean(axis=-1, keepdims=True)
    alpha = (est * ref).sum(-1, keepdims=True) / ((ref * ref).sum(-1, keepdims=True) + eps)
    target = alpha * ref
    noise = est - target
    return 10 * np.log10(((target * target).sum(-1) + eps) / ((noise * noise).sum(-1) + eps))


def enhance(masks: np.ndarray, noisy_waves: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Waves [N, samples] from magnitude masks [N, F, T] applied to the noisy STFT (noisy phase kept)."""
    spec = stft(noisy_waves, n_fft, hop)
    if spec.shape != masks.shape:
        raise ValueError(f"masks {list(masks.shape)} do not match the noisy STFT {list(spec.shape)}")
    return istft(spec * masks, n_fft, hop, noisy_waves.shape[-1])


def si_sdr_improvement(masks: np.ndarray, noisy_waves: np.ndarray, clean_waves: np.ndarray, n_fft: int,
                       hop: int) -> Dict[str, Any]:
    """Mean SI-SDR of the enhanced waves, of the noisy input, and their difference (dB)."""
    enhanced = enhance(masks, noisy_waves, n_fft, hop)
    out = si_sdr(enhanced, clean_waves)
    base = si_sdr(noisy_waves, clean_waves)
    return {"si_sdr": float(out.mean()), "si_sdr_noisy": float(base.mean()), "si_sdri": float((out - base).mean())}


def output_snr_db(reference: np.ndarray, got: np.ndarray) -> float:
    """How closely `got` follows `reference`: 10 log10(sum ref^2 / sum (ref - got)^2), inf when equal."""
    ref, got = np.asarray(reference, np.float64), np.asarray(got, np.float64)
    err = float(((ref - got) ** 2).sum())
    sig = float((ref * ref).sum())
    if err == 0:
        return float("inf")
    return float(10 * np.log10(max(sig, 1e-300) / err))


# --- by task description (the "task" section of an export manifest) ------------------------------------------------

TASK_KINDS = ("classification", "phones", "enhancement")


def task_metrics(task: Dict[str, Any], outputs: np.ndarray, y: Optional[np.ndarray],
                 meta: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """The task's headline metrics for model outputs on a data set.

    task: {"kind": classification | phones | enhancement, ...}; phones also needs "blank" and "frames" (input
    frames per sample; meta["frames"] holds each utterance's valid frames), enhancement "n_fft" and "hop" (meta holds
    "noisy_wave" and "clean_wave"). Returns {} when the labels or waves it needs are missing.
    """
    kind = task.get("kind")
    outputs = np.asarray(outputs)
    if not np.isfinite(outputs).all():
        raise ValueError("model outputs contain NaN or infinite values")
    if kind == "classification":
        return {} if y is None else classification(outputs, y)
    if kind == "phones":
        if y is None:
            return {}
        lengths = None
        if "frames" in meta:
            lengths = output_lengths(meta["frames"], int(task["frames"]), outputs.shape[1])
        return phone_error_rate(outputs, y, lengths, int(task.get("blank", 0)))
    if kind == "enhancement":
        if "noisy_wave" not in meta or "clean_wave" not in meta:
            return {}
        return si_sdr_improvement(outputs, meta["noisy_wave"], meta["clean_wave"], int(task["n_fft"]), int(task["hop"]))
    raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(TASK_KINDS)}")
