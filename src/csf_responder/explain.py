"""SHAP explanations of a fitted model Pipeline, on its readable feature names."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

__all__ = ["shap_values"]


def shap_values(pipeline: Pipeline, X: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """SHAP values of a fitted Pipeline's classifier for each row of the raw table ``X``.

    The preprocessing steps transform ``X`` into model features; the classifier is
    explained there (linear explainer for logistic regression, tree explainer for
    xgboost), with the same rows as background. Values are on the log-odds scale.

    Returns
    -------
    values : DataFrame
        One row per patient, one column per model feature (readable names).
    features : DataFrame
        The model features themselves (after imputation and scaling), same shape.
    """
    import shap  # heavy: imported only when explaining

    features = pipeline[:-1].transform(X)
    model = pipeline[-1]
    explainer = shap.Explainer(model, features)
    explanation = explainer(features)
    values = np.asarray(explanation.values)
    if values.ndim == 3:  # (n, features, classes): keep the responder class
        values = values[:, :, 1]
    return pd.DataFrame(values, columns=features.columns, index=X.index), features
