"""Library errors speak in library terms and only the CLI names its flags: library code names a
parameter the user set as `name` and lists it in the error's ``parameters``; ``cli`` prints it
as the flag (``mdp_trt.errors.MdpTrtError``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import typer

from mdp_trt import errors
from mdp_trt.cli import _flag_message, _flags, app, main

PACKAGE = Path(errors.__file__).resolve().parent
LIBRARY = sorted(path for path in PACKAGE.rglob("*.py") if path != PACKAGE / "cli.py")
ERRORS = set(errors.__all__)
BACKQUOTED = re.compile(r"`(\w+)`")


def cli_flags() -> set[str]:
    """Every long option of every command (aliases and --no- forms included)."""
    commands = typer.main.get_command(app).commands.values()
    return {opt for command in commands for param in command.params
            for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--")}


def non_docstrings(tree: ast.Module) -> list[ast.Constant]:
    """The string constants of a module, docstrings left out (they may document the CLI)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


def error_calls(tree: ast.Module) -> list[ast.Call]:
    """The calls that build one of mdp_trt's errors."""
    def name(func: ast.expr) -> str | None:
        return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Call) and name(node.func) in ERRORS and node.args]


def declared(call: ast.Call, tree: ast.Module) -> set[str]:
    """The names in a call's ``parameters=``: a literal tuple, or a module constant holding one."""
    value = next((k.value for k in call.keywords if k.arg == "parameters"), None)
    if isinstance(value, ast.Name):  # e.g. prune's _HINT_PARAMETERS
        value = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                     and any(getattr(t, "id", None) == value.id for t in node.targets))
    return {element.value for element in getattr(value, "elts", ())}


def trees() -> dict[str, ast.Module]:
    return {str(path.relative_to(PACKAGE)): ast.parse(path.read_text()) for path in LIBRARY}


def test_no_library_string_names_a_cli_flag():
    """Messages, warnings and hints outside cli.py name parameters, never the flags (other
    programs' flags, such as nvidia-smi's, are not the CLI's)."""
    flags = cli_flags()
    found = [f"{name}:{node.lineno}: {flag}" for name, tree in trees().items()
             for node in non_docstrings(tree)
             for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", node.value) if flag in flags]
    assert not found, "name the parameter as `name` (declared in the error's parameters)"


def test_each_parameter_an_error_names_is_declared_and_is_a_flag():
    """A `name` in an error's text is in its ``parameters`` (else the CLI would print the
    backquotes), and every declared parameter is a command's option (a flag to print)."""
    options = _flags()
    undeclared, unknown = [], []
    for name, tree in trees().items():
        for call in error_calls(tree):
            named = {word for node in ast.walk(call.args[0])
                     if isinstance(node, ast.Constant) and isinstance(node.value, str)
                     for word in BACKQUOTED.findall(node.value)}
            listed = declared(call, tree)
            undeclared += [f"{name}:{call.lineno}: {word}" for word in sorted(named - listed)]
            unknown += [f"{name}:{call.lineno}: {word}" for word in sorted(listed)
                        if word not in options]
    assert not undeclared, "named in the message but not in parameters"
    assert not unknown, "declared parameters the CLI has no flag for"


def test_the_cli_spells_only_declared_parameters_as_flags():
    exc = errors.InputError("`group_size` 0 must be >= 1; `batch` or `other`; `calib_data`",
                            parameters=("group_size", "batch", "calib_data"))
    assert str(exc) == "`group_size` 0 must be >= 1; `batch` or `other`; `calib_data`"
    assert _flag_message(exc) == ("--group-size 0 must be >= 1; --batch or `other`; "
                                  "--calib-data/--calib")


def test_a_library_error_reaches_the_user_with_its_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["solve", str(tmp_path / "p.json"), "--time-limit", "-1"])
    assert exc.value.code == 2
    message = "error: --time-limit -1.0 must be a positive number of seconds"
    assert message in capsys.readouterr().err
