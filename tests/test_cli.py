"""The command line: help texts, and bad input as one clear line with a non-zero exit."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from csf_responder.config import SimulationConfig, load_config
from csf_responder.io import write_cohort
from csf_responder.simulate import simulate_trial
from pipelines.cli import app

runner = CliRunner()


@pytest.fixture
def cohort_dir(tmp_path, configs_dir):
    config = load_config(configs_dir / "simulate.yaml", SimulationConfig,
                         overrides=["n_msc=6", "n_control=4"])[0]
    trial = simulate_trial(config)
    return write_cohort(tmp_path / "cohort", patients=trial.patients, visits=trial.alsfrs,
                        csf=trial.csf, visits_file="alsfrs.csv")


def _fails_with(args: list[str], *fragments: str) -> str:
    result = runner.invoke(app, args)
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output
    assert "error:" in output, output
    # the error is the last thing said; rich may wrap a long line
    message = " ".join(output[output.index("error:"):].split())
    for fragment in fragments:
        assert fragment in message, output
    return message


def test_help_lists_commands_and_explains_options():
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    assert "simulate" in top.output and "train" in top.output
    train = " ".join(runner.invoke(app, ["train", "--help"]).output.split())
    for option in ("--cohort", "--config", "--set", "Override one config value"):
        assert option in train
    simulate = " ".join(runner.invoke(app, ["simulate", "--help"]).output.split())
    for option in ("--out", "--truth", "--seed", "--n-msc", "--n-control"):
        assert option in simulate


def test_missing_cohort_directory(tmp_path, configs_dir):
    missing = tmp_path / "nowhere"
    _fails_with(["train", "--cohort", str(missing), "--config", str(configs_dir / "train.yaml")],
                str(missing), "cohort directory not found")


def test_missing_cohort_file(cohort_dir, configs_dir):
    (cohort_dir / "alsfrs.csv").unlink()
    _fails_with(["train", "--cohort", str(cohort_dir), "--config",
                 str(configs_dir / "train.yaml")], "alsfrs.csv", "file not found")


def test_missing_required_column(cohort_dir, configs_dir):
    path = cohort_dir / "patients.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, name in enumerate(header) if name != "onset_site"]
    path.write_text("\n".join(",".join(line.split(",")[i] for i in keep) for line in lines))
    _fails_with(["train", "--cohort", str(cohort_dir), "--config",
                 str(configs_dir / "train.yaml")], "patients.csv", "column 'onset_site'",
                "required column is missing")


def test_unknown_arm_value_is_rejected_with_file_line_and_column(cohort_dir, configs_dir,
                                                                 tmp_path):
    path = cohort_dir / "patients.csv"
    lines = path.read_text().splitlines()
    subject = lines[3].split(",")[0]
    lines[3] = lines[3].replace(",MSC,", ",placebo,").replace(",control,", ",placebo,")
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "checked"
    result = runner.invoke(app, ["validate", "--cohort", str(cohort_dir), "--out", str(out),
                                 "--config", str(configs_dir / "train.yaml")])
    assert result.exit_code == 0, result.output
    rejects = pd.read_csv(out / "rejects.csv")
    arm = rejects[rejects["rule"] == "arm_unknown"]
    assert arm[["line", "subject_id", "column", "value", "action"]].values.tolist() == [
        [4, subject, "arm", "placebo", "patient dropped"]]
    # the patient's visits follow it out, each with its reason
    visits = rejects[(rejects["subject_id"] == subject) & (rejects["rule"] == "subject_rejected")]
    assert len(visits) == (pd.read_csv(cohort_dir / "alsfrs.csv")["subject_id"] == subject).sum() \
        + (pd.read_csv(cohort_dir / "csf.csv")["subject_id"] == subject).sum()
    accounting = pd.read_csv(out / "accounting.csv")
    assert (accounting["rows_read"] == accounting["rows_used"] + accounting["rows_rejected"]).all()


def test_too_few_labelled_patients_stop_training(cohort_dir, configs_dir):
    _fails_with(["train", "--cohort", str(cohort_dir), "--config",
                 str(configs_dir / "train.yaml")], "labelled MSC patient", "ingest.min_labelled")


def test_unreadable_config(tmp_path, cohort_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nmodels: [unclosed\n")
    _fails_with(["train", "--cohort", str(cohort_dir), "--config", str(bad)], str(bad), "line")


def test_missing_config_file(tmp_path, cohort_dir):
    _fails_with(["train", "--cohort", str(cohort_dir), "--config", str(tmp_path / "no.yaml")],
                "no.yaml", "config file not found")


def test_mistyped_config_key_is_named(tmp_path, cohort_dir, configs_dir):
    copy = tmp_path / "train.yaml"
    shutil.copy(configs_dir / "train.yaml", copy)
    for included in ("panels", "indications", "models"):
        shutil.copytree(configs_dir / included, tmp_path / included)
    copy.write_text(copy.read_text().replace("n_repeats:", "n_repeat:"))
    _fails_with(["train", "--cohort", str(cohort_dir), "--config", str(copy)],
                "unknown key 'validation.n_repeat'", "missing key 'validation.n_repeats'")


def test_unknown_set_key_is_named(cohort_dir, configs_dir):
    _fails_with(["train", "--cohort", str(cohort_dir), "--config",
                 str(configs_dir / "train.yaml"), "--set", "validation.folds=3"],
                "unknown key 'validation.folds'")


def test_simulate_writes_cohort_and_truth_apart(tmp_path, configs_dir):
    out, truth = tmp_path / "cohort", tmp_path / "truth" / "t.csv"
    result = runner.invoke(app, ["simulate", "--out", str(out), "--truth", str(truth),
                                 "--seed", "5", "--n-msc", "5", "--n-control", "3",
                                 "--config", str(configs_dir / "simulate.yaml")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["alsfrs.csv", "csf.csv", "patients.csv"]
    assert truth.read_text().splitlines()[0] == ("subject_id,p_responder,true_benefit_slope,"
                                                 "true_benefit_change")
    assert len(truth.read_text().splitlines()) == 1 + 8


# ------------------------------------------------------------------------ leaving
_LEAVE = """
import atexit, sys, threading, time
from pipelines.cli import leave

