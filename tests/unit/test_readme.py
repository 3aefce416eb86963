"""The README's Python example runs as written, from the repository root, on the committed fixture."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_notebook_example_runs(monkeypatch):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Using it from Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert not namespace["sweep"].cells.empty
    assert namespace["dW"].shape == (namespace["u"].B.shape[0], namespace["u"].A.shape[1])
    assert list(namespace["S"]) == sorted(namespace["S"], reverse=True)
    assert not (ROOT / "tests/fixtures/sweep/analysis").exists()  # it wrote into its copy, not the fixture
