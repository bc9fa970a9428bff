"""ImageNet ResNet-18/34/50 (torchvision's v1.5 definition), built from a width spec.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (ImageNet nets, Table
1), as defined by torchvision.models.resnet: 7x7/2 stem conv + BN + ReLU + 3x3/2 max-pool;
BasicBlock (18/34) or Bottleneck (50/101/152, stride on the 3x3 conv: "v1.5"); a projection
shortcut conv1x1 + BN on a block whose stride or in/out width differs; avg-pool + fc.
The spec records each stage's trunk width and every block's inner conv widths:

    {"arch": "resnet_imagenet", "depth": 50, "block": "bottleneck", "num_classes": 1000,
     "in_channels": 3, "stem": 64,
     "stages": [{"width": 256, "stride": 1, "mid": [[64, 64], [64, 64], [64, 64]]}, ...]}

``mid[b]`` = [conv1 out] for a basic block, [conv1 out, conv2 out] for a bottleneck. Only
those inner widths are prunable (channel groups ``stages.{s}.{b}.mid{k}``); trunk channels
are coupled through every block of a stage and are not offered.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pruning import PruneLabError
from pruning.models import ChannelGroup, init_he_bn

BLOCKS = {  # depth -> (block type, blocks per stage)
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}
BASE_WIDTHS = (64, 128, 256, 512)  # inner width of each stage; bottleneck trunk = 4x


def default_spec(depth: int = 50, num_classes: int = 1000, in_channels: int = 3) -> dict:
    """The dense torchvision ResNet-``depth`` as a spec."""
    if depth not in BLOCKS:
        raise PruneLabError(f"ImageNet ResNet depth must be one of {sorted(BLOCKS)}, got depth={depth}")
    block, counts = BLOCKS[depth]
    expansion = 4 if block == "bottleneck" else 1
    stages = []
    for i, (w, n) in enumerate(zip(BASE_WIDTHS, counts, strict=True)):
        inner = [w] if block == "basic" else [w, w]
        stages.append({"width": w * expansion, "stride": 1 if i == 0 else 2, "mid": [list(inner) for _ in range(n)]})
    return {
        "arch": "resnet_imagenet",
        "depth": depth,
        "block": block,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "stem": 64,
        "stages": stages,
    }


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    if out_ch < 1:
        raise PruneLabError("a ResNet conv layer needs at least 1 channel")
    return nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_ch)


class Block(nn.Module):
    """BasicBlock (mid = [w]) or Bottleneck (mid = [w1, w2]) with torchvision's layer order."""

    def __init__(self, in_ch: int, mid: list[int], out_ch: int, stride: int, block: str):
        super().__init__()
        if block == "basic":
            if len(mid) != 1:
                raise PruneLabError(f"a basic block has one inner width, got mid={mid}")
            self.conv1, self.bn1 = _conv_bn(in_ch, mid[0], 3, stride)
            self.conv2, self.bn2 = _conv_bn(mid[0], out_ch, 3, 1)
            self.n_convs = 2
        elif block == "bottleneck":
            if len(mid) != 2:
                raise PruneLabError(f"a bottleneck block has two inner widths, got mid={mid}")
            self.conv1, self.bn1 = _conv_bn(in_ch, mid[0], 1, 1)
            self.conv2, self.bn2 = _conv_bn(mid[0], mid[1], 3, stride)  # v1.5: stride on the 3x3
            self.conv3, self.bn3 = _conv_bn(mid[1], out_ch, 1, 1)
            self.n_convs = 3
        else:
            raise PruneLabError(f"unknown ResNet block {block!r}; use basic or bottleneck")
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(*_conv_bn(in_ch, out_ch, 1, stride))  # projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (N, mid0, H', W')
        if self.n_convs == 3:
            out = self.relu(self.bn2(self.conv2(out)))  # (N, mid1, H', W')
            out = self.bn3(self.conv3(out))  # (N, out, H', W')
        else:
            out = self.bn2(self.conv2(out))  # (N, out, H', W')
        return self.relu(out + self.shortcut(x))


class ResNetImageNet(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        conv, bn = _conv_bn(spec["in_channels"], spec["stem"], 7, 2)
        self.stem = nn.Sequential(conv, bn, nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, in_ch = [], spec["stem"]
        for stage in spec["stages"]:
            blocks = []
            for b, mid in enumerate(stage["mid"]):
                stride = stage["stride"] if b == 0 else 1
                blocks.append(Block(in_ch, list(mid), stage["width"], stride, spec["block"]))
                in_ch = stage["width"]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, spec["num_classes"])
        init_he_bn(self)  # torchvision's init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (N, C, H/32, W/32)
        x = torch.flatten(self.avgpool(x), 1)  # (N, C)
        return self.fc(x)


def build(spec: dict) -> nn.Module:
    return ResNetImageNet(spec)


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """One group per inner conv output of every block: its filters, its BN, the next conv's inputs.

    ``meta["layer_id"]`` counts the main-path convs from 1 (stem = 1, shortcut 1x1 convs not
    counted): block conv k of the g-th block overall is ``2 + n_convs * g + k``. For basic
    blocks this is the numbering of the Rethinking ImageNet L1 script (imagenet/l1-norm-pruning/
    prune.py counts non-1x1 convs): block conv1 has the even ids 2, 4, ..., 32 on ResNet-34.
    """
    groups = []
    global_block = 0
    n_convs = 2 if spec["block"] == "basic" else 3
    for s, stage in enumerate(spec["stages"]):
        for b, mid in enumerate(stage["mid"]):
            p = f"stages.{s}.{b}"
            for k, width in enumerate(mid):
                bn = [(f"{p}.bn{k + 1}.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")]
                groups.append(
                    ChannelGroup(
                        name=f"{p}.mid{k}",
                        size=int(width),
                        producer=f"{p}.conv{k + 1}.weight",
                        members=((f"{p}.conv{k + 1}.weight", 0), *bn, (f"{p}.conv{k + 2}.weight", 1)),
                        spec_path=("stages", s, "mid", b, k),
                        meta={"stage": s, "block": b, "k": k, "layer_id": 2 + n_convs * global_block + k},
                        bn_scale=f"{p}.bn{k + 1}.weight",
                    )
                )
            global_block += 1
    return groups


def from_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a torchvision ``resnet*`` state dict onto this family's keys.

    conv1/bn1 -> stem.0/stem.1, layer{s+1}.{b}.X -> stages.{s}.{b}.X, downsample.{0,1} ->
    shortcut.{0,1}, fc -> fc.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith("conv1."):
            new = "stem.0." + key[len("conv1.") :]
        elif key.startswith("bn1."):
            new = "stem.1." + key[len("bn1.") :]
        elif key.startswith("layer"):
            stage, rest = key[len("layer") :].split(".", 1)
            new = f"stages.{int(stage) - 1}.{rest.replace('downsample.', 'shortcut.')}"
        else:
            new = key
        out[new] = value
    return out
