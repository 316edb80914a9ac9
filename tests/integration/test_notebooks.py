"""Every notebook runs top to bottom (each asserts its key result in a cell) and is stored
without outputs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_for_each_application():
    assert [p.stem for p in NOTEBOOKS] == ["01_quickstart", "02_imputation", "03_features_downstream",
                                           "04_anomaly_detection", "05_vae_generation",
                                           "06_pretrained_backbones"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path):
    """A failing cell (its `assert` included) raises CellExecutionError with the traceback."""
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)  # every cell ran
    assert any(o.get("output_type") == "display_data" for c in code for o in c.outputs) or \
        path.stem in ("01_quickstart", "03_features_downstream")  # the others draw figures
