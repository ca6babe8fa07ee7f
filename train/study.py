"""Design studies: the articles' claims (shared/seeds/: sinusoids vs learned positions, Adam's b2, warm-up, label
smoothing...) rerun as controlled comparisons on the shipped data.

`python -m train.study <name> --workdir runs/studies [--seeds 3] [--quick] [--scale N]` (or `all`) trains every arm of
the study for every seed with `train_and_evaluate` in `workdir/<study>/<arm>/seed<k>`, then writes
`workdir/<study>/report.json` (each seed's final metric, each arm's mean and sample std), `report.md` (the table and
a one-line verdict against the claim: held / did not hold / inconclusive at this scale) and `curves.png` (the metric
and the train loss of every arm over steps, the mean across seeds with a band of one std).

A study is one `Study` record in `STUDIES`: the base recipe, the one switch its arms change (a dotted config path)
and their values, the metric and the verdict rule. Every arm of a seed gets the same config, the same data and the
same initialisation key except for that switch. A run that finished is reused on a rerun (train_and_evaluate returns
its metrics without training), and a run whose loss went non-finite counts as diverged, is recorded as such and is
not retrained.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from train.malloc import retain_freed_memory
from train.recipes import load_recipe

VERDICTS = ("held", "did not hold", "inconclusive at this scale")
SPIKE = 1.1  # a loss spike: a logged train loss above this many times the one logged before it
EVALS_PER_RUN = 8  # eval rows per run: the metric's curve, its final value and the step it reached a target
LOG_ROWS_PER_RUN = 60  # train rows per run: enough for the loss variance over the last quarter of them
# --quick: a few steps of small batches, to check that a study runs end to end (tests, notebooks), not to judge it
QUICK_STEPS, QUICK_SEEDS, QUICK_BATCH_SIZE = 8, 2, 8
DIVERGED_FILE = "diverged.json"  # in a run's folder: its loss went non-finite (the error names the step)


@dataclasses.dataclass(frozen=True)
class ArmSummary:
    """One arm's final metric per seed (NaN for a seed that diverged), and their statistics over the finite ones."""

    values: tuple[float, ...]
    diverged: int  # seeds whose loss went non-finite

    @property
    def finite(self) -> np.ndarray:
        return np.asarray([v for v in self.values if math.isfinite(v)], np.float64)

    @property
    def mean(self) -> float:
        return float(self.finite.mean()) if self.finite.size else math.nan

    @property
    def std(self) -> float:
        """The sample standard deviation (n - 1 in the denominator) of the finite values; NaN under two of them."""
        return float(self.finite.std(ddof=1)) if self.finite.size >= 2 else math.nan


def pooled_std(a: ArmSummary, b: ArmSummary) -> float:
    """sqrt(((n_a - 1) s_a^2 + (n_b - 1) s_b^2) / (n_a + n_b - 2)): the two arms' common spread across seeds."""
    n_a, n_b = a.finite.size, b.finite.size
    return math.sqrt(((n_a - 1) * a.std ** 2 + (n_b - 1) * b.std ** 2) / (n_a + n_b - 2))


def format_arm(name: str, arm: ArmSummary) -> str:
    return f"{name} {arm.mean:.4g} ± {arm.std:.2g}"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A verdict rule about two arms, `first` and `second`: `judge(arms, higher_is_better)` -> (one of VERDICTS, the
    numbers behind it). `on` names what it compares: "" for the study's metric, or one of the study's
    `measurements`."""

    first: str
    second: str
    on: str = ""

    @property
    def arms(self) -> tuple[str, ...]:
        return self.first, self.second

    def too_few_seeds(self, arms: Mapping[str, ArmSummary]) -> str | None:
        """Why the two arms cannot be compared (fewer than two finite seeds in one), or None."""
        thin = [name for name in self.arms if arms[name].finite.size < 2]
        return f"fewer than 2 finite seeds in {', '.join(thin)}" if thin else None


@dataclasses.dataclass(frozen=True)
class Beats(Comparison):
    """held: `first`'s mean is better than `second`'s by more than their pooled std; did not hold: worse by more than
    it; inconclusive: within it (or fewer than two finite seeds in an arm)."""

    def judge(self, arms: Mapping[str, ArmSummary], higher_is_better: bool) -> tuple[str, str]:
        reason = self.too_few_seeds(arms)
        if reason:
            return VERDICTS[2], reason
        first, second = arms[self.first], arms[self.second]
        gain = (first.mean - second.mean) * (1 if higher_is_better else -1)
        spread = pooled_std(first, second)
        numbers = (f"{format_arm(self.first, first)} vs {format_arm(self.second, second)}: {self.first} better by "
                   f"{gain:+.4g}, pooled std {spread:.2g}")
        return VERDICTS[0 if gain > spread else 1 if gain < -spread else 2], numbers


@dataclasses.dataclass(frozen=True)
class Ties(Comparison):
    """held: the means of `first` and `second` differ by at most `tolerance` and the pooled std is within it too (the
    seeds resolve a difference that small); did not hold: they differ by more than tolerance + pooled std; else
    inconclusive. With `relative`, the tolerance is that fraction of `second`'s mean (for a time, say)."""

    tolerance: float = 0.0
    relative: bool = False

    def judge(self, arms: Mapping[str, ArmSummary], higher_is_better: bool) -> tuple[str, str]:
        del higher_is_better  # a tie is a tie either way
        reason = self.too_few_seeds(arms)
        if reason:
            return VERDICTS[2], reason
        first, second = arms[self.first], arms[self.second]
        gap, spread = abs(first.mean - second.mean), pooled_std(first, second)
        tolerance = self.tolerance * abs(second.mean) if self.relative else self.tolerance
        numbers = (f"{format_arm(self.first, first)} vs {format_arm(self.second, second)}: they differ by {gap:.4g}, "
                   f"pooled std {spread:.2g}, tolerance {tolerance:.4g}"
                   + (f" ({self.tolerance:.0%} of {self.second}'s mean)" if self.relative else ""))
        if gap <= tolerance and spread <= tolerance:
            return VERDICTS[0], numbers
        return VERDICTS[1 if gap > tolerance + spread else 2], numbers


