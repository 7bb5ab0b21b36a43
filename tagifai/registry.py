"""The model registry and its promotion policy.

Every ``train-best`` registers a new version of its workload's model; the
``champion`` alias (what ``predict`` and ``serve`` load by default) moves to it
only if it scores higher on the same test split as the current champion. This is
the one decision the test split takes part in, between finished models.
"""

from __future__ import annotations

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

__all__ = ["CHAMPION", "register_version"]

CHAMPION = "champion"  # the alias predict and serve load by default
FORMAT_TAG = "model_format"  # version tag: the model files' format


def register_version(
    name: str,
    version: str,
    alias: str,
    score_name: str,
    score: float,
    split_digest: str,
    force: bool,
    tags: dict[str, str],
    description: str,
    model_format: str,
) -> tuple[bool, float | None, bool]:
    """Describe a new model version and move ``alias`` to it if it scores higher.

    Scores are compared only between versions scored on the same test split: a score on
    another split (other data, seed or preparation) says nothing about which model
    is better, so such a champion is replaced only with ``force``.

    Args:
        name: Registered model name.
        version: The new version.
        alias: Alias to maybe move (``champion``).
        score_name: The version tag holding the score (e.g. ``test_f1``).
        score: The new version's test score (higher is better).
        split_digest: Digest of the test split it was scored on (its ``test_split`` tag).
        force: Move the alias whatever the scores.
        tags: Version tags (metrics, the study it came from).
        description: Version description.
        model_format: The format the version's files are in; a champion in another
            format cannot be loaded by this tagifai, so it is replaced (its score ignored).

    Returns:
        Whether the alias now points at the new version, the previous holder's
        score (``None`` if there was none), and whether the two were comparable.
    """
    client = MlflowClient()
    own = {score_name: repr(score), "test_split": split_digest, FORMAT_TAG: model_format}
    for key, value in {**tags, **own}.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=description)
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    if current is not None and current.tags.get(FORMAT_TAG) != model_format:
        current = None  # e.g. a tagifai 0.1 model: predict refuses it, so it is no champion
    current_score = float(current.tags.get(score_name, "nan")) if current is not None else None
    if current_score is not None and np.isnan(current_score):
        current_score = None
    # A version registered before splits were recorded carries no tag: compared as before.
    comparable = current is None or current.tags.get("test_split", split_digest) == split_digest
    promote = force or current_score is None or (comparable and score > current_score)
    if promote:
        client.set_registered_model_alias(name, alias, version)
    return promote, current_score, comparable
