"""Generation speed on this machine against transformers in the same run: GPT-2 small, a 135M-class Llama, and
translation with a transformer-base Marian (random weights all).

    python bench/generate.py [--batch 1] [--prompt 32] [--new-tokens 32] [--long-position 512] [--repeats 3]
                             [--llama-model smollm2-135m] [--llama-batches 1,16] [--llama-long-position 2048]
                             [--source-batch 8] [--source-length 32] [--skip-gpt] [--skip-llama] [--skip-translation]

GPT rows: `zoo.generate` with its KV cache; zoo without a cache (the full forward pass over the fixed-size sequence
buffer at every step, also one jitted loop); transformers' `generate` (GPT2LMHeadModel, same config, its own cache)
with one torch thread and with all cores. Then the time per token of cached decoding from position `--prompt` and
from `--long-position`: with a KV cache a token costs about the same wherever it sits.

Llama rows (`--llama-model`, SmolLM2-135M's shape by default; random weights that zoo reads from transformers'
`LlamaForCausalLM` with `zoo.from_pretrained`): at each of `--llama-batches` (1 and 16), zoo.generate against
transformers' generate, then the time per token of cached decoding from position `--prompt` and from
`--llama-long-position` (2048), zoo against transformers' one-token forward passes over a DynamicCache that long.

Translation rows: a batch of `--source-batch` right-padded sources of up to `--source-length` tokens into
`--new-tokens` tokens, greedy and 4-beam, by `zoo.generate` and by transformers' `MarianMTModel.generate` (one
torch thread and all cores) on the same weights, which zoo reads with `zoo.from_pretrained`.

Times are the best of `--repeats` runs after a compiling warm-up.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import packaging.version

import zoo


def best_time(fn, repeats: int) -> tuple[float, float]:
    """(first call, best of `repeats` later calls) in seconds; `fn` must block until its result is ready."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, min(times)


def no_cache_greedy(model, new_tokens: int):
    """Greedy decoding that re-runs the whole forward pass at every step: the baseline a KV cache removes."""

    @jax.jit
    def run(params, prompt):
        batch, length = prompt.shape
        buffer = jnp.pad(prompt, ((0, 0), (0, new_tokens)))

        def step(t, buffer):  # causal: the logits at t - 1 do not see the unfilled slots after it
            logits = model.apply({"params": params}, buffer).logits[:, t - 1]
            return buffer.at[:, t].set(jnp.argmax(logits, axis=-1).astype(buffer.dtype))

        return jax.lax.fori_loop(length, length + new_tokens, step, buffer)

    return run


def decode_time_per_token(model, params, batch: int, position: int, steps: int, repeats: int) -> float:
    """Seconds per token of `steps` cached decode steps from `position` on, in one jitted loop as generate runs them
    (the cache sized position + steps, as generate sizes it for a prompt of `position` tokens)."""
    cache = zoo.init_cache(model, batch, position + steps)
    cache["decode_state"]["index"] = jnp.int32(position)  # timing does not depend on what the cache holds
    cache["decode_state"]["key_mask"] = cache["decode_state"]["key_mask"].at[:, :position].set(True)

    @jax.jit
    def run(cache, token):
        def step(_, carry):
            cache, token = carry
            out, mutated = model.apply({"params": params, "cache": cache}, token, decode=True, mutable=["cache"])
            return mutated["cache"], out.logits[:, -1].argmax(-1)[:, None].astype(token.dtype)

        return jax.lax.fori_loop(0, steps, step, (cache, token))[1]

    token = jnp.ones((batch, 1), jnp.int32)
    return best_time(lambda: run(cache, token).block_until_ready(), repeats)[1] / steps


