"""Per-subject treatments: the fMRI example against the one-piece computation on serial, local
and ssh; bad subjects failing alone; resume; the dispatch script through a real subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

nibabel = pytest.importorskip("nibabel", reason="the fMRI example needs nibabel (test extra)")

from remotemap.examples.fmri import TemporalStats, temporal_stats  # noqa: E402
from remotemap.workflow import Workflow  # noqa: E402
from remotemap.workflow.treatment import Treatment, add_treatment, dispatch  # noqa: E402
from tests.backends import RUNNERS, Runner, ssh_loopback_runner  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

DATA = Path(nibabel.__file__).parent / "tests" / "data"
EXAMPLES = ("example4d.nii.gz", "functional.nii")  # real fMRI runs shipped in nibabel's wheel
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "dispatch_subjects.py"


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory,
               monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("xdg-state")
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


def subjects_in(folder: Path) -> list[str]:
    """Copies of nibabel's example runs, readable by the ssh test user too."""
    paths = []
    for name in EXAMPLES:
        target = folder / f"sub-{name}"
        shutil.copyfile(DATA / name, target)
        target.chmod(0o644)
        paths.append(str(target))
    return paths


# -- the fMRI example ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["serial", "local", "ssh", "cluster"])
def test_example_equals_the_one_piece_computation(mode: str, request: pytest.FixtureRequest,
                                                  shared_dir: Path, tmp_path: Path) -> None:
    # ssh: the loopback host, whose user's venv has numpy and nibabel (REMOTE_EXTRAS).
    runner: Runner = ssh_loopback_runner(request) if mode == "ssh" else RUNNERS[mode](request)
    subjects = subjects_in(shared_dir)
    # serial: the parts travel as values; the others: as files in a scratch directory.
    scratch = None if mode == "serial" else shared_dir / "scratch"
    treatment = TemporalStats(n_parts=3, output_dir=tmp_path / "out", scratch=scratch)
    report = dispatch(treatment, subjects, runner.mode, **runner.options)
    assert report.ok, report.workflow
    for subject in subjects:
        outcome = report.subjects[treatment.label(subject)]
        assert outcome.value == str(tmp_path / "out" / f"{treatment.label(subject)}_tstats.nii")
        image = nibabel.load(outcome.value)
        got = np.asanyarray(image.dataobj)
        original = nibabel.load(subject)
        assert got.shape == (*original.shape[:3], 2)
        assert np.array_equal(got, temporal_stats(subject))
        assert np.array_equal(got[..., 0], np.asanyarray(original.dataobj).mean(axis=-1))
        assert np.allclose(image.affine, original.affine)
        treatment.verify(subject, outcome.value)
    if scratch is not None:  # the slabs were there, and clean removed them
        assert scratch.is_dir() and list(scratch.iterdir()) == []


def test_bad_subjects_fail_alone_naming_their_file(shared_dir: Path, tmp_path: Path) -> None:
    good = subjects_in(shared_dir)
    missing = str(shared_dir / "sub-missing.nii.gz")
    corrupt = shared_dir / "sub-corrupt.nii.gz"
    corrupt.write_bytes((DATA / "example4d.nii.gz").read_bytes()[:4000])  # cut short
    flat = shared_dir / "sub-3d.nii"
    nibabel.save(nibabel.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), flat)
    treatment = TemporalStats(n_parts=2, output_dir=tmp_path / "out",
                              scratch=shared_dir / "scratch")
    report = dispatch(treatment, [*good, missing, str(corrupt), str(flat)], "local")
    assert [o.ok for o in report.subjects.values()] == [True, True, False, False, False]
    errors = {label: o.error for label, o in report.subjects.items() if not o.ok}
    assert errors["sub-missing"] == f"split: FileNotFoundError: subject file {missing} does " \
                                    "not exist"
    assert errors["sub-corrupt"].startswith(f"split: ValueError: subject file {corrupt} is "
                                            "not a readable NIfTI image")
    assert errors["sub-3d"] == f"split: ValueError: subject file {flat} has 3 dimensions; a " \
                               "4-D (x, y, z, time) image is needed"
    for label in errors:  # every step after the split did not run; clean ran all the same
        states = [step.state for step in report.subjects[label].steps]
        assert states == ["failed", "not run", "not run", "not run", "not run", "done"]
    assert sorted(os.listdir(tmp_path / "out")) == ["sub-example4d_tstats.nii",
                                                    "sub-functional_tstats.nii"]
    assert list((shared_dir / "scratch").iterdir()) == []
    assert "3 failed" in str(report)


# -- the treatment machinery, with a numpy-free treatment ---------------------------------------


