"""Parts of a classifier that training needs: the head, the backbone, freezing, sizes and FLOPs.

Every model imgcls trains offers timm's classifier interface: ``forward_features``, ``forward_head``,
``get_classifier`` and ``reset_classifier``.
"""

from __future__ import annotations

import torch
from torch import nn


class AveragedHeads(nn.Module):
    """A classifier made of several linear heads (LeViT's head and distillation head), their logits averaged, as
    the model's own ``forward_head`` does at inference."""

    def __init__(self, heads):
        super().__init__()
        self.heads = nn.ModuleList(heads)

    @property
    def out_features(self) -> int:
        return getattr(self.heads[0], "out_features", 0)

    def forward(self, features):
        return torch.stack([h(features) for h in self.heads]).mean(0)


def head(model: nn.Module) -> nn.Module:
    """The classifier of ``model`` as one module (pooled features in, logits out), whatever ``get_classifier``
    returns: the one way the head is found wherever it is replaced, frozen, trained or measured."""
    found = model.get_classifier()
    return AveragedHeads(found) if isinstance(found, (tuple, list)) else found


def pooled_features(model: nn.Module, images):
    """The pooled features of ``images``: what the classifier of ``model`` takes in."""
    return model.forward_head(model.forward_features(images), pre_logits=True)


class PreLogits(nn.Module):
    """The backbone as a module of its own: images in, pooled features (the classifier's input) out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        return pooled_features(self.model, images)


def zero_classifier(model: nn.Module) -> None:
    """Start a new head at zero: every class equally likely, and no large random logits on top
    of pretrained features, which makes head training several times faster to converge."""
    with torch.no_grad():
        for p in head(model).parameters():
            p.zero_()


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze everything but the classifier head."""
    in_head = {id(p) for p in head(model).parameters()}
    for p in model.parameters():
        p.requires_grad = trainable or id(p) in in_head


def set_trainable(model: nn.Module, part: nn.Module) -> None:
    """Train ``part`` (a module sharing the model's parameters, e.g. Upper) and freeze everything else."""
    keep = {id(p) for p in part.parameters()}
    for p in model.parameters():
        p.requires_grad = id(p) in keep


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def count_flops(model: nn.Module, input_size) -> int:
    """FLOPs of one forward pass on one image, from PyTorch's own FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_size, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())


# Where a network can be cut, per family: (stem, stages, modules between the last stage and forward_head, the
# container the stages live in). A cut K runs stem + stages[:K] below it and stages[K:] + post + forward_head above.
def _timm_layout(stem, stages, post):
    def layout(model):
        container = getattr(model, stages) if isinstance(stages, str) else None
        stage_list = list(container) if container is not None else [getattr(model, s) for s in stages]
        return [getattr(model, s) for s in stem], stage_list, [getattr(model, p) for p in post], container
    return layout


def _simple_cnn_layout(model):
    """simple_cnn's stages end at its max-pools (views of its layers: the state_dict keeps its names)."""
    stages, current = [], []
    for layer in model.features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
    return [], stages, [], model.features


