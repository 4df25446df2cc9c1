"""Open-set scores compared on one trained run: which score tells a held-out class (near OOD) and another data set
(far OOD) from the known classes best? The research behind `--reject`'s default score (issue 13).

Pooled backbone features come from imgcls's own feature cache (engine/features.image_features: the eval view, as
predict would see it). In-distribution scores are the run's test split; nothing is fitted on OOD images: the
banks and means come from the train split (eval view), thresholds keep 95% of the val split.

    python benchmarks/open_set.py /work/shared/datasets/flowers5 --hold-out tulip     # makes RUN (see "work")
    python benchmarks/open_set_scores.py RUN --near /work/shared/datasets/flowers5/tulip \
        --far /work/shared/datasets/aid30

``--stages`` asks the same of every stage of the backbone instead (the mean-pooled output of each stage of
models/parts.stage_layout; on fixed random subsamples, as these are not cached): is a lower layer better at near OOD?
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import report  # noqa: E402


def features_of(checkpoint: dict, paths: list) -> np.ndarray:
    from imgcls.engine.features import image_features
    from imgcls.models.factory import model_from_checkpoint

    model = model_from_checkpoint(checkpoint)
    features, kept = image_features(model, checkpoint["model_name"], checkpoint["preprocess"],
                                    [str(p) for p in paths], device="cpu", progress=False)
    assert len(kept) == len(paths), "every image must be readable"
    return features.astype(np.float64)


def normalised(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def mahalanobis_fit(x: np.ndarray, y: np.ndarray, classes: int, shrink: float):
    means = np.stack([x[y == c].mean(0) for c in range(classes)])
    centred = x - means[y]
    cov = centred.T @ centred / len(x)
    cov = (1 - shrink) * cov + shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
    return means, np.linalg.inv(cov)


def min_mahalanobis(x: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    d = np.stack([np.einsum("nd,de,ne->n", x - m, precision, x - m) for m in means], axis=1)
    return d.min(axis=1)


def knn_score(bank: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Minus the distance to the k-th nearest bank row, all rows L2-normalised (Sun et al., 2022)."""
    similarity = normalised(x) @ normalised(bank).T
    kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]
    return -np.sqrt(np.clip(2 - 2 * kth, 0, None))


def vim_score(train: np.ndarray, weight: np.ndarray, bias: np.ndarray, dims: int):
    """ViM (Wang et al., 2022): energy minus the scaled norm of the feature's part outside the train features'
    ``dims`` principal directions (taken about the origin where the logits are all zero)."""
    from imgcls.metrics import open_set_score

    origin = -np.linalg.pinv(weight) @ bias
    outside = np.linalg.svd(train - origin, full_matrices=False)[2][dims:].T
    residual = lambda x: np.linalg.norm((x - origin) @ outside, axis=1)  # noqa: E731
    alpha = (train @ weight.T + bias).max(1).mean() / residual(train).mean()
    return lambda x: open_set_score(x @ weight.T + bias, "energy") - alpha * residual(x)


def standardised(score, train: np.ndarray):
    """``score`` in units of its spread on the train features, so that two scores can be added."""
    reference = score(train)
    return lambda x: (score(x) - reference.mean()) / reference.std()


def familiarity_scorers(train: np.ndarray, labels: np.ndarray, classes: int) -> dict:
    """imgcls's own --reject score (models/familiarity.py) at several numbers of principal directions."""
    import torch

    from imgcls.models.familiarity import Familiarity, fit_familiarity

    out = {}
    for dims in (32, 64, 128, 256):
        scorer = Familiarity(fit_familiarity(train, labels, classes, dims))
        out[f"familiarity (--reject), {dims} dims"] = \
            lambda x, f=scorer: f(torch.tensor(x, dtype=torch.float32)).double().numpy()
    return out


def scorers(train: np.ndarray, labels: np.ndarray, weight: np.ndarray, bias: np.ndarray, classes: int) -> dict:
    """name -> score function of features (higher = more familiar), every one fitted on the train split only."""
    from imgcls.metrics import open_set_score

    unit_means = normalised(np.stack([normalised(train)[labels == c].mean(0) for c in range(classes)]))
    maha = {s: mahalanobis_fit(train, labels, classes, s) for s in (0.0, 0.1, 0.5)}
    background = mahalanobis_fit(train, np.zeros_like(labels), 1, 0.1)
    rng = np.random.default_rng(0)
    out = {"energy": lambda x: open_set_score(x @ weight.T + bias, "energy"),
           "max_logit": lambda x: open_set_score(x @ weight.T + bias, "max_logit"),
           "cosine to class means": lambda x: (normalised(x) @ unit_means.T).max(1)}
    for s, (means, precision) in maha.items():
        out[f"Mahalanobis, shrinkage {s}"] = lambda x, m=means, p=precision: -min_mahalanobis(x, m, p)
    means, precision = maha[0.1]
    out["relative Mahalanobis, shrinkage 0.1"] = lambda x: -(min_mahalanobis(x, means, precision)
                                                              - min_mahalanobis(x, *background))
    out["energy + Mahalanobis 0.1, each standardised on train"] = lambda x: (
        standardised(out["energy"], train)(x) + standardised(out["Mahalanobis, shrinkage 0.1"], train)(x))
    out["ViM, 256 principal dimensions"] = vim_score(train, weight, bias, 256)
    on_sphere = mahalanobis_fit(normalised(train), labels, classes, 0.1)
    out["Mahalanobis on normalised, shrinkage 0.1"] = lambda x: -min_mahalanobis(normalised(x), *on_sphere)
    out |= familiarity_scorers(train, labels, classes)
    for k in (1, 5, 10, 20, 50):
        out[f"kNN k={k}"] = lambda x, k=k: knn_score(train, x, k)
    for share in (0.5, 0.25, 0.1):
        bank = train[rng.permutation(len(train))[:int(share * len(train))]]
        bank16 = normalised(bank).astype(np.float16).astype(np.float64)
        k = max(1, round(10 * share))
        out[f"kNN k={k}, {share:.0%} bank float16 ({len(bank)} rows)"] = lambda x, b=bank16, k=k: knn_score(b, x, k)
    return out


