"""The request-centric model contract every tier follows."""

from __future__ import annotations

import torch
from torch import nn

from toolkit.spec.schema import Features

Parts = tuple[torch.Tensor, ...]


class RankingModel(nn.Module):
    """A ranking model that computes the user side once per request and shares it with its candidates.

    Subclasses implement :meth:`user_side` (leading dim = requests), :meth:`candidate_side` (leading
    dim = candidates) and :meth:`head` (both sides aligned per candidate -> logits). The user side is
    broadcast inside the graph: with one request (serving) by ``expand``, with many (training) by
    ``index_select`` on each candidate's request index.

    Inputs are the preprocessed request tensors: normalised dense features and ids already folded into
    each table's vocabulary.
    """

    features: Features
    out: nn.Linear

    def set_prior(self, ctr: float) -> None:
        """Start the output bias at the logit of the training CTR, so training starts calibrated."""
        ctr = min(max(ctr, 1e-6), 1.0 - 1e-6)
        with torch.no_grad():
            self.out.bias.fill_(float(torch.logit(torch.tensor(ctr))))

    def user_side(
        self, user_dense: torch.Tensor, user_sparse: torch.Tensor, user_history: torch.Tensor
    ) -> Parts:
        """Per-request tensors, leading dim B."""
        raise NotImplementedError

    def candidate_side(self, ad_dense: torch.Tensor, ad_sparse: torch.Tensor) -> Parts:
        """Per-candidate tensors, leading dim N."""
        raise NotImplementedError

    def head(self, user: Parts, candidate: Parts) -> torch.Tensor:
        """Logits [N] from the user parts broadcast to N rows and the candidate parts."""
        raise NotImplementedError

    def logits(
        self,
        user_dense: torch.Tensor,
        user_sparse: torch.Tensor,
        user_history: torch.Tensor,
        ad_dense: torch.Tensor,
        ad_sparse: torch.Tensor,
        request_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Click logits [N].

        Args:
            user_dense: FP32 [B, Du].
            user_sparse: INT64 [B, Su].
            user_history: INT64 [B, L].
            ad_dense: FP32 [N, Da].
            ad_sparse: INT64 [N, Sa].
            request_index: INT64 [N], the request of each candidate; omitted means B == 1.
        """
        user = self.user_side(user_dense, user_sparse, user_history)
        candidate = self.candidate_side(ad_dense, ad_sparse)
        return self.head(self.broadcast(user, ad_dense.shape[0], request_index), candidate)

    def broadcast(self, user: Parts, n: int, request_index: torch.Tensor | None) -> Parts:
        """The user parts for ``head``: one row per candidate.

        With one request (``request_index`` None) by ``expand``, which is free; with many by
        ``index_select``. A tier whose ``head`` can use one request's parts as they are (leading
        dim 1) overrides this to skip the expand.
        """
        if request_index is None:
            return tuple(t.expand(n, *t.shape[1:]) for t in user)
        return tuple(t.index_select(0, request_index) for t in user)

    def forward(
        self,
        user_dense: torch.Tensor,
        user_sparse: torch.Tensor,
        user_history: torch.Tensor,
        ad_dense: torch.Tensor,
        ad_sparse: torch.Tensor,
    ) -> torch.Tensor:
        """Click probabilities [N] for one request (user tensors with leading dim 1)."""
        return torch.sigmoid(self.logits(user_dense, user_sparse, user_history, ad_dense, ad_sparse))
