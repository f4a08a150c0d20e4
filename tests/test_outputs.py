"""Never lose a user's file: every command that writes, tried as a careless user would.

Each refused or failing run is checked against a snapshot of the whole folder tree around it:
nothing outside the output may change, and nothing of the user's may go.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mdp_trt import cli, outputs
from mdp_trt.cli import main
from mdp_trt.errors import InputError
from mdp_trt.outputs import MANIFEST, check_output_file, check_output_folder, output_folder
from mdp_trt.prune import PruneOptions
from tests import onnx_graphs as G


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return exc.value.code, captured.out + captured.err


def snapshot(folder: Path) -> dict:
    """Every file and folder below ``folder``: content hash, or 'dir' / 'link -> target'. The
    tests' latency caches (c.sqlite*) are left out: the cache is mdp-trt's own store, created
    on first use and meant to outlive every run (measured cells are kept even on Ctrl-C)."""
    state = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + [f for f in files if not f.startswith("c.sqlite")]:
            path = Path(root) / name
            key = str(path.relative_to(folder))
            if path.is_symlink():
                state[key] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                state[key] = "dir"
            else:
                state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.fixture
def user(tmp_path):
    """A user's folder: a model (with an external-data file), notes, a sub-folder of results."""
    folder = tmp_path / "work"
    folder.mkdir()
    G.load(G.residual_identity(), folder, "m.onnx")
    (folder / "m.onnx.data").write_bytes(b"not really weights, but the user's file")
    (folder / "NOTES.md").write_text("my notes")
    (folder / "results").mkdir()
    (folder / "results" / "a.onnx").write_bytes(b"a result")
    return folder


def _prune_argv(model, out, cache, *extra):
    # --allow-over and a loose budget: what is tested is where files go, not whether a 0.02 ms
    # model's timing settles within the tests' short comparisons (exit 5) or its narrowest
    # plan, mostly runtime overhead, measures under a tight budget (exit 3)
    return ["prune", str(model), "--budget", "0.95", "--group-size", "4", "-o", str(out),
            "--cache", str(cache), "--allow-over", *extra]


# -- refused before any work: nothing outside the output changes ---------------------------------

@pytest.mark.parametrize("target, why", [
    (".", "is the current folder"),
    ("..", "a folder holding the current folder"),
    ("{work}", "is the current folder"),
])
def test_prune_never_replaces_the_current_folder_or_its_parents(user, tmp_path, monkeypatch,
                                                                capsys, target, why):
    monkeypatch.chdir(user)
    before = snapshot(tmp_path)
    code, text = run(_prune_argv("m.onnx", target.format(work=user), tmp_path / "c.sqlite",
                                 "--force"), capsys)
    assert code == 2 and why in text and "Traceback" not in text
    assert snapshot(tmp_path) == before


def test_prune_never_writes_over_the_folder_of_its_input(user, tmp_path, capsys):
    before = snapshot(tmp_path)
    code, text = run(_prune_argv(user / "m.onnx", user, tmp_path / "c.sqlite", "--force"), capsys)
    assert code == 2 and "holds the input" in text
    assert snapshot(tmp_path) == before


def test_prune_refuses_a_folder_of_the_users_files_even_with_force(user, tmp_path, capsys):
    before = snapshot(tmp_path)
    code, text = run(_prune_argv(user / "m.onnx", user / "results", tmp_path / "c.sqlite",
                                 "--force"), capsys)
    assert code == 2 and "did not write (a.onnx)" in text
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("relative, why", [("NOTES.md", "is a file"),
                                           ("NOTES.md/out", "is a file, not a folder")])
def test_prune_output_that_is_a_file_or_under_one_is_refused(user, tmp_path, capsys, relative,
                                                             why):
    before = snapshot(tmp_path)
    code, text = run(_prune_argv(user / "m.onnx", user / relative, tmp_path / "c.sqlite"), capsys)
    assert code == 2 and why in text and "Traceback" not in text
    assert snapshot(tmp_path) == before


def test_a_read_only_parent_is_refused_before_any_work(user, tmp_path, monkeypatch, capsys):
    # Tests run as root, whom chmod does not stop: the check is what is under test.
    real = os.access
    monkeypatch.setattr(outputs.os, "access",
                        lambda p, mode: False if Path(p) == user else real(p, mode))
    before = snapshot(tmp_path)
    code, text = run(_prune_argv(user / "m.onnx", user / "out", tmp_path / "c.sqlite"), capsys)
    assert code == 2 and "cannot write in" in text and "read-only" in text
    assert snapshot(tmp_path) == before


