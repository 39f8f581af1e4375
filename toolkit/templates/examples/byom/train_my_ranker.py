"""Train the example model the way a user trains theirs, and save its state_dict.

It learns from the spec's training requests after the toolkit's preprocess step (what the deployed
tier will receive), so run ``toolkit train`` first: it writes the preprocess statistics.

    .venv/bin/python examples/byom/train_my_ranker.py --spec examples/byom/spec.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from toolkit.data.demo import demo_holdout_set, train_chunks
from toolkit.metrics import normalized_entropy
from toolkit.spec import load_spec
from toolkit.train.checkpoints import load_preprocess
from toolkit.train.trainer import prepare

sys.path.insert(0, str(Path(__file__).resolve().parent))
from my_ranker import build  # noqa: E402


def request(data, r: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The model's inputs and labels of request ``r`` of a prepared set."""
    lo, hi = int(data.offsets[r]), int(data.offsets[r + 1])
    user = (data.user_dense[r : r + 1], data.user_sparse[r : r + 1], data.user_history[r : r + 1])
    return (*user, data.ad_dense[lo:hi], data.ad_sparse[lo:hi]), data.labels[lo:hi]


def main() -> None:
    """Train on up to --requests training requests, report held-out NE, save the checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=Path(__file__).with_name("spec.yaml"))
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=None, help="default: the tier's model.checkpoint")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    tier = spec.tier("my_ranker")
    preprocess = load_preprocess(Path(spec.paths.checkpoints), spec)
    torch.manual_seed(spec.seed)
    model = build(**tier.model.kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    seen = 0
    for chunk in train_chunks(spec):
        data = prepare(preprocess, chunk)
        for r in np.random.default_rng(seen).permutation(data.num_requests):
            inputs, labels = request(data, int(r))
            loss = loss_fn(model(*inputs).squeeze(1), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += 1
            if seen >= args.requests:
                break
        if seen >= args.requests:
            break
    holdout = prepare(preprocess, demo_holdout_set(spec))
    model.eval()
    with torch.no_grad():
        scores = np.concatenate(
            [
                torch.sigmoid(model(*request(holdout, r)[0])).squeeze(1).numpy()
                for r in range(holdout.num_requests)
            ]
        )
    labels = holdout.labels.numpy()
    ne = normalized_entropy(labels, scores, float(labels.mean()))
    print(f"trained on {seen} requests; held-out NE {ne:.4f}")
    out = args.out or Path(tier.model.checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(f"checkpoint written to {out}")


if __name__ == "__main__":
    main()
