"""Record what the published segmentation networks' own code computes, as small test fixtures.

Each case builds a network with its repository's code, read from a git repository at run time and
never copied into this one, fills it with kd.models.seeded weights made from that network's own
checkpoint layout, runs it in eval mode on kd.models.seeded.seeded_image preprocessed as that
repository's dataset code does, and writes <case>.npz (outputs) and <case>.json (layout, conventions,
shapes) to the fixture folder. The project's networks are then checked against these files without
the published weights or the reference code. README.md next to this file lists the cases and the
run-time shims.
"""

from __future__ import annotations

import argparse
import ast
import collections
import collections.abc
import contextlib
import importlib
import io
import json
import logging
import os
import platform
import queue
import subprocess
import sys
import tarfile
import tempfile
import types
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kd.models.seeded import PROJECTED, key_spec, projected, seeded_image, seeded_state_dict  # noqa: E402

SIZE = (64, 96)
SEED = 0
CLASSES = 19
# cv2 reads BGR; every repository here subtracts Caffe's ImageNet BGR mean from 0-255 values, no std
MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
# logits_up at full size would be most of a fixture's bytes; a grid holding both corners and rows and
# columns between source pixels still tells align_corners=True from False and bilinear from nearest
UP_ROWS, UP_COLS = slice(0, None, 7), slice(0, None, 5)
# the packages the reference repositories import by these top-level names; each case gets its own
IMPORT_NAMES = ("libs", "networks", "models", "utils", "mit_semseg")


@dataclass(frozen=True)
class Repository:
    github: str
    rev: str
    files: tuple[str, ...]


_LIBS = tuple(f"libs/{name}.py" for name in ("__init__", "bn", "functions", "misc", "residual", "dense"))
# the revisions the committed fixtures were recorded from (their JSON holds the full ids)
REPOSITORIES = {
    "ifvd": Repository("YukangWang/IFVD", "950a7a5", (*_LIBS, "networks/__init__.py", "networks/pspnet.py")),
    "skd": Repository(
        "irfanICMLL/structure_knowledge_distillation",
        "ce208e1",
        (*_LIBS, "networks/__init__.py", "networks/pspnet_combine.py"),
    ),
    "toolbox": Repository(
        "speedinghzl/pytorch-segmentation-toolbox",
        "3f8f602",
        (*_LIBS, "networks/__init__.py", "networks/pspnet.py"),
    ),
    # CIRKD v1, the code of the CVPR'22 paper's table; CIRKDV2 (2025) widens the DeepLabV3 and PSP heads
    "cirkd": Repository(
        "winycg/CIRKD",
        "0854344",
        (
            "models/segbase.py",
            "models/deeplabv3.py",
            "models/pspnet.py",
            "models/base_models/__init__.py",
            "models/base_models/resnet.py",
        ),
    ),
    "csail": Repository(
        "CSAILVision/semantic-segmentation-pytorch",
        "8f27c9b",
        (
            "mit_semseg/__init__.py",
            "mit_semseg/models/resnet.py",
            "mit_semseg/models/utils.py",
            "mit_semseg/lib",
        ),
    ),
}

PREPROCESSING = {
    "float64": {
        "order": "BGR (cv2.imread)",
        "scale": "0-255 float",
        "mean": list(MEAN_BGR),
        "std": None,
        "arithmetic": "float32 image minus a float64 np.array mean, the difference cast to float32",
    },
    "float32": {
        "order": "BGR (cv2.imread)",
        "scale": "0-255 float",
        "mean": list(MEAN_BGR),
        "std": None,
        "arithmetic": "float32 image -= IMG_MEAN (a float32 array): float32 subtraction",
    },
}
UPSAMPLING = {"mode": "bilinear", "align_corners": True}


@dataclass
class Case:
    name: str
    repo: str
    file: str
    builder: str
    checkpoint: dict
    preprocessing: str
    preprocessing_source: str
    upsampling_source: str
    run: object  # (case, sources, preprocessed image) -> (key spec, outputs, extra json fields)
    notes: list[str] = field(default_factory=list)
    student: bool = False  # the file is CSAIL's ImageNet resnet18, read by the repository's own loader


def git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout


def extract(repo: Path, rev: str, files: tuple[str, ...], into: Path) -> str:
    """The files (or folders) at rev, written under into; returns the full commit id."""
    commit = git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}").decode().strip()
    archive = git(repo, "archive", "--format=tar", commit, "--", *files)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit


