"""The key layouts of published checkpoint files, as renamings onto a Segmenter's keys.

A layout is a list of (the file's key prefix, the Segmenter's key prefix) pairs; a key takes the
longest prefix that matches and keeps the rest. Each network names the layouts it loads
(`Segmenter.checkpoint_layouts`); kd.models.checkpoints tries the network's own keys first, then
each of those, with a DDP `module.` prefix removed, and loads the one that fits exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

STEM = [f"{kind}{i}." for i in (1, 2, 3) for kind in ("conv", "bn")]
LAYERS = [f"layer{i}." for i in range(1, 5)]
BINS = range(4)


@dataclass(frozen=True)
class Layout:
    name: str
    source: str  # where such files come from
    pairs: tuple[tuple[str, str], ...]

    def key(self, key: str) -> str:
        theirs, ours = max(
            ((t, o) for t, o in self.pairs if key.startswith(t)),
            key=lambda pair: len(pair[0]),
            default=("", ""),
        )
        return ours + key[len(theirs) :]


def _trunk(prefix: str = "") -> list[tuple[str, str]]:
    """A deep-stem ResNet's keys at `prefix` onto the stages stem, layer1-layer4."""
    return [(prefix + k, f"stages.stem.{k}") for k in STEM] + [(prefix + k, f"stages.{k}") for k in LAYERS]


def _ifvd_psp(psp: str, head: str) -> list[tuple[str, str]]:
    return [
        (f"{psp}stages.", "stages.psp.0.branches."),
        (f"{psp}bottleneck.0.", "stages.psp.1."),
        (f"{psp}bottleneck.1.", "stages.psp.2."),
        (head, "head."),
        ("dsn.", "aux_head."),
    ]


_CIRKD_AUX = [("auxlayer.block.", "aux_head.")]

LAYOUTS = {
    layout.name: layout
    for layout in (
        Layout(
            "ifvd",
            "IFVD's and SKD's Res_pspnet (networks/pspnet.py, pspnet_combine.py): teacher_city.pth, "
            "their students",
            tuple(_trunk() + _ifvd_psp("pspmodule.", "head.")),
        ),
        Layout(
            "segmentation-toolbox",
            "speedinghzl/pytorch-segmentation-toolbox's PSPNet (head.0 the PSP module, head.1 the "
            "classifier): the SKD teacher",
            tuple(_trunk() + _ifvd_psp("head.0.", "head.1.")),
        ),
        Layout(
            "cirkd-pspnet",
            "CIRKD's PSPNet (models/pspnet.py): kd_psp_resnet18_citys.pth and its baselines",
            tuple(
                _trunk("pretrained.")
                + [(f"head.psp.conv{b + 1}.0.", f"stages.psp.0.branches.{b}.1.") for b in BINS]
                + [(f"head.psp.conv{b + 1}.1.", f"stages.psp.0.branches.{b}.2.") for b in BINS]
                + [("head.block.0.", "stages.psp.1."), ("head.block.1.", "stages.psp.2.")]
                + [("head.classifier.", "head.")]
                + _CIRKD_AUX
            ),
        ),
        Layout(
            "cirkd-deeplabv3",
            "CIRKD's DeepLabV3 (models/deeplabv3.py): deeplabv3_resnet101_citys_best_model.pth, "
            "kd_deeplabv3_resnet18_citys.pth",
            tuple(
                _trunk("pretrained.")
                + [("head.aspp.b0.", "stages.aspp.0.convs.0.")]
                + [(f"head.aspp.b{b}.block.", f"stages.aspp.0.convs.{b}.") for b in (1, 2, 3)]
                + [
                    ("head.aspp.b4.gap.", "stages.aspp.0.convs.4."),
                    ("head.aspp.project.", "stages.aspp.0.project."),
                ]
                + [
                    ("head.block.0.", "stages.aspp.1."),
                    ("head.block.1.", "stages.aspp.2."),
                    ("head.block.4.", "head."),
                ]
                + _CIRKD_AUX
            ),
        ),
        Layout(
            "torchvision",
            "torchvision's DeepLabV3 (hub files such as deeplabv3_resnet50_coco-cd0a2569.pth, and "
            "references/segmentation checkpoints)",
            (
                ("backbone.conv1.", "stages.stem.0."),
                ("backbone.bn1.", "stages.stem.1."),
                ("backbone.layer", "stages.layer"),
                ("classifier.", "head."),
                ("aux_classifier.", "aux_head."),
            ),
        ),
    )
}
