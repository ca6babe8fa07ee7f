"""train.study: the studies' arms differ only in their switch, the report's statistics and verdicts match numbers
worked out by hand, and a quick study writes its report and reuses its finished runs."""

import dataclasses
import json
import math
import os
import time

import ml_collections
import numpy as np
import pytest

from train.study import (MEASUREMENTS, STUDIES, ArmSummary, Beats, Diverges, Study, Ties, curves_figure,
                         forward_temp_mib, get_study, inference_us_per_token, json_safe, main, parameter_count,
                         pooled_std, pretraining_config, report_markdown, run_result, run_study, set_config_path,
                         study_config, study_report)

# what run_study adds to study_report's dict: the run's size, and when and where it was measured
RUN = {"steps": 100, "scale": 1.0, "date": "2026-12-06", "machine": "AMD EPYC, 2 cores", "jax": "0.10.2"}


def flat(config: ml_collections.ConfigDict) -> dict:
    """{"optimizer.b2": 0.98, ...}: every leaf of the config by its dotted path."""
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, (dict, ml_collections.ConfigDict)):
                walk(value, f"{prefix}{key}.")
            else:
                out[prefix + key] = value
    walk(config.to_dict(), "")
    return out


def differing(a: dict, b: dict) -> set[str]:
    return {k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>")}


def switched_config(study: Study, arm: str, seed: int) -> ml_collections.ConfigDict:
    """The config the arm's switch is set in: the run's, or its pre-training stage's."""
    return (pretraining_config if study.pretraining else study_config)(study, arm, seed)


@pytest.mark.parametrize("name", list(STUDIES))
def test_a_studys_runs_differ_in_exactly_the_switch_and_the_seed(name):
    study = STUDIES[name]
    arms = list(study.arms)
    configs = {(arm, seed): flat(switched_config(study, arm, seed)) for arm in arms for seed in (0, 1)}
    for arm in arms:
        assert configs[arm, 0][study.switch] == study.arms[arm]
        assert differing(configs[arm, 0], configs[arm, 1]) == {"seed"}
        for other in arms:
            if other != arm:
                assert differing(configs[arm, 0], configs[other, 0]) == {study.switch}, (arm, other)
                assert differing(configs[arm, 0], configs[other, 1]) == {study.switch, "seed"}, (arm, other)


@pytest.mark.parametrize("name", list(STUDIES))
def test_every_arm_of_a_study_is_a_valid_model_and_optimizer(name):
    """zoo.Config's checks accept each arm's overrides (abstract: nothing is allocated), and the optimizer builds."""
    import zoo
    from train.loop import make_optimizer_from_config
    from train.tasks import get_task

    study = STUDIES[name]
    for arm in study.arms:
        config = switched_config(study, arm, seed=0)
        model = zoo.create(config.model, task=get_task(config.task).head, **config.model_overrides)
        assert zoo.param_count(model) > 0
        section, field = study.switch.rsplit(".", 1)
        if section == "model_overrides":  # the model was built with the arm's value, not a preset's
            assert getattr(model.config, field) == study.arms[arm]
        make_optimizer_from_config(config)
    if study.pretraining:  # and the fine-tuning, the same in every arm
        make_optimizer_from_config(study_config(study, arm, seed=0))


def test_a_pretraining_study_fine_tunes_every_arm_alike_on_the_pretrained_model():
    """The switch is set in the pre-training stage only; the fine-tuning runs differ in the run they start from and
    nothing else, on the pre-training model (before the switch) with the fine-tuning recipe's head on top."""
    study = STUDIES["pretraining_objective"]
    stages = {arm: pretraining_config(study, arm, 0) for arm in study.arms}
    runs = {arm: study_config(study, arm, 0, pretrained=f"/runs/{arm}-pretraining") for arm in study.arms}
    assert differing(flat(runs["bidirectional"]), flat(runs["unidirectional"])) == {"init_from_run"}
    assert runs["unidirectional"].init_from_run == "/runs/unidirectional-pretraining"
    assert stages["unidirectional"].task == "mlm" and runs["unidirectional"].task == "token_classification"
    fine_tuning = runs["unidirectional"].model_overrides.to_dict()
    assert "causal" not in fine_tuning and fine_tuning["num_labels"] == 3  # zoo's default: bidirectional
    body = {k: v for k, v in stages["bidirectional"].model_overrides.items() if k != "causal"}
    assert {k: fine_tuning[k] for k in body} == body  # the pre-trained model, whole
    with pytest.raises(ValueError, match="switch 'model_overrides.causal' is what the arms change"):
        dataclasses.replace(study, pretraining=dataclasses.replace(
            study.pretraining, overrides={"model_overrides.causal": False}))


def test_a_misspelt_switch_is_an_error_naming_it():
    config = study_config(STUDIES["adam_b2"], "0.98", seed=0)
    with pytest.raises(KeyError, match="optimizer.b3"):
        set_config_path(config, "optimizer.b3", 0.9)
    with pytest.raises(KeyError, match="not a zoo.Config field"):
        set_config_path(config, "model_overrides.position_embeddings", "learned")


def test_a_study_whose_verdict_names_an_unknown_arm_is_an_error():
    with pytest.raises(ValueError, match=r"verdict names arms \['0.9'\]"):
        dataclasses.replace(STUDIES["adam_b2"], verdict=Beats("0.9", "0.999"))


def test_an_unknown_study_name_lists_the_studies(capsys):
    with pytest.raises(ValueError, match="no study 'nope'; the studies are: positions, positions_causal_lm, adam_b2"):
        get_study("nope")
    with pytest.raises(SystemExit):
        main(["nope", "--workdir", "unused"])
    assert "the studies are: " + ", ".join(STUDIES) in capsys.readouterr().err


def test_arm_statistics_are_the_mean_and_sample_std_of_the_finite_seeds():
    arm = ArmSummary((0.8, 0.9, 0.7, math.nan), diverged=1)
    assert arm.mean == pytest.approx(0.8)
    assert arm.std == pytest.approx(0.1)  # sqrt((0.01 + 0.01 + 0) / (3 - 1))
    other = ArmSummary((0.5, 0.7), diverged=0)  # mean 0.6, std sqrt(0.02)
    assert pooled_std(arm, other) == pytest.approx(math.sqrt((2 * 0.01 + 1 * 0.02) / 3))


def results(values, diverged=(), reported=None):
    """run_result's dicts of seeds 0, 1, ... with these final values (and `reported`: {key: a value per seed})."""
    reported = reported or {}
    return {seed: {"final": v, "diverged": seed in diverged, "loss_variance_last_quarter": 0.0, "loss_spikes": 0,
                   "steps": 10, "steps_to_target": None, "measurements": {},
                   "reported": {key: values_of_key[seed] for key, values_of_key in reported.items()}}
            for seed, v in enumerate(values)}


def fake_study(verdict, higher_is_better=True, measurements=(), reported=()):
    return Study("fake", claim="a beats b", recipe="transformer_tiny", switch="optimizer.b2",
                 arms={"a": 0.98, "b": 0.999}, metric="eval_exact_match", higher_is_better=higher_is_better,
                 steps=100, verdict=verdict, measurements=measurements, reported=reported)


def test_beats_holds_when_the_gap_exceeds_the_pooled_std_and_flips_with_the_direction():
    a, b = results([0.8, 0.9, 0.7]), results([0.5, 0.6, 0.4])  # means 0.8 and 0.5, both std 0.1
    report = study_report(fake_study(Beats("a", "b")), {"a": a, "b": b})
    assert report["arms"]["a"]["mean"] == pytest.approx(0.8) and report["arms"]["b"]["std"] == pytest.approx(0.1)
    assert report["verdict"]["outcome"] == "held"
    assert "a better by +0.3, pooled std 0.1" in report["verdict"]["numbers"]
    assert study_report(fake_study(Beats("a", "b"), higher_is_better=False),
                        {"a": a, "b": b})["verdict"]["outcome"] == "did not hold"
    close = results([0.6, 0.7, 0.5])  # 0.1 better than b: within the pooled std of 0.1
    assert study_report(fake_study(Beats("a", "b")), {"a": close, "b": b})["verdict"]["outcome"] == \
        "inconclusive at this scale"


def test_ties_holds_within_the_tolerance_and_fails_beyond_tolerance_plus_spread():
    b = results([0.50, 0.51, 0.49])  # std 0.01
    for a_values, outcome in (([0.51, 0.52, 0.50], "held"),  # gap 0.01, spread 0.01 <= 0.02
                              ([0.55, 0.56, 0.54], "did not hold"),  # gap 0.05 > 0.02 + 0.01
                              ([0.525, 0.535, 0.515], "inconclusive at this scale")):  # 0.02 < 0.025 <= 0.03
        report = study_report(fake_study(Ties("a", "b", tolerance=0.02)), {"a": results(a_values), "b": b})
        assert report["verdict"]["outcome"] == outcome, a_values


def test_a_relative_tie_scales_the_tolerance_by_the_second_arms_mean():
    b = results([10.0, 10.2, 9.8])  # mean 10, std 0.2: a tolerance of 10% is 1
    for a_values, outcome in (([10.5, 10.7, 10.3], "held"),  # gap 0.5
                              ([11.5, 11.7, 11.3], "did not hold"),  # gap 1.5 > 1 + 0.2
                              ([11.1, 11.3, 10.9], "inconclusive at this scale")):  # 1 < 1.1 <= 1.2
        report = study_report(fake_study(Ties("a", "b", tolerance=0.1, relative=True)),
                              {"a": results(a_values), "b": b})
        assert report["verdict"]["outcome"] == outcome, a_values
    assert "tolerance 1 (10% of b's mean)" in report["verdict"]["numbers"]


def measured(values, parameters, times):
    """results(values), each seed with its parameter count and inference time."""
    return {seed: {**r, "measurements": {"parameters": parameters, "inference_us_per_token": t}}
            for (seed, r), t in zip(results(values).items(), times)}


def test_a_verdict_on_a_measurement_judges_it_and_the_report_gives_it_per_arm():
    study = fake_study(Ties("a", "b", tolerance=0.1, relative=True, on="inference_us_per_token"),
                       measurements=("parameters", "inference_us_per_token"))
    arms = {"a": measured([0.8, 0.9, 0.7], 100.0, [2.0, 2.1, 1.9]),
            "b": measured([0.5, 0.6, 0.4], 300.0, [2.0, 2.2, 1.8])}
    report = study_report(study, arms)
    assert report["verdict"]["on"] == "inference_us_per_token" and report["verdict"]["outcome"] == "held"
    assert report["arms"]["a"]["measurements"]["parameters"] == {"mean": 100.0, "std": 0.0}
    assert report["arms"]["b"]["measurements"]["inference_us_per_token"]["mean"] == pytest.approx(2.0)
    markdown = report_markdown({**report, **RUN, "quick": False})
    assert "| parameters mean ± std (per seed) | inference µs/token mean ± std (per seed) |\n" in markdown
    assert ("| a | 0.98 | 0.8 ± 0.1 | 0.8, 0.9, 0.7 | 0/3 | 0, 0, 0 | 0, 0, 0 | 100 ± 0 (100, 100, 100) "
            "| 2 ± 0.1 (2, 2.1, 1.9) |") in markdown
    assert "**Verdict, on inference µs/token: held** (a 2 ± 0.1 vs b 2 ± 0.2" in markdown


def test_a_reported_metric_is_read_from_the_last_row_that_logged_it_and_given_per_arm():
    study = fake_study(Beats("a", "b"), reported=("eval_ece",))
    rows = [{"step": 5, "eval_exact_match": 0.5, "eval_ece": 0.3}, {"step": 10, "loss": 1.0},
            {"step": 10, "eval_exact_match": 0.75, "eval_ece": 0.125}]
    assert run_result(rows, study, diverged=False)["reported"] == {"eval_ece": 0.125}
    assert math.isnan(run_result(rows, study, diverged=True)["reported"]["eval_ece"])
    report = study_report(study, {"a": results([0.8, 0.9, 0.7], reported={"eval_ece": [0.1, 0.2, 0.3]}),
                                  "b": results([0.5, 0.6, 0.4], reported={"eval_ece": [0.4, 0.4, 0.4]})})
    assert report["arms"]["a"]["measurements"]["eval_ece"] == {"mean": pytest.approx(0.2), "std": pytest.approx(0.1)}
    markdown = report_markdown({**report, **RUN, "quick": False})
    assert "| eval_ece mean ± std (per seed) |\n" in markdown
    assert "| 0, 0, 0 | 0.2 ± 0.1 (0.1, 0.2, 0.3) |\n| b |" in markdown


def test_a_study_names_only_known_measurements_and_judges_only_its_own():
    with pytest.raises(ValueError, match=r"no measurements \['flops'\]"):
        fake_study(Beats("a", "b"), measurements=("flops",))
    with pytest.raises(ValueError, match="judges 'parameters', which is not among its measurements"):
        fake_study(Beats("a", "b", on="parameters"))


def test_four_shared_layers_have_the_parameters_of_one():
    study = STUDIES["albert_sharing"]

    def count(arm, layers):
        config = study_config(study, arm, seed=0)
        config.model_overrides.num_layers = layers
        return parameter_count(config)

    assert count("shared", 4) == count("separate", 1)
    assert count("separate", 4) - count("shared", 4) == 3 * (count("separate", 2) - count("separate", 1))


def test_inference_time_per_token_is_a_positive_number():
    config = study_config(STUDIES["albert_sharing"], "shared", seed=0, quick=True)
    assert 0 < inference_us_per_token(config) < math.inf
    assert set(STUDIES["albert_sharing"].measurements) <= set(MEASUREMENTS)


def test_dense_attentions_planned_memory_grows_with_the_square_of_the_length_and_a_windows_linearly():
    def planned(arm, length):
        config = study_config(STUDIES["sparse_attention"], arm, seed=0, quick=True)
        config.data.max_length = length
        return forward_temp_mib(config)

    # from 256 to 512 tokens: dense's [length, length] scores dominate and quadruple; a window's blocks double
    assert planned("dense", 512) / planned("dense", 256) > 3
    for sparse in ("sliding_window", "block_sparse"):
        assert 1.5 < planned(sparse, 512) / planned(sparse, 256) < 2.5
        assert planned(sparse, 512) < planned("dense", 512)


def test_diverges_counts_the_seeds_whose_loss_went_non_finite():
    nan = math.nan
    study = fake_study(Diverges("a", "b"), higher_is_better=False)
    for a, outcome in ((results([nan, nan, 1.0], diverged=(0, 1)), "held"),
                       (results([nan, 1.1, 1.0], diverged=(0,)), "inconclusive at this scale"),
                       (results([1.2, 1.1, 1.0]), "did not hold")):
        report = study_report(study, {"a": a, "b": results([1.0, 1.1, 1.2])})
        assert report["verdict"]["outcome"] == outcome
    assert report["arms"]["a"]["mean"] == pytest.approx(1.1)


def test_a_runs_result_is_its_last_metric_its_first_step_at_the_target_and_its_late_loss_variance():
    rows = [{"step": s, "loss": loss} for s, loss in zip(range(1, 9), [5, 4, 3, 2, 1.0, 1.2, 0.8, 1.0])]
    rows += [{"step": 4, "eval_loss": 2.5, "eval_exact_match": 0.25}, {"step": 8, "eval_loss": 1.5,
                                                                        "eval_exact_match": 0.5}]
    study = dataclasses.replace(fake_study(Beats("a", "b")), target=0.4)
    result = run_result(rows, study, diverged=False)
    assert result["final"] == 0.5 and result["steps_to_target"] == 8
    assert result["loss_variance_last_quarter"] == pytest.approx(np.var([0.8, 1.0], ddof=1))
    assert result["loss_spikes"] == 2  # 1.0 -> 1.2 and 0.8 -> 1.0 rise by more than 10%; 5 -> 4 -> ... do not
    assert math.isnan(run_result(rows, study, diverged=True)["final"])
    lower = dataclasses.replace(study, metric="eval_loss", higher_is_better=False, target=2.5)
    assert run_result(rows, lower, diverged=False)["steps_to_target"] == 4
    assert run_result(rows, dataclasses.replace(study, target=0.9), diverged=False)["steps_to_target"] is None


def test_the_markdown_report_has_a_row_per_arm_and_the_verdict_line_and_nan_is_null_in_json():
    report = study_report(fake_study(Beats("a", "b")), {"a": results([0.8, 0.9, 0.7]),
                                                        "b": results([0.5, math.nan, 0.4], diverged=(1,))})
    markdown = report_markdown({**report, **RUN, "quick": False})
    assert "| a | 0.98 | 0.8 ± 0.1 | 0.8, 0.9, 0.7 | 0/3 | 0, 0, 0 | 0, 0, 0 |\n" in markdown
    assert "| b | 0.999 | 0.45 ± 0.071 | 0.5, diverged, 0.4 | 1/3 |" in markdown
    assert "100 steps (scale 1), seeds 0, 1, 2; reported 2026-12-06 on AMD EPYC, 2 cores, jax 0.10.2." in markdown
    assert "**Verdict: held** (a 0.8 ± 0.1 vs b 0.45 ± 0.071: a better by +0.35" in markdown
    assert json.loads(json.dumps(json_safe(report)))["arms"]["b"]["seeds"]["1"]["final"] is None
    with_target = study_report(dataclasses.replace(fake_study(Beats("a", "b")), target=0.75),
                               {"a": results([0.8]), "b": results([0.5])})
    markdown = report_markdown({**with_target, **RUN, "quick": True})
    assert ("quarter | train-loss spikes (> 1.1x the row before) | first step at eval_exact_match >= 0.75 |\n"
            "|---|---|---|---|---|---|---|---|\n") in markdown
    assert "| a | 0.98 | 0.8 ± nan | 0.8 | 0/1 | 0 | 0 | never |" in markdown
    assert "(quick mode: too small to judge the claim)" in markdown


def test_curves_average_the_seeds_that_logged_a_step():
    """A diverged seed stops early: later steps are the mean of the seeds that got there."""
    seed_rows = [[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}, {"step": 2, "eval_exact_match": 0.5}],
                 [{"step": 1, "loss": 4.0}]]
    fig = curves_figure(fake_study(Beats("a", "b")), {"a": seed_rows, "b": seed_rows})
    metric_axis, loss_axis = fig.axes
    steps, means = loss_axis.lines[0].get_data()
    assert list(steps) == [1, 2] and list(means) == [3.0, 1.0]
    assert list(metric_axis.lines[0].get_data()[1]) == [0.5]


