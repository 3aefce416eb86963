"""Prefix tuning (issue 18): the same outputs as PEFT's PrefixTuningConfig with the same prefix, a
saved prefix loads in PEFT, packed prefixes equal each alone, greedy decoding through the KV cache
equals decoding without it, and the parameter count is 2·L·l_p·d_kv."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from lowrank_lab.model.prefix import attach_prefix, kv_shape, prefix_parameters, reset_prefixes
from lowrank_lab.store import peft_format

from test_bottleneck import tiny


def hidden(model, ids, mask):
    result = model(input_ids=ids, attention_mask=mask)
    return result.last_hidden_state if hasattr(result, "last_hidden_state") else result.logits


def prefixed(base, length: int = 3, seed: int = 1):
    model = copy.deepcopy(base)
    prefix = attach_prefix(model.base_model, 1, length)
    reset_prefixes(prefix, 0, seed)
    return model, prefix


@pytest.mark.parametrize("arch,task_type", [("bert", "FEATURE_EXTRACTION"), ("llama", "CAUSAL_LM"), ("gpt2", "CAUSAL_LM")])
def test_outputs_equal_peft_and_a_saved_prefix_loads_in_peft(arch, task_type, tmp_path):
    from peft import PeftModel

    base = tiny(arch)
    model, prefix = prefixed(base)
    ids = torch.randint(0, 50, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # padding on the right
    L, H, hd = kv_shape(base.config)
    assert prefix.prompt.numel() == prefix_parameters(L, 3, H * hd) == 2 * 2 * 3 * (H * hd)
    peft_format.save_prefix(tmp_path, prefix.prompt[0].detach(), shape=(L, H, hd), base_model="tiny",
                            revision=None, task_type=task_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
        theirs = hidden(peft, ids, mask)
    ours = hidden(model, ids, mask)
    assert not torch.allclose(ours, hidden(base, ids, mask))  # the prefix changes the outputs
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    reloaded = copy.deepcopy(base)
    peft_format.load_prefix(reloaded, tmp_path)
    torch.testing.assert_close(hidden(reloaded, ids, mask), ours, rtol=0, atol=0)


def test_packed_prefixes_equal_each_prefix_alone():
    base = tiny("llama")
    packed = copy.deepcopy(base)
    prefix = attach_prefix(packed.base_model, 2, 3)
    alone = []
    for n in range(2):
        reset_prefixes(prefix, n, 10 + n)
        alone.append(prefixed(base, 3, 10 + n)[0])
    ids = torch.randint(0, 50, (4, 5))  # rows 0-1: cell 0, rows 2-3: cell 1
    mask = torch.ones_like(ids)
    out = hidden(packed, ids, mask)
    for n in range(2):
        torch.testing.assert_close(out[2 * n: 2 * n + 2], hidden(alone[n], ids[2 * n: 2 * n + 2], mask[:2]))


def test_greedy_decoding_through_the_cache_equals_decoding_without_it():
    model, _ = prefixed(tiny("llama"))
    ids = torch.randint(3, 50, (1, 5))
    generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5,
                               do_sample=False, pad_token_id=0)
    seq = ids
    for _ in range(5):
        logits = model(input_ids=seq, attention_mask=torch.ones_like(seq), use_cache=False).logits
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, seq)


def test_detaching_the_prefix_gives_the_base_back():
    base = tiny("bert")
    model, prefix = prefixed(base)
    ids = torch.randint(0, 50, (2, 4))
    mask = torch.ones_like(ids)
    prefix.detach(model.base_model)
    torch.testing.assert_close(hidden(model, ids, mask), hidden(base, ids, mask), rtol=0, atol=0)
    assert "prefix_tuning" not in dict(model.base_model.named_children())
