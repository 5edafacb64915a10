"""Every script's --help documents every option with its default and returns within 3 s (heavy modules are
imported after the arguments are parsed); no help text names internal issue numbers or shared-material
paths, and benchmarks name their output file --out."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

SCRIPTS = sorted(p.stem for p in (REPO / "scripts").glob("*.py"))
HELP_SECONDS = 3.0
INTERNAL = re.compile(r"\bissues? \d|shared/")
# Scripts whose command line lives in the package: (module, parser builder).
BUILDERS = {"train": ("cpsl_tf.training.cli", "build_parser"),
            "evaluate": ("cpsl_tf.evaluation.cli", "build_parser"),
            "report": ("cpsl_tf.evaluation.report", "_parser"),
            "prepare_data": ("cpsl_tf.data.verify", "_parser")}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parsers(name: str) -> list[argparse.ArgumentParser]:
    """The parser of a script and those of its sub-commands."""
    module, function = BUILDERS.get(name, (None, "build_parser"))
    parser = getattr(importlib.import_module(module) if module else load_script(name), function)()
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += list(action.choices.values())
    return found


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_returns_within_3_seconds_and_names_nothing_internal(name):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = ["verify", "--help"] if name == "prepare_data" else ["--help"]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / "scripts" / f"{name}.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=30)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    assert seconds < HELP_SECONDS, f"{name} --help took {seconds:.1f} s"
    assert not INTERNAL.search(done.stdout), INTERNAL.search(done.stdout)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_option_has_help_with_its_default(name):
    for parser in parsers(name):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            where = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{where} has no help text"
            has_default = action.default not in (None, False, [], argparse.SUPPRESS) and not action.required
            if has_default:
                assert "default" in action.help, f"{where} does not say its default {action.default!r}"


def test_mIoU_drop_gates_are_in_points():
    export = load_script("export").build_parser()
    gates = {a.dest: a for a in export._actions if a.dest.endswith("miou_drop")}
    assert gates["max_int8_miou_drop"].default == 1.0 and gates["max_fp16_miou_drop"].default == 0.5
    assert all("points" in a.help for a in gates.values())


def test_benchmarks_name_their_output_out_and_nothing_internal():
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        tree = ast.parse(path.read_text())
        assert not INTERNAL.search(ast.get_docstring(tree) or ""), path
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                flags = [a.value for a in node.args if isinstance(a, ast.Constant)]
                assert "--output" not in flags, f"{path}: --output (the benchmarks' option is --out)"
                helps = [k.value.value for k in node.keywords
                         if k.arg == "help" and isinstance(k.value, ast.Constant)]
                assert not any(INTERNAL.search(h) for h in helps), (path, helps)
