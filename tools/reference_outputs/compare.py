"""How closely SegKD's published networks compute what their reference code recorded.

    python tools/reference_outputs/compare.py                  # every case: the largest relative difference
    python tools/reference_outputs/compare.py --without bgr    # the same with one convention turned off

For each fixture in tests/fixtures/reference_nets (record.py wrote them), the seeded file is saved
in the reference's layout, loaded with kd.models.load_checkpoint into the network SegKD names for
it, and run on the recorded input; each output's relative difference is ||ours - theirs|| /
||theirs||. `--without` shows what each convention is worth: `abs` scales InPlace-ABN by w
instead of |w| + eps, `bgr` feeds RGB, `align_corners` upsamples with align_corners=False.
tests/test_published_networks.py asserts the same comparison at 1e-4.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kd.models import build_student, build_teacher, load_checkpoint
from kd.models.checkpoints import load_backbone_weights
from kd.models.inplace_abn import InPlaceABN
from kd.models.seeded import projected, seeded_image, seeded_state_dict

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "reference_nets"
# The network SegKD builds for each recorded reference network.
NETWORK = {
    "ifvd_pspnet_resnet101": "ifvd_pspnet_resnet101",
    "toolbox_pspnet_resnet101": "ifvd_pspnet_resnet101",
    "ifvd_pspnet_resnet18": "ifvd_pspnet_resnet18",
    "skd_pspnet_resnet18": "ifvd_pspnet_resnet18",
    "cirkd_deeplabv3_resnet101": "cirkd_deeplabv3_resnet101",
    "cirkd_deeplabv3_resnet18": "cirkd_deeplabv3_resnet18",
    "cirkd_pspnet_resnet18": "cirkd_pspnet_resnet18",
    "csail_resnet18_into_ifvd_student": "ifvd_pspnet_resnet18",
    "csail_resnet18_into_cirkd_pspnet_resnet18": "cirkd_pspnet_resnet18",
}


def _plain_scale(module: InPlaceABN):
    def forward(x):
        y = F.batch_norm(
            x, module.running_mean, module.running_var, module.weight, module.bias, False, 0.0, module.eps
        )
        return F.leaky_relu(y, module.slope) if module.activation == "leaky_relu" else y

    return forward


def differences(case: str, without: str | None = None) -> dict[str, float]:
    meta = json.loads((FIXTURES / f"{case}.json").read_text())
    with np.load(FIXTURES / f"{case}.npz") as arrays:
        expected = {name: torch.from_numpy(arrays[name]) for name in arrays.files}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "file.pth"
        torch.save(seeded_state_dict(meta["keys"]), path)
        if case.startswith("csail_"):
            model = build_student(NETWORK[case], 19)
            load_backbone_weights(model, path)
        else:
            model = build_teacher(NETWORK[case], 19)
            load_checkpoint(model, path)
    model.eval()
    if without == "abs":
        for module in model.modules():
            if isinstance(module, InPlaceABN):
                module.forward = _plain_scale(module)
    elif without == "bgr":
        model.input_channels = "rgb"
    elif without == "align_corners":
        model.align_corners = False
    x = model.normalize(seeded_image(tuple(meta["input"]["size"])))
    found = {}
    with torch.no_grad():
        for name, reference in expected.items():
            if name == "logits":
                ours = model.forward_parts(x, want=("logits",))["logits"]
            elif name == "aux_logits":
                ours = model.forward_parts(x, want=("aux_logits",))["aux_logits"]
            elif name == "logits_up":
                ours = model(x)[..., 0::7, 0::5]
            else:
                ours = model.features(x, name)
                ours = projected(ours) if meta["outputs"][name].get("projected") else ours
            found[name] = float((ours - reference).norm() / reference.norm())
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--without", choices=["abs", "bgr", "align_corners"], help="turn one convention off")
    parser.add_argument("--case", action="append", choices=sorted(NETWORK), help="one case (repeatable)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for case in args.case or sorted(NETWORK):
        found = differences(case, args.without)
        worst = max(found, key=found.get)
        print(f"{case:44s} {NETWORK[case]:26s} largest {found[worst]:.2e} ({worst})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
