"""Decoder training (issue 15, training side): the completion loss, packed cells equal cells trained
alone on tiny GPT-2 (Conv1D, fused c_attn) and tiny Llama (GQA), packed greedy decoding equals each
cell decoding alone, BLEU / ROUGE-L equal the packages called directly, loss-like main metrics."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lowrank_lab.spec import DataSpec, ExperimentSpec, ModelSpec, SpecError, SweepSpec, TrainSpec, expand_sweep
from lowrank_lab.store.models import load_model
from lowrank_lab.train.causal import (causal_dev, causal_encoded, completion_losses, evaluate_causal, generate_packed,
                                      hidden_states)
from lowrank_lab.train.data import load_task
from lowrank_lab.train.loop import _better, train_pack
from lowrank_lab.train.pack import build_pack, cell_slices, trainable_parameters

from conftest import NEGATIVE, POSITIVE, write_tiny_task

SPECIAL = ["<pad>", "<eos>", "<unk>"]
WORDS = SPECIAL + sorted({w for s in POSITIVE + NEGATIVE for w in s.split()} | set(
    "Text: Label: 0 1 indeed really overall".split()))


def word_tokenizer():
    """Word-level (whitespace) tokenizer with no BOS, eos = <eos>, as SmolLM2's adds none."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def tiny_decoder(arch: str):
    torch.manual_seed(0)
    if arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        return GPT2LMHeadModel(GPT2Config(vocab_size=len(WORDS), n_positions=64, n_embd=16, n_layer=2, n_head=2,
                                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=64))


def save_decoder(folder: Path, arch: str) -> Path:
    tiny_decoder(arch).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def decoder(request, tmp_path_factory) -> Path:
    return save_decoder(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    return write_tiny_task(tmp_path_factory.mktemp("task") / "task.csv", n=40)


def _cells(folder, task_file, method="lora", **sweep):
    spec = ExperimentSpec(model=ModelSpec(name=str(folder), max_length=32),
                          data=DataSpec(task="file", path=str(task_file)),
                          train=TrainSpec(batch_size=4, epochs=1, evals_per_epoch=2, device="cpu"),
                          sweep=SweepSpec(**{"alpha": (4.0,), "lr": (2e-2,), "r": (2,), **sweep}))
    cells = expand_sweep(spec)
    return [replace(c, lora=replace(c.lora, method=method)) for c in cells] if method != "lora" else cells


def _train(cells, folder):
    loaded = load_model(str(folder))
    task = load_task(cells[0].data, causal=True)
    train, _, _ = causal_encoded(loaded.tokenizer, task.train, 32)
    dev = causal_dev(loaded.tokenizer, task, 32)
    pack = build_pack(cells, copy.deepcopy(loaded.module), task.num_labels, "none", decoder=True)
    states = train_pack(pack, task, train, dev, loaded.tokenizer, torch.device("cpu"))
    return pack, states


def test_packed_decoder_cells_equal_each_cell_trained_alone(decoder, task_file):
    cells = _cells(decoder, task_file, r=(1, 4), seeds=(0, 1), targets=("q,v", "up,down", "all-linear"))[::3]
    assert {c.lora.targets for c in cells} == {"q,v", "up,down", "all-linear"} and {c.lora.r for c in cells} == {1, 4}
    packed, packed_states = _train(cells, decoder)
    assert any(label.endswith((".up", ".down")) for label in packed.labels.values())
    for n, cell in enumerate(cells):
        alone, alone_states = _train([cell], decoder)
        ours, theirs = cell_slices(packed, n), cell_slices(alone, 0)
        assert ours.keys() == theirs.keys() and ours
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5, msg=key)
        for mine, its in zip(packed_states[n].history, alone_states[0].history, strict=True):
            assert mine["completion_loss"] == pytest.approx(its["completion_loss"], rel=1e-4)
            assert mine["perplexity"] == pytest.approx(its["perplexity"], rel=1e-4)
            assert mine["accuracy"] == its["accuracy"] and mine["dev_loss"] == mine["completion_loss"]
        assert trainable_parameters(packed, n) == trainable_parameters(alone, 0)
        assert trainable_parameters(packed, n)["head"] == 0
    losses = [h["train_loss"] for h in packed_states[0].history]
    assert losses[-1] < losses[0]  # it learns