def test_a_diverged_seed_is_reported_as_such_and_not_trained_again(tmp_path, monkeypatch):
    """train_and_evaluate stands in for training: it logs two rows, and raises NonFiniteLoss for one run."""
    import train.loop

    trained = []

    def fake_training(config, workdir, *args, **kwargs):
        trained.append(workdir)
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
            for step in (4, 8):
                f.write(json.dumps({"step": step, "loss": 1.0 / step, "eval_loss": 2.0 / step}) + "\n")
        if config.optimizer.b2 == 0.999 and config.seed == 1:
            raise train.loop.NonFiniteLoss("loss is nan at step 9")
        return None, {}

    monkeypatch.setattr(train.loop, "train_and_evaluate", fake_training)
    report = run_study(STUDIES["adam_b2"], str(tmp_path), quick=True, show_progress=False)
    diverged_run = os.path.join(str(tmp_path), "adam_b2", "0.999", "seed1")
    assert report["arms"]["0.999"]["diverged"] == 1 and report["arms"]["0.98"]["diverged"] == 0
    assert math.isnan(report["arms"]["0.999"]["seeds"]["1"]["final"])
    assert report["arms"]["0.999"]["mean"] == 0.25  # the finite seed's last eval_loss
    with open(os.path.join(tmp_path, "adam_b2", "report.md")) as f:
        assert "| 0.25, diverged | 1/2 |" in f.read()
    trained.clear()
    run_study(STUDIES["adam_b2"], str(tmp_path), quick=True, show_progress=False)
    assert diverged_run not in trained and len(trained) == 3  # the others have no checkpoint: trained again


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("studies"))
    report = run_study(STUDIES["adam_b2"], workdir, quick=True, show_progress=False)
    return workdir, report