def transformers_greedy(model, prompt, new_tokens: int):
    """A run of transformers' greedy `generate` of `new_tokens` tokens (no EOS) per torch thread count (one thread,
    and all cores: on a busy machine OpenMP's spinning threads can make more threads slower), and a line naming the
    versions."""
    import torch
    import transformers

    def run_with(threads):
        def run():
            torch.set_num_threads(threads)
            with torch.no_grad():
                out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                                     min_new_tokens=new_tokens, do_sample=False, num_beams=1, pad_token_id=0,
                                     eos_token_id=None)
            assert out.shape == (prompt.shape[0], prompt.shape[1] + new_tokens), out.shape
        return run

    all_threads = torch.get_num_threads()
    runs = {f"{n} thread{'s' if n > 1 else ''}": run_with(n) for n in sorted({1, all_threads})}
    return runs, f"torch {torch.__version__}, transformers {transformers.__version__}"


def transformers_decode_time_per_token(model, batch: int, position: int, steps: int, repeats: int,
                                       threads: int) -> float:
    """Seconds per token of `steps` one-token forward passes of a transformers decoder over a DynamicCache that holds
    `position` tokens (random keys and values: timing does not depend on them), on `threads` torch threads."""
    import torch
    import transformers

    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    cache = transformers.DynamicCache(config=config)
    for layer in range(config.num_hidden_layers):
        cache.update(torch.randn(batch, config.num_key_value_heads, position, head_dim),
                     torch.randn(batch, config.num_key_value_heads, position, head_dim), layer)
    token = torch.ones((batch, 1), dtype=torch.long)
    # transformers 5.24 renames forward's past_key_values to cache (the old name warns until 5.40)
    renamed = packaging.version.Version(transformers.__version__) >= packaging.version.Version("5.24")
    cache_argument = "cache" if renamed else "past_key_values"

    def run():
        torch.set_num_threads(threads)
        if cache.get_seq_length() > position:
            cache.crop(position - cache.get_seq_length())  # transformers 5: a negative count of tokens to drop
        with torch.no_grad():
            for t in range(position, position + steps):
                mask = torch.ones((batch, t + 1), dtype=torch.long)
                model(input_ids=token, attention_mask=mask, use_cache=True, position_ids=torch.full((batch, 1), t),
                      **{cache_argument: cache})

    return best_time(run, repeats)[1] / steps


def gpt_rows(args) -> None:
    """GPT-2 small: zoo with and without a cache, transformers, and the cost of a token by its position."""
    model = zoo.create(args.model, task="causal_lm")
    params = jax.jit(model.init)(jax.random.key(0), jnp.ones((1, 1), jnp.int32))["params"]
    prompt = jax.random.randint(jax.random.key(1), (args.batch, args.prompt), 2, model.config.vocab_size)
    tokens = args.batch * args.new_tokens

    rows = []
    with_cache = lambda: zoo.generate(model, params, prompt, max_new_tokens=args.new_tokens,
                                      eos_token_id=None).sequences.block_until_ready()
    rows.append(("zoo.generate, KV cache", *best_time(with_cache, args.repeats)))
    no_cache = no_cache_greedy(model, args.new_tokens)
    rows.append(("zoo, no cache (full forward each token)",
                 *best_time(lambda: no_cache(params, prompt).block_until_ready(), args.repeats)))
    peer = ""
    if not args.skip_transformers:
        import torch
        import transformers

        transformers.logging.set_verbosity_error()
        torch.manual_seed(0)
        # GPT-2 small's shape; no EOS, so both sides generate exactly --new-tokens tokens
        config = transformers.GPT2Config(bos_token_id=None, eos_token_id=None, pad_token_id=0)
        public = transformers.GPT2LMHeadModel(config).eval()
        runs, peer = transformers_greedy(public, torch.randint(2, config.vocab_size, (args.batch, args.prompt)),
                                         args.new_tokens)
        for threads, run in runs.items():
            rows.append((f"transformers generate, cache, {threads}", *best_time(run, args.repeats)))

    print(f"\n{args.model}: {zoo.param_count(model):,} parameters, random weights; greedy, batch {args.batch}, "
          f"prompt {args.prompt}, {args.new_tokens} new tokens")
    platform = f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} CPUs)"
    print(platform + (f"; {peer}" if peer else ""))
    reference = rows[0][2]
    print(f"\n{'':<42} {'first call s':>12} {'best s':>8} {'tokens/s':>9} {'time / zoo cache':>17}")
    for name, first, best in rows:
        print(f"{name:<42} {first:>12.2f} {best:>8.3f} {tokens / best:>9.1f} {best / reference:>16.2f}x")

    short = decode_time_per_token(model, params, args.batch, args.prompt, args.new_tokens, args.repeats)
    long = decode_time_per_token(model, params, args.batch, args.long_position, args.new_tokens, args.repeats)
    print(f"\ncached decoding, time per token from position {args.prompt}: {1e3 * short:.1f} ms; "
          f"from position {args.long_position}: {1e3 * long:.1f} ms; ratio {long / short:.2f}")