def test_completion_loss_is_the_causal_lms_own_loss_on_the_completion_tokens_of_each_cell(task_file):
    model = tiny_decoder("llama").eval()
    task = load_task(DataSpec(task="file", path=str(task_file)), causal=True)
    data, _, _ = causal_encoded(word_tokenizer(), task.train, 32)
    inputs, labels = data.batch(torch.arange(6))
    assert (labels != -100).sum(1).tolist() == [2] * 6  # the label word and eos: prompt and padding masked
    with torch.no_grad():
        sums, counts = completion_losses(hidden_states(model, **inputs), labels, model.lm_head, K=2)
        for n in range(2):
            rows = slice(3 * n, 3 * (n + 1))
            hf = model(input_ids=inputs["input_ids"][rows], attention_mask=inputs["attention_mask"][rows],
                       labels=labels[rows]).loss
            torch.testing.assert_close(sums[n] / counts[n], hf, rtol=1e-5, atol=1e-6)
        assert counts.tolist() == [6.0, 6.0]


def _random_factors(pack, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in pack.layers.values():
            layer.B.copy_(torch.randn(layer.B.shape, generator=gen) * 2.0)
            layer.B.mul_((layer.A.abs().sum(-1, keepdim=True).mT > 0).float())  # padding stays zero


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_packed_greedy_generation_equals_each_cell_generating_alone(arch, tmp_path, task_file):
    folder = save_decoder(tmp_path / arch, arch)
    cells = _cells(folder, task_file, r=(1, 4), seeds=(0, 1), targets=("q,v", "all-linear"))[:3]
    loaded = load_model(str(folder))
    tok = loaded.tokenizer
    task = load_task(cells[0].data, causal=True)
    dev = causal_dev(tok, task, 32)
    index = torch.arange(5)
    pack = build_pack(cells, copy.deepcopy(loaded.module), 0, "none", decoder=True)
    _random_factors(pack)
    pack.model.eval()
    texts = generate_packed(pack.model, dev.prompts, index, pack.K, 4, tok, torch.device("cpu"))
    assert len(set(map(tuple, texts))) > 1  # the cells really differ
    for n, cell in enumerate(cells):
        alone = build_pack([cell], copy.deepcopy(loaded.module), 0, "none", decoder=True)
        with torch.no_grad():
            for path, layer in alone.layers.items():
                r = layer.ranks[0]
                layer.A[0, :r], layer.B[0, :, :r] = pack.layers[path].factors(n)[:2]
        alone.model.eval()
        assert generate_packed(alone.model, dev.prompts, index, 1, 4, tok, torch.device("cpu"))[0] == texts[n]
        # left padding changes nothing: each prompt alone, unpadded, decodes the same
        for i in range(2):
            one = generate_packed(alone.model, dev.prompts, torch.tensor([i]), 1, 4, tok, torch.device("cpu"))
            assert one[0][0] == texts[n][i]
    results = evaluate_causal(pack.model, pack.K, dev, task, tok, torch.device("cpu"), 8, False)
    assert set(results[0]) == {"accuracy", "completion_loss", "perplexity", "dev_loss"}


def test_bleu_and_rouge_l_are_the_packages_own_scores():
    import sacrebleu
    from rouge_score import rouge_scorer

    from lowrank_lab.maths.text_metrics import bleu, rouge_l

    hyps = ["the cat sat on the mat", "a dog barks loudly at night"]
    refs = [("the cat sat on a mat", "a cat on the mat"), ("a dog barks at night",)]
    expected = sacrebleu.corpus_bleu(hyps, [[refs[0][0], refs[1][0]], [refs[0][1], None]]).score
    assert bleu(hyps, refs) == pytest.approx(expected)
    assert 0 < bleu(hyps, refs) < 100
    assert bleu(["a b c d"], [("a b c d",)]) == pytest.approx(100.0)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    best = [max(scorer.score(r, h)["rougeL"].fmeasure for r in rs) for h, rs in zip(hyps, refs)]
    assert rouge_l(hyps, refs) == pytest.approx(100 * sum(best) / 2)
    with pytest.raises(ValueError, match="reference"):
        bleu(hyps, refs[:1])


def test_the_best_evaluation_of_a_loss_like_metric_is_the_lowest():
    assert _better(1.0, 2.0, "completion_loss") and not _better(2.0, 1.0, "perplexity")
    assert _better(0.9, 0.8, "accuracy") and not _better(float("nan"), 1.0, "completion_loss")


def test_full_fine_tuning_and_bitfit_of_a_decoder(task_file, tmp_path):
    gpt2 = save_decoder(tmp_path / "gpt2", "gpt2")
    (full,) = _cells(gpt2, task_file, method="full")
    pack = build_pack([full], tiny_decoder("gpt2"), 0, "none", decoder=True)
    assert all(p.requires_grad for p in pack.model.parameters()) and not pack.layers
    (bitfit,) = _cells(gpt2, task_file, method="bitfit")
    pack = build_pack([bitfit], tiny_decoder("gpt2"), 0, "none", decoder=True)
    assert pack.trainable and all(n.endswith("bias") for n, p in pack.model.named_parameters() if p.requires_grad)
    before = {k: v.clone() for k, v in cell_slices(pack, 0).items()}
    task = load_task(bitfit.data, causal=True)
    tok = word_tokenizer()
    train_pack(pack, task, causal_encoded(tok, task.train, 32)[0], causal_dev(tok, task, 32), tok, torch.device("cpu"))
    assert any(not torch.equal(before[k], v) for k, v in cell_slices(pack, 0).items())
    with pytest.raises(SpecError, match="bitfit.*no bias"):
        build_pack([bitfit], tiny_decoder("llama"), 0, "none", decoder=True)


def test_bleu_of_tokenised_text_logs_nothing(caplog):
    """E2E's references are tokenised; sacrebleu warned about it at every evaluation of every cell."""
    from lowrank_lab.maths.text_metrics import bleu

    hyps = [f"the pub number {n} is near the river ." for n in range(120)]
    with caplog.at_level("WARNING"):
        assert bleu(hyps, [(h,) for h in hyps]) == pytest.approx(100.0)
    assert not [r for r in caplog.records if r.name.startswith("sacrebleu")]


def test_generation_tasks_score_the_packs_greedy_decoding_with_bleu_and_rouge_l(tmp_path):
    from lowrank_lab.maths.text_metrics import bleu, rouge_l
    from lowrank_lab.train.data import CompletionExample, Task

    folder = save_decoder(tmp_path / "llama", "llama")
    examples = tuple(CompletionExample(f"Text: {w} Label:", " a wonderful film", (" a wonderful film", " truly great"))
                     for w in ("dull", "boring", "great", "funny"))
    task = Task("e2e", examples, examples, 0, ("bleu", "rouge_l", "completion_loss", "perplexity"), "bleu",
                {"split_note": "test"}, kind="generation")
    cells = _cells(folder, write_tiny_task(tmp_path / "t.csv", n=8), r=(1, 4))
    loaded = load_model(str(folder))
    pack = build_pack(cells, copy.deepcopy(loaded.module), 0, "none", decoder=True)
    _random_factors(pack, seed=1)
    dev = causal_dev(loaded.tokenizer, task, 32)
    assert dev.max_new_tokens == 4  # the longest reference (3 words) and eos
    results = evaluate_causal(pack.model.eval(), pack.K, dev, task, loaded.tokenizer, torch.device("cpu"), 3, False)
    texts = generate_packed(pack.model, dev.prompts, torch.arange(4), pack.K, 4, loaded.tokenizer, torch.device("cpu"))
    refs = [("a wonderful film", "truly great")] * 4
    for n in range(pack.K):
        hyps = [t.strip() for t in texts[n]]
        assert results[n]["bleu"] == pytest.approx(bleu(hyps, refs))
        assert results[n]["rouge_l"] == pytest.approx(rouge_l(hyps, refs))
        assert results[n]["perplexity"] == pytest.approx(math.exp(results[n]["completion_loss"]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_decoder_pack_trains_and_decodes_on_a_gpu_in_bf16(arch, tmp_path, task_file):
    folder = save_decoder(tmp_path / arch, arch)
    cells = _cells(folder, task_file, r=(1, 4), targets=("q,v", "all-linear"))
    cells = [replace(c, train=replace(c.train, device="cuda", epochs=3)) for c in cells]
    loaded = load_model(str(folder))
    task = load_task(cells[0].data, causal=True)
    train, _, _ = causal_encoded(loaded.tokenizer, task.train, 32)
    dev = causal_dev(loaded.tokenizer, task, 32)
    pack = build_pack(cells, copy.deepcopy(loaded.module), 0, "none", decoder=True)
    states = train_pack(pack, task, train, dev, loaded.tokenizer, torch.device("cuda"))
    assert pack.model.lm_head.weight.dtype == torch.bfloat16 and next(iter(pack.layers.values())).A.dtype == torch.float32
    for st in states:
        assert st.failed is None and st.best is not None
        assert math.isfinite(st.best["completion_loss"]) and 0 <= st.best["accuracy"] <= 1
        assert st.history[-1]["train_loss"] < st.history[0]["train_loss"]
