"""CI fails loudly: a hung test times out, and a test whose data or tool is missing fails in CI instead of skipping."""

from __future__ import annotations

import subprocess
import sys


def test_a_hung_test_fails_with_a_timeout(tmp_path, pytestconfig):
    assert float(pytestconfig.getini("timeout")) > 0  # pyproject's default applies to every test
    hung = tmp_path / "test_hung.py"
    hung.write_text("import time\n\ndef test_hangs():\n    time.sleep(60)\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", str(hung), "-q", "-p", "no:cacheprovider", "--timeout", "2",
                           "--rootdir", str(tmp_path)], capture_output=True, text=True, timeout=50, cwd=tmp_path)
    assert proc.returncode == 1 and "Timeout" in proc.stdout + proc.stderr, proc.stdout[-2000:]


def test_missing_data_or_tools_skip_on_a_laptop_but_fail_in_ci(monkeypatch):
    import pytest

    import conftest

    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="no data"):
        conftest.unavailable("no data")
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="no data — with CI=true this is an error"):
        conftest.unavailable("no data")