@dataclasses.dataclass(frozen=True)
class Diverges(Comparison):
    """held: `first` diverged (a non-finite loss) on at least half its seeds and on more than `second`; did not
    hold: on no more seeds than `second`; inconclusive: more, but on fewer than half its seeds."""

    def judge(self, arms: Mapping[str, ArmSummary], higher_is_better: bool) -> tuple[str, str]:
        del higher_is_better  # divergence is counted, not compared
        first, second = arms[self.first], arms[self.second]
        numbers = (f"{self.first} diverged on {first.diverged}/{len(first.values)} seeds, {self.second} on "
                   f"{second.diverged}/{len(second.values)}; {format_arm(self.first, first)} vs "
                   f"{format_arm(self.second, second)} over the finite seeds")
        if first.diverged <= second.diverged:
            return VERDICTS[1], numbers
        return VERDICTS[0 if 2 * first.diverged >= len(first.values) else 2], numbers


INFERENCE_REPEATS = 10  # timed forward passes per measurement, after the one that compiles: the fastest counts


def study_model(config: ml_collections.ConfigDict):
    """The run's model (no weights): the recipe's preset, task head and model_overrides; a fine-tuning run's
    pre-trained weights (`init_from_run`) are not read, as they change no shape."""
    from train.loop import create_model

    config = config.copy_and_resolve_references()
    config.init_from_run = ""
    return create_model(config)[0]


def parameter_count(config: ml_collections.ConfigDict) -> float:
    """The model's parameters, from an abstract init (zoo.param_count)."""
    import zoo

    return float(zoo.param_count(study_model(config)))


