"""MLflow "models from code" entry: MLflow runs this file to build the pyfunc model.

Logging the model by file path instead of a pickled object means a saved model
holds code and plain files only. Nothing imports this module; MLflow executes it
when a model is logged and when it is loaded.
"""

import mlflow

from tagifai.pyfunc import TagifaiPyfunc

mlflow.models.set_model(TagifaiPyfunc())
