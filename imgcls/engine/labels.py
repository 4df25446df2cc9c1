"""``imgcls check --labels``: which images are probably labelled wrong, which look like no class at all, and which
are the same picture in other clothes.

Every image gets out-of-sample class probabilities from K-fold cross-validation of a linear head on its cached
backbone features (the feature cache training uses, so this costs seconds once they are there). cleanlab ranks
likely label errors from those probabilities (confident learning, Northcutt et al., 2021). The same features give
outliers (far from their nearest neighbours, whatever the class) and semantic near-duplicates (almost the same
features, beyond what the perceptual hash catches).

``imgcls.check`` (engine/check.py) adds this review to the data check of ``data/check.py`` when asked.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from ..data.check import (
    FileRecord,
    Finding,
    connected_groups,
)
from ..errors import ImgclsError

log = logging.getLogger("imgcls")

FOLDS = 5                   # K of the K-fold cross-validation
HEAD_C = 2.0                # inverse L2 strength of the logistic-regression head on L2-normalised features
OUTLIER_NEIGHBOURS = 5      # an image's outlier score: mean cosine distance to its k nearest neighbours
OUTLIER_FENCE = 3.0         # ... flagged beyond Q3 + 3 x IQR of all scores (Tukey's "far out")
SEMANTIC_SIMILARITY = 0.95  # cosine similarity of pooled features at which two images count as the same picture
SIMILAR_SHOWN = 3           # images of the suggested class shown beside each likely label error


def require_cleanlab():
    try:
        import cleanlab.filter
        import cleanlab.rank  # noqa: F401
    except ImportError:
        raise ImgclsError('--labels needs the cleanlab package: pip install "imgcls[labels]"') from None
    return cleanlab


# ---------------------------------------------------------------------------------------- pure functions

def normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity becomes a dot product)."""
    features = np.asarray(features, dtype=np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def out_of_sample_probs(features: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int = FOLDS,
                        seed: int = 0) -> np.ndarray:
    """Class probabilities of every row from a head that never saw it: stratified K-fold cross-validation of a
    multinomial logistic regression (a linear head) on L2-normalised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes)
    k = int(min(folds, counts[counts > 0].min()))
    if k < 2:
        raise ValueError("every class needs at least 2 images")
    x = normalise(features)
    probs = np.zeros((len(labels), num_classes))
    for train, held_out in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, labels):
        head = LogisticRegression(C=HEAD_C, max_iter=2000)
        head.fit(x[train], labels[train])
        probs[np.ix_(held_out, head.classes_)] = head.predict_proba(x[held_out])
    return probs


def nearest_similarities(x: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices) of each row's k most similar other rows, most similar first (x normalised)."""
    n = len(x)
    k = max(1, min(k, n - 1))
    sims, idx = np.zeros((n, k), np.float32), np.zeros((n, k), np.int64)
    for start in range(0, n, block):
        s = x[start:start + block] @ x.T
        s[np.arange(len(s)), np.arange(start, start + len(s))] = -np.inf  # not itself
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        top_s = np.take_along_axis(s, top, axis=1)
        order = np.argsort(-top_s, axis=1)
        idx[start:start + block] = np.take_along_axis(top, order, axis=1)
        sims[start:start + block] = np.take_along_axis(top_s, order, axis=1)
    return sims, idx


def outlier_scores(x: np.ndarray, k: int = OUTLIER_NEIGHBOURS) -> np.ndarray:
    """Mean cosine distance to the k nearest neighbours (any class): high for an image unlike all the others."""
    sims, _ = nearest_similarities(x, k)
    return 1.0 - sims.mean(axis=1)


def far_out(scores: np.ndarray, fence: float = OUTLIER_FENCE) -> np.ndarray:
    """Indices of scores beyond Q3 + fence x IQR, highest first."""
    q1, q3 = np.percentile(scores, [25, 75])
    flagged = np.flatnonzero(scores > q3 + fence * (q3 - q1))
    return flagged[np.argsort(-scores[flagged], kind="stable")]


def semantic_pairs(x: np.ndarray, threshold: float = SEMANTIC_SIMILARITY, block: int = 1024) -> list[tuple[int, int]]:
    """(i, j), i < j, whose features have cosine similarity of at least ``threshold``."""
    pairs = []
    for start in range(0, len(x), block):
        s = x[start:start + block] @ x.T
        r, c = np.nonzero(s >= threshold)
        r = r + start
        keep = c > r
        pairs += list(zip(r[keep].tolist(), c[keep].tolist()))
    return pairs


def most_similar_of_class(x: np.ndarray, i: int, members: np.ndarray, n: int = SIMILAR_SHOWN) -> list[int]:
    """The ``n`` rows of ``members`` (indices) most similar to row i, itself excluded."""
    members = members[members != i]
    if not len(members):
        return []
    s = x[members] @ x[i]
    return members[np.argsort(-s, kind="stable")[:n]].tolist()


def rank_label_issues(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score that the given label is wrong, cleanlab's flag) for every row. The score is 1 minus cleanlab's
    label-quality score (self-confidence: the out-of-sample probability of the given label)."""
    cleanlab = require_cleanlab()
    quality = cleanlab.rank.get_label_quality_scores(labels, probs)
    flagged = cleanlab.filter.find_label_issues(labels, probs, n_jobs=1)
    return 1.0 - quality, np.asarray(flagged, dtype=bool)


def suggested_classes(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The most likely class other than the given one."""
    masked = probs.copy()
    masked[np.arange(len(labels)), labels] = -1.0
    return masked.argmax(axis=1)


def score_labels(x: np.ndarray, labels: np.ndarray, num_classes: int):
    """(out-of-sample probabilities, score that the given label is wrong, cleanlab's flag, suggested class) of
    every row of normalised features ``x``: the one label review that `check --labels` and train both run."""
    probs = out_of_sample_probs(x, labels, num_classes)
    score, flagged = rank_label_issues(labels, probs)
    return probs, score, flagged, suggested_classes(labels, probs)


# ---------------------------------------------------------------------------------------- the review

def review(records: list[FileRecord], class_names: list[str], root: Path, *, model_name: str, imgsz: int = 224,
           device: str = "auto", runtime: str = "auto", known_groups: list[set[str]] = (), progress: bool = False
           ) -> tuple[list[Finding], dict]:
    """Findings (label_issue, outlier, semantic_duplicate) and the check.json "labels" section for the readable
    images among ``records``; ``known_groups`` are copies the perceptual hash already reported."""
    t0 = time.time()
    usable = [r for r in records if r.error is None]
    features, kept = _features(usable, root, model_name, imgsz, device, runtime, progress)
    usable = [usable[i] for i in kept]
    index = {name: i for i, name in enumerate(class_names)}
    if any(r.class_name not in index for r in usable):  # several labels (joined by ";") or none: multi-label data
        return review_multi_label(usable, normalise(features), class_names, model_name, t0, time.time() - t0)
    labels = np.array([index[r.class_name] for r in usable], dtype=np.int64)
    small = [class_names[c] for c in range(len(class_names)) if 0 < (labels == c).sum() < 2]
    if small or len(set(labels.tolist())) < 2:
        raise ImgclsError(f"--labels: class(es) {small or class_names} need at least 2 readable images each for "
                          "cross-validation; add images or leave --labels out")
    cached = time.time() - t0
    x = normalise(features)
    probs, score, flagged, suggested = score_labels(x, labels, len(class_names))
    outliers = outlier_scores(x)
    order = np.argsort(-score, kind="stable")
    rels = [r.rel for r in usable]
    findings = _label_findings(order, flagged, x, labels, suggested, probs, score, rels, class_names)
    findings += _outlier_findings(far_out(outliers), outliers, rels, labels, class_names)
    findings += _semantic_findings(x, usable, known_groups)
    ranked = [{"path": rels[i], "given": class_names[labels[i]], "suggested": class_names[suggested[i]],
               "score": round(float(score[i]), 6), "flagged": bool(flagged[i]),
               "outlier": round(float(outliers[i]), 6)} for i in order]
    section = {"model": model_name, "folds": int(min(FOLDS, np.bincount(labels).min())),
               "images": len(usable), "label_issues": int(flagged.sum()),
               "outliers": sum(1 for f in findings if f.kind == "outlier"),
               "semantic_duplicates": sum(1 for f in findings if f.kind == "semantic_duplicate"),
               "cross_validated_accuracy": round(float((probs.argmax(axis=1) == labels).mean()), 6),
               "feature_seconds": round(cached, 2), "seconds": round(time.time() - t0, 2), "ranked": ranked}
    return findings, section


def multi_label_out_of_sample_probs(x: np.ndarray, targets: np.ndarray, *, folds: int = FOLDS, seed: int = 0
                                    ) -> np.ndarray:
    """Each label's probability for every row from heads that never saw it: K-fold cross-validation of one logistic
    regression per label (one-vs-rest) on L2-normalised features; a label constant in a fold's training rows gets
    that constant."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    probs = np.zeros(targets.shape)
    for train, held_out in KFold(min(folds, len(x)), shuffle=True, random_state=seed).split(x):
        for c in range(targets.shape[1]):
            seen = targets[train, c]
            if seen.min() == seen.max():
                probs[held_out, c] = seen[0]
                continue
            head = LogisticRegression(C=HEAD_C, max_iter=2000).fit(x[train], seen)
            probs[held_out, c] = head.predict_proba(x[held_out])[:, 1]
    return probs


def review_multi_label(usable: list[FileRecord], x: np.ndarray, class_names: list[str], model_name: str,
                       t0: float, cached: float) -> tuple[list[Finding], dict]:
    """``review`` for multi-label data (each record's labels joined by ";"): cleanlab's multi-label ranking
    (cleanlab.multilabel_classification) of cross-validated per-label probabilities."""
    from cleanlab.multilabel_classification import filter as multilabel_filter
    from cleanlab.multilabel_classification import rank as multilabel_rank

    from ..data.folders import multi_hot

    index = {name: i for i, name in enumerate(class_names)}
    given = [[index[n] for n in r.class_name.split(";") if n] for r in usable]
    targets = multi_hot([tuple(g) for g in given], len(class_names))
    rare = [class_names[c] for c in range(len(class_names)) if targets[:, c].sum() < 2]
    if rare or len(usable) < 4:
        raise ImgclsError(f"--labels: label(s) {rare or class_names} need at least 2 readable images each for "
                          "cross-validation; add images or leave --labels out")
    probs = multi_label_out_of_sample_probs(x, targets)
    score = 1.0 - multilabel_rank.get_label_quality_scores(given, probs)
    flagged = multilabel_filter.find_label_issues(given, probs, n_jobs=1)
    order = np.argsort(-score, kind="stable")
    joined = (lambda row: ";".join(class_names[c] for c in np.flatnonzero(row)) or "(none)")
    findings = [Finding("warning", "label_issue", f"{usable[i].rel}: labelled {joined(targets[i])}, looks like "
                        f"{joined(probs[i] >= 0.5)}", [usable[i].rel],
                        {"given": joined(targets[i]), "suggested": joined(probs[i] >= 0.5),
                         "score": round(float(score[i]), 6), "similar": []}) for i in order if flagged[i]]
    ranked = [{"path": usable[i].rel, "given": joined(targets[i]), "suggested": joined(probs[i] >= 0.5),
               "score": round(float(score[i]), 6), "flagged": bool(flagged[i])} for i in order]
    section = {"model": model_name, "multi_label": True, "folds": int(min(FOLDS, len(usable))),
               "images": len(usable), "label_issues": int(flagged.sum()), "outliers": 0, "semantic_duplicates": 0,
               "cross_validated_mAP": _mean_ap(targets, probs), "feature_seconds": round(cached, 2),
               "seconds": round(time.time() - t0, 2), "ranked": ranked}
    return findings, section


def _mean_ap(targets: np.ndarray, probs: np.ndarray) -> float:
    from ..metrics import multilabel_report

    return multilabel_report(targets, probs, [str(c) for c in range(targets.shape[1])])["mAP"]


def _features(usable: list[FileRecord], root: Path, model_name: str, imgsz: int, device: str, runtime: str,
              progress: bool):
    from ..data.cores import default_workers
    from ..data.transforms import make_preprocess
    from ..models.factory import create_model
    from ..runtime.device import select_device
    from .features import image_features

    torch_device = select_device(device)
    model, pretrained_cfg, _ = create_model(model_name, 2, pretrained=True)
    preprocess = make_preprocess(pretrained_cfg, imgsz, "crop")  # as `imgcls train --imgsz IMGSZ` preprocesses
    return image_features(model.to(torch_device), model_name, preprocess, [str(root / r.rel) for r in usable],
                          device=torch_device, runtime=runtime, workers=default_workers(), progress=progress)


def _label_findings(order, flagged, x, labels, suggested, probs, score, rels, class_names) -> list[Finding]:
    findings = []
    for i in order:
        if not flagged[i]:
            continue
        given, other = class_names[labels[i]], class_names[suggested[i]]
        similar = most_similar_of_class(x, i, np.flatnonzero(labels == suggested[i]))
        findings.append(Finding(
            "warning", "label_issue",
            f"{rels[i]}: labelled {given}, looks like {other} ({probs[i, suggested[i]]:.0%}; {given} "
            f"{probs[i, labels[i]]:.0%})", [rels[i]],
            {"given": given, "suggested": other, "score": round(float(score[i]), 6),
             "suggested_probability": round(float(probs[i, suggested[i]]), 6),
             "given_probability": round(float(probs[i, labels[i]]), 6), "similar": [rels[j] for j in similar]}))
    return findings


def _outlier_findings(flagged, scores, rels, labels, class_names) -> list[Finding]:
    return [Finding("warning", "outlier",
                    f"{rels[i]}: unlike every other image (mean feature distance to its {OUTLIER_NEIGHBOURS} nearest "
                    f"neighbours {scores[i]:.2f}); off-topic, a placeholder, or a rare view of "
                    f"{class_names[labels[i]]}: look at it", [rels[i]],
                    {"score": round(float(scores[i]), 6), "class": class_names[labels[i]]}) for i in flagged]


def _semantic_findings(x, usable: list[FileRecord], known_groups) -> list[Finding]:
    findings = []
    for group in connected_groups(len(usable), semantic_pairs(x)):
        members = [usable[i] for i in group]
        paths = sorted(r.rel for r in members)
        if any(set(paths) <= known for known in known_groups):  # the perceptual hash already named them
            continue
        classes = sorted({r.class_name for r in members})
        splits = sorted({r.split for r in members if r.split})
        where = (f"filed under different classes ({', '.join(classes)}): at least one label is wrong"
                 if len(classes) > 1 else f"in {' and '.join(splits)}: evaluation images seen in training"
                 if len(splits) > 1 else f"within {classes[0]}")
        findings.append(Finding("warning", "semantic_duplicate",
                                f"{len(members)} images that are almost the same picture (cropped, shifted, "
                                f"recoloured or another shot), {where}", paths,
                                {"classes": classes, "splits": splits}))
    return findings


# ---------------------------------------------------------------------------------------- train's review

TRAIN_REVIEW_MAX_IMAGES = 10_000  # train reviews its labels up to this many images (seconds); beyond, `check --labels`
TRAIN_REVIEW_SHOWN = 5            # likely label errors named in train's log (all are in the run's relabel.csv)
TRAIN_REVIEW_KEPT = 20            # ... and in results.json
REVIEW_SECONDS_PER_IMAGE = 0.006  # the cross-validation's cost per image, for the budget (docs/benchmarks.md)
RELABEL_FILE = "relabel.csv"


def train_reviews_labels(images: int) -> bool:
    """Whether ``imgcls train`` runs its label review on a data set of this many images (cleanlab installed)."""
    from importlib.util import find_spec

    return images <= TRAIN_REVIEW_MAX_IMAGES and find_spec("cleanlab") is not None


def review_training_labels(features, source, run_dir: Path | None, *, relabelled: bool = False) -> dict | None:
    """train's label review, on the pooled backbone features its linear head trains on, so that it costs only the
    cross-validation: likely label errors named in the log, every image ranked in RUN/relabel.csv (the file
    ``train --relabel`` applies once a person has edited it; not written when this run already applies one), and
    the returned "label review" block of results.json. None when skipped (cleanlab missing, too many images, or a
    class with fewer than 2 images): the run goes on without it."""
    images = sum(len(items) for items in source.items.values())
    if not train_reviews_labels(images):
        why = (f"{images:,} images (over {TRAIN_REVIEW_MAX_IMAGES:,}, it would take minutes)"
               if images > TRAIN_REVIEW_MAX_IMAGES else 'cleanlab is not installed: pip install "imgcls[labels]"')
        log.info(f"Label review skipped: {why}; `imgcls check --data DATA --labels` runs it on its own")
        return None
    t0 = time.time()
    rels, labels, blocks = [], [], []
    for split in ("train", "val", "test"):
        items = source.items.get(split) or []
        if items:
            rels += [str(rel).replace(os.sep, "/") for rel, _ in items]
            labels += [label for _, label in items]
            blocks.append(sum(features.train_views) / len(features.train_views) if split == "train"
                          else features.evaluation[split])  # training images: the mean of their augmented views
    y, names = np.asarray(labels, dtype=np.int64), source.class_names
    counts = np.bincount(y, minlength=len(names))
    if (counts[counts > 0] < 2).any() or (counts > 0).sum() < 2:
        return None
    probs, score, flagged, suggested = score_labels(normalise(np.concatenate(blocks)), y, len(names))
    ranked = [{"path": rels[i], "given": names[y[i]], "suggested": names[suggested[i]],
               "score": round(float(score[i]), 6), "flagged": bool(flagged[i]),
               "suggested_probability": round(float(probs[i, suggested[i]]), 4),
               "given_probability": round(float(probs[i, y[i]]), 4)}
              for i in np.argsort(-score, kind="stable")]
    if run_dir is not None and not relabelled:
        from ..data.check import relabel_rows
        from ..data.relabel import write_relabel_csv

        write_relabel_csv(Path(run_dir) / RELABEL_FILE, relabel_rows({"ranked": ranked}))
    section = {"images": images, "folds": int(min(FOLDS, counts[counts > 0].min())),
               "label_issues": int(flagged.sum()),
               "cross_validated_accuracy": round(float((probs.argmax(axis=1) == y).mean()), 6),
               "seconds": round(time.time() - t0, 2), "file": None if relabelled or run_dir is None else RELABEL_FILE,
               "likely_errors": [row for row in ranked if row["flagged"]][:TRAIN_REVIEW_KEPT]}
    _log_review(section, run_dir)
    return section


def _log_review(section: dict, run_dir: Path | None) -> None:
    found = section["label_issues"]
    head = (f"Label review ({section['folds']}-fold linear head on the cached features, cleanlab, "
            f"{section['seconds']:.1f}s): {found} of {section['images']:,} images may be mislabelled"
            + (", most likely first:" if found else ""))
    if not found:
        log.info(head)
        return
    lines = [f"  {r['path']}: labelled {r['given']} ({r['given_probability']:.0%}), looks like {r['suggested']} "
             f"({r['suggested_probability']:.0%})"
             for r in section["likely_errors"][:TRAIN_REVIEW_SHOWN]]
    if found > TRAIN_REVIEW_SHOWN:
        lines.append(f"  ... and {found - TRAIN_REVIEW_SHOWN} more")
    if section["file"]:
        csv_path = Path(run_dir) / section["file"]
        lines.append(f"  Every image is ranked in {csv_path}: look at the top ones, set each action (keep, relabel, "
                     f"drop), then train again with --relabel {csv_path}")
    log.warning("\n".join([head, *lines]))