def test_finetune_never_writes_over_its_teacher_or_student(user, tmp_path, capsys):
    np.savez(user / "d.npz", x=np.zeros((4, 3, 8, 8), np.float32))
    before = snapshot(tmp_path)
    for target in ("m.onnx",):
        for force in ([], ["--force"]):
            code, text = run(["finetune", str(user / "m.onnx"), "--teacher", str(user / target),
                              "--data", str(user / "d.npz"), "-o", str(user / target), *force],
                             capsys)
            assert code == 2 and "is the input" in text
    code, text = run(["finetune", str(user / "m.onnx"), "--teacher", str(user / "m.onnx"),
                      "--data", str(user / "d.npz"), "-o", str(user / "NOTES.md")], capsys)
    assert code == 2 and "exists; pass --force" in text
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv", [
    ["analyze", "{model}", "--json", "{json}"],
    ["solve", "{problem}", "--json", "{json}"],
    ["bench", "{model}", "--json", "{json}"],
    ["profile", "{model}", "--json", "{json}"],
    ["export", "resnet18", "-o", "{json}"],
])
@pytest.mark.parametrize("where, why", [
    ("NOTES.md/out.json", "is a file, not a folder"),
    ("NOTES.md", "exists; pass --force"),
    ("results", "is a folder"),
])
def test_every_file_output_is_checked_before_any_work(user, tmp_path, capsys, argv, where, why):
    from tests.solve.test_formulate import _instance

    (user / "p.json").write_text(json.dumps(_instance(2.0)))
    names = {"model": user / "m.onnx", "problem": user / "p.json", "json": user / where}
    before = snapshot(tmp_path)
    code, text = run([a.format(**names) for a in argv] + ["--cache", str(tmp_path / "c.sqlite")]
                     * (argv[0] == "profile"), capsys)
    assert code == 2 and why in text and "Traceback" not in text, text
    assert snapshot(tmp_path) == before


def test_json_output_is_never_the_input(user, tmp_path, capsys):
    before = snapshot(tmp_path)
    code, text = run(["analyze", str(user / "m.onnx"), "--json", str(user / "m.onnx"), "--force"],
                     capsys)
    assert code == 2 and "is the input" in text
    assert snapshot(tmp_path) == before


def test_json_output_replaces_an_existing_file_only_with_force(user, capsys):
    target = user / "a.json"
    target.write_text("old")
    assert run(["analyze", str(user / "m.onnx"), "--json", str(target)], capsys)[0] == 2
    assert target.read_text() == "old"
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(user / "m.onnx"), "--json", str(target), "--force"])
    assert exc.value.code in (None, 0)
    assert json.loads(target.read_text())["layers"]


# -- the whole run: manifests, --force, --resume, symlinks, modes ------------------------------

@pytest.mark.slow
def test_force_and_resume_replace_only_mdp_trt_files(user, tmp_path, fast_prune, capsys):
    out, cache = tmp_path / "out", tmp_path / "c.sqlite"
    assert run(_prune_argv(user / "m.onnx", out, cache), capsys)[0] == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert "pruned.onnx" in manifest["files"] and "report.json" in manifest["files"]
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()  # not mkdtemp's 0700
    assert not list(tmp_path.glob(".out*"))  # no staging folder, no lock file left

    code, text = run(_prune_argv(user / "m.onnx", out, cache), capsys)
    assert code == 2 and "pass --force" in text  # an earlier run is replaced only on request

    (out / "NOTES.md").write_text("mine")
    (out / "finetuned").mkdir()
    (out / "finetuned" / "a.onnx").write_bytes(b"mine too")
    code, text = run(_prune_argv(user / "m.onnx", out, cache, "--force"), capsys)
    assert code == 2 and "NOTES.md" in text and "finetuned/a.onnx" in text

    code, _ = run(_prune_argv(user / "m.onnx", out, cache, "--resume"), capsys)
    assert code == 0
    assert (out / "NOTES.md").read_text() == "mine"
    assert (out / "finetuned" / "a.onnx").read_bytes() == b"mine too"
    assert (out / "report.json").is_file()
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert "NOTES.md" not in listed and "finetuned/a.onnx" not in listed
    assert not list(tmp_path.glob(".out*"))


@pytest.mark.slow
def test_a_symlinked_output_folder_is_written_through(user, tmp_path, fast_prune, capsys):
    real = tmp_path / "real"
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    cache = tmp_path / "c.sqlite"
    assert run(_prune_argv(user / "m.onnx", link, cache), capsys)[0] == 0
    assert link.is_symlink() and (link / "pruned.onnx").is_file()
    real.mkdir(exist_ok=True)
    assert run(_prune_argv(user / "m.onnx", link, cache, "--force"), capsys)[0] == 0
    assert link.is_symlink() and (real / "report.json").is_file()


def test_a_failed_run_keeps_the_earlier_output_and_leaves_nothing_beside_it(tmp_path):
    out = tmp_path / "out"
    with output_folder(out, command="test") as work:
        (work / "a.txt").write_text("first")
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError):
        with output_folder(out, command="test", force=True) as work:
            (work / "a.txt").write_text("second")
            raise RuntimeError("the run failed")
    assert snapshot(tmp_path) == before


