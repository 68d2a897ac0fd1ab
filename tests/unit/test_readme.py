"""README promises: its two commands exist, CI runs the test one, config keys are documented."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from jobs import config as config_mod

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(leaf_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_config_key_is_in_the_reference_table() -> None:
    table = README[README.index("| key | default | meaning |") :]
    documented = set()
    for cell in re.findall(r"^\| ([^|]+) \|", table, re.M):
        names = re.findall(r"`([\w.]+)`", cell)
        if not names:
            continue
        base = names[0].rsplit(".", 1)[0] + "." if "." in names[0] else ""
        documented.add(names[0])
        documented.update(base + n.lstrip(".") for n in names[1:])
    missing = [k for k in leaf_keys(config_mod.Config) if k not in documented]
    assert missing == []


def test_the_two_commands_exist_and_ci_runs_the_test_one() -> None:
    assert "scripts/demo" in README and "scripts/test" in README
    for script in ("scripts/demo", "scripts/test", "scripts/bootstrap", ".ci/run"):
        path = ROOT / script
        assert path.exists() and path.stat().st_mode & 0o111, script
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec scripts/test\s*$", ci, re.M)
