"""The adapter baselines' cells in a pack and on disk: ``build_pack`` puts their adapters in the pack
(``Pack.adapters``, packed: dim 0 the cell), a cell's trainable-parameter count equals the paper's
formula and the count of its tensors, per-cell gradient norms keep the cells apart, and
``load_classifier`` reloads a saved houlsby, pfeiffer or prefix cell with its logits."""

from __future__ import annotations

import pytest
import torch

from lowrank_lab.model.base import Classifier
from lowrank_lab.spec import ExperimentSpec, ModelSpec, SweepSpec, expand_sweep
from lowrank_lab.store.models import load_base, load_classifier
from lowrank_lab.train.pack import GradBuffers, build_pack, cell_slices, per_cell_grad_norms, trainable_parameters
from lowrank_lab.train.saving import save_cell

METHODS = ("houlsby", "pfeiffer", "prefix")
TEXTS = ["a wonderful film", "a dull, tedious mess of a movie"]
# The tiny BERT: d_model = d_kv = 16, L = 2 layers. Hu et al. 2021, §5.1 (L̂_LN = 0): Houlsby has
# L̂_Adpt = 2·L adapters, Pfeiffer L; each 2·d·m + m + d. Prefix: 2·L·l_p·d_kv.
D, L = 16, 2
FORMULA = {"houlsby": lambda m: 2 * L * (2 * D * m + m + D), "pfeiffer": lambda m: L * (2 * D * m + m + D),
           "prefix": lambda l_p: 2 * L * l_p * D}


def _cells(model, method, sizes, seeds=(0,)):
    axis = "prefix_length" if method == "prefix" else "bottleneck"
    spec = ExperimentSpec(model=ModelSpec(name=str(model)),
                          sweep=SweepSpec(baselines=(method,), seeds=seeds, **{axis: sizes}))
    return [c for c in expand_sweep(spec) if c.lora.method == method]


def _size(cell) -> int:
    return cell.lora.prefix_length if cell.lora.method == "prefix" else cell.lora.bottleneck


@pytest.mark.parametrize("method", METHODS)
def test_a_packed_cell_counts_the_formula_and_its_tensors(method, tiny_bert):
    """Once the count was of the whole K-stacked, zero-padded tensors, overridden in train.sweep."""
    sizes = (3,) if method == "prefix" else (2, 6)  # one prefix length per pack; bottleneck sizes may differ
    cells = _cells(tiny_bert, method, sizes, seeds=(0, 1))
    pack = build_pack(cells, load_base(str(tiny_bert))[0], 2, "mean")
    assert pack.adapters is not None and pack.adapters.method == method and pack.K == len(cells) >= 2
    head = 2 * D + 2
    for n, cell in enumerate(cells):
        adapter = FORMULA[method](_size(cell))
        assert trainable_parameters(pack, n) == {"adapter": adapter, "head": head, "total": adapter + head}
        tensors = cell_slices(pack, n)
        assert sum(t.numel() for k, t in tensors.items() if not k.startswith("head.")) == adapter
        assert pack.adapters.formula(n)["value"] == adapter == pack.adapters.count(n)
        # cell n's slice of the stored (padded) tensors holds the formula at the largest size
        assert sum(p[n].numel() for p in pack.adapters.parameters()) == FORMULA[method](max(sizes))
    # the pack trains exactly the adapters and heads, every one packed (dim 0 the cell)
    trained = {id(p) for p in pack.trainable}
    assert trained == {id(p) for p in pack.adapters.parameters() + pack.heads} == pack.packed
    GradBuffers(pack)  # refuses a pack with an unpacked trainable tensor


@pytest.mark.parametrize("method", METHODS)
def test_per_cell_gradient_norms_keep_the_adapter_cells_apart(method, tiny_bert):
    """A loss on cell 1's rows only reaches cell 1's adapter: the other cells' norms are exactly 0."""
    cells = _cells(tiny_bert, method, (4,), seeds=(0, 1, 2))
    encoder, tokenizer = load_base(str(tiny_bert))
    pack = build_pack(cells, encoder, 2, "mean")
    batch = dict(tokenizer(TEXTS * pack.K, padding=True, return_tensors="pt"))
    logits = pack.model(**batch)
    logits[len(TEXTS):2 * len(TEXTS)].square().sum().backward()
    norms = per_cell_grad_norms(pack)
    assert norms[1] > 0 and norms[0] == 0 and norms[2] == 0
    adapter_grad = sum(p.grad[1].square().sum() for p in pack.adapters.parameters())
    assert adapter_grad > 0  # the adapter, not only the head, gets cell 1's gradient


@pytest.mark.parametrize("method", METHODS)
def test_load_classifier_reloads_a_saved_cell_and_reproduces_its_logits(method, tiny_bert, tmp_path, gen):
    (cell,) = _cells(tiny_bert, method, (3,))
    encoder, tokenizer = load_base(str(tiny_bert))
    pack = build_pack([cell], encoder, 3, "cls")
    with torch.no_grad():  # as if trained: at initialisation W_up = 0 leaves the base's function
        for p in pack.adapters.parameters() + pack.heads:
            p.normal_(0.0, 0.3, generator=gen)
    pack.model.eval()
    save_cell(tmp_path, pack, 0, str(tiny_bert))
    inputs = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    model = load_classifier(tmp_path)
    bare = Classifier(load_base(str(tiny_bert))[0], model.head, "cls").eval()
    with torch.no_grad():
        want, got, without = pack.model(**inputs), model(**inputs), bare(**inputs)
    assert got.shape == (2, 3) and (without - want).abs().max() > 1e-2  # the adapter matters
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
