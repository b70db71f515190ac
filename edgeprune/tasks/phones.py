"""Per-frame phone recognition for speech encoders: log-mel in, frame logits over the phones plus a CTC blank out,
CTC loss, phone error rate (PER)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.tasks.base import Task

# The 39 phones of the CMU / TIMIT-folded set, without stress; index 0 of the output is the CTC blank.
PHONES = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY",
          "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z",
          "ZH")
BLANK = "<blank>"


@dataclass(frozen=True)
class PhonesTask(Task):
    """y: phone ids [N, L] (1..len(PHONES), -1 pads); meta["frames"]: each utterance's valid input frames."""

    def check_targets(self, y: np.ndarray, n: int, where: str) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 2 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
            raise EdgepruneError(f"{where}: phone targets have shape {list(y.shape)} and dtype {y.dtype}; expected "
                                 f"integer phone ids [{n}, L] padded with -1")
        if y.size and (y.max() > len(PHONES) or ((y < 1) & (y != -1)).any()):
            raise EdgepruneError(f"{where}: phone ids must be 1..{len(PHONES)} (0 is the CTC blank) or -1 padding")
        return y.astype(np.int64)

    def loss_targets(self, inputs: dict[str, np.ndarray], y: np.ndarray, meta: dict[str, np.ndarray]) -> np.ndarray:
        """[N, 3 + L]: valid input frames, input frames, target length, then the padded phone ids."""
        frames = meta.get("frames")
        n_in = self.inputs[0].shape[self.inputs[0].axes.index("T")]
        if frames is None:
            frames = np.full(len(y), n_in)
        lengths = (y >= 0).sum(axis=1)
        return np.concatenate([np.stack([frames, np.full(len(y), n_in), lengths], axis=1), y], axis=1).astype(np.int64)

    def metric_names(self) -> list[str]:
        return ["per"]
