"""A study's settings: each StudyConfig field says once its default, its --help group and text,
and the simple check it is held to (`setting`). study.flags makes the command line from them,
study.checks the simple checks; study.config layers them (defaults < preset < study file <
command line) and validates the result.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

from kd.data.class_maps import CLASS_MAPS
from kd.data.transforms import FRESH
from kd.engine import AMP, EVALUATE
from kd.models.teacher_training import TRAINABLE as TEACHER_TRAINABLE

TEACHER_INITS = ("pretrained", "random")
SAMPLERS = ("tpe", "nsga2", "gp", "grid")
SCHEDULERS = ("none", "asha")
GROUPS = ("study", "data", "models", "training", "resources")  # --help's groups of settings, in order


def setting(
    default,
    group: str,
    help: str,
    *,
    choices=None,
    least: int | None = None,
    most: int | None = None,
    note: str = "",
):
    """A StudyConfig field with everything about it: its default; its --help group and text; the
    simple check study files and flags are held to, one of `choices` or a whole number >= `least`
    (`note` says what its least means; None passes where the type allows it) and <= `most`, the
    most a study can reach in practice (said in its help)."""
    if most is not None:
        help = f"{help} (at most {most:,})"
    metadata = {"group": group, "help": help, "choices": choices, "least": least, "most": most, "note": note}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class StudyConfig:
    name: str = setting("default", "study", "the study's name: its folder under --out")
    out: str = setting("runs", "study", "where run folders go (default runs/)")
    methods: list[str] = setting(
        ["baseline", "sd", "esd", "ifvd_paper"],
        "study",
        "comma-separated recipes, e.g. baseline,sd,esd,ifvd (python -m kd.methods lists them)",
    )
    # Optuna trials over all methods, shared equally (a multiple of the number of methods; grid: ignored)
    trials: int = setting(
        12,
        "study",
        "Optuna trials over all methods, which take turns: a multiple of the number of methods",
        least=1,
        most=100_000,  # Optuna's in-memory study slows past this; no study needs more
    )
    # training seeds per trial; metrics are their mean and standard deviation
    seeds: int = setting(
        2, "study", "training seeds per trial (mean and std are reported)", least=1, most=1000
    )
    seed: int = setting(0, "study", "the sampler's seed")
    # grid: an ablation, every method once at its defaults, no search
    sampler: str = setting(
        "tpe",
        "study",
        "tpe, nsga2 or gp (multi-objective), grid (every grid point once, no search)",
        choices=SAMPLERS,
    )
    objectives: list[str] = setting(
        ["miou_img"], "study", "comma-separated metrics to optimise (several: multi-objective)"
    )
    # asha: early stopping on the first seed's per-epoch metric
    scheduler: str = setting(
        "none", "study", "asha: stop poor trials early (one objective)", choices=SCHEDULERS
    )
    max_concurrent: int = setting(
        0,
        "resources",
        "at most this many trials at once (0: as resources allow)",
        least=0,
        note="0: no limit",
    )
    retries: int = setting(1, "resources", "runs again a trial whose worker or node died", least=0)
    # data
    data: str = setting(
        "synthetic",
        "data",
        "synthetic, camvid:PATH, cityscapes:PATH, kitti:PATH or folder:IMAGES_DIR,MASKS_DIR",
    )
    label_set: str = setting("binary", "data", "full (every class) or binary (road against the rest)")
    classes: list[str] | None = setting(None, "data", "folder data: comma-separated class names")
    image_size: list[int] = setting(
        [64, 128], "data", "HEIGHT,WIDTH: synthetic images are drawn at it, files resized to it"
    )
    crop: list[int] | None = setting(None, "data", "HEIGHT,WIDTH of the random training crop")
    hflip: bool = setting(True, "data", "random horizontal flips in training")
    # How many images each role gets (study.roles says which; None: every image its rule leaves)
    source_images: int | None = setting(
        64,
        "data",
        "images the teacher's head trains on (default: every one its rule leaves)",
        least=1,
        note="or left out for all",
    )
    target_images: int | None = setting(
        16, "data", "the few labelled target images students train on", least=1, note="or left out for all"
    )
    proximity_images: int | None = setting(
        32, "data", "ESD's unlabelled proximity images", least=1, note="or left out for all"
    )
    # selection: objectives, ASHA, the chosen trial
    val_images: int | None = setting(
        16,
        "data",
        "images that select: objectives, ASHA, each variant's chosen trial",
        least=1,
        note="or left out for all",
    )
    # the reported results, scored once the selection is made
    test_images: int | None = setting(
        16,
        "data",
        "images the chosen trials are reported on, once, at the end",
        least=1,
        note="or left out for all",
    )
    split_seed: int = setting(
        0, "data", "kitti and folder data: the shuffle that deals images to roles", least=0
    )
    # models
    teacher: str = setting(
        "deeplabv3_efficientnet_lite0",
        "models",
        "the teacher (python -m kd.models lists them; any named network)",
    )
    # A teacher axis: every method that uses a teacher runs once per teacher listed here (names as
    # `teacher` takes them); the first also shapes the students of the methods without one, and is
    # the study's `teacher`. None: the one `teacher`
    teachers: list[str] | None = setting(
        None,
        "models",
        "comma-separated teachers: a teacher axis, every method that uses a teacher run with each "
        "(the first is --teacher; docs/guide/running.md: Teacher strength as a study axis)",
    )
    teacher_checkpoint: str | None = setting(
        None,
        "models",
        "a trained teacher's weights, in SegKD's layout or a published one (torchvision, CIRKD, IFVD, "
        "SKD: docs/guide/teachers.md); otherwise its head is trained",
    )
    # A checkpoint trained on another label set: the kd.data.class_maps map of its classes onto the
    # study's (e.g. "cityscapes-camvid11"); None: the checkpoint predicts the study's classes
    teacher_class_map: str | None = setting(
        None,
        "models",
        "a checkpoint trained on another label set: the map of its classes onto the study's, one of "
        f"{', '.join(CLASS_MAPS)} (docs/guide/teachers.md: Teachers from another label set)",
    )
    teacher_epochs: int = setting(3, "models", "epochs of the teacher's training", least=1, most=100_000)
    # "head" keeps the pretrained backbone frozen, "all" fine-tunes it
    teacher_trainable: str = setting(
        "head",
        "models",
        "what the teacher's training updates: head (backbone frozen) or all",
        choices=TEACHER_TRAINABLE,
    )
    # A teacher whose source images look unlike the target's (other colours, other light) carries
    # over to them better when its training varied brightness, contrast and saturation
    teacher_jitter: float = setting(
        0.0,
        "models",
        "photometric jitter of the teacher's source images: brightness, contrast and saturation "
        "factors drawn from [1 - J, 1 + J] per image, J within [0, 1] (0: none)",
    )
    # "random" is a control: its weights as initialised from `seed` (no pretrained file, no
    # training), so a method's gain from mimicking it is what more images or more steps alone
    # give, not the teacher's knowledge
    teacher_init: str = setting(
        "pretrained",
        "models",
        "pretrained (trained as teacher_trainable says) or random: a control teacher, initialised "
        "from the seed and never trained",
        choices=TEACHER_INITS,
    )
    # The teacher is trained only for methods that distil from it or start from its weights
    teacher_reference: bool = setting(
        False,
        "models",
        "train and score the teacher as the report's reference even when no method needs it",
    )
    # default: the recipe's student
    students: dict[str, str] = setting(
        {}, "models", "METHOD=STUDENT pairs, comma-separated: the student per method"
    )
    # Say, torchvision's ImageNet ResNet-18, saved where there is internet (docs/guide/running.md); nothing is
    # downloaded
    student_weights: dict[str, str] = setting(
        {}, "models", "METHOD=FILE pairs: backbone weights a method's student starts from"
    )
    # training
    # Each method's epochs in all, its stages sharing them in the recipe's proportions, so that
    # methods get the same number of optimiser steps (None: the recipes' own, 100 for every one)
    epochs: int | None = setting(
        20,
        "training",
        "each method's epochs over all its stages (an equal budget); default: the preset's",
        least=1,
        most=100_000,
        note="or left out for the recipes' own",
    )
    batch_size: int = setting(4, "training", "the (global) batch size", least=1)
    # "fresh" is how the reference scripts train; a bank is cheaper where the teacher's forward is
    # dear (CPUs)
    views: int | str = setting(
        FRESH,
        "training",
        "fresh (a new augmentation of every image at every epoch, the teacher online) or N (a fixed "
        "bank of N views per image, the teacher's outputs cached)",
        most=1000,  # a bank holds every view of every image decoded: its memory is checked too
    )
    # "stage": after every stage that trains the head, so the curves show what stage 3 adds
    evaluate: str = setting(
        "stage",
        "training",
        "when trials score the validation images: epoch, stage or end",
        choices=EVALUATE,
    )
    # One family for every method (kd.methods.recipes.AUGMENTATIONS), so that methods compared in
    # the study see the same training views
    augmentation: str | None = setting(
        None, "training", "one augmentation family for every method (default: each recipe's own)"
    )
    # resources: a trial runs on `workers_per_trial` workers, each with these CPUs and GPUs
    cpus_per_trial: float = setting(1.0, "resources", "CPU cores per trial worker")
    gpus_per_trial: float = setting(
        0.0, "resources", "GPUs per trial worker; fractions share a GPU (0.5: two trials each)"
    )
    # Ray Train's TorchTrainer (NCCL on GPUs, gloo on CPU): each worker takes a slice of every
    # batch, so batch_size is the global batch and must divide among them
    workers_per_trial: int = setting(
        1, "resources", "data-parallel workers per trial (Ray Train, DDP)", least=1
    )
    # pinned memory on CUDA
    num_workers: int = setting(
        0,
        "training",
        "DataLoader processes per trial worker (for data kept off the device)",
        least=0,
        note="0: load in the trial",
    )
    # CPU: always off; fp16 runs with a gradient scaler
    amp: str = setting(
        "bf16",
        "training",
        "mixed precision on CUDA: bf16, fp16 (with a gradient scaler) or off",
        choices=AMP,
    )
    device_data_share: float = setting(
        0.25,
        "training",
        "data taking at most this share of a trial device's memory is decoded there once and augmented "
        "there (0: DataLoader workers decode it every epoch)",
    )
    channels_last: bool = setting(
        False, "training", "channels-last memory format for the networks and images"
    )
    # minutes of compiling
    compile: bool = setting(False, "training", "torch.compile the student and the teacher")
    address: str | None = setting(
        None, "resources", "join an existing Ray cluster: 'auto' or HOST:PORT (default: a local Ray)"
    )
    connect_timeout_s: float = setting(
        30.0, "resources", "refuse a cluster --address that does not answer within this many seconds"
    )
    # None: $SEGKD_CACHE, else ~/.cache/segkd, per machine; on a cluster, a folder every node sees,
    # filled once
    cache_dir: str | None = setting(
        None,
        "resources",
        "trained teachers and teacher-output caches (default $SEGKD_CACHE); shared on a cluster",
    )
    resource_wait_s: float = setting(
        300, "resources", "say so when trials have waited this many seconds for resources"
    )
    # false for a cluster an autoscaler grows: Ray does not say how far
    check_resources: bool = setting(
        True, "resources", "refuse trials no node can hold (--no-check-resources: a cluster that grows)"
    )
    space: dict[str, dict] = setting(
        {}, "study", "search-space settings as a TOML inline table: 'esd = {r = [0.0, 5.0]}'"
    )
    # plotly's HTML takes seconds a study; the tables hold every number it shows
    report: bool = setting(
        True,
        "study",
        "write report.html at the end (--no-report: tables only; python -m analysis.report RUN_DIR "
        "writes it later)",
    )
    # Modules imported in the driver and in every trial before anything is built: a place for your
    # own students, teachers or loss terms (they register themselves in kd's dicts)
    imports: list[str] = setting(
        [], "study", "comma-separated Python modules imported first (your own parts)"
    )
    # Ray's loggers added to every study's TensorBoard event files (optional extras)
    callbacks: list[str] = setting(
        [], "study", "comma-separated loggers besides TensorBoard: mlflow, wandb (optional extras)"
    )

    @property
    def kind(self) -> str:
        return self.data.partition(":")[0].strip().lower()

    @property
    def teacher_names(self) -> list[str]:
        """Every teacher of the study, the study's `teacher` first."""
        return list(self.teachers) if self.teachers else [self.teacher]

    def for_teacher(self, name: str | None) -> StudyConfig:
        """This configuration as a study of the one teacher `name` (None: the study's own): what
        builds, trains, caches and scores that teacher."""
        return self if name is None or name == self.teacher else dataclasses.replace(self, teacher=name)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(StudyConfig)}
TYPES = typing.get_type_hints(StudyConfig)


def flag(name: str) -> str:
    """A setting's command-line flag: `target_images` -> `--target-images`."""
    return "--" + name.replace("_", "-")
