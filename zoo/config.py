"""One frozen config that holds every switch of every zoo model.

Presets are instances of `Config` with names (see the family files); a switch is changed with
`dataclasses.replace` or `zoo.create(name, **overrides)`. `__post_init__` checks the whole config so a bad one fails
before anything is traced.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

POSITION_EMBEDDINGS = ("learned", "sinusoidal", "relative_bias", "rotary", "none")
# The rope_scaling types zoo honours (config.json's rope_scaling / rope_parameters rope_type)
ROPE_SCALINGS = ("linear", "llama3")
NORMS = ("layer", "rms")
NORM_POSITIONS = ("pre", "post")
ATTENTIONS = ("dense", "sliding_window", "block_sparse")
ATTENTION_KERNELS = ("xla", "cudnn")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "swish", "gated_gelu", "gated_silu")
POOLINGS = ("cls", "mean", "max", "mean_max", "last", "none")
POOLER_ACTIVATIONS = ("tanh", "relu")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "attention")  # zoo.layers.REMAT_POLICY
# The projections LoRA can adapt, by the names the blocks give them: attention's query, key, value and out, and the
# feed-forward's wi (wi_0 and wi_1 when gated) and wo.
LORA_TARGETS = ("query", "key", "value", "out", "wi", "wi_0", "wi_1", "wo")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """How rotary positions reach past the trained length, as config.json's `rope_scaling` names it.

    "linear" (Chen et al. 2023, position interpolation): every frequency divided by `factor`. "llama3" (Llama 3.1):
    wavelengths longer than original_max_length / low_freq_factor divided by `factor`, those shorter than
    original_max_length / high_freq_factor kept, the band between interpolated smoothly.
    """

    type: str
    factor: float
    low_freq_factor: float = 1.0  # llama3 only
    high_freq_factor: float = 4.0  # llama3 only
    original_max_length: int = 8192  # llama3 only: the context length the model was trained with

    def __post_init__(self):
        _check_choice("rope_scaling type", self.type, ROPE_SCALINGS)
        if not self.factor > 0:
            raise ValueError(f"rope_scaling factor must be positive, got {self.factor}")
        if self.type == "llama3" and not 0 < self.low_freq_factor < self.high_freq_factor:
            raise ValueError(f"rope_scaling of type llama3 needs 0 < low_freq_factor < high_freq_factor, got "
                             f"{self.low_freq_factor} and {self.high_freq_factor}")
        if self.original_max_length < 1:
            raise ValueError(f"rope_scaling original_max_length must be positive, got {self.original_max_length}")

    @classmethod
    def from_dict(cls, fields: dict) -> "RopeScaling":
        """From config.json's form: {"rope_type" (or "type"): ..., "factor": ..., ...}; a ValueError names a type or
        key zoo cannot honour."""
        fields = dict(fields)
        legacy_kind = fields.pop("type", None)  # older files' name of rope_type
        kind = fields.pop("rope_type", legacy_kind)
        if kind not in ROPE_SCALINGS:
            raise ValueError(f"rope_scaling type {kind!r} is not supported by zoo (supported: "
                             f"{', '.join(ROPE_SCALINGS)})")
        if "original_max_position_embeddings" in fields:  # transformers' name of the field
            fields["original_max_length"] = fields.pop("original_max_position_embeddings")
        allowed = {"factor"} if kind == "linear" else {"factor", "low_freq_factor", "high_freq_factor",
                                                        "original_max_length"}
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise ValueError(f"rope_scaling of type {kind!r} has field(s) {unknown} that zoo cannot honour")
        if "factor" not in fields:
            raise ValueError(f"rope_scaling of type {kind!r} needs a factor")
        return cls(type=kind, **fields)

    def to_dict(self) -> dict:
        """config.json's form (transformers' rope_scaling)."""
        if self.type == "linear":
            return {"rope_type": "linear", "factor": self.factor}
        return {"rope_type": "llama3", "factor": self.factor, "low_freq_factor": self.low_freq_factor,
                "high_freq_factor": self.high_freq_factor,
                "original_max_position_embeddings": self.original_max_length}


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyper-parameters of a Transformer; one field per idea of the literature.

    Raises:
      ValueError: from `__post_init__`, naming the field and the numbers, when the switches do not fit together.
    """

    family: str = "bert"  # which family file this config belongs to: bert | gpt | albert | transformer | ...
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_decoder_layers: int = 0  # encoder-decoder only
    num_heads: int = 12
    # Grouped-query self-attention (Ainslie et al. 2023): heads share num_kv_heads key/value heads (1: multi-query,
    # Shazeer 2019), and the KV cache holds only those. None means num_heads (multi-head attention); an
    # encoder-decoder's cross-attention keeps num_heads.
    num_kv_heads: int | None = None
    attention_head_dim: int | None = None  # width of one head; None means hidden_size // num_heads (T5's d_kv)
    intermediate_size: int = 3072
    max_length: int = 512  # size of the position table: the longest sequence the model accepts
    embedding_size: int | None = None  # ALBERT's factorized embedding; None means hidden_size
    type_vocab_size: int = 0  # BERT's segment A/B embedding; 0 means none
    num_labels: int = 2  # classification and token-tagging heads
    # the classes' names by id (config.json's id2label, e.g. a tagger's "O", "B-PER"); () means LABEL_0, LABEL_1, ...
    label_names: tuple[str, ...] = ()

    # learned or sinusoidal absolute positions added to the embeddings; or "relative_bias" (T5, Raffel et al. 2020):
    # no position embedding, but a learned per-head bias on the attention logits indexed by the bucketed distance
    # key - query (bidirectional buckets in an encoder, causal ones in a decoder, none in cross-attention).
    # "rotary" (RoPE, Su et al. 2021): no position embedding, but queries and keys of self-attention rotated by their
    # position, each pair of dimensions (i, i + head_dim/2) at frequency rope_theta^(-2i/head_dim): the rotate-half
    # layout of the Llama, Mistral and Qwen2 checkpoints. `rope_scaling` stretches the frequencies (RopeScaling).
    # "none": no position information at all, so a bidirectional stack sees a bag of words (the ablation of the
    # design studies, train/study.py); a causal mask still tells a decoder which tokens came before.
    position_embedding: str = "learned"
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None  # a RopeScaling, or its config.json dict form
    # RoBERTa's positions (fairseq's): only real tokens are counted, from past the padding index, so a pad token sits at
    # position pad_token_id and the real ones at pad_token_id + 1, + 2, ...; RoBERTa's 514 positions hold 512 tokens.
    padding_offset_positions: bool = False
    # BART's learned positions (BartLearnedPositionalEmbedding): position p reads row p + position_offset of the table,
    # whose first rows no token uses; BART's 1026 rows hold 1024 tokens. Any stack, decoders and caches included.
    position_offset: int = 0
    relative_attention_num_buckets: int = 32  # relative_bias: distance buckets (half per direction if bidirectional)
    relative_attention_max_distance: int = 128  # relative_bias: distances beyond this share the last bucket
    # relative_bias: 0 draws the table from normal(initializer_range), as T5; s > 0 starts it at s times ALiBi's
    # penalty (Press et al. 2022; MosaicBERT's encoder): head h of n adds -s * 2^(-8h/n) * distance, so the heads
    # begin local (steep) to global (flat) instead of uniform, and training learns from there (left vs right too).
    relative_attention_alibi_init: float = 0.0
    # relative_bias in an encoder: the first token ([CLS]) is untied from positions, as TUPE does (Ke et al. 2021):
    # attention from it and to it takes a learned per-head scalar (two, started at 0) instead of the distance's bias,
    # so the pooled state can read the whole row (both segments of a next-sentence pair) however local the heads are.
    relative_attention_untie_first: bool = False
    # LayerNorm (Ba et al. 2016) or RMSNorm (Zhang & Sennrich 2019, T5's T5LayerNorm): x / rms(x) * scale, no mean
    # subtraction and no bias.
    norm: str = "layer"
    norm_position: str = "post"  # post-LN as in BERT and Vaswani et al.; pre-LN as in GPT-2
    embedding_norm: bool = False  # LayerNorm over the summed embeddings (BERT, ALBERT)
    final_norm: bool = False  # LayerNorm after the last layer (pre-LN models)
    scale_embeddings: bool = False  # multiply token embeddings by sqrt(hidden_size) (Vaswani et al.)
    causal: bool = False  # decoder-only language models
    # Which keys a query sees: all (dense); a band of `window` tokens each side, or to the left when causal
    # (Longformer, Beltagy et al. 2020); or BigBird's blocks: the neighbouring blocks, `num_random_blocks` random ones
    # and the global tokens (Zaheer et al. 2020). Sparse patterns are computed block by block in O(length * window).
    attention: str = "dense"
    window: int = 256  # sliding_window: tokens each side (to the left for causal models)
    global_tokens: int = 0  # sparse: the first tokens (e.g. [CLS]) attend to and are attended by every token
    block_size: int = 64  # sparse: queries and keys are processed in blocks of this many tokens
    num_random_blocks: int = 3  # block_sparse: random key blocks per query block
    attention_seed: int = 0  # block_sparse: seeds the random blocks, so the pattern is the same on every call
    # Who computes attention: "xla" runs anywhere (sparse patterns blockwise); "cudnn" is cuDNN's fused flash
    # attention on an NVIDIA GPU, for dense attention and a causal sliding window (see zoo.attention.cudnn_attention).
    attention_kernel: str = "xla"
    share_layers: bool = False  # ALBERT: one set of layer weights applied num_layers times
    # The feed-forward's activation; "gated_*" is a gated linear unit (Shazeer 2020, "GLU Variants Improve
    # Transformer"): act(x W_0) * (x W_1) then W_o. gated_gelu is T5 v1.1 / Flan-T5's (tanh gelu), gated_silu SwiGLU.
    activation: str = "gelu"
    use_bias: bool = True  # biases on the attention and feed-forward projections; T5 has none (Raffel et al. 2020)
    attention_qkv_bias: bool = False  # Qwen2: biases on the query, key and value projections even without use_bias
    # Scale attention logits by 1/sqrt(head_dim) (Vaswani et al.); T5 folds the scale into its weight initialisation.
    attention_scale: bool = True
    # sentence representation: [CLS] with tanh dense, mask-aware mean / max / both, the last real token (decoders:
    # LlamaForSequenceClassification), or none
    pooling: str = "cls"
    pooler_activation: str = "tanh"  # after the [CLS] dense: tanh (BERT, RoBERTa) or relu (DistilBERT's pre_classifier)
    bare_model_pooler: bool = True  # the bare model pools (BertModel); DistilBertModel has none, only its classifier
    tie_word_embeddings: bool = True  # output projection shares the input embedding matrix
    # T5 (Raffel et al. 2020): with a tied output projection, the decoder output is multiplied by hidden_size**-0.5.
    scale_tied_logits: bool = False
    lm_head_bias: bool = False  # a bias on the tied output projection (MLM heads always have one)

    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    classifier_dropout_rate: float | None = None  # None means dropout_rate
    # Dropout inside the feed-forward, after its activation: BART's and Marian's activation_dropout; T5 applies its
    # one dropout rate there too (None means dropout_rate).
    activation_dropout_rate: float | None = 0.0
    final_norm_dropout: bool = False  # dropout after each stack's final norm (T5's stacks)
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    pad_token_id: int = 0
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None  # a tuple where a checkpoint ends on any of several ids
    decoder_start_token_id: int | None = None

    dtype: Any = "float32"  # compute dtype of activations and matmuls
    param_dtype: Any = "float32"  # storage dtype of parameters
    remat: str = "none"  # rematerialise each layer in the backward pass: none | full | dots | dots_no_batch | attention
    scan_layers: bool = False  # nn.scan over layers: compiles one layer instead of num_layers

    # LoRA (Hu et al. 2021): a rank-`lora_rank` update beside each projection of `lora_targets` (0: none), scaled by
    # lora_alpha / lora_rank, with dropout on its input. peft's defaults for alpha and dropout.
    lora_rank: int = 0
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("query", "value")

    def __post_init__(self):
        for name in ("dtype", "param_dtype"):
            try:
                object.__setattr__(self, name, jnp.dtype(getattr(self, name)))
            except TypeError as e:
                raise ValueError(f"{name}={getattr(self, name)!r} is not a dtype") from e
        _check_choice("position_embedding", self.position_embedding, POSITION_EMBEDDINGS)
        _check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("attention", self.attention, ATTENTIONS)
        _check_choice("attention_kernel", self.attention_kernel, ATTENTION_KERNELS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_choice("pooler_activation", self.pooler_activation, POOLER_ACTIVATIONS)
        _check_choice("remat", self.remat, REMAT_POLICIES)
        self._check_lora()
        if isinstance(self.rope_scaling, dict):
            object.__setattr__(self, "rope_scaling", RopeScaling.from_dict(self.rope_scaling))
        if isinstance(self.eos_token_id, list):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        object.__setattr__(self, "label_names", tuple(self.label_names))  # a list from a recipe or JSON
        if self.label_names and len(self.label_names) != self.num_labels:
            raise ValueError(f"label_names names {len(self.label_names)} classes but num_labels={self.num_labels}")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_length",
                     "embedding_dim", "num_labels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("num_decoder_layers", "type_vocab_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("window", "block_size", "relative_attention_num_buckets", "relative_attention_max_distance"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("global_tokens", "num_random_blocks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.attention_head_dim is not None and self.attention_head_dim < 1:
            raise ValueError(f"attention_head_dim must be positive, got {self.attention_head_dim}")
        if self.attention_head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.position_embedding == "sinusoidal" and self.hidden_size % 2:
            raise ValueError(f"sinusoidal positions need an even hidden_size, got {self.hidden_size}")
        for name in ("dropout_rate", "attention_dropout_rate", "classifier_dropout_rate", "activation_dropout_rate"):
            rate = getattr(self, name)
            if rate is not None and not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")
        self._check_rotary_and_kv_heads()
        if self.relative_attention_untie_first and self.position_embedding != "relative_bias":
            raise ValueError(f"relative_attention_untie_first unties the first token from the bias of "
                             f"position_embedding='relative_bias' (not {self.position_embedding!r})")
        if self.relative_attention_untie_first and self.causal:
            raise ValueError("relative_attention_untie_first unties [CLS] from a bidirectional encoder's relative "
                             "bias; a causal stack's bias (causal=True) stays tied, so the switch would do nothing")
        if self.relative_attention_alibi_init < 0 or (self.relative_attention_alibi_init
                                                      and self.position_embedding != "relative_bias"):
            raise ValueError(f"relative_attention_alibi_init={self.relative_attention_alibi_init} initialises the "
                             f"table of position_embedding='relative_bias' (not {self.position_embedding!r}): it "
                             f"must be >= 0, and 0 without that table")
        if self.position_embedding == "relative_bias" and self.attention != "dense":
            raise ValueError(f"position_embedding='relative_bias' adds a bias to dense attention logits; "
                             f"attention={self.attention!r} is not dense")
        if self.final_norm_dropout and not self.final_norm:
            raise ValueError("final_norm_dropout=True drops out the final norm's output: it needs final_norm=True")
        if self.scale_tied_logits and not self.tie_word_embeddings:
            raise ValueError("scale_tied_logits rescales a tied output projection: it needs tie_word_embeddings=True")
        if self.attention_kernel == "cudnn":
            self._check_cudnn()
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id={self.pad_token_id} is outside the vocabulary of {self.vocab_size}")
        # Only the [CLS] dense has an activation: the mask-aware poolings have none to change.
        if self.pooler_activation != "tanh" and self.pooling != "cls":
            raise ValueError(f"pooler_activation={self.pooler_activation!r} is that of the [CLS] dense: it needs "
                             f"pooling='cls', not {self.pooling!r}")
        if self.padding_offset_positions:
            self._check_padding_offset_positions()
        if self.position_offset:
            self._check_position_offset()

    def _check_rotary_and_kv_heads(self) -> None:
        if self.num_kv_heads is not None and not (1 <= self.num_kv_heads and self.num_heads % self.num_kv_heads == 0):
            raise ValueError(f"num_kv_heads={self.num_kv_heads} must be positive and divide num_heads={self.num_heads}")
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            raise ValueError(f"rope_scaling must be a RopeScaling, its dict form or None, got {self.rope_scaling!r}")
        if self.position_embedding != "rotary":
            if self.rope_scaling is not None:
                raise ValueError(f"rope_scaling={self.rope_scaling} scales rotary positions: it needs "
                                 f"position_embedding='rotary', not {self.position_embedding!r}")
            return
        if self.is_encoder_decoder:  # its stacks take no token positions yet (zoo.models.EncoderDecoderTransformer)
            raise ValueError(f"position_embedding='rotary' is for single-stack models; this config has "
                             f"num_decoder_layers={self.num_decoder_layers}")
        if self.head_dim % 2:
            raise ValueError(f"position_embedding='rotary' rotates pairs of dimensions: head_dim must be even, got "
                             f"{self.head_dim}")
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be positive, got {self.rope_theta}")

    def _check_lora(self) -> None:
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))  # a list from the command line
        unknown = [t for t in self.lora_targets if t not in LORA_TARGETS]
        if unknown:
            raise ValueError(f"lora_targets {unknown} are not projections zoo's blocks have: {LORA_TARGETS}")
        if self.lora_rank < 0 or self.lora_alpha <= 0 or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"LoRA needs lora_rank >= 0, lora_alpha > 0 and lora_dropout in [0, 1); got "
                             f"lora_rank={self.lora_rank}, lora_alpha={self.lora_alpha}, "
                             f"lora_dropout={self.lora_dropout}")

    def _check_padding_offset_positions(self) -> None:
        """RoBERTa's positions are read from the padding of the ids, into a learned table that must hold a token."""
        # A cache or a decoder would need the positions of earlier calls, which RoBERTa's encoder never has.
        if self.position_embedding != "learned" or self.causal or self.is_encoder_decoder:
            raise ValueError("padding_offset_positions=True (RoBERTa's positions) fits a bidirectional single-stack "
                             f"model with learned positions, not position_embedding={self.position_embedding!r}, "
                             f"causal={self.causal}, num_decoder_layers={self.num_decoder_layers}")
        if self.max_tokens < 1:
            raise ValueError(f"padding_offset_positions=True puts the first token at position pad_token_id + 1 = "
                             f"{self.pad_token_id + 1}, past the max_length={self.max_length} positions")

    def _check_position_offset(self) -> None:
        """BART's offset moves positions down a learned table, which must still hold a token past the offset rows."""
        if self.position_offset < 0 or self.position_embedding != "learned" or self.padding_offset_positions:
            raise ValueError(f"position_offset={self.position_offset} (BART's positions) needs position_offset >= 0, "
                             f"position_embedding='learned' (not {self.position_embedding!r}) and "
                             f"padding_offset_positions=False (not {self.padding_offset_positions})")
        if self.max_tokens < 1:
            raise ValueError(f"position_offset={self.position_offset} leaves no position of the max_length="
                             f"{self.max_length} rows for a token")

    def _check_cudnn(self) -> None:
        """What cuDNN's fused attention cannot do, named before anything is traced."""
        problems = []
        if self.dtype not in (jnp.bfloat16, jnp.float16):
            problems.append(f"it computes in bfloat16 or float16, not dtype={self.dtype}")
        if self.head_dim % 8:
            problems.append(f"head_dim must be a multiple of 8, got {self.head_dim}")
        if self.attention_dropout_rate:
            problems.append(f"it has no attention dropout: set attention_dropout_rate=0, not "
                            f"{self.attention_dropout_rate}")
        if self.attention == "block_sparse":
            problems.append("it has no block-sparse pattern")
        if self.position_embedding == "relative_bias" or not self.attention_scale:
            problems.append("it takes no relative position bias and always scales by 1/sqrt(head_dim)")
        if self.attention == "sliding_window" and not (self.causal and not self.is_encoder_decoder):
            problems.append("its sliding window looks left only, so it fits a causal decoder-only model "
                            "(causal=True), not a bidirectional one")
        if self.attention == "sliding_window" and self.global_tokens:
            problems.append(f"it has no global tokens: set global_tokens=0, not {self.global_tokens}")
        if problems:
            raise ValueError("attention_kernel='cudnn' does not fit this config: " + "; ".join(problems)
                             + ". attention_kernel='xla' runs every pattern")

    @property
    def embedding_dim(self) -> int:
        """Width of the token embeddings: `embedding_size`, or `hidden_size` when that is None."""
        return self.hidden_size if self.embedding_size is None else self.embedding_size

    @property
    def max_tokens(self) -> int:
        """The longest input: `max_length`, less the positions up to the padding index with padding_offset_positions
        and the `position_offset` rows."""
        return self.max_length - (self.pad_token_id + 1 if self.padding_offset_positions else 0) - self.position_offset

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads if self.attention_head_dim is None else self.attention_head_dim

    @property
    def kv_heads(self) -> int:
        """Key/value heads: `num_kv_heads`, or `num_heads` when that is None."""
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def is_encoder_decoder(self) -> bool:
        return self.num_decoder_layers > 0

    def replace(self, **changes) -> "Config":
        """A copy with `changes`; an unknown field is a ValueError that lists the known ones."""
        unknown = sorted(set(changes) - set(CONFIG_FIELDS))
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; the fields are: {', '.join(CONFIG_FIELDS)}")
        return dataclasses.replace(self, **changes)


CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(Config))  # every switch a model override may set


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {choices}")
