"""The MLflow pyfunc wrapper: a :class:`~tagifai.predict.Predictor` behind ``mlflow.pyfunc``.

Used by ``mlflow.pyfunc.load_model`` and ``mlflow models serve``. The input and output
frames are the workload's (texts in, tags out; images in, a class out). The
``threshold`` param replaces the tuned cut-off for one request; without it the
tuned decision rule applies. A payload never names a file of the machine that serves
(an image's bytes come in the request). A bad payload raises ``MlflowException``: the model
server answers 400 with this project's one-line reason, never a stack trace.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from tagifai.errors import TagifaiError
from tagifai.predict import Predictor
from tagifai.workloads.base import SERVED_INPUTS

__all__ = ["TagifaiPyfunc"]


class TagifaiPyfunc(PythonModel):
    """Loads the files of a :class:`Predictor` in ``load_context``.

    A pyfunc model answers whoever reaches the server that loaded it (``tagifai serve``,
    ``mlflow models serve``): its payloads get :data:`SERVED_INPUTS`, so none names a
    file of the server. ``tagifai predict`` loads the :class:`Predictor` itself and
    passes its own policy.
    """

    input_policy = SERVED_INPUTS

    def load_context(self, context: Any) -> None:
        """Load the predictor from the model's ``predictor`` artifact folder."""
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
        self.predictor = Predictor.load(context.artifacts["predictor"])

    # A DataFrame hint: MLflow then validates against the logged signature only.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Predictions for each input row."""
        try:
            if not isinstance(model_input, pd.DataFrame):
                model_input = self.predictor.workload.frame_from_input(model_input)
            threshold = (params or {}).get("threshold")
            results = self.predictor.predict(
                model_input,
                threshold=None if threshold is None else float(threshold),
                policy=self.input_policy,
            )
        except (TagifaiError, TypeError, ValueError) as exc:
            # MLflow's scoring server answers an MlflowException with its message and a
            # 400; any other exception becomes a generic message and a stack trace.
            message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise MlflowException(message, error_code=INVALID_PARAMETER_VALUE) from None
        return self.predictor.workload.format_results(results)