class Tokens(nn.Module):
    """A ViT's images in, its token sequence out (patch tokens with the class and register tokens and the position
    embeddings, as ``forward_features`` makes it before the first block): the stem of a ViT cut between blocks. It
    registers the modules and tensors it uses, which stay the model's."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.patch_embed, self.pos_drop = model.patch_embed, model.pos_drop
        self.patch_drop, self.norm_pre = model.patch_drop, model.norm_pre
        self.tokens = nn.ParameterList([p for p in (model.cls_token, model.reg_token, model.pos_embed)
                                        if p is not None])
        self.model = [model]  # a list: _pos_embed is called, the model not registered

    def forward(self, images):
        return self.norm_pre(self.patch_drop(self.model[0]._pos_embed(self.patch_embed(images))))


def _vit_layout(model):
    """ViT and DeiT: cut between blocks; the tokens after block K are what the cut caches."""
    return [Tokens(model)], list(model.blocks), [model.norm], model.blocks


class EvaTokens(Tokens):
    """EVA's token sequence before its first block: as a ViT's, without the rotary position embedding, which each
    block applies itself (RopeBlock)."""

    def forward(self, images):
        tokens, _ = self.model[0]._pos_embed(self.patch_embed(images))
        return self.norm_pre(tokens)


class RopeBlock(nn.Module):
    """One of EVA's blocks as a stage that takes the tokens alone: it gives the block the rotary position embedding
    of the model's patch grid (its own slice of it in rope_mixed models), as ``forward_features`` does."""

    def __init__(self, model: nn.Module, index: int):
        super().__init__()
        self.block, self.index, self.model = model.blocks[index], index, [model]  # a list: the model not registered

    def forward(self, tokens):
        model = self.model[0]
        rope = None
        if model.rope is not None:
            rope = model.rope.get_embed() if hasattr(model.rope, "feat_shape") else \
                model.rope.get_embed(shape=model.patch_embed.grid_size)
            if getattr(model, "rope_mixed", False):
                rope = rope[self.index]
        return self.block(tokens, rope=rope)


def _eva_layout(model):
    """EVA: cut between blocks as a ViT, each block given its rotary position embedding."""
    return [EvaTokens(model)], [RopeBlock(model, i) for i in range(len(model.blocks))], [model.norm], model.blocks


_LAYOUTS = {
    "EfficientNet": _timm_layout(("conv_stem", "bn1"), "blocks", ("conv_head", "bn2")),
    "MobileNetV3": _timm_layout(("conv_stem", "bn1"), "blocks", ()),
    "ResNet": _timm_layout(("conv1", "bn1", "act1", "maxpool"), ("layer1", "layer2", "layer3", "layer4"), ()),
    "ConvNeXt": _timm_layout(("stem",), "stages", ("norm_pre",)),
    "SimpleCNN": _simple_cnn_layout,
    "VisionTransformer": _vit_layout,
    "Eva": _eva_layout,
    # Swin's stages hold its blocks and shrink the map between them; its maps are N x H x W x C
    "SwinTransformer": _timm_layout(("patch_embed",), "layers", ("norm",)),
    "SwinTransformerV2": _timm_layout(("patch_embed",), "layers", ("norm",)),
}


def stage_layout(model: nn.Module):
    """(stem, stages, post, container) of a network imgcls can cut between stages, or None for other families."""
    layout = _LAYOUTS.get(type(model).__name__)
    return layout(model) if layout else None


def cut_points(model: nn.Module) -> int:
    """How many stages (a transformer's blocks) the network has (0 when it cannot be cut); a cut K is a number in
    1..stages-1."""
    layout = stage_layout(model)
    return len(layout[1]) if layout else 0


