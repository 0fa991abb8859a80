"""IFVD's ablations (its Table 1): cross-entropy plus some of kd, adv and ifv.

Each keeps IFVD's ranges (search_spaces.ifvd) for the terms it switches on, and only
those: a switched-off term's weight stays 0, and its options would be dead parameters.
"""

from __future__ import annotations

from search_spaces import ifvd
from search_spaces.base import Param, register


def _keep(*names: str) -> dict[str, Param]:
    space = ifvd.params([])
    return {name: space[name] for name in names}


@register("ifvd_kd")
def ifvd_kd(split_points: list[str]) -> dict[str, Param]:
    return _keep("lambda_kd", "temperature", "lr")


@register("ifvd_adv")
def ifvd_adv(split_points: list[str]) -> dict[str, Param]:
    return _keep("lambda_adv", "lr")


@register("ifvd_ifv")
def ifvd_ifv(split_points: list[str]) -> dict[str, Param]:
    return _keep("lambda_ifv", "lr")


@register("ifvd_kd_adv")
def ifvd_kd_adv(split_points: list[str]) -> dict[str, Param]:
    return _keep("lambda_kd", "lambda_adv", "temperature", "lr")
