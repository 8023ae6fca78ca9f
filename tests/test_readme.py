"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest
from test_train import load_script

README = Path(__file__).parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load_script().main(["--epochs", "2", "--output_dir", "runs/dscmr-wikipedia-seed0"])
    exec(compile(code, str(README), "exec"), {})