@contextlib.contextmanager
def imported_from(root: Path):
    """Imports resolve IMPORT_NAMES under root alone, and leave no trace for the next case: IFVD,
    SKD and the toolbox all have top-level `libs` and `networks`."""

    def ours(name: str) -> bool:
        return name.split(".")[0] in IMPORT_NAMES

    saved = {name: module for name, module in sys.modules.items() if ours(name)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(saved)


def stub_package(name: str, folder: Path) -> None:
    """A package whose __init__ is not run (it imports models and packages the case does not use);
    its submodules load from folder as usual."""
    module = types.ModuleType(name)
    module.__path__ = [str(folder)]
    sys.modules[name] = module


# ---------------------------------------------------------------------------------------------
# Shims for InPlace-ABN (libs/) on a current torch without CUDA


def ext_stand_in() -> types.ModuleType:
    """libs._ext: the cffi build of libs/src/bn.cu (torch.utils.ffi, gone since torch 1.0, and CUDA).
    The eval-mode forward calls bn_forward_cuda and the activation, written here as the kernels
    compute them; the training kernels are left out so a training-mode call fails loudly."""
    ext = types.ModuleType("libs._ext")

    def bn_forward_cuda(x, mean, var, weight, bias, y, z, eps):
        # forward_kernel: invStd = 1 / sqrt(var + eps) (0 if both are 0), y = (x - mean) * invStd,
        # z = y * (|weight| + eps) + bias; an empty weight or bias is the kernel's null pointer
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean, var = mean.reshape(shape), var.reshape(shape)
        inv_std = torch.where((var != 0) | (eps != 0), 1 / torch.sqrt(var + eps), torch.zeros_like(var))
        gamma = weight.abs().reshape(shape) + eps if weight.numel() else 1.0
        beta = bias.reshape(shape) if bias.numel() else 0.0
        normalized = (x - mean) * inv_std
        scaled = normalized * gamma + beta
        y.copy_(normalized)  # y and z are both x in libs/functions.py: z is written last, as there
        z.copy_(scaled)
        return 1

    def leaky_relu_cuda(x, slope):
        x.copy_(torch.where(x < 0, x * slope, x))
        return 1

    def elu_cuda(x):
        x.copy_(torch.where(x < 0, torch.exp(x) - 1, x))
        return 1

    def training_only(name):
        def kernel(*args):
            raise NotImplementedError(f"libs._ext.{name}: only the eval-mode kernels have a stand-in")

        return kernel

    ext.bn_forward_cuda, ext.leaky_relu_cuda, ext.elu_cuda = bn_forward_cuda, leaky_relu_cuda, elu_cuda
    for name in (
        "bn_mean_var_cuda",
        "bn_edz_eydz_cuda",
        "bn_backard_cuda",
        "leaky_relu_backward_cuda",
        "elu_backward_cuda",
        "elu_inv_cuda",
    ):
        setattr(ext, name, training_only(name))
    return ext


def import_inplace_abn_network(module: str) -> types.ModuleType:
    # libs/bn.py: `from collections import OrderedDict, Iterable` (moved to collections.abc, Python 3.10)
    collections.Iterable = collections.abc.Iterable
    sys.modules["libs._ext"] = ext_stand_in()
    network = importlib.import_module(module)
    check_inplace_abn(sys.modules["libs"])
    return network


def check_inplace_abn(libs: types.ModuleType) -> None:
    """In eval mode the synchronised function reduces to the plain one (same kernel, same activation),
    and both to batch norm with a scale of |weight| + eps."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 4, generator=g) * 3
    weight, bias = torch.randn(5, generator=g), torch.randn(5, generator=g)
    mean, var = torch.randn(5, generator=g), torch.rand(5, generator=g) + 0.5
    eps, slope = 1e-5, 0.01
    extra = {"is_master": True, "master_queue": queue.Queue(0), "worker_queues": [], "worker_ids": []}
    with torch.no_grad():
        for activation in ("none", "leaky_relu", "elu"):
            plain = libs.functions.inplace_abn(
                x.clone(), weight, bias, mean, var, False, 0.1, eps, activation, slope
            )
            synced = libs.functions.inplace_abn_sync(
                x.clone(), weight, bias, mean, var, extra, False, 0.1, eps, activation, slope
            )
            expected = torch.nn.functional.batch_norm(x, mean, var, weight.abs() + eps, bias, False, 0.0, eps)
            expected = {
                "none": expected,
                "leaky_relu": torch.nn.functional.leaky_relu(expected, slope),
                "elu": torch.nn.functional.elu(expected),
            }[activation]
            if not torch.equal(plain, synced) or not torch.allclose(plain, expected, rtol=1e-5, atol=1e-5):
                raise RuntimeError(f"the libs._ext stand-in does not compute InPlace-ABN ({activation})")


def single_device(model: nn.Module, libs: types.ModuleType) -> list[dict]:
    """InPlaceABNSync.forward picks master or worker mode from x.get_device() against the devices
    listed when it was built (all visible GPUs; none here, and a CPU tensor's device is -1). Each one
    becomes the master of a group of one, as on one GPU; eval mode then calls the same forward kernel
    as InPlaceABN. Returns each module's activation."""
    activations = []
    for name, module in model.named_modules():
        if isinstance(module, libs.InPlaceABNSync):
            module.devices, module.worker_ids = [-1], []
            module.master_queue, module.worker_queues = queue.Queue(0), []
            activations.append({"module": name, "activation": module.activation, "slope": module.slope})
    return activations


def activation_summary(activations: list[dict]) -> dict:
    kinds = collections.defaultdict(list)
    for entry in activations:
        kind = entry["activation"] + (f"({entry['slope']})" if entry["activation"] == "leaky_relu" else "")
        kinds[kind].append(entry["module"])
    # the longest list (the backbone's) is given by its count, after the others
    longest = max(kinds, key=lambda kind: len(kinds[kind]))
    summary = {kind: names for kind, names in kinds.items() if kind != longest}
    summary[longest] = f"the other {len(kinds[longest])}"
    return summary


# ---------------------------------------------------------------------------------------------
# Running a network


def preprocess(image: torch.Tensor, arithmetic: str) -> torch.Tensor:
    bgr = (image * 255)[:, [2, 1, 0]]  # whole levels, exact in float32
    if arithmetic == "float64":
        mean = torch.tensor(MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1)
        return (bgr.double() - mean).float()
    mean = torch.tensor(MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1)
    return bgr - mean


class Hooks:
    """Outputs of named modules, copied as they are made: InPlace-ABN writes over its input."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.seen: dict[str, torch.Tensor] = {}
        self.handles = [module.register_forward_hook(self._keep(name)) for name, module in modules.items()]

    def _keep(self, name):
        def hook(_module, _inputs, output):
            if name in self.seen:
                raise RuntimeError(f"{name} ran twice in one forward")
            self.seen[name] = output.detach().clone()

        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


def backbone_modules(backbone: nn.Module) -> dict[str, nn.Module]:
    return {"stem": backbone.maxpool, **{f"layer{i}": getattr(backbone, f"layer{i}") for i in range(1, 5)}}


def run_network(model: nn.Module, x: torch.Tensor, modules: dict[str, nn.Module]):
    model.eval()
    hooks = Hooks(modules)
    with torch.no_grad():
        out = model(x)
    hooks.remove()
    return out, hooks.seen


def head_outputs(logits: torch.Tensor, aux: torch.Tensor, features: dict[str, torch.Tensor]):
    up = nn.Upsample(size=SIZE, mode="bilinear", align_corners=True)(logits)
    return {"logits": logits, "aux_logits": aux, "logits_up": up, **features}


def fill(model: nn.Module) -> list:
    spec = key_spec(model.state_dict())
    model.load_state_dict(seeded_state_dict(spec), strict=True)
    return spec


# ---------------------------------------------------------------------------------------------
# Cases


def inplace_abn_pspnet(module_name: str, build: str, psp: str):
    """IFVD, SKD and the toolbox: ResNet + PSP with InPlaceABNSync, forward -> [logits, dsn, ...]."""

    def run(case: Case, sources: dict, x: torch.Tensor):
        with imported_from(sources[case.repo]["root"]):
            net = import_inplace_abn_network(module_name)
            model = eval(build, vars(net))  # the builder call the fixture records, as written there
            activations = single_device(model, sys.modules["libs"])
            spec = fill(model)
            modules = backbone_modules(model)
            modules["psp"] = model.pspmodule if psp == "x_feat_after_psp" else model.head[0]
            out, seen = run_network(model, x, modules)
        if psp == "x_feat_after_psp" and not torch.equal(seen["psp"], out[2]):
            raise RuntimeError("x_feat_after_psp is not the PSP module's output")
        extra = {"inplace_abn_activations": activation_summary(activations)}
        return spec, head_outputs(out[0], out[1], seen), extra

    return run


def cirkd_network(getter: str, backbone: str):
    def run(case: Case, sources: dict, x: torch.Tensor):
        root = sources[case.repo]["root"]
        with imported_from(root):
            stub_package("models", root / "models")
            module = importlib.import_module(
                f"models.{case.file.removeprefix('models/').removesuffix('.py')}"
            )
            model = getattr(module, getter)(
                backbone=backbone,
                local_rank=None,
                pretrained="None",
                pretrained_base="None",
                aux=True,
                norm_layer=nn.BatchNorm2d,
                num_class=CLASSES,
            )
            spec = fill(model)
            out, seen = run_network(model, x, backbone_modules(model.pretrained))
        name = "aspp" if getter == "get_deeplabv3" else "psp"
        return spec, head_outputs(out[0], out[1], {**seen, name: out[2]}), {}

    return run


def csail_resnet18(root: Path, into: Path) -> tuple[list, Path]:
    """The key layout of CSAIL's resnet18-imagenet.pth, and a seeded file in that layout."""
    with imported_from(root):
        import mit_semseg  # noqa: F401  (its __init__ only sets __version__)

        stub_package("mit_semseg.models", root / "mit_semseg" / "models")
        resnet = importlib.import_module("mit_semseg.models.resnet")
        spec = key_spec(resnet.resnet18().state_dict())
    path = into / "resnet18-imagenet.pth"
    torch.save(seeded_state_dict(spec), path)
    return spec, path


def function_from(source: str, name: str, namespace: dict):
    """One top-level function of a reference file, defined from its own text: the rest of the file
    imports modules the function does not need."""
    tree = ast.parse(source)
    (node,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name]
    exec(compile(ast.Module(body=[node], type_ignores=[]), name, "exec"), namespace)
    return namespace[name]


def loaded_from_file(student: nn.Module, spec: list, seeded: dict) -> dict:
    """Which keys of the file the student kept, checked to hold the file's values, and which of the
    student's own keys the file did not provide (by top-level module)."""
    state = student.state_dict()
    used = [key for key, _, _ in spec if key in state]
    for key in used:
        if not torch.equal(state[key], seeded[key]):
            raise RuntimeError(f"{key}: the student does not hold the file's value")
    missing = sorted({key.split(".")[0] for key in state if key not in seeded})
    return {"used_keys": used, "student_modules_not_in_file": missing}


def student_extra(sources: dict, loaded: dict) -> dict:
    csail = sources["csail"]
    student_file = {
        "repository": csail["github"],
        "commit": csail["commit"],
        "file": "mit_semseg/models/resnet.py",
        "builder": "resnet18()",
    }
    return {"student_file": student_file, **loaded}


def csail_into_ifvd(case: Case, sources: dict, x: torch.Tensor):
    ifvd = sources[case.repo]
    with tempfile.TemporaryDirectory() as folder:
        spec, path = csail_resnet18(sources["csail"]["root"], Path(folder))
        seeded = seeded_state_dict(spec)
        source = git(ifvd["path"], "show", f"{ifvd['commit']}:networks/kd_model.py").decode()
        load_s_model = function_from(source, "load_S_model", {"os": os, "logging": logging, "torch": torch})
        with imported_from(ifvd["root"]):
            net = import_inplace_abn_network("networks.pspnet")
            torch.manual_seed(0)  # the heads keep their random init; nothing recorded depends on it
            student = net.Res_pspnet(net.BasicBlock, [2, 2, 2, 2], num_classes=CLASSES)
            single_device(student, sys.modules["libs"])
            args = argparse.Namespace(
                is_student_load_imgnet=True, student_pretrain_model_imgnet=str(path), S_resume=False
            )
            load_s_model(args, student)
            loaded = loaded_from_file(student, spec, seeded)
            _, seen = run_network(student, x, backbone_modules(student))
    if not set(loaded["student_modules_not_in_file"]) <= {"pspmodule", "head", "dsn"}:
        raise RuntimeError(f"backbone keys missing from the file: {loaded['student_modules_not_in_file']}")
    return spec, seen, student_extra(sources, loaded)


def csail_into_cirkd(case: Case, sources: dict, x: torch.Tensor):
    root = sources[case.repo]["root"]
    with tempfile.TemporaryDirectory() as folder:
        spec, path = csail_resnet18(sources["csail"]["root"], Path(folder))
        seeded = seeded_state_dict(spec)
        with imported_from(root):
            stub_package("models", root / "models")
            pspnet = importlib.import_module("models.pspnet")
            torch.manual_seed(0)
            model = pspnet.get_psp(
                backbone="resnet18",
                local_rank=None,
                pretrained="None",
                pretrained_base=str(path),
                aux=True,
                norm_layer=nn.BatchNorm2d,
                num_class=CLASSES,
            )
            loaded = loaded_from_file(model.pretrained, spec, seeded)
            _, seen = run_network(model, x, backbone_modules(model.pretrained))
    if loaded["student_modules_not_in_file"]:
        raise RuntimeError(f"backbone keys missing from the file: {loaded['student_modules_not_in_file']}")
    return spec, seen, student_extra(sources, loaded)


PLAIN = "plain state_dict, no prefix: torch.save(model.state_dict()) of the bare model"
IFVD_NOTES = [
    "maxpool is MaxPool2d(3, 2, 1, ceil_mode=True) (the first, ceil_mode=False, is overwritten)",
    "every block of layer3 (dilation 2) and layer4 (dilation 4) is dilated, the first included; "
    "BasicBlock dilates both of its convolutions",
    "PSP concatenates the four pooled branches (sizes 1, 2, 3, 6) first and the input features last",
    "dsn (aux) is computed on layer3's output",
    "backbone InPlaceABNSync: activation 'none' (functools.partial), followed by nn.ReLU; PSP and dsn "
    "InPlaceABNSync: the default leaky_relu(0.01); all scale by |weight| + eps",
]
CIRKD_NOTES = [
    "backbone: ResNetV1b deep stem (3x3 convs 3-64-64-128), maxpool MaxPool2d(3, 2, 1), ceil_mode=False",
    "layer3 (dilation 2) and layer4 (dilation 4): the first block is built with dilation 1 and 2, "
    "previous_dilation 2 and 4; BasicBlockV1b's conv1 takes dilation and conv2 previous_dilation, "
    "BottleneckV1b's 3x3 conv2 takes dilation",
    "nn.BatchNorm2d everywhere (signed weight), ReLU activations",
    "auxlayer (_FCNHead) is computed on layer3's output",
]
CIRKD_CHECKPOINT = {
    "format": PLAIN,
    "saved_by": "train_baseline.py / train_kd.py save_checkpoint: model.module.state_dict() when distributed",
    "loaded_by": "get_deeplabv3 / get_psp(pretrained=PATH): model.load_state_dict(torch.load(PATH, "
    "map_location=torch.device(local_rank))), strict; skipped when local_rank is None",
}
CIRKD_PRE = "dataset/cityscapes.py CSTrainValSet (train_kd.py validation) and CSValSet (eval.py)"
CIRKD_UP = (
    "train_kd.py Trainer.validation: F.interpolate(outputs[0], (H, W), mode='bilinear', align_corners=True); "
    "eval.py predict_whole: nn.Upsample(size, mode='bilinear', align_corners=True)"
)
IFVD_UP = "utils/evaluate.py predict_whole: nn.Upsample(size=tile_size, mode='bilinear', align_corners=True)"

CASES = [
    Case(
        "ifvd_pspnet_resnet101",
        "ifvd",
        "networks/pspnet.py",
        "Res_pspnet(Bottleneck, [3, 4, 23, 3], num_classes=19)",
        {
            "format": PLAIN,
            "file": "ckpt/teacher_city.pth",
            "loaded_by": "networks/kd_model.py load_T_model: "
            "model.load_state_dict(torch.load(T_ckpt_path)), strict",
        },
        "float64",
        "dataset/datasets.py CSTrainValSet(scale=False, mirror=False) as in val.py and train.py",
        IFVD_UP,
        inplace_abn_pspnet(
            "networks.pspnet", "Res_pspnet(Bottleneck, [3, 4, 23, 3], num_classes=19)", "x_feat_after_psp"
        ),
        IFVD_NOTES,
    ),
    Case(
        "ifvd_pspnet_resnet18",
        "ifvd",
        "networks/pspnet.py",
        "Res_pspnet(BasicBlock, [2, 2, 2, 2], num_classes=19)",
        {
            "format": PLAIN,
            "saved_by": "networks/kd_model.py save_ckpt: torch.save(self.student.state_dict(), ...)",
            "loaded_by": "val.py: student.load_state_dict(torch.load(restore_from)), strict",
        },
        "float64",
        "dataset/datasets.py CSTrainValSet(scale=False, mirror=False) as in val.py and train.py",
        IFVD_UP,
        inplace_abn_pspnet(
            "networks.pspnet", "Res_pspnet(BasicBlock, [2, 2, 2, 2], num_classes=19)", "x_feat_after_psp"
        ),
        IFVD_NOTES,
    ),
    Case(
        "skd_pspnet_resnet18",
        "skd",
        "networks/pspnet_combine.py",
        "Res_pspnet(BasicBlock, [2, 2, 2, 2], num_classes=19)",
        {
            "format": PLAIN,
            "saved_by": "networks/kd_model.py save_ckpt: torch.save(self.student.state_dict(), ...) "
            "(the bare student, not its DataParallelModel)",
            "loaded_by": "test.py: student.load_state_dict(torch.load(resume_from)), strict",
        },
        "float32",
        "dataset/datasets.py CSDataSet(mean=IMG_MEAN, scale=False, mirror=False) as in train_and_eval.py",
        "networks/evaluate.py predict_whole: "
        "nn.Upsample(size=tile_size, mode='bilinear', align_corners=True)",
        inplace_abn_pspnet(
            "networks.pspnet_combine",
            "Res_pspnet(BasicBlock, [2, 2, 2, 2], num_classes=19)",
            "x_feat_after_psp",
        ),
        [*IFVD_NOTES, "forward returns [x, x_dsn, x_feat_after_psp, x4, x3, x2, x1]"],
    ),
    Case(
        "toolbox_pspnet_resnet101",
        "toolbox",
        "networks/pspnet.py",
        "Res_Deeplab(num_classes=19)",
        {
            "format": PLAIN + " (keys head.0.* = PSPModule, head.1.* = classifier)",
            "saved_by": "train.py: torch.save(deeplab.state_dict(), ...) "
            "(the bare model, not DataParallelModel)",
            "loaded_by": "evaluate.py: model.load_state_dict(torch.load(restore_from)), strict; SKD's "
            "utils/utils.py load_T_model renames head.0. -> pspmodule. and head.1. -> head. and skips fc",
        },
        "float32",
        "dataset/datasets.py CSDataSet(mean=IMG_MEAN, scale=False, mirror=False) as in evaluate.py",
        "evaluate.py predict_whole / predict_sliding: nn.Upsample(size, mode='bilinear', align_corners=True)",
        inplace_abn_pspnet("networks.pspnet", "Res_Deeplab(num_classes=19)", "head.0"),
        [
            *IFVD_NOTES[:3],
            "forward returns [x, x_dsn]; head = Sequential(PSPModule, classifier)",
            *IFVD_NOTES[3:],
        ],
    ),
    Case(
        "cirkd_deeplabv3_resnet101",
        "cirkd",
        "models/deeplabv3.py",
        "get_deeplabv3(backbone='resnet101', local_rank=None, pretrained='None', pretrained_base='None', "
        "aux=True, norm_layer=nn.BatchNorm2d, num_class=19)",
        CIRKD_CHECKPOINT,
        "float64",
        CIRKD_PRE,
        CIRKD_UP,
        cirkd_network("get_deeplabv3", "resnet101"),
        [
            *CIRKD_NOTES,
            "aspp is x_feat_after_aspp: head.block[0:4] (3x3 conv, BN, ReLU, Dropout) applied to the ASPP "
            "output, i.e. the features the classifier head.block[4] reads",
        ],
    ),
    Case(
        "cirkd_deeplabv3_resnet18",
        "cirkd",
        "models/deeplabv3.py",
        "get_deeplabv3(backbone='resnet18', local_rank=None, pretrained='None', pretrained_base='None', "
        "aux=True, norm_layer=nn.BatchNorm2d, num_class=19)",
        CIRKD_CHECKPOINT,
        "float64",
        CIRKD_PRE,
        CIRKD_UP,
        cirkd_network("get_deeplabv3", "resnet18"),
        [
            *CIRKD_NOTES,
            "aspp is x_feat_after_aspp: head.block[0:4] (3x3 conv, BN, ReLU, Dropout) applied to the ASPP "
            "output, i.e. the features the classifier head.block[4] reads",
        ],
    ),
    Case(
        "cirkd_pspnet_resnet18",
        "cirkd",
        "models/pspnet.py",
        "get_psp(backbone='resnet18', local_rank=None, pretrained='None', pretrained_base='None', "
        "aux=True, norm_layer=nn.BatchNorm2d, num_class=19)",
        CIRKD_CHECKPOINT,
        "float64",
        CIRKD_PRE,
        CIRKD_UP,
        cirkd_network("get_psp", "resnet18"),
        [
            *CIRKD_NOTES,
            "_PyramidPooling concatenates the input features first, then the pooled branches (1, 2, 3, 6)",
            "psp is the features _PSPHead returns: head.block (3x3 conv, BN, ReLU, Dropout) on the "
            "concatenation, the input of head.classifier",
        ],
    ),
]
STUDENT_NOTES = [
    "only the backbone is recorded: the heads keep the reference's random initialisation",
    (
        "keys: CSAIL's mit_semseg.models.resnet.resnet18() state_dict on the recording torch: its "
        "SynchronizedBatchNorm2d gives num_batches_tracked and the extra buffers _tmp_running_mean, "
        "_tmp_running_var, _running_iter; a file saved by torch < 0.4.1 would lack num_batches_tracked. "
        "Neither loader reads the extra buffers, nor fc"
    ),
]
STUDENT_CASES = [
    Case(
        "csail_resnet18_into_ifvd_student",
        "ifvd",
        "networks/pspnet.py",
        "Res_pspnet(BasicBlock, [2, 2, 2, 2], num_classes=19), then networks/kd_model.py load_S_model",
        {
            "format": "CSAIL resnet18-imagenet.pth: " + PLAIN,
            "loaded_by": "networks/kd_model.py load_S_model: keys the student has are kept, "
            "model.state_dict().update(them), load_state_dict "
            "(SKD's utils/utils.py load_S_model does the same)",
        },
        "float64",
        "dataset/datasets.py CSTrainValSet(scale=False, mirror=False) as in val.py and train.py",
        IFVD_UP,
        csail_into_ifvd,
        STUDENT_NOTES,
        student=True,
    ),
    Case(
        "csail_resnet18_into_cirkd_pspnet_resnet18",
        "cirkd",
        "models/pspnet.py",
        "get_psp(backbone='resnet18', local_rank=None, pretrained='None', pretrained_base=PATH, aux=True, "
        "norm_layer=nn.BatchNorm2d, num_class=19)",
        {
            "format": "CSAIL resnet18-imagenet.pth: " + PLAIN,
            "loaded_by": "models/base_models/resnet.py resnet18_v1s(pretrained=PATH): "
            "keys the model has are kept, "
            "model.state_dict().update(them), load_state_dict; torch.load(PATH) with local_rank None "
            "(train_kd.py passes its local_rank, a GPU, as map_location)",
        },
        "float64",
        CIRKD_PRE,
        CIRKD_UP,
        csail_into_cirkd,
        STUDENT_NOTES,
        student=True,
    ),
]


# ---------------------------------------------------------------------------------------------
# Writing


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed's format with a fixed timestamp, so that the same arrays give the same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def to_json(value, level: int = 0) -> str:
    """Indented JSON with short lists on one line: a shape, a mean, one checkpoint key per line."""
    pad = "  " * level
    if isinstance(value, dict) and value:
        items = [f"{pad}  {json.dumps(key)}: {to_json(item, level + 1)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    inline = json.dumps(value)
    if isinstance(value, list) and (len(inline) > 100 or any(isinstance(item, dict) for item in value)):
        items = [f"{pad}  {to_json(item, level + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return inline


def describe(name: str, full: torch.Tensor, stored: torch.Tensor) -> dict:
    entry = {"shape": list(stored.shape)}
    if name == "logits_up":
        rows, cols = (f"{part.start}::{part.step}" for part in (UP_ROWS, UP_COLS))
        entry.update(full_shape=list(full.shape), sampled=f"[..., {rows}, {cols}]")
    elif name not in ("logits", "aux_logits") and full.shape[1] > PROJECTED:
        entry.update(channels=full.shape[1], projected=True)
    return entry


def stored_form(name: str, tensor: torch.Tensor) -> torch.Tensor:
    if name == "logits_up":
        return tensor[..., UP_ROWS, UP_COLS]
    return tensor if name in ("logits", "aux_logits") else projected(tensor)


def record_case(case: Case, sources: dict, out: Path) -> dict:
    repo = sources[case.repo]
    x = preprocess(seeded_image(SIZE, SEED), case.preprocessing)
    spec, outputs, extra = case.run(case, sources, x)
    stored = {name: stored_form(name, tensor) for name, tensor in outputs.items()}
    arrays = {name: tensor.float().contiguous().numpy() for name, tensor in stored.items()}
    for name, array in arrays.items():
        if not np.isfinite(array).all():
            raise RuntimeError(f"{case.name}: {name} is not finite")
    weights = "kd.models.seeded.seeded_state_dict(keys)" + (
        ", saved with torch.save, read by the repository's loader named in checkpoint"
        if case.student
        else ", loaded with load_state_dict(strict=True)"
    )
    record = {
        "case": case.name,
        "repository": repo["github"],
        "commit": repo["commit"],
        "file": case.file,
        "builder": case.builder,
        "checkpoint": case.checkpoint,
        "preprocessing": {**PREPROCESSING[case.preprocessing], "source": case.preprocessing_source},
        "upsampling": {**UPSAMPLING, "size": list(SIZE), "source": case.upsampling_source},
        "input": {"image": "kd.models.seeded.seeded_image", "size": list(SIZE), "seed": SEED, "batch": 1},
        "weights": weights,
        "eval": "model.eval(), torch.no_grad(), float32, CPU, one thread",
        "features": f"through kd.models.seeded.projected ({PROJECTED} fixed directions when wider)",
        "outputs": {name: describe(name, outputs[name], stored[name]) for name in stored},
        "notes": case.notes,
        "recorded_with": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        **extra,
        "keys": spec,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_npz(out / f"{case.name}.npz", arrays)
    (out / f"{case.name}.json").write_text(to_json(record) + "\n")
    return record


def parse_args(argv=None):
    cases = [case.name for case in CASES + STUDENT_CASES]
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Each repository is a git directory (a clone, its .git, or a bare mirror) of the public "
        "GitHub repository named above; git clone --bare https://github.com/OWNER/NAME gives one. "
        "Files are read from it with git archive at the given revision, never from a work tree.",
    )
    for name, repository in REPOSITORIES.items():
        env = f"SEGKD_REF_{name.upper()}"
        parser.add_argument(
            f"--{name}",
            type=Path,
            default=os.environ.get(env),
            help=f"git directory of github.com/{repository.github} (default: ${env})",
        )
        parser.add_argument(
            f"--{name}-rev", default=repository.rev, help=f"revision to read (default: {repository.rev})"
        )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "tests" / "fixtures" / "reference_nets",
        help="folder for <case>.npz and <case>.json (default: tests/fixtures/reference_nets)",
    )
    parser.add_argument("--case", action="append", choices=cases, help="record only these (repeatable)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)  # one thread: the same reduction order on every run
    logging.basicConfig(level=logging.WARNING)
    chosen = [case for case in CASES + STUDENT_CASES if args.case is None or case.name in args.case]
    needed = {case.repo for case in chosen} | ({"csail"} if any(case.student for case in chosen) else set())
    missing = [name for name in sorted(needed) if getattr(args, name) is None]
    if missing:
        sys.exit(f"no git directory for: {', '.join(missing)} (see --help)")
    with tempfile.TemporaryDirectory() as temporary:
        sources = {}
        for name in sorted(needed):
            repository = REPOSITORIES[name]
            root = Path(temporary) / name
            path = getattr(args, name).resolve()
            commit = extract(path, getattr(args, f"{name}_rev"), repository.files, root)
            sources[name] = {"github": repository.github, "commit": commit, "root": root, "path": path}
        for case in chosen:
            record = record_case(case, sources, args.out)
            shapes = ", ".join(f"{name} {entry['shape']}" for name, entry in record["outputs"].items())
            print(f"{case.name}: {shapes}")


if __name__ == "__main__":
    main()