class TornDown:
    def __del__(self):
        print("torn down", flush=True)

kept = TornDown()  # freed only by the interpreter's teardown
atexit.register(print, "exit handler ran")
if sys.argv[2] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread ended"))).start()
print("buffered", end="")
code = sys.argv[1]
code = int(code) if code.isdigit() else code
leave(code) if sys.argv[3] == "leave" else sys.exit(code)
"""


def _leaving(code: str, thread: str = "no", how: str = "leave"):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _LEAVE, code, thread, how],
                          capture_output=True, text=True, timeout=60)


def test_leaving_skips_the_teardown_but_not_the_exit_handlers_or_the_output():
    ordinary = _leaving("3", how="exit")
    assert ordinary.returncode == 3 and "torn down" in ordinary.stdout  # what is skipped
    done = _leaving("3")
    assert done.returncode == 3
    assert done.stdout.startswith("buffered") and "exit handler ran" in done.stdout
    assert "torn down" not in done.stdout


def test_leaving_with_output_that_cannot_be_written_is_a_failure_as_python_makes_it():
    import subprocess
    import sys

    script = ("import sys; from pipelines.cli import leave; sys.stdout.write('summary'); "
              "leave(0)")
    for how in ("leave", "exit"):
        code = script if how == "leave" else script.replace("leave(0)", "sys.exit(0)")
        reader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                  env={**os.environ, "PYTHONUNBUFFERED": ""})
        reader.stdout.close()  # nobody reads: the summary cannot be written
        assert reader.wait(timeout=60) == 120, how


def test_leaving_waits_for_a_running_thread_and_says_a_message_as_sys_exit_does():
    waited = _leaving("0", thread="thread")
    assert waited.returncode == 0 and "thread ended" in waited.stdout
    said = _leaving("no model found")
    assert said.returncode == 1 and said.stderr.strip() == "no model found"


# ------------------------------------------------------------------ garbage collector
_IMPORT_STACK = """
import gc, sys
if sys.argv[1] == "cli":
    from pipelines.cli import collect_less
    collect_less()
import pandas, scipy.stats, sklearn.pipeline
print(gc.get_stats()[2]["collections"])
"""


def test_importing_the_stack_runs_no_full_collection_with_the_cli_thresholds():
    import subprocess
    import sys

    full = {how: int(subprocess.run([sys.executable, "-c", _IMPORT_STACK, how], check=True,
                                    capture_output=True, text=True, timeout=120).stdout)
            for how in ("python", "cli")}
    assert full["python"] > 0  # what the thresholds spare: full collections while importing
    assert full["cli"] == 0


def test_every_command_runs_with_the_cli_thresholds():
    import subprocess
    import sys

    from pipelines.cli import GC_THRESHOLDS

    script = ("import gc; from pipelines import cli; "
              "cli.app = lambda prog_name: print(*gc.get_threshold()); cli.main()")
    shown = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                           text=True, timeout=60).stdout.split()
    assert tuple(map(int, shown)) == GC_THRESHOLDS != (700, 10, 10)
