"""How familiar an image looks to a trained classifier: the score ``--reject`` uses to say "none of these".

Logits alone cannot tell a photo from another world from a hard one: a fine-tuned head gives aerial photos logits
as large as flowers' (a score on the logits, such as their energy, accepts most of them). The pooled features
can: an aerial photo lies far from every class in feature space. The score is minus the Mahalanobis distance
(Lee et al., 2018) of the L2-normalised pooled features to the nearest class mean, with one covariance shared by
the classes and written as probabilistic PCA (Tipping and Bishop, 1999): its ``dims`` largest directions
exactly, the rest as one residual variance. That keeps what is stored small (a few hundred kB beside the
network) and the estimate sound with fewer images than feature dimensions. Measured against energy, max-logit,
cosine, kNN, ViM and others on held-out classes and another data set: docs/benchmarks.md.

``Scored`` is the network with this score as a second output: exported files carry it as the output
``familiarity``, so every runtime gets it without imgcls code around the file.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..record.card import LOGITS_ONLY, PROBABILITIES, WITH_FAMILIARITY
from .parts import head, pooled_features

DIMS = 64            # principal directions kept exactly; the rest share one variance
STAT_NAMES = ("means", "basis", "weights", "residual_precision")


def unit(x):
    """Rows scaled to length 1 (numpy or torch)."""
    if isinstance(x, torch.Tensor):
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def fit_familiarity(features, labels, classes: int, dims: int = DIMS) -> dict[str, torch.Tensor]:
    """The score's statistics from the pooled features and labels of the training images (pure).

    On the normalised features: class means, then the shared covariance about the class means as probabilistic
    PCA: the ``dims`` largest eigenvectors with their variances (at most half the directions these images span),
    and the mean variance of the other directions they span."""
    x = unit(np.asarray(features, dtype=np.float64))
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or len(x) < 2 or len(x) != len(y):
        raise ValueError("fit_familiarity needs two or more feature rows with one label each")
    overall = x.mean(0)
    means = np.stack([x[y == c].mean(0) if (y == c).any() else overall for c in range(classes)])
    centred = x - means[y]
    variances, vectors = np.linalg.eigh(centred.T @ centred / len(x))   # ascending
    variances, vectors = variances[::-1], vectors[:, ::-1]
    # fewer images than dimensions leave most directions with no variance seen: only the first ``rank`` count
    rank = int(max(2, min(x.shape[1], len(x) - len(np.unique(y)))))
    k = int(max(1, min(dims, rank // 2)))
    floor = max(float(variances.sum()) / x.shape[1], 1e-12) * 1e-3
    residual = max(float(variances[k:rank].mean()), floor)
    top, basis = np.maximum(variances[:k], residual), vectors[:, :k]
    stats = {"means": means, "basis": basis, "weights": 1.0 / top - 1.0 / residual,
             "residual_precision": np.array([1.0 / residual])}
    return {name: torch.tensor(np.ascontiguousarray(v), dtype=torch.float32) for name, v in stats.items()}


class Familiarity(nn.Module):
    """Pooled features in, one familiarity score per image out: minus the distance to the nearest class.

    A weak network (random or barely trained) gives every image nearly the same normalised features, and a tiny
    residual variance. Expanded as |x|^2 - 2 x.m + |m|^2, and with the kept directions subtracted from the whole,
    the distance is then a small difference of terms orders of magnitude larger, which float32 turns into noise
    (ONNX Runtime and PyTorch disagree by more than the score varies between images). So the features are taken
    about the centre of the classes, the nearest class is chosen on that expansion (a near tie it may break either
    way changes the distance little), and its distance is computed again from the difference itself, split into
    the kept directions and the rest: a sum of positive terms.
    """

    def __init__(self, stats: dict[str, torch.Tensor]):
        super().__init__()
        for name in STAT_NAMES:
            self.register_buffer(name, torch.as_tensor(stats[name], dtype=torch.float32).clone())
        means, basis = self.means.double(), self.basis.double()
        centre = means.mean(0)
        offsets = means - centre
        along = offsets @ basis
        derived = {"centre": centre, "offsets": offsets, "projected_means": along,
                   "across_means": offsets - along @ basis.T,   # each class's offset outside the kept directions
                   "precisions": self.weights.double() + self.residual_precision.double()}  # 1 / kept variances
        for name, value in derived.items():
            self.register_buffer(name, value.float())

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance of the normalised features to the nearest class mean, (N,). Always in
        float32, also under mixed precision: nearby images' features differ in their last digits."""
        with torch.autocast(features.device.type, enabled=False):
            x = unit(features.float()) - self.centre
            along = x @ self.basis
            across = x - along @ self.basis.T
            squared = (across * across).sum(1, keepdim=True) - 2 * across @ self.across_means.T \
                + (self.across_means * self.across_means).sum(1)
            apart = along.unsqueeze(1) - self.projected_means.unsqueeze(0)    # (N, classes, dims)
            nearest = (self.residual_precision * squared + (apart * apart) @ self.precisions).argmin(1)
            return self._distance_to(x - self.offsets[nearest])

    def _distance_to(self, offset: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance of each row of ``offset`` (a feature less its class mean) from zero."""
        along = offset @ self.basis
        across = offset - along @ self.basis.T
        return self.residual_precision * (across * across).sum(1) + (along * along) @ self.precisions

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return -self.distance(features).sqrt()


class Scored(nn.Module):
    """A classifier with two outputs: its logits, and how familiar each image looks (``Familiarity``)."""

    def __init__(self, model: nn.Module, familiarity: Familiarity):
        super().__init__()
        self.model, self.familiarity = model, familiarity

    def forward(self, images):
        features = pooled_features(self.model, images)
        return head(self.model)(features), self.familiarity(features)


class WithProbabilities(nn.Module):
    """A multi-label network as it is exported: its outputs (logits first), then each label's sigmoid probability,
    so that the user of a bare exported file reads probabilities. imgcls's own readers keep reading the logits and
    apply metrics.sigmoid once (deploy/formats.readable)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        out = self.model(images)
        outputs = out if isinstance(out, tuple) else (out,)
        return (*outputs, torch.sigmoid(outputs[0]))


def outputs_of(model: nn.Module | None) -> tuple[str, ...]:
    """The names of a network's outputs in exported files: both for ``Scored``, else the logits alone; a
    ``WithProbabilities`` network's, then the probabilities."""
    if isinstance(model, WithProbabilities):
        return outputs_of(model.model) + (PROBABILITIES,)
    return WITH_FAMILIARITY if isinstance(model, Scored) else LOGITS_ONLY


class FeaturesAndLogits(nn.Module):
    """Images in, pooled features and logits side by side out (one array: runners handle one output best)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        features = pooled_features(self.model, images)
        return torch.cat([features, head(self.model)(features)], 1)


def head_reproduces_logits(model: nn.Module, input_size) -> bool:
    """Whether the classifier applied to the pooled features gives the network's own logits (true for timm's
    CNNs and imgcls's models; a network whose head does more is left with the energy score)."""
    probe = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            model.eval()
            split = head(model)(pooled_features(model, probe))
            whole = model(probe)
    except Exception:  # noqa: BLE001 - no forward_head/get_classifier, or a head that is not a module
        return False
    return split.shape == whole.shape and bool(torch.allclose(split, whole, rtol=1e-4, atol=1e-4))