def test_replacing_an_output_swaps_it_whole(tmp_path):
    out = tmp_path / "deep" / "out"
    with output_folder(out, command="test") as work:
        (work / "a.txt").write_text("first")
        (work / "old-only.txt").write_text("first")
    with output_folder(out, command="test", force=True) as work:
        (work / "a.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "a.txt"]
    assert (out / "a.txt").read_text() == "second"
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_a_failed_run_removes_the_parent_folders_it_created(tmp_path):
    with pytest.raises(RuntimeError):
        with output_folder(tmp_path / "a" / "b" / "out", command="test"):
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_a_second_writer_of_the_same_output_is_refused(user, tmp_path, capsys):
    out = tmp_path / "out"
    with output_folder(out, command="test"):
        before = snapshot(tmp_path)
        code, text = run(_prune_argv(user / "m.onnx", out, tmp_path / "c.sqlite"), capsys)
        assert code == 2 and "another mdp-trt run is writing it" in text
        assert snapshot(tmp_path) == before
    assert (out / MANIFEST).is_file()  # the first writer finished undisturbed


def test_the_exchange_falls_back_to_two_renames(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "_RENAMEAT2", None)
    out = tmp_path / "out"
    for text in ("first", "second"):
        with output_folder(out, command="test", force=True) as work:
            (work / "a.txt").write_text(text)
    assert (out / "a.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_manifest_of_another_format_is_not_trusted(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps({"files": ["x"]}))
    (out / "x").write_text("user's")
    with pytest.raises(InputError, match="did not write"):
        check_output_folder(out, force=True)


def test_check_output_file_writes_through_a_symlink(tmp_path):
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    assert check_output_file(tmp_path / "link.json", flag="--json",
                             force=True) == tmp_path / "real.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- signals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129),
                                          (signal.SIGINT, 130)])
def test_a_signal_mid_profile_removes_the_staging_folder(user, tmp_path, monkeypatch, capsys,
                                                        fast_prune, signum, code):
    import mdp_trt.prune

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("the signal did not interrupt the run")

    monkeypatch.setattr(mdp_trt.prune, "profile_tables", killed)
    before = snapshot(tmp_path)
    status, text = run(_prune_argv(user / "m.onnx", tmp_path / "out", tmp_path / "c.sqlite"),
                       capsys)
    assert status == code and "interrupted" in text
    assert snapshot(tmp_path) == before
    assert signal.getsignal(signum) is not cli._raise_interrupted  # handlers restored


@pytest.mark.slow
def test_sigterm_to_a_real_prune_process_leaves_no_staging(user, tmp_path):
    """As `timeout` or a CI runner sends it: a separate process, killed while it works."""
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "mdp_trt", *_prune_argv(user / "m.onnx", out,
                                                       tmp_path / "c.sqlite")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.staging-*")) and time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prune ended before it could be interrupted: {process.stdout.read()}")
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 143, output
    assert "interrupted (SIGTERM)" in output
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("c.sqlite")) == \
        ["work"]


def test_a_signal_landing_where_python_drops_exceptions_is_raised_again_just_after():
    """An exception raised in an import lock's callback is dropped ("Exception ignored in"):
    a SIGTERM landing there must not be lost (CI saw a prune run on after one)."""
    import types

    saved = {s: signal.getsignal(s) for s in (*cli._SIGNALS, signal.SIGALRM)}
    in_import = types.SimpleNamespace(f_code=types.SimpleNamespace(
        co_filename="<frozen importlib._bootstrap>", co_name="cb"))
    try:
        cli._raise_interrupted(signal.SIGTERM, in_import)  # deferred, not raised here
        with pytest.raises(cli.Interrupted) as caught:
            time.sleep(1.0)  # the alarm raises it in this frame, which propagates it
        assert caught.value.name == "SIGTERM"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in saved.items():
            signal.signal(signum, handler)


# -- messages printed as they are -------------------------------------------------------------

def test_a_path_with_markup_is_printed_literally(tmp_path, capsys):
    weird = tmp_path / "[/bold]x[red]"
    code, text = run(["analyze", str(weird / "m.onnx")], capsys)
    assert code == 2 and "[/bold]x[red]" in text and "Traceback" not in text


def test_install_hints_keep_their_brackets(tmp_path, capsys):
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.skip("onnxruntime-gpu is installed: no install hint to print")
    except ImportError:
        pass
    G.load(G.conv_bn_relu_chain(), tmp_path)
    code, text = run(["bench", str(tmp_path / "model.onnx"), "--backend", "ort-cuda"], capsys)
    assert code == 2 and "mdp-trt[ort-cuda]" in text, text


# -- flags and inputs checked before any measuring ---------------------------------------------

