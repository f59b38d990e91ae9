"""The docs stay true to the package: every module has an API page, the README stays short and
carries the two commands CI runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALIAS_MODULES = {"pyro_sparsegen.infer.derived"}  # deprecated alias modules: no page


def package_modules():
    out = set()
    for path in (ROOT / "pyro_sparsegen").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts.pop()
        out.add(".".join(parts))
    return out - ALIAS_MODULES


def test_every_module_of_the_package_has_an_api_page():
    listed = set(re.findall(r"^api/(pyro_sparsegen[\w.]*)\s*$",
                            (ROOT / "docs" / "api.md").read_text(), re.MULTILINE))
    assert listed == package_modules()


def test_the_readme_is_short_and_ci_runs_its_test_command():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    commands = re.findall(r"```bash\n(python3 -m venv .*)\n```", readme)
    assert len(commands) == 2 and "pyro-sparsegen train" in commands[0]
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()  # verbatim, a line
