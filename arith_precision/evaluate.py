"""Autoregressive evaluation: greedy decoding, exact match and per digit, under two protocols.

The prompt is the fixed-width input (BOS ... '='); the model generates exactly the answer's tokens
(with a KV cache), which are scored against the exact answers. Evaluation at other n than the
training n only needs the model's `max_len` to cover the longest sequence.

Protocols (`evaluate_protocols`, `PROTOCOLS`), each with the exact number of distinct inputs it
scored:

    iid      examples drawn from the task's own distribution, overlap with training allowed: the
             paper's protocol (its test samples come from the distribution it trained on). Where
             the input space is small, most of these inputs were trained on.
    unseen   held-out inputs only (`tasks.is_held_out`: 1/16 of the space, never trained on).
             Where the space is small this set is small too (MUL base 2 n = 4 has 14 held-out
             pairs); where no input is held out it is empty and its numbers are None.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import quax

from arith_precision import decode, tasks
from arith_precision import model as model_lib
from arith_precision.simulate import Policy, region_sets, runtime_format, simulate


@functools.lru_cache(maxsize=64)
def decoder(config: model_lib.TransformerConfig, num_steps: int, policy: Policy | None = None, *,
            implicit: bool = False, param_argnums: tuple[int, ...] = (),
            runtime_bits: bool = False, prefill_chunk: int | None = None):
    """The one jitted greedy decoder factory: `(params, prompt_BxT) -> tokens_BxN`.

    Args:
        policy: simulate every floating intermediate at this precision (None: plain float32).
        implicit: `params` may hold quax implicit arrays (quantized weights, LoRA factors): the
            decoder is `quax.quaxify`-ed, so they enter the program as their leaves and are
            materialised at every use. Not combined with a policy (dequantize first).
        param_argnums: `simulate`'s parameter arguments ((0,): the parameters are rounded to
            the policy's parameter format, as the constructions' frontier does; (): they are
            inputs like any other, as evaluation of trained models does).
        runtime_bits: the decoder takes a third argument `bits_S` (int32) read by the policy's
            runtime-width formats (`simulate.runtime_format`): one compile for every width.
        prefill_chunk: feed long prompts through the KV cache this many tokens at a time
            (`decode.greedy_decode`): attention memory C x S instead of T x S per head.
    Compiled decoders are cached per (config, num_steps, policy, options).
    """
    if implicit and policy is not None:
        raise ValueError("an implicit-array decoder takes no policy: dequantize the parameters "
                         "and pass the policy to a plain decoder")
    if runtime_bits and policy is None:
        raise ValueError("runtime_bits needs a policy with runtime-width formats")

    def run(params, prompt_BxT):
        return decode.greedy_decode(params, config, prompt_BxT, num_steps,
                                    prefill_chunk=prefill_chunk)

    if implicit:
        return jax.jit(quax.quaxify(run))
    if runtime_bits:
        def decode_at(params, prompt_BxT, bits_S):
            with runtime_format.mantissa_bits(bits_S):  # read while simulate traces
                return simulate(run, policy, param_argnums=param_argnums)(params, prompt_BxT)

        return jax.jit(decode_at)
    return jax.jit(run if policy is None else simulate(run, policy, param_argnums=param_argnums))


def runtime_decoder(config: model_lib.TransformerConfig, num_steps: int, accumulation: str):
    """`decoder` for the precision probe: `(params, prompt_BxT, bits_S) -> tokens_BxN`, compiled
    once for every region set and e8mM width (`simulate.region_sets.runtime_policy`, widths from
    `region_bits`)."""
    regions = [r for r in region_sets.MODEL_REGIONS if not (r == "norm" and config.norm == "none")]
    return decoder(config, num_steps, region_sets.runtime_policy(accumulation, regions),
                   runtime_bits=True)


def evaluate(params, config: model_lib.TransformerConfig, spec: tasks.TaskSpec, *,
             num_examples: int, batch_size: int, data_seed: int,
             policy: Policy | None = None, decode=None, split: str = "eval") -> dict[str, float]:
    """Exact match and per-digit accuracy on `num_examples` held-out examples of `spec`.

    `split` (`tasks.SPLITS`): "eval" (default) held-out inputs; "valid" other held-out examples
    (another random stream over the same held-out inputs: early stopping validates on them, so
    the final evaluation is not what it selected); "iid" / "iid_valid" the task distribution.
    Also returns the number of distinct inputs scored and the fraction of them held out.

    `decode` replaces the default `decoder(config, W, policy)`: any `(params, prompt_BxT) ->
    tokens_BxW` function, e.g. a quaxified decoder for quantized or LoRA parameters.
    """
    if num_examples < 1 or batch_size < 1:
        raise ValueError(f"num_examples and batch_size must be >= 1, got {num_examples}, "
                         f"{batch_size}")
    if spec.sequence_length > config.max_len:
        raise ValueError(f"{spec} needs {spec.sequence_length} positions; the model has "
                         f"max_len={config.max_len}")
    if decode is None:
        decode = decoder(config, spec.answer_tokens, policy)
    exact, digits, inputs, done, index = [], [], [], 0, 0
    while done < num_examples:
        size = min(batch_size, num_examples - done)
        batch = tasks.sample_batch(spec, data_seed=data_seed, step=index, batch_size=size,
                                   split=split)
        predicted = np.asarray(decode(params, batch.input_tokens))
        exact.append(tasks.exact_match(spec, predicted, batch.answer_tokens))
        inputs.append(batch.operand_digits)
        digits.append(tasks.digit_accuracy(spec, predicted, batch.answer_tokens))
        done += size
        index += 1
    inputs = np.concatenate(inputs)
    return {"exact_match": float(np.concatenate(exact).mean()),
            "digit_accuracy": float(np.concatenate(digits).mean()),
            "num_examples": int(num_examples), "distinct_inputs": tasks.distinct_inputs(inputs),
            "held_out_fraction": float(tasks.is_held_out(inputs).mean())}


# protocol -> (split of the final evaluation, split of early stopping's validations)
PROTOCOLS = {"iid": ("iid", "iid_valid"), "unseen": ("eval", "valid")}


def evaluate_protocols(params, config: model_lib.TransformerConfig, spec: tasks.TaskSpec, *,
                       num_examples: int, batch_size: int, data_seed: int,
                       policy: Policy | None = None, decode=None,
                       validation: bool = False) -> dict[str, float | int | None]:
    """`evaluate` under both protocols (see the module docstring), flattened:

        exact_match_iid, digit_accuracy_iid, distinct_iid, iid_in_training_split
        exact_match_unseen, digit_accuracy_unseen, distinct_unseen   (None when nothing is held
                                                                      out: the space is too small)
        exact_match, digit_accuracy: the unseen protocol's (as `evaluate` reports by default)

    `validation`: the protocols' validation streams (early stopping), else the final ones.
    """
    if decode is None:
        decode = decoder(config, spec.answer_tokens, policy)
    out: dict[str, float | int | None] = {"num_examples": int(num_examples)}
    for protocol, (final, valid) in PROTOCOLS.items():
        try:
            r = evaluate(params, config, spec, num_examples=num_examples, batch_size=batch_size,
                         data_seed=data_seed, decode=decode, split=valid if validation else final)
        except tasks.NoHeldOutInputs:
            r = {"exact_match": None, "digit_accuracy": None, "distinct_inputs": 0}
        out[f"exact_match_{protocol}"] = r["exact_match"]
        out[f"digit_accuracy_{protocol}"] = r["digit_accuracy"]
        out[f"distinct_{protocol}"] = r["distinct_inputs"]
        if protocol == "iid":
            out["iid_in_training_split"] = 1.0 - r["held_out_fraction"]
    out["exact_match"], out["digit_accuracy"] = out["exact_match_unseen"], \
        out["digit_accuracy_unseen"]
    return out
