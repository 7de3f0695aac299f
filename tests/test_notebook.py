"""The notebooks in colabs/: committed without outputs, and they run headless."""

import base64
import io
import pathlib
import resource
import time

from matplotlib import image as mpl_image
import nbclient
import nbformat
import pytest

COLABS = pathlib.Path(__file__).resolve().parent.parent / "colabs"
NOTEBOOKS = sorted(COLABS.glob("*.ipynb"))


def _children_cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  code = [cell for cell in notebook.cells if cell.cell_type == "code"]
  assert code
  for cell in code:
    assert cell.outputs == [], f"{path.name}: a cell has outputs; clear them"
    assert cell.execution_count is None, f"{path.name}: a cell has an execution count"


def test_explore_atoms_is_in_the_list():
  assert COLABS / "explore_atoms.ipynb" in NOTEBOOKS


@pytest.mark.slow
def test_explore_atoms_runs_headless_and_draws_its_figures(tmp_path, monkeypatch):
  """Top to bottom with no workdir: it trains a tiny run itself, then analyses it.

  The budget is 3 minutes of CPU time for the kernel and everything it starts
  (training included): on an otherwise idle machine that bounds the wall time,
  which on a shared one depends on the load.
  """
  monkeypatch.setenv("SDICT_NOTEBOOK_TINY", "1")
  monkeypatch.delenv("SDICT_WORKDIR", raising=False)
  monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's training workdir
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  notebook = nbformat.read(COLABS / "explore_atoms.ipynb", as_version=4)
  cpu_before, start = _children_cpu_seconds(), time.perf_counter()
  nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(COLABS)}}).execute()
  wall, cpu = time.perf_counter() - start, _children_cpu_seconds() - cpu_before

  pngs = [base64.b64decode(output.data["image/png"])
          for cell in notebook.cells if cell.cell_type == "code"
          for output in cell.outputs if "image/png" in output.get("data", {})]
  # drift, usage, vision atoms, word alignment, one example, reconstruction, trade-off
  assert len(pngs) >= 7
  for png in pngs:
    assert mpl_image.imread(io.BytesIO(png))[..., :3].std() > 0.01  # not blank
  assert cpu < 180, f"the notebook took {cpu:.0f} s of CPU ({wall:.0f} s wall)"