class Squares(Treatment[str, int, int, int]):
    """Subject "name:n" has parts n*10 + 0..2; the result is the sum of their squares."""

    n_parts = 3

    def __init__(self, log: str, fail: str = "") -> None:
        self.log = log
        self.fail = fail  # a file: while it exists, part 1 of subject "bad" fails

    def _note(self, text: str) -> None:
        with open(self.log, "a") as f:
            f.write(text + "\n")

    def label(self, subject: str) -> str:
        return subject.partition(":")[0]

    def count_parts(self, subject: str) -> int:
        if subject.startswith("unplannable"):
            raise LookupError(f"no plan for {subject}")
        return self.n_parts

    def split(self, subject: str) -> Sequence[int]:
        self._note(f"split {self.label(subject)}")
        n = int(subject.partition(":")[2])
        if n == 0:
            return []  # not the 3 parts promised
        return [n * 10 + i for i in range(self.n_parts)]

    def process(self, part: int) -> int:
        self._note(f"process {part}")
        if part == 21 and self.fail and os.path.exists(self.fail):
            raise RuntimeError(f"part {part} failed")
        return part * part

    def merge(self, subject: str, results: list[int]) -> int:
        self._note(f"merge {self.label(subject)}")
        return sum(results)

    def clean(self, subject: str) -> None:
        self._note(f"clean {self.label(subject)}")


def test_steps_of_a_subject_chain(tmp_path: Path) -> None:
    wf = Workflow()
    chain = add_treatment(wf, Squares(str(tmp_path / "log")), "a:1")
    assert chain.all == (1, 2, 3, 4, 5, 6, 7)
    assert [wf.step(s).name for s in chain.all] == [
        "a/split", "a/process[0]", "a/process[1]", "a/process[2]", "a/merge", "a/fetch",
        "a/clean"]
    assert wf.step(chain.split).prerequisites == ()  # each subject starts on its own
    assert all(wf.step(p).prerequisites == (chain.split,) for p in chain.parts)
    assert wf.step(chain.merge).prerequisites == chain.parts
    assert wf.step(chain.fetch).on_client and wf.step(chain.clean).always


def test_a_failing_part_fails_its_subject_only_and_resume_redoes_it(tmp_path: Path) -> None:
    log, flag = tmp_path / "log", tmp_path / "fail"
    flag.touch()
    treatment = Squares(str(log), fail=str(flag))
    subjects = ["good:1", "bad:2", "empty:0", "unplannable:3"]
    first = dispatch(treatment, subjects, "local", run_dir=tmp_path / "run")
    assert first.subjects["good"].ok and first.subjects["good"].value == 100 + 121 + 144
    assert first.subjects["bad"].error == "process[1]: RuntimeError: part 21 failed"
    assert first.subjects["empty"].error == "split: ValueError: Squares.split returned 0 " \
                                            "parts for 'empty'; count_parts said 3"
    assert first.subjects["unplannable"].error == "count_parts: LookupError: no plan for " \
                                                  "unplannable:3"
    assert [s.state for s in first.subjects["bad"].steps] == [
        "done", "done", "failed", "done", "not run", "not run", "done"]
    flag.unlink()
    second = dispatch(treatment, subjects, "local", run_dir=tmp_path / "run")
    assert second.subjects["bad"].ok and second.subjects["bad"].value == 400 + 441 + 484
    assert Counter(log.read_text().splitlines()) == {
        "split good": 1, "process 10": 1, "process 11": 1, "process 12": 1, "merge good": 1,
        "clean good": 1,
        # only the failed part, the merge after it and the clean ran again
        "split bad": 1, "process 20": 1, "process 21": 2, "process 22": 1, "merge bad": 1,
        "clean bad": 2,
        "split empty": 2, "clean empty": 2}


def test_subject_labels_must_be_unique(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two subjects are labelled 'a'"):
        dispatch(Squares(str(tmp_path / "log")), ["a:1", "a:2"], "serial")
    report = dispatch(Squares(str(tmp_path / "log")), {"x": "a:1", "y": "a:2"}, "serial")
    assert report.ok and list(report.subjects) == ["x", "y"]


# -- the script ---------------------------------------------------------------------------------


def test_dispatch_script_reports_every_subject(tmp_path: Path, state_home: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    subjects_in(data)
    (data / "sub-gone.nii.gz").symlink_to(tmp_path / "deleted.nii.gz")
    (data / "sub-junk.nii").write_bytes(b"not an image")
    env = {**os.environ, "XDG_STATE_HOME": str(state_home)}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(data), "--mode", "local", "--parts", "3",
         "--output", str(tmp_path / "out"), "--verify", "--option", "n_jobs=2"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"dispatching 4 subjects from {data} (TemporalStats, 3 parts each) on local"
    out, w = tmp_path / "out", len("sub-functional")  # labels are padded to the longest
    assert lines[1:4] == [
        f"{'sub-example4d':<{w}}  ok      {out / 'sub-example4d_tstats.nii'}  (verified)",
        f"{'sub-functional':<{w}}  ok      {out / 'sub-functional_tstats.nii'}  (verified)",
        # subjects are Staged: a missing one fails before split runs, naming its path
        f"{'sub-gone':<{w}}  FAILED  split: FileNotFoundError: staged input "
        f"{data / 'sub-gone.nii.gz'} does not exist"]
    assert lines[4].startswith(f"{'sub-junk':<{w}}  FAILED  split: ValueError: subject file "
                               f"{data / 'sub-junk.nii'} is not a readable NIfTI image: ")
    assert lines[5:] == ["2 of 4 subjects ok, 2 failed"]
    assert sorted(os.listdir(out)) == ["sub-example4d_tstats.nii", "sub-functional_tstats.nii"]

    usage = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nowhere")],
                           capture_output=True, text=True, env=env, timeout=60, check=False)
    assert usage.returncode == 2
    assert "is not a directory" in usage.stderr