def top_stages(model: nn.Module, recipe: int) -> int:
    """How many stages above the cut a partly trained network trains: ``recipe`` (a CNN's, or Swin's, last stages),
    or a quarter of a ViT's blocks (3 of 12: two blocks of 12 hold far less of the network than two of 7 stages)."""
    return max(recipe, cut_points(model) // 4) if cut_into_tokens(model) else recipe


def cut_into_tokens(model: nn.Module) -> bool:
    """Whether the activations at ``model``'s cuts are a ViT's token sequences (N x tokens x C)."""
    layout = stage_layout(model)
    return bool(layout and layout[0]) and isinstance(layout[0][0], Tokens)


class Lower(nn.Module):
    """Images in, the activations at the input of stage ``cut`` out (the frozen part of a partly trained net)."""

    def __init__(self, model: nn.Module, cut: int):
        super().__init__()
        stem, stages, _, _ = stage_layout(model)
        self.layers = nn.Sequential(*stem, *stages[:cut])

    def forward(self, images):
        return self.layers(images)


class Upper(nn.Module):
    """Activations at stage ``cut`` in, logits (or pooled features with ``pre_logits``) out: the rest of ``model``,
    sharing its parameters."""

    def __init__(self, model: nn.Module, cut: int, pre_logits: bool = False):
        super().__init__()
        stem, stages, post, container = stage_layout(model)
        self.layers = nn.Sequential(*stages[cut:], *post)
        below = {id(m) for part in (*stem, *stages, *post, container) for m in part.modules()}
        # what forward_head uses (pooling, classifier, MobileNetV3's conv_head...), registered for its parameters
        self.head = nn.ModuleList(m for m in model.children() if id(m) not in below)
        self.model, self.pre_logits = [model], pre_logits  # a list: forward_head is called, not re-registered

    def forward(self, activations):
        return self.model[0].forward_head(self.layers(activations), pre_logits=self.pre_logits)


class MirroredTop(nn.Module):
    """Activations at stage ``cut`` in, logits (or pooled features) out: the rest of ``model`` run on the activations
    and on their mirror image, the two pooled features averaged (with a linear classifier: the logits averaged).

    A phase on cached activations trains on them mirrored at random, so a network trained that way predicts from
    both: test-time augmentation at the cost of the top alone, not of a second pass through the whole network."""

    def __init__(self, model: nn.Module, cut: int, pre_logits: bool = False):
        super().__init__()
        self.above = Upper(model, cut, pre_logits=True)
        self.classifier, self.pre_logits = [head(model)], pre_logits  # a list: already in ``above``
        self.mirror = mirror_of(model)

    def forward(self, activations):
        features = self.above(activations)
        if self.mirror is not None:  # None: the mirror image gives the same output (mirror_of)
            features = (features + self.above(self.mirror(activations))) / 2
        return features if self.pre_logits else self.classifier[0](features)


def mirror_image(activations: torch.Tensor, axis: int = -1) -> torch.Tensor:
    """Activations (... x H x W, or with ``axis`` -2 ... x H x W x C) mirrored left to right, as a gather along the
    width: ``torch.flip`` exports to a reversed ONNX Slice, which onnx2tf turns into a flip of another axis (the
    TFLite file then disagrees). The indices are a constant of the exported graph (its input size is fixed):
    computed from the tensor's shape inside the graph, they came out empty in ONNX Runtime (the failing node one of
    its NCHWc convolutions)."""
    axis = axis % activations.ndim
    width = int(activations.shape[axis])
    return activations.index_select(axis, torch.arange(width - 1, -1, -1, device=activations.device))


def mirror_of(model: nn.Module):
    """How a batch of ``model``'s activations at a cut is mirrored left to right: Swin's N x H x W x C maps along W,
    a CNN's N x C x H x W maps along W; None for a ViT's tokens. Its blocks hold no position-dependent operation
    (the positions were added to the tokens below the first block): self-attention, the MLPs and the class-token or
    average pooling give the same output for any order of the patch tokens, so the patch grid mirrored (the tokens
    reordered) gives exactly the output of the tokens as they are (tests/test_token_cuts.py). Mirroring them would
    be neither an augmentation nor test-time augmentation, only the top blocks run twice."""
    from functools import partial

    if cut_into_tokens(model):
        return None
    return partial(mirror_image, axis=-2 if getattr(model, "output_fmt", "NCHW") == "NHWC" else -1)


class Mirrored(nn.Module):
    """``model`` predicting from its activations at stage ``cut`` and their mirror image (``MirroredTop``), with
    timm's classifier interface: ``forward_features`` gives the activations at the cut, ``forward_head`` the rest."""

    def __init__(self, model: nn.Module, cut: int):
        super().__init__()
        self.model = model
        self.parts = [Lower(model, cut), MirroredTop(model, cut, pre_logits=True)]  # a list: they share model's modules
        # what Grad-CAM reads to lay the activations at the cut on the image (reporting/gradcam.feature_map)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0) or 0)
        self.output_fmt = getattr(model, "output_fmt", "NCHW")

    def forward_features(self, images):
        return self.parts[0](images)

    def forward_head(self, activations, pre_logits: bool = False):
        features = self.parts[1](activations)
        return features if pre_logits else head(self.model)(features)

    def forward(self, images):
        return self.forward_head(self.forward_features(images))

    def get_classifier(self) -> nn.Module:
        return head(self.model)