def inference_us_per_token(config: ml_collections.ConfigDict) -> float:
    """Microseconds per token of the jitted forward pass (no dropout) over a batch of train.batch_size rows of
    data.max_length tokens: the fastest of INFERENCE_REPEATS calls after the one that compiles (another job on the
    machine only ever adds time; with the median a busy spell moved one arm's seed by half). The weights are a fresh
    initialisation from the run's seed: the time of a pass does not depend on their values."""
    import jax
    from zoo.registry import example_inputs

    model = study_model(config)
    inputs = example_inputs(model, config.train.batch_size, config.data.max_length)
    params = jax.jit(model.init)(jax.random.key(config.seed), *inputs)
    forward = jax.jit(model.apply)
    jax.block_until_ready(forward(params, *inputs))
    times = []
    for _ in range(INFERENCE_REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(forward(params, *inputs))
        times.append(time.perf_counter() - start)
    return min(times) / inputs[0].size * 1e6


def forward_temp_mib(config: ml_collections.ConfigDict) -> float:
    """MiB of temporary buffers XLA plans for the jitted forward pass (no dropout) over a batch of train.batch_size
    rows of data.max_length tokens: `compile().memory_analysis().temp_size_in_bytes`, the activations and scratch
    beside the weights and inputs (an attention's [length, length] scores among them). Planned, not measured: the
    same on a busy machine, and it depends on the backend that compiles (the CPU's here)."""
    import jax
    from zoo.registry import example_inputs

    model = study_model(config)
    inputs = example_inputs(model, config.train.batch_size, config.data.max_length)
    params = jax.eval_shape(model.init, jax.random.key(config.seed), *inputs)
    analysis = jax.jit(model.apply).lower(params, *inputs).compile().memory_analysis()
    return analysis.temp_size_in_bytes / 2 ** 20


@dataclasses.dataclass(frozen=True)
class Measurement:
    """A number taken of a run's model beside its training, from its config alone (`measure(config)`): what a
    claim about size or speed needs and metrics.jsonl does not hold."""

    name: str
    description: str  # the report's column
    measure: Callable[[ml_collections.ConfigDict], float]
    higher_is_better: bool


MEASUREMENTS = {m.name: m for m in (
    Measurement("parameters", "parameters", parameter_count, higher_is_better=False),
    Measurement("inference_us_per_token", "inference µs/token", inference_us_per_token, higher_is_better=False),
    Measurement("forward_temp_mib", "forward temp MiB", forward_temp_mib, higher_is_better=False),
)}


@dataclasses.dataclass(frozen=True)
class Pretraining:
    """A first stage of every run of a study: `recipe` with `overrides` and the study's switch, trained `steps` steps
    (times --scale) in a folder beside the run's (`seed<k>-pretraining`), from which the study's own recipe then fine-tunes
    (`init_from_run`: the body carries over, the head starts fresh). The switch is set in this stage only, so the
    fine-tuning is the same in every arm; the fine-tuning model is the pre-training one (its `model` and
    `model_overrides`, before the switch) with the fine-tuning recipe's own model overrides (its head's labels) on
    top."""

    recipe: str
    steps: int
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Study:
    """A controlled comparison: the base recipe with `overrides` (the same for every arm), and the one `switch` set to
    each arm's value.

    Attributes:
      name: the command's study name and the folder under --workdir.
      claim: the article's claim, one line.
      recipe: a recipe of configs/ (`train.recipes.load_recipe`).
      switch: the dotted config path the arms change, e.g. "optimizer.b2" or "model_overrides.pooling".
      arms: arm name (its folder) -> the switch's value.
      metric: the metrics.jsonl key compared, e.g. "eval_exact_match"; its last logged value is a seed's result.
      higher_is_better: whether a larger metric is better.
      steps: training steps per run at the default size (each study fits about 10 minutes on 2 CPU cores).
      verdict: the rule saying whether the claim held (a `Comparison`: `Beats`, `Ties`, `Diverges`) of two
        arms of `arms`.
      seeds: seeds per arm by default (0, 1, ...): config.seed, which seeds the initialisation and the data.
      overrides: dotted config path -> value, set for every arm before the switch (what fits the recipe to the study).
      target: a value of the metric whose first eval step reaching it the report gives per seed (how fast an arm
        converges), or None.
      measurements: names of MEASUREMENTS taken of every run (after all are trained, the arms of a seed one after
        the other, so a busy machine slows them alike) and reported per arm; the verdict may judge one (its `on`).
      reported: further metrics.jsonl keys whose last logged value the report gives per arm beside the metric (a
        second view of the claim, e.g. "eval_ece", the calibration label smoothing is said to improve).
      pretraining: a first stage whose arms differ by the switch, each fine-tuned alike by `recipe` (a claim about
        what pre-training leaves for fine-tuning), or None: the runs train `recipe` alone.
    """

    name: str
    claim: str
    recipe: str
    switch: str
    arms: Mapping[str, Any]
    metric: str
    higher_is_better: bool
    steps: int
    verdict: Comparison
    seeds: int = 3
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    target: float | None = None
    measurements: tuple[str, ...] = ()
    reported: tuple[str, ...] = ()
    pretraining: Pretraining | None = None

    @property
    def columns(self) -> dict[str, str]:
        """What the report gives per arm beside the metric: each measurement's and reported metric's name -> its
        column's heading."""
        return {**{name: MEASUREMENTS[name].description for name in self.measurements},
                **{key: key for key in self.reported}}

    def __post_init__(self):
        unmeasured = [name for name in self.measurements if name not in MEASUREMENTS]
        if unmeasured:
            raise ValueError(f"study {self.name!r}: no measurements {unmeasured}; there are {list(MEASUREMENTS)}")
        if self.verdict.on and self.verdict.on not in self.measurements:
            raise ValueError(f"study {self.name!r}: the verdict judges {self.verdict.on!r}, which is not among its "
                             f"measurements {list(self.measurements)}")
        unknown = [arm for arm in self.verdict.arms if arm not in self.arms]
        if unknown:
            raise ValueError(f"study {self.name!r}: the verdict names arms {unknown} that are not among its arms "
                             f"{list(self.arms)}")
        if len(self.arms) < 2 or self.seeds < 3:
            raise ValueError(f"study {self.name!r} needs at least 2 arms and 3 seeds, has {len(self.arms)} arms and "
                             f"{self.seeds} seeds")
        stage_overrides = self.pretraining.overrides if self.pretraining else {}
        if self.switch in self.overrides or self.switch in stage_overrides or self.switch == "seed":
            raise ValueError(f"study {self.name!r}: the switch {self.switch!r} is what the arms change, so it cannot "
                             f"also be an override or the seed")


# Sized on a 2-core CPU shared with another job (2026-12-02): transformer_tiny trains ~31 steps/s, and a run costs
# ~5 s beyond its steps (data, init, 8 evals with greedy decoding) plus ~20 s of compiling for an arm's first seed.
# So 4 arms x 3 seeds x 800 steps and 2 arms x 3 seeds x the recipe's 1200 steps each take 5 to 8 minutes.
DATES = "transformer_tiny"
# transformer_tiny at 6 + 6 layers, linear decay, for the depth studies. Every arm ends with a LayerNorm (final_norm),
# which a pre-LN stack needs and a post-LN one barely notices (the norm of a normed output), so pre and post differ in
# where the residual branches are normed and nothing else. The greedy-decoding evals are off: the loss is the measure
# here, and 6 + 6 layers decode slowly on 2 cores (a 300-step run takes about 2 minutes there).
# The warm-up studies' "steps to a loss": every date right is an eval loss of about 0.106 here; 0.15 is nearly there.
WARMUP_TARGET_LOSS = 0.15
DEEP_DATES = {"schedule.name": "linear", "model_overrides.num_layers": 6, "model_overrides.num_decoder_layers": 6,
              "model_overrides.final_norm": True, "eval.metric": "", "checkpoint.best_metric": ""}
# The attention studies' arms on configs/bert_far_key.py: every pattern zoo's bidirectional encoder takes. The accuracy
# saturates once a run has the task, so the first eval step at 0.99 says how fast each arm gets there.
FAR_KEY_ATTENTION = dict(recipe="bert_far_key", switch="model_overrides.attention",
                         arms={"dense": "dense", "sliding_window": "sliding_window", "block_sparse": "block_sparse"},
                         metric="eval_accuracy", higher_is_better=True, steps=200, target=0.99)
STUDIES = {s.name: s for s in (
    Study("positions",
          claim="learned positions end within 0.3 BLEU of sinusoids (WMT en-de), though they converge slower",
          recipe=DATES, switch="model_overrides.position_embedding",
          # zoo's encoder-decoder takes these (rotary is for single stacks); "none" is the bag of words
          arms={"sinusoidal": "sinusoidal", "learned": "learned", "relative_bias": "relative_bias", "none": "none"},
          metric="eval_exact_match", higher_is_better=True, steps=800,
          verdict=Ties("sinusoidal", "learned", tolerance=0.02), target=0.95, reported=("eval_bleu",)),
    # Rotary positions rotate a single stack's queries and keys (zoo's encoder-decoder takes none), so the four
    # position switches meet on GPT's causal LM: the held-out loss of the shipped corpus.
    Study("positions_causal_lm",
          claim="learned positions end close to sinusoids (within 0.05 nats of held-out loss in a small causal LM "
                "here, the article's 0.3 BLEU there); rotary and none are reported beside them",
          recipe="gpt_tiny", switch="model_overrides.position_embedding",
          arms={"sinusoidal": "sinusoidal", "learned": "learned", "rotary": "rotary", "none": "none"},
          metric="eval_loss", higher_is_better=False, steps=400,
          verdict=Ties("sinusoidal", "learned", tolerance=0.05)),
    Study("adam_b2",
          claim="Adam's b2 = 0.999 makes a Transformer's loss oscillate where the paper's 0.98 does not",
          recipe=DATES, switch="optimizer.b2", arms={"0.98": 0.98, "0.999": 0.999},
          metric="eval_loss", higher_is_better=False, steps=1200, verdict=Beats("0.98", "0.999")),
    Study("label_smoothing",
          claim="label smoothing of 0.1 improves the translations (about 0.5 BLEU on WMT)",
          recipe=DATES, switch="loss.label_smoothing", arms={"0.1": 0.1, "0": 0.0},
          metric="eval_exact_match", higher_is_better=True, steps=1200, verdict=Beats("0.1", "0"),
          reported=("eval_bleu", "eval_ece")),
    # A linear decay, not the recipe's rsqrt: rsqrt's decay is peak * sqrt(warmup / step), so removing its warm-up
    # would also shrink every later learning rate; here both arms decay alike from the same peak.
    Study("warmup",
          claim="without warm-up (the peak learning rate from step 0) the loss turns to NaN in the first few hundred "
                "steps",
          recipe=DATES, switch="schedule.warmup_steps", arms={"200": 200, "0": 0},
          metric="eval_loss", higher_is_better=False, steps=1200, verdict=Diverges("0", "200"),
          overrides={"schedule.name": "linear"}, target=WARMUP_TARGET_LOSS),
    # The same at 2x and 4x the recipe's peak of 2e-3: whether the claim shows once the peak is less gentle.
    *(Study(f"warmup_{multiple}x_lr",
            claim="without warm-up (the peak learning rate from step 0) the loss turns to NaN in the first few "
                  f"hundred steps: at {multiple}x the recipe's peak learning rate",
            recipe=DATES, switch="schedule.warmup_steps", arms={"200": 200, "0": 0},
            metric="eval_loss", higher_is_better=False, steps=1200, verdict=Diverges("0", "200"),
            overrides={"schedule.name": "linear", "optimizer.learning_rate": 2e-3 * multiple},
            target=WARMUP_TARGET_LOSS)
      for multiple in (2, 4)),
    # BERT's masked LM with and without its bidirectional view (the article's experiment: "a unidirectional attention
    # mask, keeping everything else the same"), then the same bidirectional fine-tuning: the code-spans tagger of the
    # `bidirectional` study, from each pre-trained body. MLM alone (BERT's "No NSP" ablation against "LTR & No NSP"):
    # a causal [CLS] sees only itself, so next-sentence would test the pooling too. Rotary positions, which carry no
    # parameters and mean the same under either mask: bert_tiny's relative bias buckets distances one way for a causal
    # stack and another for a bidirectional one, so its table would change meaning at fine-tuning.
    Study("pretraining_objective",
          claim="pre-training BERT's masked LM with a unidirectional (causal) attention mask instead of the "
                "bidirectional one, everything else the same, costs accuracy after the same fine-tuning (almost 4 "
                "GLUE points)",
          recipe="bert_tagging_code_spans", switch="model_overrides.causal",
          arms={"bidirectional": False, "unidirectional": True},
          metric="eval_entity_f1", higher_is_better=True, steps=300, verdict=Beats("bidirectional", "unidirectional"),
          # The feed-forward of 512 and the 1024-token vocabulary the recipe had when the study was measured (the
          # demo's are 256 and 4096 since 2026-12-07); the tagger's body shares the vocabulary.
          pretraining=Pretraining("bert_tiny", steps=300, overrides={
              "task": "mlm", "model_overrides.position_embedding": "rotary", "model_overrides.intermediate_size": 512,
              "model_overrides.vocab_size": 1024, "data.tokenizer": "shipped",
              "model_overrides.relative_attention_alibi_init": 0.0,
              "model_overrides.relative_attention_untie_first": False, "optimizer.lr_multipliers": ""})),
    # Tagging, not sentence classification: a causal stack's [CLS] sees only itself, so a pooled classifier would
    # test the pooling; a tag on each word's first sub-word asks what every position knows of its context.
    Study("bidirectional",
          claim="a unidirectional (GPT's causal) encoder cannot see the second half of the sentence, so its accuracy "
                "on classification plummets against BERT's bidirectional one",
          recipe="bert_tagging_code_spans", switch="model_overrides.causal",
          arms={"bidirectional": False, "causal": True},
          metric="eval_entity_f1", higher_is_better=True, steps=600, verdict=Beats("bidirectional", "causal")),
    Study("pre_ln",
          claim="deep stacks of FFN and residual connections make a Transformer's gradients high-variance and its "
                "first updates unstable without warm-up; pre-LN (Xiong et al. 2020) trains without it, so at 6 + 6 "
                "layers and no warm-up pre-LN ends with the lower loss",
          recipe=DATES, switch="model_overrides.norm_position", arms={"pre": "pre", "post": "post"},
          metric="eval_loss", higher_is_better=False, steps=300, verdict=Beats("pre", "post"),
          overrides={**DEEP_DATES, "schedule.warmup_steps": 0}),
    # pre_ln at the warmup study's depth (2 + 2 layers), and at 6 + 6 with a warm-up: the claim is about depth and
    # warm-up, so the same switch at the other depth and the other schedule.
    Study("pre_ln_2_layers",
          claim="pre-LN's advantage without warm-up comes with depth: at 2 + 2 layers post-LN trains as well",
          recipe=DATES, switch="model_overrides.norm_position", arms={"pre": "pre", "post": "post"},
          metric="eval_loss", higher_is_better=False, steps=300, verdict=Ties("pre", "post", tolerance=0.05),
          overrides={**DEEP_DATES, "model_overrides.num_layers": 2, "model_overrides.num_decoder_layers": 2,
                     "schedule.warmup_steps": 0}),
    Study("pre_ln_warmup",
          claim="with a warm-up, post-LN's deep stack trains as well as pre-LN's (the warm-up is what post-LN needs)",
          recipe=DATES, switch="model_overrides.norm_position", arms={"pre": "pre", "post": "post"},
          metric="eval_loss", higher_is_better=False, steps=300, verdict=Ties("pre", "post", tolerance=0.05),
          overrides={**DEEP_DATES, "schedule.warmup_steps": 60}),
    # The warmup study again at 6 + 6 layers (post-LN, the recipe's): its "0" arm is pre_ln's "post" arm.
    Study("deep_warmup",
          claim="without warm-up the self-attention of a freshly initialised deep Transformer is unstable and a large "
                "learning rate upsets it; a warm-up gives a 6 + 6-layer post-LN Transformer the lower loss",
          recipe=DATES, switch="schedule.warmup_steps", arms={"60": 60, "0": 0},
          metric="eval_loss", higher_is_better=False, steps=300, verdict=Beats("60", "0"),
          overrides=DEEP_DATES),
    # Both arms scan their layers (zoo runs a shared layer as a scan): a loop over 4 stacked layers against one
    # broadcast layer, so the time compares the weights' sharing, not an unrolled program with a loop.
    Study("albert_sharing",
          claim="ALBERT's one set of layer weights shared by all layers cuts the parameters dramatically, but at "
                "inference the shared layer still runs once per layer, so the latency is not reduced",
          recipe="bert_tagging_code_spans", switch="model_overrides.share_layers",
          arms={"shared": True, "separate": False},
          metric="eval_entity_f1", higher_is_better=True, steps=500,
          verdict=Ties("shared", "separate", tolerance=0.1, relative=True, on="inference_us_per_token"),
          overrides={"model_overrides.num_layers": 4, "model_overrides.scan_layers": True},
          measurements=("parameters", "inference_us_per_token")),
    # A pretrained encoder (all-MiniLM-L6-v2, fine-tuned whole): a tiny BERT from scratch stays at chance on
    # word_order within a CPU budget, so every pooling would tie at 0.5 and say nothing.
    Study("pooling",
          claim="the [CLS] token's final state is a sentence representation as good as the concatenated mean and max "
                "pooling of the token states that classifiers used before BERT",
          recipe="minilm_word_order", switch="model_overrides.pooling",
          arms={"cls": "cls", "mean": "mean", "max": "max", "mean_max": "mean_max"},
          metric="eval_accuracy", higher_is_better=True, steps=120,
          verdict=Ties("cls", "mean_max", tolerance=0.03)),
    # The positions study's "none" arm on the task that asks for word order alone: the same pretrained encoder with
    # its position table dropped (from_pretrained logs it), fine-tuned whole. A sentence and its swapped twin are then
    # the same bag of tokens, so the claim predicts chance for "none".
    Study("positions_word_order",
          claim="without position information self-attention sees a bag of words: it cannot tell a sentence from the "
                "same sentence with two words swapped",
          recipe="minilm_word_order", switch="model_overrides.position_embedding",
          arms={"learned": "learned", "none": "none"},
          metric="eval_accuracy", higher_is_better=True, steps=120, verdict=Beats("learned", "none")),
    # Rows of 512 tokens whose label lies in eight key words of the second half, 255 to 510 tokens from the [CLS] that
    # pools them (configs/bert_far_key.py). The sparse arms keep [CLS] global, as Longformer and BigBird do for a
    # classifier: without it two layers of a 32-token window could not reach the keys at all. Measured (README):
    # [CLS]'s row of attention, the one the classifier reads, is dense in every arm, and the arms' curves agree seed
    # by seed; the cost is what differs.
    Study("sparse_attention",
          claim="sparse attention (a sliding window, BigBird's blocks) keeps a long-input model's quality at a "
                "fraction of dense attention's memory and time",
          verdict=Ties("block_sparse", "dense", tolerance=0.02),
          measurements=("forward_temp_mib", "inference_us_per_token"), **FAR_KEY_ATTENTION),
    # The same without a global token (dense attention has none to lose): [CLS] reaches the keys only through the
    # pattern, which two layers of a 32-token window cannot span and BigBird's random blocks can.
    Study("sparse_attention_no_global",
          claim="without global tokens a sliding window cannot connect tokens farther apart than its layers span, "
                "where BigBird's random blocks can, so on far-apart information block-sparse attention beats it",
          verdict=Beats("block_sparse", "sliding_window"), overrides={"model_overrides.global_tokens": 0},
          **FAR_KEY_ATTENTION),
)}


def get_study(name: str) -> Study:
    """The study called `name`; a ValueError lists the studies."""
    if name not in STUDIES:
        raise ValueError(f"no study {name!r}; the studies are: {', '.join(STUDIES)} (or 'all')")
    return STUDIES[name]


def set_config_path(config: ml_collections.ConfigDict, path: str, value) -> None:
    """Sets `config.<path>` (dotted). The key must exist (a misspelt switch is an error, not a new key), except
    under `model_overrides`, which takes any zoo.Config field.

    Raises KeyError naming the path and the keys there are.
    """
    from zoo.config import CONFIG_FIELDS

    *parents, leaf = path.split(".")
    node = config
    for depth, name in enumerate(parents):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            raise KeyError(f"config has no {'.'.join(parents[:depth + 1])!r} (setting {path!r})")
        node = node[name]
    if parents == ["model_overrides"]:
        if leaf not in CONFIG_FIELDS:
            raise KeyError(f"{path!r}: {leaf!r} is not a zoo.Config field")
    elif leaf not in node:
        raise KeyError(f"config has no {path!r}; {'.'.join(parents) or 'the config'} has: {', '.join(sorted(node))}")
    node[leaf] = value


def scaled_steps(default: int, what: str, *, quick: bool, scale: float) -> int:
    """Training steps of a run: `default` times `scale`, or QUICK_STEPS; `what` names the run in the error."""
    if quick:
        return QUICK_STEPS
    steps = round(default * scale)
    if steps < EVALS_PER_RUN:
        raise ValueError(f"--scale {scale} leaves {steps} steps of {what}; a run needs at least {EVALS_PER_RUN} (one "
                         f"per eval)")
    return steps


def run_steps(study: Study, *, quick: bool, scale: float) -> int:
    """Training steps of each run: the study's default times `scale`, or QUICK_STEPS."""
    return scaled_steps(study.steps, f"study {study.name!r}", quick=quick, scale=scale)


def sized_config(recipe: str, overrides: Mapping[str, Any], steps: int, seed: int, *, quick: bool,
                 switch: tuple[str, Any] | None = None) -> ml_collections.ConfigDict:
    """A recipe with `overrides`, sized to `steps` steps of a study run (evals, logs, one save at the end; quick
    mode's small batches and data), `switch` (path, value) set, and the seed."""
    config = load_recipe(recipe)
    for path, value in overrides.items():
        set_config_path(config, path, value)
    config.train.update(dict(steps=steps, eval_every=steps // EVALS_PER_RUN,
                             log_every=max(1, steps // LOG_ROWS_PER_RUN)))
    # one save at the end: a run is minutes long, and an interrupted one simply starts over
    config.checkpoint.every_steps = steps
    if quick:  # two evals: a curve, and the final value
        config.train.update(dict(batch_size=QUICK_BATCH_SIZE, eval_every=steps // 2))
        config.data.update(dict(eval_batches=1, num_examples=256, num_eval_examples=QUICK_BATCH_SIZE))
    if switch is not None:
        set_config_path(config, *switch)
    if quick:  # a linear warm-up must end within the run (a warm-up arm keeps one, shortened)
        config.schedule.warmup_steps = min(config.schedule.warmup_steps, steps // 2)
    config.seed = seed
    return config


def pretraining_config(study: Study, arm: str, seed: int, *, quick: bool = False,
                       scale: float = 1.0) -> ml_collections.ConfigDict:
    """The resolved config of one run's pre-training stage (`study.pretraining`): its recipe and overrides, its size,
    the arm's switch and the seed."""
    stage = study.pretraining
    steps = scaled_steps(stage.steps, f"the pre-training of study {study.name!r}", quick=quick, scale=scale)
    return sized_config(stage.recipe, stage.overrides, steps, seed, quick=quick,
                        switch=(study.switch, study.arms[arm]))


def study_config(study: Study, arm: str, seed: int, *, quick: bool = False, scale: float = 1.0,
                 pretrained: str = "") -> ml_collections.ConfigDict:
    """The resolved config of one run: the recipe, the study's overrides, its size, the arm's switch and the seed.
    For a study with a pre-training stage, the fine-tuning run (the same in every arm) of the pre-training run in
    the folder `pretrained`, on the pre-training stage's model."""
    steps = run_steps(study, quick=quick, scale=scale)
    if study.pretraining is None:
        return sized_config(study.recipe, study.overrides, steps, seed, quick=quick,
                            switch=(study.switch, study.arms[arm]))
    config = sized_config(study.recipe, study.overrides, steps, seed, quick=quick)
    stage = study.pretraining
    body = sized_config(stage.recipe, stage.overrides, steps, seed, quick=quick)  # the model before the switch
    config.model = body.model
    config.model_overrides = ml_collections.ConfigDict({**body.model_overrides.to_dict(),
                                                        **config.model_overrides.to_dict()})
    config.init_from_run = pretrained
    return config


def pretraining_dir(workdir: str, study: Study, arm: str, seed: int) -> str:
    """The pre-training stage's folder, beside the run's own (which a restarted run may empty)."""
    return run_dir(workdir, study, arm, seed) + "-pretraining"


def cpu_model() -> str:
    """The CPU's model (/proc/cpuinfo's model name), so a figure says which machine it is from."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine() -> str:
    """What the runs ran on, for the report: the accelerator's kind, or the CPU's model and cores."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        return f"{jax.device_count()} x {device.device_kind}"
    return f"{cpu_model()}, {os.cpu_count()} cores"


def run_dir(workdir: str, study: Study, arm: str, seed: int) -> str:
    return os.path.join(workdir, study.name, arm, f"seed{seed}")


def saved_step(folder: str) -> int | None:
    """The step of the run's last checkpoint in `folder`, or None."""
    from train.checkpointing import Checkpointer

    checkpointer = Checkpointer(os.path.join(folder, "checkpoints"), every_steps=1, async_save=False)
    try:
        return checkpointer.latest_step()
    finally:
        checkpointer.close()


def train_one_run(config: ml_collections.ConfigDict, folder: str, *,
                  show_progress: bool) -> tuple[list[dict], bool]:
    """Trains (or reuses) one run of `config.train.steps` steps in `folder`; returns its metrics.jsonl rows and
    whether it diverged.

    A finished run is reused (train_and_evaluate returns it without training). A folder whose run stopped short of
    its one save (no checkpoint: nothing to lose) is emptied and trained from the start, so its metrics.jsonl holds
    one run. A folder holding a finished run of another number of steps (another --scale) is an error: its checkpoint
    is kept, and another --workdir holds the new size. A NaN or inf loss is recorded in `folder/diverged.json` (with
    the steps) and that run is not trained again.
    """
    from train.loop import NonFiniteLoss, create_model, train_and_evaluate
    from train.metrics import read_metrics
    from train.tasks import make_datasets

    steps, marker = config.train.steps, os.path.join(folder, DIVERGED_FILE)
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f)["steps"] == steps:
                return read_metrics(folder), True
    if os.path.isdir(folder):
        saved = saved_step(folder)
        if saved is not None and saved != steps:
            raise ValueError(f"{folder} holds a finished run of {saved} steps, not {steps} (another --scale): "
                             f"give this size another --workdir")
        if saved is None:
            print(f"  {folder} holds no finished run of {steps} steps: starting it over", flush=True)
            shutil.rmtree(folder)
    model, initial_params = create_model(config)
    datasets = make_datasets(config, model)
    try:
        train_and_evaluate(config, folder, datasets.train, datasets.eval, model=model, initial_params=initial_params,
                           show_progress=show_progress)
    except NonFiniteLoss as error:
        print(f"  diverged: {error}", flush=True)
        with open(marker, "w") as f:
            json.dump({"error": str(error), "steps": steps}, f)
        return read_metrics(folder), True
    return read_metrics(folder), False


def run_result(rows: Sequence[dict], study: Study, diverged: bool) -> dict:
    """One run's numbers: the last logged metric (NaN if it diverged or never logged it), the first step whose metric
    reached the study's target (None if none did), the variance of the train loss over the last quarter of its
    train rows (the oscillation the b2 claim is about), and its spikes (logged train losses above SPIKE times the
    one before: each is a mean over the steps since that one)."""
    metric, target, sign = study.metric, study.target, 1 if study.higher_is_better else -1
    values = [row[metric] for row in rows if metric in row]
    reached = [row["step"] for row in rows
               if target is not None and metric in row and sign * (row[metric] - target) >= 0]
    losses = [row["loss"] for row in rows if "loss" in row]  # train rows: eval rows hold eval_loss
    window = losses[-max(2, len(losses) // 4):]
    last = {key: [row[key] for row in rows if key in row] for key in study.reported}
    return {"final": math.nan if diverged or not values else float(values[-1]),
            "diverged": diverged,
            "reported": {key: math.nan if diverged or not v else float(v[-1]) for key, v in last.items()},
            "steps_to_target": reached[0] if reached else None,
            "loss_variance_last_quarter": float(np.var(window, ddof=1)) if len(window) >= 2 else math.nan,
            "loss_spikes": sum(now > SPIKE * before for before, now in zip(losses, losses[1:])),
            "steps": rows[-1]["step"] if rows else 0}


def column_value(result: dict, name: str) -> float:
    """A run's value of a report column: a measurement taken of its model, or a metric it reported."""
    return result["measurements"][name] if name in result["measurements"] else result["reported"][name]


def study_report(study: Study, results: Mapping[str, Mapping[int, dict]]) -> dict:
    """The report (as report.json holds it) of `results[arm][seed]` (run_result's dicts, with a "measurements" dict
    where the study takes any): per arm the per-seed values, mean, sample std and diverged seeds, the same of each
    measurement, and the verdict with its numbers."""
    arms = {arm: ArmSummary(tuple(r["final"] for r in by_seed.values()),
                            sum(r["diverged"] for r in by_seed.values())) for arm, by_seed in results.items()}
    measured = {name: {arm: ArmSummary(tuple(column_value(r, name) for r in by_seed.values()), diverged=0)
                       for arm, by_seed in results.items()} for name in study.columns}
    on = study.verdict.on
    outcome, numbers = study.verdict.judge(measured[on] if on else arms,
                                           MEASUREMENTS[on].higher_is_better if on else study.higher_is_better)
    return {
        "study": study.name, "claim": study.claim, "recipe": study.recipe, "switch": study.switch,
        "pretraining": dataclasses.asdict(study.pretraining) if study.pretraining else None,
        "metric": study.metric, "higher_is_better": study.higher_is_better, "target": study.target,
        "measurements": study.columns,
        "arms": {arm: {"value": study.arms[arm], "mean": arms[arm].mean, "std": arms[arm].std,
                       "diverged": arms[arm].diverged,
                       "measurements": {name: {"mean": measured[name][arm].mean, "std": measured[name][arm].std}
                                        for name in study.columns},
                       "seeds": {str(seed): r for seed, r in results[arm].items()}} for arm in results},
        "verdict": {"outcome": outcome, "numbers": numbers, "on": on or study.metric},
    }


def json_safe(value):
    """NaN -> None, so report.json is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def report_markdown(report: dict) -> str:
    """report.md: what was compared, a row per arm (mean ± std, the per-seed values), and the verdict line."""
    metric, steps, quick, pretraining = report["metric"], report["steps"], report["quick"], report["pretraining"]
    seeds = next(iter(report["arms"].values()))["seeds"]
    measurements = report["measurements"]
    lines = [f"# Study `{report['study']}`", "",
             f"Claim: {report['claim']}.", "",
             (f"Pre-training `{pretraining['recipe']}` ({pretraining['steps']} steps at scale 1) with the switch "
              f"`{report['switch']}`, then the same fine-tuning by `{report['recipe']}` in every arm: "
              if pretraining else f"Recipe `{report['recipe']}`, switch `{report['switch']}`, ")
             + f"{steps} steps (scale {report['scale']:g}), "
             f"seeds {', '.join(seeds)}{' (quick mode: too small to judge the claim)' if quick else ''}; reported "
             f"{report['date']} on {report['machine']}, jax {report['jax']}. Metric `{metric}` "
             f"({'higher' if report['higher_is_better'] else 'lower'} is better), its last logged value per seed.", "",
             f"| arm | {report['switch']} | {metric} mean ± std | per seed | diverged | train-loss variance, last "
             f"quarter | train-loss spikes (> {SPIKE:g}x the row before) |"
             + (f" first step at {metric} {'>=' if report['higher_is_better'] else '<='} {report['target']:g} |"
                if report["target"] is not None else "")
             + "".join(f" {description} mean ± std (per seed) |" for description in measurements.values()),
             "|---|---|---|---|---|---|---|" + ("---|" if report["target"] is not None else "")
             + "---|" * len(measurements)]
    for arm, summary in report["arms"].items():
        runs = summary["seeds"].values()
        per_seed = ", ".join("diverged" if r["diverged"] else f"{r['final']:.4g}" for r in runs)
        variances = ", ".join(f"{r['loss_variance_last_quarter']:.2g}" for r in runs)
        spikes = ", ".join(str(r["loss_spikes"]) for r in runs)
        row = (f"| {arm} | {summary['value']!r} | {summary['mean']:.4g} ± {summary['std']:.2g} | {per_seed} | "
               f"{summary['diverged']}/{len(runs)} | {variances} | {spikes} |")
        if report["target"] is not None:
            row += " " + ", ".join("never" if r["steps_to_target"] is None else str(r["steps_to_target"])
                                   for r in runs) + " |"
        for name in measurements:
            stats = summary["measurements"][name]
            row += (f" {stats['mean']:.4g} ± {stats['std']:.2g} ("
                    + ", ".join(f"{column_value(r, name):.4g}" for r in runs) + ") |")
        lines.append(row)
    verdict = report["verdict"]
    judged = "" if verdict["on"] == metric else f", on {measurements[verdict['on']]}"
    lines += ["", f"**Verdict{judged}: {verdict['outcome']}** ({verdict['numbers']}).", "", "![curves](curves.png)",
              ""]
    return "\n".join(lines)


def curves_figure(study: Study, rows: Mapping[str, Sequence[Sequence[dict]]]):
    """The metric (left) and the train loss (right) against step for every arm: the mean across seeds, shaded one
    std either side. `rows[arm]` holds each seed's metrics.jsonl rows; a step counts the seeds that logged it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4))
    for ax, key in zip(fig.subplots(1, 2), (study.metric, "loss")):
        for arm, seeds in rows.items():
            by_step: dict[int, list[float]] = {}
            for seed_rows in seeds:
                for row in seed_rows:
                    if key in row:
                        by_step.setdefault(row["step"], []).append(row[key])
            if not by_step:
                continue
            steps = sorted(by_step)
            mean = np.array([np.mean(by_step[s]) for s in steps])
            std = np.array([np.std(by_step[s], ddof=1) if len(by_step[s]) > 1 else 0.0 for s in steps])
            (line,) = ax.plot(steps, mean, "o-" if key == study.metric else "-", label=f"{arm}", markersize=3)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("step")
        ax.set_ylabel(key if key == study.metric else "train loss")
        ax.grid(alpha=0.3)
        ax.legend(title=study.switch, fontsize=8)
    fig.suptitle(f"{study.name}: mean over seeds, shaded ± 1 std")
    return fig


def run_study(study: Study, workdir: str, *, seeds: int | None = None, quick: bool = False, scale: float = 1.0,
              show_progress: bool = True) -> dict:
    """Trains (or reuses) every arm and seed of `study` under `workdir/<study.name>/`, writes report.json, report.md
    and curves.png there, and returns the report."""
    seeds = seeds or (QUICK_SEEDS if quick else study.seeds)
    folder = os.path.join(workdir, study.name)
    results, rows = {}, {}
    runs, done = len(study.arms) * seeds, 0
    for arm in study.arms:
        results[arm], rows[arm] = {}, []
        for seed in range(seeds):
            done += 1
            path, start = run_dir(workdir, study, arm, seed), time.perf_counter()
            pretrained, diverged = "", False
            if study.pretraining is not None:
                pretrained = pretraining_dir(workdir, study, arm, seed)
                stage = pretraining_config(study, arm, seed, quick=quick, scale=scale)
                print(f"[{study.name} {done}/{runs}] arm {arm} ({study.switch}={study.arms[arm]!r}), seed {seed}: "
                      f"pre-training {stage.train.steps} steps of {study.pretraining.recipe} in {pretrained}",
                      flush=True)
                _, diverged = train_one_run(stage, pretrained, show_progress=show_progress)
            config = study_config(study, arm, seed, quick=quick, scale=scale, pretrained=pretrained)
            print(f"[{study.name} {done}/{runs}] arm {arm} ({study.switch}={study.arms[arm]!r}), seed {seed}: "
                  f"{config.train.steps} steps{' of fine-tuning' if pretrained else ''} in {path}", flush=True)
            # a pre-training that diverged leaves nothing to fine-tune: the run counts as diverged
            run_rows, diverged = ([], True) if diverged else train_one_run(config, path, show_progress=show_progress)
            print(f"[{study.name} {done}/{runs}] {time.perf_counter() - start:.0f} s", flush=True)
            results[arm][seed] = {**run_result(run_rows, study, diverged), "measurements": {}}
            rows[arm].append(run_rows)
    for seed in range(seeds):  # after training, the arms of a seed in turn: a busy spell slows them alike
        for arm in study.arms:
            config = study_config(study, arm, seed, quick=quick, scale=scale,
                                  pretrained=pretraining_dir(workdir, study, arm, seed) if study.pretraining else "")
            measured = results[arm][seed]["measurements"]
            for name in study.measurements:
                measured[name] = MEASUREMENTS[name].measure(config)
            if study.measurements:
                print(f"[{study.name}] arm {arm}, seed {seed}: "
                      + ", ".join(f"{name} {value:.4g}" for name, value in measured.items()), flush=True)
    import jax

    report = {**study_report(study, results), "steps": run_steps(study, quick=quick, scale=scale), "quick": quick,
              "scale": scale, "date": time.strftime("%Y-%m-%d", time.gmtime()), "machine": machine(),
              "jax": jax.__version__}
    with open(os.path.join(folder, "report.json"), "w") as f:
        json.dump(json_safe(report), f, indent=1)
    with open(os.path.join(folder, "report.md"), "w") as f:
        f.write(report_markdown(report))
    curves_figure(study, rows).savefig(os.path.join(folder, "curves.png"), dpi=100, bbox_inches="tight")
    print(f"[{study.name}] verdict: {report['verdict']['outcome']} ({report['verdict']['numbers']}); report in "
          f"{folder}/report.md", flush=True)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help=f"a study ({', '.join(STUDIES)}) or 'all'")
    parser.add_argument("--workdir", default="runs/studies", help="each study's runs and report go in workdir/<name>")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: the study's, 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps of small batches: checks that a "
                                                             f"study runs, too small to judge it")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies each study's steps (for accelerators)")
    args = parser.parse_args(argv)
    try:
        studies = list(STUDIES.values()) if args.name == "all" else [get_study(args.name)]
    except ValueError as error:
        parser.error(str(error))
    if args.seeds is not None and args.seeds < 2:
        parser.error(f"--seeds {args.seeds}: a standard deviation needs at least 2 seeds")
    retain_freed_memory()  # before JAX starts its threads: studies train tiny models, which gain (train.malloc)
    import jax

    # The seeds of an arm compile the same programs: after the first, each is a lookup.
    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    for study in studies:
        run_study(study, args.workdir, seeds=args.seeds, quick=args.quick, scale=args.scale)


if __name__ == "__main__":
    main()
