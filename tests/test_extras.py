"""Without an optional extra, the commands that need it exit 2 naming it, before any work; the
ONNX Runtime path never imports one."""

import subprocess
import sys
import textwrap

import pytest

from mdp_trt.extras import EXTRAS, MissingExtra, installed, require
from tests import onnx_graphs as G
from tests.test_cli import run


@pytest.fixture
def without(monkeypatch):
    """``without("torch")`` makes an extra's modules unimportable for the rest of the test (a
    None in sys.modules is how Python marks a module that must not be imported)."""

    def hide(extra: str) -> None:
        for module in EXTRAS[extra]:
            monkeypatch.setitem(sys.modules, module, None)

    return hide


def test_require_names_the_missing_modules_and_the_extra(without):
    assert installed("numpy") and not installed("no_such_module_anywhere")
    require("torch", "anything")  # installed here: no error
    without("torch")
    with pytest.raises(MissingExtra, match=r"Taylor needs torch and torchvision.*pip install 'mdp-trt\[torch\]'") as err:
        require("torch", "Taylor")
    assert err.value.extra == "torch" and err.value.exit_code == 2


@pytest.mark.parametrize("argv", [
    ["export", "resnet18", "-o", "{tmp}/r.onnx"],
    ["demo", "-o", "{tmp}/demo"],
    ["finetune", "{model}", "--teacher", "{model}", "--data", "{tmp}/d.npz", "-o", "{tmp}/f.onnx"],
    ["progressive", "{model}", "--budget", "0.5", "--data", "{tmp}/d.npz", "-o", "{tmp}/p"],
    ["prune", "{model}", "--budget", "0.5", "--importance", "taylor", "--calib-data", "{tmp}/d.npz",
     "-o", "{tmp}/out"],
    ["prune", "{model}", "--budget", "0.5", "--backend", "torch-cpu", "-o", "{tmp}/out"],
])
def test_commands_that_need_torch_exit_2_naming_the_extra_and_write_nothing(tmp_path, capsys, without, argv):
    _, model = G.load(G.conv_bn_relu_chain(), tmp_path)
    before = set(tmp_path.iterdir())
    without("torch")
    code, text = run([a.format(tmp=tmp_path, model=model) for a in argv], capsys)
    assert code == 2 and "pip install 'mdp-trt[torch]'" in text and "Traceback" not in text, text
    assert set(tmp_path.iterdir()) == before


def test_the_mindtpy_solver_without_pyomo_is_refused_before_any_work(tmp_path, capsys, without):
    _, model = G.load(G.conv_bn_relu_chain(), tmp_path)
    without("mindtpy")
    code, text = run(["prune", str(model), "--budget", "0.5", "--solver", "mindtpy", "-o",
                      str(tmp_path / "out")], capsys)
    assert code == 2 and "pip install 'mdp-trt[mindtpy]'" in text
    assert not (tmp_path / "out").exists()


# Every optional top-level package: importing any of them fails in the child process.
_BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: a core install)")
sys.meta_path.insert(0, Blocker())
"""


@pytest.mark.slow
def test_the_onnx_runtime_path_runs_without_any_extra(tmp_path):
    blocked = sorted({m for modules in EXTRAS.values() for m in modules} | {"PIL", "scipy", "mlxtend"})
    _, model = G.load(G.residual_identity(), tmp_path)
    script = _BLOCKER.format(blocked=blocked) + textwrap.dedent(f"""
        from mdp_trt import cli
        real = cli._prune_options
        fast = dict(measure_seconds=0.2, measure_rounds=1, compare_seconds=3.0, confirm_windows=1,
                    progress=False)
        cli._prune_options = lambda **kw: real(**{{**kw, **fast}})
        codes = []
        for argv in (["analyze", {str(model)!r}],
                     ["prune", {str(model)!r}, "--budget", "0.8", "--allow-over", "-o", {str(tmp_path / 'out')!r}],
                     ["bench", {str(model)!r}],
                     ["export", "resnet18", "-o", {str(tmp_path / 'r.onnx')!r}]):
            try:
                cli.main(argv)
            except SystemExit as stop:
                codes.append(stop.code)
        loaded = sorted(m for m in {blocked!r} if m in sys.modules)
        print("CODES", codes, "LOADED", loaded)
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert last == "CODES [0, 0, 0, 2] LOADED []", done.stdout[-2000:] + done.stderr[-3000:]
    assert "pip install 'mdp-trt[torch]'" in done.stdout + done.stderr
    assert (tmp_path / "out" / "pruned.onnx").is_file() and not (tmp_path / "r.onnx").exists()
