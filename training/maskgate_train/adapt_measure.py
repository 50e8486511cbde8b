"""How much ``maskgate model adapt`` pays: one measure-only source stands in for "the site".

For k labelled faces drawn from that source, the device's own ``adapt`` refits the bundle's last
layer (beside the bundle's reference embeddings) and re-chooses the threshold; masked granted and
false grants are then measured on the rest of that source (false grants on the other measure-only
sources' negatives where the site has none), before and after, as the mean of several draws. Nothing
trained here is kept: research sets stand in for a site's own photos only in measurements.
"""

from __future__ import annotations

import numpy as np

from maskgate.vision.adapt import AdaptRefused, adapt, current_head, read_reference
from maskgate.vision.classifier import MaskClassifier, read_metadata, softmax

from .dataset import load_prepared


def measure(work_dir, bundle_dir, *, site: str, counts: list[int], draws: int = 5, masked_only: bool = False) -> dict:
    """{k: {"before"|"after": {"masked_granted", "false_grants"}, "refused": n}} as means over ``draws``."""
    metadata = read_metadata(bundle_dir)
    embedder, head = current_head(bundle_dir)
    reference = read_reference(bundle_dir, metadata.labels, embedder.size)
    heldout = load_prepared(work_dir)["heldout"]
    sources = np.array([r["source"] for r in heldout.rows])
    batch = MaskClassifier(bundle_dir)._batch
    embeddings = np.concatenate([embedder.embed(batch(heldout.images[i:i + 64])) for i in range(0, len(sources), 64)])
    # the model's own label order (LABELS order in every bundle maskgate-train writes)
    classes = heldout.labels
    masked = metadata.labels.index("with_mask")
    at_site = sources == site
    other_negatives = embeddings[~at_site & (classes != masked)]
    results = {}
    for k in counts:
        rows = {"before": [], "after": []}
        refused = 0
        for draw in range(draws):
            rng = np.random.default_rng(draw)
            pool = np.flatnonzero(at_site & (classes == masked)) if masked_only else np.flatnonzero(at_site)
            if len(pool) <= k:
                break
            picked = rng.choice(pool, size=k, replace=False)
            rest = np.setdiff1d(np.flatnonzero(at_site), picked)
            test_x, test_y = embeddings[rest], classes[rest]
            negatives = test_x[test_y != masked] if (test_y != masked).any() else other_negatives
            try:
                result = adapt(head, metadata.labels, metadata.threshold, reference,
                               (embeddings[picked], classes[picked]), seed=draw)
                after = (result.weights, result.bias, result.threshold)
            except AdaptRefused:
                refused += 1
                after = (*head, metadata.threshold)  # refused: the door keeps its model
            for side, (w, b, t) in (("before", (*head, metadata.threshold)), ("after", after)):
                p_pos = softmax(test_x[test_y == masked] @ w.T + b)[:, masked]
                p_neg = softmax(negatives @ w.T + b)[:, masked]
                rows[side].append((float((p_pos >= t).mean()), float((p_neg >= t).mean())))
        if rows["before"]:
            results[k] = {side: {"masked_granted": float(np.mean([r[0] for r in v])),
                                 "false_grants": float(np.mean([r[1] for r in v]))} for side, v in rows.items()}
            results[k].update(refused=refused, draws=len(rows["before"]))
    return results
