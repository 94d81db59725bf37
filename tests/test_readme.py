"""The README's example runs as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (example,) = [b for b in blocks if "anyio.run(main)" in b]
    script = tmp_path / "example.py"
    script.write_text(example)
    for _ in range(2):  # a set-up script runs again on the state it left
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if not k.startswith("MAILFLEET_")},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "5000 grants in outreach"
    assert (tmp_path / ".mailfleet" / "mailfleet.db").is_file()