@pytest.mark.slow
def test_a_quick_study_writes_report_json_markdown_with_the_verdict_and_curves(quick_study):
    workdir, report = quick_study
    folder = os.path.join(workdir, "adam_b2")
    with open(os.path.join(folder, "report.json")) as f:
        saved = json.load(f)
    assert saved["quick"] and saved["steps"] == 8 and list(saved["arms"]) == ["0.98", "0.999"]
    assert saved["machine"].endswith(f", {os.cpu_count()} cores") and saved["date"] == time.strftime("%Y-%m-%d",
                                                                                                    time.gmtime())
    for arm, summary in saved["arms"].items():
        finals = [seed["final"] for seed in summary["seeds"].values()]
        assert len(finals) == 2 and summary["mean"] == pytest.approx(np.mean(finals))
        assert summary["std"] == pytest.approx(np.std(finals, ddof=1))
        assert os.path.exists(os.path.join(folder, arm, "seed1", "metrics.jsonl"))
    with open(os.path.join(folder, "report.md")) as f:
        markdown = f.read()
    assert f"**Verdict: {report['verdict']['outcome']}** ({report['verdict']['numbers']})" in markdown
    assert "| 0.999 | 0.999 |" in markdown
    with open(os.path.join(folder, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_rerunning_a_finished_study_trains_nothing_and_reports_the_same(quick_study):
    workdir, report = quick_study
    paths = [os.path.join(workdir, "adam_b2", arm, f"seed{seed}", "metrics.jsonl") for arm in ("0.98", "0.999")
             for seed in (0, 1)]
    before = [open(p).read() for p in paths]
    again = run_study(STUDIES["adam_b2"], workdir, quick=True, show_progress=False)
    assert [open(p).read() for p in paths] == before
    assert again == report


@pytest.mark.slow
def test_a_finished_run_of_another_size_is_kept_and_named(quick_study):
    from train.study import study_config, train_one_run

    workdir, _ = quick_study
    folder = os.path.join(workdir, "adam_b2", "0.98", "seed0")
    config = study_config(STUDIES["adam_b2"], "0.98", 0, quick=True)
    config.train.steps = 16  # as another --scale would size it
    with pytest.raises(ValueError, match=r"holds a finished run of 8 steps, not 16 .* another --workdir"):
        train_one_run(config, folder, show_progress=False)
    assert os.path.isdir(os.path.join(folder, "checkpoints", "8"))  # the finished run's checkpoint is still there


@pytest.mark.slow
def test_a_quick_pretraining_study_pretrains_each_arm_then_fine_tunes_from_it(tmp_path):
    study = STUDIES["pretraining_objective"]
    report = run_study(study, str(tmp_path), quick=True, show_progress=False)
    for arm in study.arms:
        for seed in (0, 1):
            stage = os.path.join(tmp_path, study.name, arm, f"seed{seed}-pretraining")
            assert os.path.isdir(os.path.join(stage, "checkpoints", "8"))
            assert any("mlm_loss" in row for row in map(json.loads, open(os.path.join(stage, "metrics.jsonl"))))
            fine_tuned = [json.loads(line) for line in open(os.path.join(tmp_path, study.name, arm, f"seed{seed}",
                                                                         "metrics.jsonl"))]
            assert fine_tuned[-1]["step"] == 8 and "eval_entity_f1" in fine_tuned[-1]
    assert report["pretraining"] == {"recipe": "bert_tiny", "steps": 300, "overrides": dict(study.pretraining.overrides)}
    with open(os.path.join(tmp_path, study.name, "report.md")) as f:
        assert ("Pre-training `bert_tiny` (300 steps at scale 1) with the switch `model_overrides.causal`, then the "
                "same fine-tuning by `bert_tagging_code_spans` in every arm: 8 steps") in f.read()
