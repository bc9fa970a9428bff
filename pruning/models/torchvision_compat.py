"""Load torchvision ImageNet checkpoints into the spec-built ImageNet families.

    spec = torchvision_spec("resnet50")                     # the dense spec of that torchvision model
    state = from_torchvision("resnet50", torchvision_state)  # keys mapped onto build(spec)
    load_torchvision_file(model, "resnet50-0676ba61.pth")   # model.init_from=PATH in the config

Only the key names (and the first VGG FC weight's shape) differ; the numbers are the same, so
a model started from torchvision's pretrained weights gives torchvision's outputs.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from pruning import PruneLabError
from pruning.models import default_spec, resnet_imagenet, vgg_imagenet

TORCHVISION_MODELS = {
    **{f"resnet{d}": ("resnet_imagenet", {"depth": d}) for d in resnet_imagenet.BLOCKS},
    **{f"vgg{d}": ("vgg_imagenet", {"depth": d, "batch_norm": False}) for d in vgg_imagenet.CFGS},
    **{f"vgg{d}_bn": ("vgg_imagenet", {"depth": d, "batch_norm": True}) for d in vgg_imagenet.CFGS},
}


def torchvision_spec(model_name: str, num_classes: int = 1000) -> dict:
    """The dense spec equal to ``torchvision.models.<model_name>(num_classes=...)``."""
    if model_name not in TORCHVISION_MODELS:
        raise PruneLabError(
            f"no torchvision mapping for {model_name!r}; known: {', '.join(sorted(TORCHVISION_MODELS))}"
        )
    arch, kwargs = TORCHVISION_MODELS[model_name]
    return default_spec(arch, num_classes=num_classes, **kwargs)


def from_torchvision(model_name_or_spec: str | dict, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a torchvision state dict onto the keys (and shapes) of our model of the same net."""
    spec = model_name_or_spec if isinstance(model_name_or_spec, dict) else torchvision_spec(model_name_or_spec)
    if spec["arch"] == "resnet_imagenet":
        return resnet_imagenet.from_torchvision(state_dict)
    if spec["arch"] == "vgg_imagenet":
        return vgg_imagenet.from_torchvision(state_dict, spec)
    raise PruneLabError(f"torchvision weights can only initialise resnet_imagenet/vgg_imagenet, not {spec['arch']!r}")


def load_torchvision_file(model: nn.Module, path: str | Path) -> None:
    """Initialise ``model`` (a dense spec-built ImageNet net) from a torchvision .pth file."""
    path = Path(path)
    if not path.is_file():
        raise PruneLabError(
            f"model.init_from={path} does not exist; download the torchvision .pth file "
            "(e.g. https://download.pytorch.org/models/resnet50-0676ba61.pth) and pass its path"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    mapped = from_torchvision(model.spec, state)
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    bad_shape = [k for k in own if k in mapped and own[k].shape != mapped[k].shape]
    if missing or unexpected or bad_shape:
        raise PruneLabError(
            f"model.init_from={path} does not fit model {model.spec['arch']} depth {model.spec.get('depth')}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, shape mismatch {bad_shape[:3]} "
            "(check model=, data.num_classes and the file)"
        )
    model.load_state_dict(mapped)


def file_digest(path: str | Path) -> str:
    """Short content hash of an init file (part of the dense baseline's cache key)."""
    import hashlib

    path = Path(path)
    if not path.is_file():
        raise PruneLabError(f"model.init_from={path} does not exist; pass the path of a torchvision .pth file")
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return f"{path.name}:{h.hexdigest()[:16]}"