def llama_rows(args) -> None:
    """A 135M-class Llama (SmolLM2-135M's shape: 30 layers, 9 query heads over 3 key/value heads, random weights) at
    each of `--llama-batches`: zoo.generate and transformers' generate on the same weights, then the time per token of
    cached decoding from position `--prompt` and from `--llama-long-position`, zoo against transformers."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    shape = zoo.get_config(args.llama_model)
    # no EOS: both sides generate exactly --new-tokens tokens
    config = transformers.LlamaConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads, num_key_value_heads=shape.num_kv_heads,
        intermediate_size=shape.intermediate_size, max_position_embeddings=shape.max_length,
        rope_theta=shape.rope_theta, rms_norm_eps=shape.layer_norm_eps, tie_word_embeddings=shape.tie_word_embeddings,
        bos_token_id=None, eos_token_id=None, pad_token_id=0)
    public = transformers.LlamaForCausalLM(config).eval()
    with tempfile.TemporaryDirectory() as folder:  # the same weights on both sides
        public.save_pretrained(folder)
        model, params = zoo.from_pretrained(folder)
    print(f"\n{args.llama_model}-shaped Llama: {zoo.param_count(model):,} parameters, random weights; greedy, prompt "
          f"{args.prompt}, {args.new_tokens} new tokens")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} CPUs); torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    for batch in args.llama_batches:
        prompt = np.random.default_rng(batch).integers(2, shape.vocab_size, (batch, args.prompt), dtype=np.int32)
        rows = [("zoo.generate, KV cache", *best_time(
            lambda: zoo.generate(model, params, prompt, max_new_tokens=args.new_tokens,
                                 eos_token_id=None).sequences.block_until_ready(), args.repeats))]
        runs, _ = transformers_greedy(public, torch.as_tensor(prompt, dtype=torch.long), args.new_tokens)
        thread_counts = [int(threads.split()[0]) for threads in runs]
        rows += [(f"transformers generate, cache, {threads}", *best_time(run, args.repeats))
                 for threads, run in runs.items()]
        tokens = batch * args.new_tokens
        print(f"\nbatch {batch}{'':<34} {'first call s':>12} {'best s':>8} {'tokens/s':>9} {'time / zoo':>11}")
        for name, first, best in rows:
            print(f"{name:<42} {first:>12.2f} {best:>8.3f} {tokens / best:>9.1f} {best / rows[0][2]:>10.2f}x")
        print(f"{'ms per token of cached decoding':<42} {'zoo':>12}"
              + "".join(f" {f'transformers, {n} thr':>19}" for n in thread_counts))
        for position in (args.prompt, args.llama_long_position):
            ours = decode_time_per_token(model, params, batch, position, args.new_tokens, args.repeats)
            theirs = [transformers_decode_time_per_token(public, batch, position, args.new_tokens, args.repeats, n)
                      for n in thread_counts]
            print(f"{'  from position ' + str(position):<42} {1e3 * ours:>12.1f}"
                  + "".join(f" {1e3 * t:>9.1f} ({t / ours:>5.2f}x)" for t in theirs))


def translation_rows(args) -> None:
    """Translation by a random transformer-base-sized Marian: zoo and transformers, greedy and 4-beam."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    vocab = 32000
    config = transformers.MarianConfig(
        vocab_size=vocab, d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
        decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=512,
        scale_embedding=True, activation_function="swish", pad_token_id=vocab - 1, decoder_start_token_id=vocab - 1,
        eos_token_id=0, forced_eos_token_id=None)
    public = transformers.MarianMTModel(config).eval()
    with tempfile.TemporaryDirectory() as folder:  # the same weights on both sides
        public.save_pretrained(folder)
        model, params = zoo.from_pretrained(folder)

    batch, length = args.source_batch, args.source_length
    source = np.random.default_rng(0).integers(1, vocab - 1, (batch, length), dtype=np.int32)
    # right-padded, as Marian tokenizers pad: from half the length to all of it
    real_lengths = np.linspace(length // 2, length, batch).astype(int)
    source_mask = (np.arange(length)[None] < real_lengths[:, None]).astype(np.int32)
    source[source_mask == 0] = config.pad_token_id
    torch_source, torch_mask = torch.as_tensor(source, dtype=torch.long), torch.as_tensor(source_mask)
    # no EOS: every row and beam runs --new-tokens steps on both sides
    settings = dict(max_new_tokens=args.new_tokens, eos_token_id=None, pad_token_id=config.pad_token_id)
    tokens = batch * args.new_tokens

    print(f"\nMarian, transformer-base sized (d_model 512, 6 + 6 layers, 8 heads, ffn 2048, vocabulary {vocab}): "
          f"{zoo.param_count(model):,} parameters, random weights; {batch} sources of {real_lengths.min()} to "
          f"{length} tokens, right-padded, into {args.new_tokens} new tokens")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} CPUs); torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print(f"\n{'':<52} {'first call s':>12} {'best s':>8} {'tokens/s':>9} {'zoo tokens/s / this':>20}")
    all_threads = torch.get_num_threads()
    for search, beams in (("greedy", 1), ("4-beam", 4)):
        def ours():
            zoo.generate(model, params, source, source_mask, method="greedy" if beams == 1 else "beam",
                         num_beams=beams, **settings).sequences.block_until_ready()

        def theirs_with(threads):  # one thread and all cores, as for GPT
            def run():
                torch.set_num_threads(threads)
                with torch.no_grad():
                    out = public.generate(input_ids=torch_source, attention_mask=torch_mask, num_beams=beams,
                                          do_sample=False, min_new_tokens=args.new_tokens, length_penalty=1.0,
                                          early_stopping=False, forced_eos_token_id=None, **settings)
                assert out.shape == (batch, 1 + args.new_tokens), out.shape
            return run

        rows = [(f"zoo.generate, {search}", *best_time(ours, args.repeats))]
        for threads in sorted({1, all_threads}):
            rows.append((f"transformers generate, {search}, {threads} thread{'s' if threads > 1 else ''}",
                         *best_time(theirs_with(threads), args.repeats)))
        for name, first, best in rows:
            print(f"{name:<52} {first:>12.2f} {best:>8.3f} {tokens / best:>9.1f} {best / rows[0][2]:>19.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt2", help="a zoo GPT preset")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=32, help="prompt length (also the short decode position)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--long-position", type=int, default=512, help="the long decode position")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-transformers", action="store_true", help="GPT: zoo's rows only")
    parser.add_argument("--source-batch", type=int, default=8, help="translation: sources in the batch")
    parser.add_argument("--source-length", type=int, default=32, help="translation: padded source length")
    parser.add_argument("--llama-model", default="smollm2-135m", help="a zoo Llama preset: the shape of the Llama rows")
    parser.add_argument("--llama-batches", type=lambda text: [int(b) for b in text.split(",")], default=[1, 16],
                        help="Llama rows: comma-separated batch sizes")
    parser.add_argument("--llama-long-position", type=int, default=2048, help="Llama rows: the long decode position")
    parser.add_argument("--skip-gpt", action="store_true")
    parser.add_argument("--skip-llama", action="store_true")
    parser.add_argument("--skip-translation", action="store_true")
    args = parser.parse_args()
    if not args.skip_gpt:
        gpt_rows(args)
    if not args.skip_llama:
        llama_rows(args)
    if not args.skip_translation:
        translation_rows(args)


if __name__ == "__main__":
    main()
