"""Where a saved model is recorded: in ``uns["diffst_model"]`` of the tables it was fitted on."""

from __future__ import annotations

from pathlib import Path

from .._core._attached import holders

#: ``table.uns`` key recording the folder of the model saved after fitting on the table.
SAVED_MODEL_KEY = "diffst_model"


def record_saved_model(model, path) -> None:
    """Record ``path`` in ``uns[SAVED_MODEL_KEY]`` of the tables ``model`` was fitted on.

    Only data still in memory are reached (models are attached to them weakly); for a
    SpatialData, the tables that hold all the model's genes.
    """
    record = {"path": str(Path(path).resolve())}
    for obj in holders("model", model):
        for table in _tables_with(obj, model.genes):
            table.uns[SAVED_MODEL_KEY] = dict(record)


def _tables_with(obj, genes) -> list:
    from anndata import AnnData

    tables = [obj] if isinstance(obj, AnnData) else list(getattr(obj, "tables", {}).values())
    return [t for t in tables if set(genes) <= set(map(str, t.var_names))]