def stage_features(checkpoint: dict, paths: list, batch: int = 64) -> list[np.ndarray]:
    """Mean-pooled outputs of every stage but the last, then the pooled features (the head's input), of images
    read as predict reads them."""
    import torch

    from imgcls.data.geometry import draft_size_for
    from imgcls.data.images import load_image
    from imgcls.data.transforms import eval_transform
    from imgcls.models.factory import model_from_checkpoint
    from imgcls.models.parts import stage_layout

    model = model_from_checkpoint(checkpoint)
    stem, stages, post, _ = stage_layout(model)
    transform, draft = eval_transform(checkpoint["preprocess"]), draft_size_for(checkpoint["preprocess"])
    rows = []
    for start in range(0, len(paths), batch):
        x = torch.stack([transform(load_image(str(p), draft_size=draft)) for p in paths[start:start + batch]])
        with torch.inference_mode():
            h, pooled = torch.nn.Sequential(*stem)(x), []
            for stage in stages[:-1]:
                h = stage(h)
                pooled.append(h.mean((2, 3)).double().numpy())
            h = torch.nn.Sequential(stages[-1], *post)(h)
            pooled.append(model.forward_head(h, pre_logits=True).double().numpy())
        rows.append(pooled)
    return [np.concatenate([r[i] for r in rows]) for i in range(len(rows[0]))]


def stage_table(checkpoint: dict, source, ood: dict, sizes=(1200, 500, 300)) -> list[dict]:
    """Mahalanobis (shrinkage 0.1) and kNN (k=5) near/far AUROC per stage, on fixed random subsamples of the train
    split (``sizes[0]``), the near (``sizes[1]``) and far (``sizes[2]``) images; in-distribution: the test split."""
    from imgcls.metrics import auroc

    rng = np.random.default_rng(0)
    pick = lambda paths, n: [paths[i] for i in sorted(rng.permutation(len(paths))[:n])]  # noqa: E731
    train_paths, labels = source.paths("train"), np.asarray(source.labels("train"))
    chosen = sorted(rng.permutation(len(train_paths))[:sizes[0]])
    train = stage_features(checkpoint, [train_paths[i] for i in chosen])
    test = stage_features(checkpoint, source.paths("test"))
    outside = {name: stage_features(checkpoint, pick(paths, n)) for (name, paths), n in zip(ood.items(), sizes[1:])}
    rows = []
    for stage, bank in enumerate(train):
        fitted = mahalanobis_fit(bank, labels[chosen], len(checkpoint["class_names"]), 0.1)
        name = f"output of stage {stage + 1} of {len(train)}" if stage < len(train) - 1 else "pooled (head input)"
        row = {"stage": name, "dims": bank.shape[1]}
        for name, method in (("Mahalanobis", lambda x: -min_mahalanobis(x, *fitted)),
                             ("kNN k=5", lambda x: knn_score(bank, x, 5))):
            inside = method(test[stage])
            row |= {f"{name} {where}": round(auroc(inside, method(f[stage])), 3) for where, f in outside.items()}
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an imgcls train run folder (benchmarks/open_set.py's work/runs/train)")
    parser.add_argument("--near", type=Path, required=True)
    parser.add_argument("--far", type=Path, default=None)
    parser.add_argument("--stages", action="store_true", help="compare the backbone's stages instead")
    args = parser.parse_args()

    from imgcls.data.folders import run_source
    from imgcls.engine.evaluate import ood_images
    from imgcls.metrics import open_set_report, rejection_threshold
    from imgcls.record.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(args.run / "weights" / "best.pt")
    source = run_source(args.run, checkpoint["class_names"])
    if args.stages:
        paths = {name: ood_images(f) for name, f in (("near", args.near), ("far", args.far)) if f is not None}
        report("open_set_stages", run=str(args.run), rows=stage_table(checkpoint, source, paths))
        return
    split = {s: (features_of(checkpoint, source.paths(s)), np.asarray(source.labels(s)))
             for s in ("train", "val", "test")}
    ood = {name: features_of(checkpoint, ood_images(folder))
           for name, folder in (("near", args.near), ("far", args.far)) if folder is not None}
    head = checkpoint["state_dict"]
    weight, bias = (head[k].double().numpy() for k in ("classifier.weight", "classifier.bias"))
    rows = []
    for name, score in scorers(*split["train"], weight, bias, len(checkpoint["class_names"])).items():
        threshold = rejection_threshold(score(split["val"][0]), 0.95)
        test = score(split["test"][0])
        row = {"score": name}
        for where, features in ood.items():
            block = open_set_report(test, score(features), threshold)
            row |= {f"{where} auroc": block["auroc"], f"{where} false accept": block["false_accept_rate"]}
        rows.append(row | {"test rejected": round(float((test < threshold).mean()), 4)})
        print(" | ".join(str(v) for v in row.values()), flush=True)
    report("open_set_scores", run=str(args.run), images={s: len(v[1]) for s, v in split.items()},
           ood_images={k: len(v) for k, v in ood.items()}, rows=rows)


if __name__ == "__main__":
    main()
