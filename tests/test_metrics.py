"""What a run shows: metric rows reach a callback as they are written, the figures, and restoring a checkpoint."""

import itertools

import chex
import jax
import matplotlib
import numpy as np
import pytest

import zoo
from zoo.models import ModelOutput
from tests.train_helpers import SyntheticBatches, tiny_config
from train.checkpointing import restore_train_state
from train.loop import make_optimizer_from_config, train_and_evaluate
from train.losses import CALIBRATION_BINS, label_loss, summarize
from train.metrics import confusion_matrix, loss_curve_figure, matrix_figure, plot_loss_curve, read_metrics
from train.partitioning import make_mesh
from train.step import init_train_state


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Six steps with eval at steps 3 and 6, checkpoints at 3 and 6; (workdir, final state, rows seen by the callback)."""
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config(steps=6, every_steps=3)
    config.train.update(dict(log_every=2, eval_every=3))
    seen = []
    state, _ = train_and_evaluate(config, workdir, SyntheticBatches(),
                                  lambda: itertools.islice(SyntheticBatches(seed=9), 2),
                                  show_progress=False, on_metrics=seen.append)
    return workdir, state, seen


def test_on_metrics_sees_each_row_of_metrics_jsonl_as_it_is_written(run):
    workdir, _, seen = run
    assert seen == read_metrics(workdir)
    assert [(row["step"], "loss" in row, "eval_loss" in row) for row in seen] == [
        (2, True, False), (3, False, True), (4, True, False), (6, True, False), (6, False, True)]


def test_restore_train_state_gives_the_last_saved_state_on_the_target_shardings(run):
    workdir, state, _ = run
    step, restored = restore_train_state(f"{workdir}/checkpoints", like=state)
    assert step == 6 and int(restored.step) == 6
    chex.assert_trees_all_equal(jax.device_get(restored.params), jax.device_get(state.params))
    # another step onto another mesh: a fresh state on two devices gives only the layout
    _, tx = make_optimizer_from_config(tiny_config(steps=6))
    target, _ = init_train_state(zoo.create("bert-tiny", task="mlm"), tx, jax.random.key(1),
                                 make_mesh(1, 2, 1, devices=jax.devices()[:2]))
    step3, on_two = restore_train_state(f"{workdir}/checkpoints", like=target, step=3)
    assert step3 == 3 and int(on_two.step) == 3
    kernel = on_two.params["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]
    assert kernel.sharding.device_set == set(jax.devices()[:2])


def test_restore_train_state_without_a_checkpoint_is_a_clear_error(tmp_path, run):
    _, state, _ = run
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        restore_train_state(str(tmp_path / "missing"), like=state)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        restore_train_state(str(tmp_path / "empty"), like=state)


def test_loss_curve_figure_draws_train_and_eval_loss_against_step():
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}, {"step": 2, "eval_loss": 2.8}, {"step": 3, "loss": 2.0}]
    ax = loss_curve_figure(rows).axes[0]
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    assert lines == {"train loss": ([1, 2, 3], [3.0, 2.5, 2.0]), "eval loss": ([2], [2.8])}


def test_plot_loss_curve_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # not Agg: a figure drawn through pyplot with "Agg" forced would switch it
    try:
        path = plot_loss_curve(str(tmp_path))
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_confusion_matrix_counts_true_labels_by_row_and_predictions_by_column():
    matrix = confusion_matrix([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 2], num_labels=3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    with pytest.raises(ValueError, match=r"a prediction is outside \[0, 2\): \[0, 2\]"):
        confusion_matrix([0, 1], [0, 2], num_labels=2)
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        confusion_matrix([0, 1, 1], [0, 1], num_labels=2)


def test_matrix_figure_writes_each_value_in_its_cell():
    matrix = np.array([[1.0, 0.25], [0.25, 1.0], [0.5, 0.0]])
    ax = matrix_figure(matrix, ["a", "b", "c"], ["x", "y"], value_format="{:.2f}").axes[0]
    cells = {(text.get_position(), text.get_text()) for text in ax.texts}
    assert cells == {((column, row), f"{value:.2f}") for (row, column), value in np.ndenumerate(matrix)}
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"matrix of shape \(3, 2\) but 2 row and 2 column labels"):
        matrix_figure(matrix, ["a", "b"], ["x", "y"])


def numpy_ece(logits: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """Guo et al.'s expected calibration error, written out: positions binned by their top probability, each bin's
    |accuracy - mean confidence| weighted by its share of the positions (labels < 0 left out)."""
    logits, labels = logits.reshape(-1, logits.shape[-1]).astype(np.float64), labels.reshape(-1)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    keep = labels >= 0
    confidence, correct = probs.max(-1)[keep], (probs.argmax(-1) == labels)[keep]
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return sum(abs(correct[which == b].mean() - confidence[which == b].mean()) * (which == b).sum()
               for b in range(bins) if (which == b).any()) / keep.sum()


def test_label_loss_sums_give_the_expected_calibration_error_across_batches():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(6, 5, 11)).astype(np.float32)  # [batch, length, classes]
    labels = rng.integers(0, 11, size=(6, 5))
    labels[:, -2:] = -100  # padding: not counted
    labels[0, :3] = logits[0, :3].argmax(-1)  # a few right answers
    halves = [label_loss(ModelOutput(None, logits=jax.numpy.asarray(logits[rows])), {"labels": labels[rows]})[1]
              for rows in (slice(0, 3), slice(3, 6))]
    summed = jax.tree.map(lambda a, b: np.asarray(a) + np.asarray(b), *halves)  # two eval batches, added
    assert summed["calibration_confidence"].shape == (CALIBRATION_BINS,)
    assert summed["calibration_correct"].sum() == summed["correct"]  # every counted position is in one bin
    got = summarize(summed)
    assert got["ece"] == pytest.approx(numpy_ece(logits, labels, CALIBRATION_BINS), abs=1e-6)
    assert "calibration_correct" not in got and "calibration_confidence" not in got
    # a model that is always right and sure has no calibration error
    sure = np.full((2, 3, 4), -30.0, np.float32)
    sure[..., 1] = 30.0
    perfect = label_loss(ModelOutput(None, logits=jax.numpy.asarray(sure)), {"labels": np.ones((2, 3), np.int32)})[1]
    assert summarize(jax.device_get(perfect))["ece"] == pytest.approx(0.0, abs=1e-6)
