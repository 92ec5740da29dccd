"""The README's walk of one notification through the code names modules and functions that exist."""

import importlib
import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"
WALK_START = "**One notification, module by module.**"
WALK_END = "**Messaging topology**"
# `pulse.delivery.service` or `services/api/deps.py`, optionally followed by (`name`, `name`).
_MODULE = re.compile(r"`((?:pulse\.[a-z_.]+)|(?:services/[a-z_/]+\.py))`(?: \(`(\w+)`(?:, `(\w+)`)?)?")


def _walk() -> str:
    text = README.read_text()
    return text[text.index(WALK_START) : text.index(WALK_END)]


def test_every_module_and_function_the_walk_names_exists() -> None:
    named = _MODULE.findall(_walk())
    assert len(named) > 20
    missing = []
    for module_name, *functions in named:
        module_path = module_name.removesuffix(".py").replace("/", ".")
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError:
            missing.append(module_name)
            continue
        missing.extend(f"{module_name}: {name}" for name in functions if name and not hasattr(module, name))
    assert not missing, f"the README's walk names what no longer exists: {missing}"