@pytest.fixture
def no_measuring(monkeypatch):
    import mdp_trt.prune

    def fail(*args, **kwargs):
        raise AssertionError("measured before the input was checked")

    monkeypatch.setattr(mdp_trt.prune, "benchmark_model", fail)


@pytest.mark.parametrize("extra, why", [
    (["--budget-ms", "nan"], "--budget-ms nan"),
    (["--budget-ms", "inf"], "--budget-ms inf"),
    (["--budget", "nan"], "--budget nan"),
    (["--solver", "simplex"], "--solver 'simplex'"),
    (["--time-limit", "0"], "--time-limit"),
    (["--time-limit", "nan"], "--time-limit"),
    (["--max-options", "1"], "--max-options 1"),
    (["--threads", "0"], "--threads 0"),
    (["--calib", "missing.npz", "--importance", "taylor"], "--calib missing.npz"),
])
def test_bad_flags_are_refused_before_any_measuring(user, tmp_path, capsys, no_measuring,
                                                    extra, why):
    argv = _prune_argv(user / "m.onnx", tmp_path / "out", tmp_path / "c.sqlite")
    if any(flag.startswith("--budget") for flag in extra):
        argv = argv[:2] + argv[4:]
    before = snapshot(tmp_path)
    code, text = run(argv + extra, capsys)
    assert code == 2 and why in text and "Traceback" not in text, text
    assert snapshot(tmp_path) == before


def test_a_bad_cache_is_refused_before_any_measuring(user, tmp_path, capsys, no_measuring):
    (tmp_path / "c.sqlite").write_text("not a database")
    before = snapshot(tmp_path)
    code, text = run(_prune_argv(user / "m.onnx", tmp_path / "out", tmp_path / "c.sqlite"), capsys)
    assert code == 2 and "not a usable mdp-trt latency cache" in text
    assert snapshot(tmp_path) == before


def test_threads_beyond_the_cores_are_capped_with_a_warning(caplog):
    from mdp_trt.latency.backends.registry import backend_options

    cores = len(os.sched_getaffinity(0))
    with caplog.at_level("WARNING"):
        assert backend_options("ort-cpu", threads=1000)["threads"] == cores
    assert f"using {cores} threads" in caplog.text


def test_bench_on_a_model_that_fails_at_run_time_is_an_input_error(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    # Loads and passes the checker, but the Reshape cannot hold 3x8x8 values in 5x5.
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "shape"], ["out"], name="reshape")], "bad",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [5, 5])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "bad.onnx")
    code, text = run(["bench", str(tmp_path / "bad.onnx")], capsys)
    assert code == 2 and "bad.onnx" in text and "cannot" in text and "Traceback" not in text


# -- bad numbers in models and data, through the CLI --------------------------------------------

def test_a_model_with_nan_weights_is_refused_before_any_measuring(tmp_path, capsys, no_measuring):
    import onnx
    from onnx import numpy_helper

    proto = G.residual_identity()
    weight = next(t for t in proto.graph.initializer if t.name.startswith("stem"))
    array = numpy_helper.to_array(weight).copy()
    array.flat[0] = np.nan
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    onnx.save(proto, tmp_path / "nan.onnx")
    before = snapshot(tmp_path)
    code, text = run(_prune_argv(tmp_path / "nan.onnx", tmp_path / "out", tmp_path / "c.sqlite"),
                     capsys)
    assert code == 2 and "NaN or inf" in text and weight.name in text, text
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("x, y, why", [
    (np.full((8, 3, 8, 8), np.nan, np.float32), np.zeros(8, np.int64), "NaN"),
    (np.zeros((8, 3, 8, 8), np.float32), np.zeros(8, np.float32), "integer class indices"),
])
def test_bad_calibration_data_is_refused_through_the_cli(user, tmp_path, capsys, no_measuring, x,
                                                         y, why):
    np.savez(user / "calib.npz", x=x, y=y)
    before = snapshot(tmp_path)
    code, text = run(_prune_argv(user / "m.onnx", tmp_path / "out", tmp_path / "c.sqlite",
                                 "--importance", "taylor", "--calib", str(user / "calib.npz")),
                     capsys)
    assert code == 2 and why in text and "calib.npz" in text and "Traceback" not in text, text
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--lr", "nan"),
                                         ("--batch-size", "0")])
def test_bad_finetune_flags_are_refused_before_the_data_is_read(user, tmp_path, capsys, flag,
                                                                value):
    before = snapshot(tmp_path)
    code, text = run(["finetune", str(user / "m.onnx"), "--teacher", str(user / "m.onnx"),
                      "--data", str(user / "missing.npz"), "-o", str(user / "t.onnx"), flag,
                      value], capsys)
    assert code == 2 and flag in text and "missing.npz" not in text, text
    assert snapshot(tmp_path) == before
