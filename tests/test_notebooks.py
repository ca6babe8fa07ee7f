"""Every notebook in colab/ runs top to bottom on CPU in quick mode, and is committed without outputs."""

import json
import os
import pathlib
import sys

import jax
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "colab").glob("*.ipynb"))
KERNEL = "zoo-tests"
# What each notebook must have printed in quick mode, beyond running without an error (a notebook not named here
# is only run), and whether it must have drawn a figure.
PRINTED = {
    "01_quickstart": ["bert-base-uncased  bert          109,482,240 parameters", "22,713,216 parameters",
                      "greedy:", "sample:"],
    "02_pretrain_bert": ["on a mesh of {'data': ", f"{jax.default_backend().upper()} 0",  # sharding pictures
                         "restored step 40; identical to the state in memory: True",
                         "filling in [MASK] (held-out sentences):"],
    "03_finetune": ["task: word_order", "accuracy with the untrained head", "held-out accuracy after 10 steps"],
    "04_translate": ["resumed from", "beam search, 4 beams", "greedy "],
    "05_long_documents": ["sliding window of 512 over 512 tokens vs dense: max |difference|",
                          "2048 tokens  block_sparse", "sliding_window: memory grows"],
    "06_design_questions": ["claim: learned positions end within", "[adam_b2 4/4] arm 0.999", "verdict: "],
}
FIRST_RUN_ONLY = {"resumed from"}  # a second run of the notebook finds its runs finished: nothing resumes
DRAWN = {"01_quickstart", "02_pretrain_bert", "03_finetune", "05_long_documents", "06_design_questions"}
TRAINS = {"01_quickstart", "02_pretrain_bert", "03_finetune", "04_translate", "06_design_questions"}  # write runs/ (checkpoints, metrics)


@pytest.fixture
def kernel_environment(tmp_path, monkeypatch):
    """The environment the kernel process inherits: this checkout on its path, quick mode, conftest's CPU devices,
    Jupyter's and IPython's folders under tmp_path, and a kernel spec naming sys.executable, so the kernel runs the
    Python (and venv) that runs pytest whatever `python3` kernel the machine has installed."""
    spec = tmp_path / "jupyter_data" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "zoo tests", "language": "python"}))
    environment = {
        "ZOO_NOTEBOOK_QUICK": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter_data"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter_config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter_runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        # the kernels' compiled programs are cached with the rest of the suite's (conftest.py)
        "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir or str(REPO / ".jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


def execute(notebook, working_directory: pathlib.Path):
    """Runs every cell in order in a fresh kernel started in `working_directory`; a failing cell raises
    nbclient's CellExecutionError, whose message shows the cell and its traceback."""
    working_directory.mkdir(exist_ok=True)
    nbclient.NotebookClient(notebook, kernel_name=KERNEL, timeout=600,
                            resources={"metadata": {"path": str(working_directory)}}).execute()
    return notebook


def printed(cell) -> str:
    """What the cell printed, and the plain text of what it displayed (a rich sharding picture, for one)."""
    return "".join(output.get("text", "") if output.output_type == "stream" else
                   output.get("data", {}).get("text/plain", "") for output in cell.outputs)


def test_the_kernel_runs_the_interpreter_and_checkout_under_test(kernel_environment, tmp_path):
    probe = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys, train\nprint(sys.executable)\nprint(train.__file__)")])
    executable, train_file = printed(execute(probe, tmp_path / "cwd").cells[0]).split()
    assert executable == sys.executable
    assert pathlib.Path(train_file) == REPO / "train" / "__init__.py"


def test_every_numbered_notebook_of_the_issue_is_there():
    assert {"01_quickstart", "02_pretrain_bert", "03_finetune", "04_translate"} <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells and all(cell.outputs == [] and cell.execution_count is None for cell in code_cells)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_in_quick_mode_and_again(path, kernel_environment, tmp_path):
    """A training notebook runs a second time in the same folder ("Run all" again): its runs are finished, so it
    trains nothing, says so, and every cell after it works on the finished run's state and metrics."""
    runs = 2 if path.stem in TRAINS else 1
    for run in range(runs):
        notebook = execute(nbformat.read(path, as_version=4), tmp_path / "cwd")
        code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(cell.execution_count for cell in code_cells)
        # the first cell names the runtime: the backend and device count that JAX in this process sees too
        assert f"runtime: {jax.default_backend().upper()}, {jax.device_count()} device(s)" in printed(code_cells[0])
        # what a training notebook writes lands in its working directory
        assert (tmp_path / "cwd" / "runs").is_dir() == (path.stem in TRAINS)
        everything_printed = "".join(printed(cell) for cell in code_cells)
        expected = [text for text in PRINTED.get(path.stem, []) if run == 0 or text not in FIRST_RUN_ONLY]
        assert [text for text in expected if text not in everything_printed] == [], f"run {run + 1}"
        assert ("nothing left to train" in everything_printed) == (run == 1), f"run {run + 1}"
        figures = [output for cell in code_cells for output in cell.outputs if "image/png" in output.get("data", {})]
        assert bool(figures) == (path.stem in DRAWN)
