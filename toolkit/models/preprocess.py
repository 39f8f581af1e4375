"""The preprocess step: feature transforms fitted at training time, exported beside the tiers.

Training applies this very module to the raw generated data and the ensemble's first step runs its
ONNX export, so training and serving cannot drift.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from toolkit.spec.schema import Features

_MIN_STD = 1e-6


class Preprocess(nn.Module):
    """Raw request tensors -> what the tiers take.

    - dense features: ``(x - mean) / std`` with the training statistics;
    - categorical ids: 0 (missing) stays 0, any other raw id folds into rows ``1 .. vocab-1`` of its
      table as ``1 + (id - 1) mod (vocab - 1)``; negative ids count as missing;
    - history: folded like its table, then the newest ``L`` ids kept (a longer history is truncated
      at the old end, a shorter one left-padded with 0).
    """

    def __init__(
        self,
        features: Features,
        user_mean: np.ndarray | None = None,
        user_std: np.ndarray | None = None,
        ad_mean: np.ndarray | None = None,
        ad_std: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.features = features
        self.history_length = features.history.length

        def vec(values: np.ndarray | None, size: int, fill: float) -> torch.Tensor:
            arr = np.full(size, fill, np.float32) if values is None else np.asarray(values, np.float32)
            return torch.from_numpy(arr.reshape(1, size).copy())

        self.register_buffer("user_mean", vec(user_mean, features.user_dense, 0.0))
        self.register_buffer("user_std", vec(user_std, features.user_dense, 1.0).clamp(min=_MIN_STD))
        self.register_buffer("ad_mean", vec(ad_mean, features.ad_dense, 0.0))
        self.register_buffer("ad_std", vec(ad_std, features.ad_dense, 1.0).clamp(min=_MIN_STD))
        self.register_buffer("user_vocab", torch.tensor([[f.vocab for f in features.user_sparse]]))
        self.register_buffer("ad_vocab", torch.tensor([[f.vocab for f in features.ad_sparse]]))
        self.register_buffer("history_vocab", torch.tensor([[features.history_vocab]]))

    @classmethod
    def fit(cls, features: Features, user_dense: np.ndarray, ad_dense: np.ndarray) -> Preprocess:
        """Fit the dense statistics on training data (raw [R, Du] and [T, Da] arrays)."""
        return cls(
            features,
            user_dense.mean(axis=0),
            user_dense.std(axis=0),
            ad_dense.mean(axis=0),
            ad_dense.std(axis=0),
        )

    def statistics(self) -> dict[str, torch.Tensor]:
        """The fitted statistics, as saved in the checkpoint."""
        return {k: getattr(self, k).clone() for k in ("user_mean", "user_std", "ad_mean", "ad_std")}

    @staticmethod
    def fold(ids: torch.Tensor, vocab: torch.Tensor) -> torch.Tensor:
        """Fold raw ids into table rows (0 and negative ids -> 0)."""
        folded = torch.remainder(ids - 1, vocab - 1) + 1
        return torch.where(ids > 0, folded, torch.zeros_like(ids))

    def forward(
        self,
        user_dense: torch.Tensor,
        user_sparse: torch.Tensor,
        user_history: torch.Tensor,
        ad_dense: torch.Tensor,
        ad_sparse: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transform raw request tensors (any leading dims; history of any length) for the tiers."""
        history = self.fold(user_history, self.history_vocab)
        padding = torch.zeros(
            (history.shape[0], self.history_length), dtype=history.dtype, device=history.device
        )
        history = torch.cat([padding, history], dim=1)[:, -self.history_length :]
        return (
            (user_dense - self.user_mean) / self.user_std,
            self.fold(user_sparse, self.user_vocab),
            history,
            (ad_dense - self.ad_mean) / self.ad_std,
            self.fold(ad_sparse, self.ad_vocab),
        )
