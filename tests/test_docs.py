"""Docs that cannot drift: README's quick start and the examples marked ``run`` execute as
they are; every other Python example says why it is not run; every flag shown after
``python -m gluonft ...``, ``python -m bench.*`` or ``make bench ARGS=...`` exists in that
command's ``--help``; the recipes the docs describe are the code's."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gluonft.__main__ import build_parser
from gluonft.recipes import RECIPES

from . import clothing

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"(?:<!--\s*(?P<mark>(?:not )?run)\s*:?(?P<why>[^>]*?)-->\s*\n)?"
                   r"```(?P<lang>\w*)\n(?P<code>.*?)```", re.S)


def _blocks(page, lang):
    return [(m.group("mark"), (m.group("why") or "").strip(), m.group("code"))
            for m in BLOCK.finditer(page.read_text()) if m.group("lang") == lang]


def _quick_start():
    return next(code for _, _, code in _blocks(ROOT / "README.md", "python")
                if "import gluonft" in code)


def _run(code, cwd, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_python_example_is_run_or_says_why_not():
    quick = _quick_start()
    for page in PAGES:
        for mark, why, code in _blocks(page, "python"):
            if code == quick and page.name == "README.md":
                continue
            assert mark in ("run", "not run"), (
                f"{page.name}: a Python example neither run by tests/test_docs.py nor marked "
                f"<!-- not run: why -->:\n{code[:300]}")
            assert mark == "run" or why, f"{page.name}: say why this example is not run"


def test_the_readme_quick_start_runs_in_a_folder_of_real_photos(shared, tmp_path):
    photos = tmp_path / "photos"
    for split, n in (("train", 12), ("validation", 4), ("test", 4)):
        clothing.copy_photos(shared, photos / split, per_class=n, split=split)
    out = _run(_quick_start(), tmp_path)
    assert "macro F1" in out and "precision" in out
    assert (tmp_path / "model" / "model.json").is_file() and (tmp_path / "model.onnx").is_file()


def test_the_examples_marked_run_run(shared):
    ran = 0
    for page in PAGES:
        for mark, why, code in _blocks(page, "python"):
            if mark == "run":
                assert "project folder" in why, f"{page.name}: say where the example runs"
                _run(code, ROOT)
                ran += 1
    assert ran >= 1


# --- flags --------------------------------------------------------------------------------------

def _commands():
    """(command, flags, page) of every command line in the pages' bash blocks."""
    found = []
    for page in PAGES:
        for _, _, code in _blocks(page, "bash"):
            for line in code.replace("\\\n", " ").splitlines():
                line = line.split("#")[0]
                m = re.search(r"python -m (gluonft(?:\.\w+)?|bench\.\w+)(?: (\w+))?|"
                              r"make bench ARGS=", line)
                if not m:
                    continue
                if m.group(0).startswith("make bench"):
                    command = ("bench.cifar", None)
                elif m.group(1) == "gluonft":
                    command = ("gluonft", m.group(2))
                else:
                    command = (m.group(1), None)
                flags = re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", line[m.end():])
                found.append((command, flags, page.name))
    return found


def _help(command):
    module, sub = command
    if module == "gluonft":
        parser = build_parser()
        action = next(a for a in parser._actions if a.dest == "command")
        return action.choices[sub].format_help()
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return done.stdout + done.stderr


def test_every_flag_shown_exists_in_its_commands_help():
    commands = _commands()
    assert len(commands) >= 20
    helps, missing = {}, []
    for command, flags, page in commands:
        if command not in helps:
            helps[command] = _help(command)
        missing += [f"{page}: {' '.join(filter(None, command))} {flag}" for flag in flags
                    if flag not in helps[command]]
    assert not missing, "flags shown in the docs that the command does not have: " + \
        "; ".join(missing)


def test_the_recipes_the_docs_describe_are_the_codes():
    table = (ROOT / "docs" / "recipes.md").read_text()
    for name, recipe in RECIPES.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}`"))
        family = recipe.model.replace("efficientnet_lite", "EfficientNet-Lite")
        assert family in row and f"{recipe.image_size} px" in row, row
    readme = (ROOT / "README.md").read_text()
    assert "EfficientNet-Lite0" in readme and "EfficientNet-Lite2 at 260 px" in readme
    assert RECIPES["fast"].model == "efficientnet_lite0"
    assert (RECIPES["default"].model, RECIPES["default"].image_size) == ("efficientnet_lite2",
                                                                         260)


def test_the_readme_stays_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300
    links = re.findall(r"\]\((docs/[\w.-]+\.md)\)", "\n".join(lines))
    assert {Path(p).name for p in links} == {p.name for p in PAGES[1:]}  # every page linked
    for page in PAGES[1:]:
        for target in re.findall(r"\]\(([\w.-]+\.md)\)", page.read_text()):
            assert (ROOT / "docs" / target).is_file(), f"{page.name} links to {target}"


@pytest.fixture(scope="module", autouse=True)
def _no_stray_files():
    yield
    assert not (ROOT / "model.onnx").exists() and not (ROOT / "model").exists()
