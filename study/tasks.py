"""The driver's heavy work (teacher training, cache filling, teacher and test scoring) as a Ray task.

With GPUs or on a cluster, `prepare` and the test scoring run as one Ray task each, with a trial's
CPUs and a whole GPU when trials get GPUs: the driver stays a light coordinator and the GPUs do
not wait hours for a teacher trained on the driver's CPU. On a machine without GPUs and without a
cluster they run in the driver, as before: a task would only add a process and copy the teacher.

A task's progress messages come back through a Ray queue and are printed by the driver as they arrive.
"""

from __future__ import annotations

from collections.abc import Callable

from kd.errors import UserInputError
from study.checks import import_plugins
from study.config import StudyConfig

POLL_S = 0.5  # how often the driver prints what a task said


def runs_on_ray(config: StudyConfig) -> bool:
    """Preparation goes to a Ray task when trials get GPUs or the study joins a cluster."""
    return config.gpus_per_trial > 0 or config.address is not None


def task_device(config: StudyConfig) -> str:
    import torch

    return "cuda" if config.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"


def _in_task(work: Callable, config: StudyConfig, messages, args: tuple):
    import torch

    import_plugins(config)  # a fresh worker has not imported the study's own modules
    torch.set_num_threads(max(1, int(config.cpus_per_trial)))
    return work(config, *args, say=messages.put, device=task_device(config))


def run_work(work: Callable, config: StudyConfig, *args, say=print):
    """`work(config, *args, say=..., device=...)` where the study's rules put it (runs_on_ray);
    returns its result.

    A UserInputError raised in the task is raised here as itself, so the command line shows it as
    any configuration error."""
    if not runs_on_ray(config):
        return work(config, *args, say=say, device=task_device(config))
    import ray
    from ray.util.queue import Queue

    messages = Queue(actor_options={"num_cpus": 0})
    gpus = 1 if config.gpus_per_trial > 0 else 0  # a whole one: teacher training is the longest step
    task = ray.remote(_in_task).options(num_cpus=config.cpus_per_trial, num_gpus=gpus, max_retries=0)
    pending = task.remote(work, config, messages, args)
    try:
        while True:
            ready, _ = ray.wait([pending], timeout=POLL_S)
            while not messages.empty():
                say(messages.get())
            if ready:
                return ray.get(pending)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, UserInputError):
            raise err.cause from None
        raise
    finally:
        ray.kill(messages.actor)
