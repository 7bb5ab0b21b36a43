"""Workloads: one subpackage per kind of data and task, registered here by name.

Adding a workload is a new folder that defines a :class:`~tagifai.workloads.base.Workload`
object called ``WORKLOAD``, plus one line in :data:`REGISTRY`. Each is imported only
when asked for, so the text predict path never imports the image code, and back.
"""

from __future__ import annotations

import importlib

from tagifai.errors import TagifaiError
from tagifai.workloads.base import Workload

__all__ = ["REGISTRY", "get_workload", "workload_of_model"]

# --task value -> module defining WORKLOAD.
REGISTRY = {
    "text": "tagifai.workloads.text",
    "images": "tagifai.workloads.images",
}


def get_workload(name: str) -> Workload:
    """The workload registered as ``name``.

    Raises:
        TagifaiError: If no workload has that name.
    """
    if name not in REGISTRY:
        raise TagifaiError(f"--task: unknown task {name!r:.60}; choose from {', '.join(REGISTRY)}")
    workload: Workload = importlib.import_module(REGISTRY[name]).WORKLOAD
    return workload


def workload_of_model(model_name: str) -> Workload | None:
    """The workload that registers its models as ``model_name``, if one does (each
    workload is imported to ask it: for messages, not for the predict path)."""
    for name in REGISTRY:
        workload = get_workload(name)
        if workload.model_name == model_name:
            return workload
    return None
