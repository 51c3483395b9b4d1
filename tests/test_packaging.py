"""The release artefacts: the sdist and the wheel built from this checkout are ready to publish.

They are built once per module, the way a release is (``python -m build``: the sdist, then the
wheel from the sdist), in an isolated build environment held to constraints.txt through
``PIP_CONSTRAINT`` so that the setuptools doing the build is the pinned one. Then: ``twine check
--strict``, the wheel's metadata and files, the sdist's files, and the wheel installed into a
clean venv (its dependencies from the registry, held to constraints.txt) running
``remotemap demo`` outside the checkout. 20-50 s with a warm pip cache (2 shared cores).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import trove_classifiers
from packaging.metadata import Metadata
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from remotemap._version import __version__

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO / "constraints.txt"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
#: The labels the project page shows; the issue asks for each of them.
URL_LABELS = {"Homepage", "Source", "Documentation", "Issues", "Changelog"}


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path
    #: What ``python -m build`` printed, stdout and stderr together.
    log: str


def clean_env(**extra: str) -> dict[str, str]:
    """This environment minus what could let the checkout or a stray constraint leak in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PIP_CONSTRAINT", "VIRTUAL_ENV")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    out = tmp_path_factory.mktemp("dist")
    env = clean_env(
        PIP_CONSTRAINT=str(CONSTRAINTS),
        # setuptools validates classifiers against a list it downloads from pypi.org unless
        # told not to (the build env has no trove-classifiers): no network during a build;
        # test_classifiers_are_known checks them offline instead.
        VALIDATE_PYPROJECT_NO_NETWORK="1",
    )
    build = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
                           env=env, capture_output=True, text=True, timeout=300)
    log = build.stdout + build.stderr
    assert build.returncode == 0, f"python -m build failed:\n{log}"
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, f"{out} holds {sorted(out.iterdir())}"
    return Dists(sdists[0], wheels[0], log)


def wheel_metadata(wheel: Path) -> Metadata:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"remotemap-{__version__}.dist-info/METADATA").decode()
    # validate=True: every field must be well-formed for its Metadata-Version (2.4 here).
    return Metadata.from_email(text, validate=True)


def test_build_prints_no_deprecation_warning(dists: Dists) -> None:
    """setuptools warns of deprecated configuration (such as ``project.license`` as a table);
    build prints such warnings as ``WARNING <message>`` (a raw one would read ``...Warning:``).
    pip's own ``WARNING: ...`` lines (about its index configuration) are not the build's."""
    warnings = re.findall(r"^(?:[ \t]*WARNING\s.*|.*\w+Warning:.*)$", dists.log, flags=re.MULTILINE)
    assert not warnings, "the build warned:\n" + "\n".join(warnings)
    assert "deprecat" not in dists.log.lower(), dists.log


def test_twine_check_strict_passes(dists: Dists) -> None:
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dists.sdist), str(dists.wheel)],
        capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("PASSED") == 2, check.stdout


def test_wheel_metadata_license_urls_and_description(dists: Dists) -> None:
    metadata = wheel_metadata(dists.wheel)
    assert metadata.version == Version(__version__)
    assert metadata.license_expression == "BSD-3-Clause"
    assert metadata.license_files == ["LICENSE"]
    assert metadata.project_urls is not None
    assert set(metadata.project_urls) >= URL_LABELS, metadata.project_urls
    assert metadata.project_urls == PYPROJECT["urls"]
    assert all(url.startswith("https://") for url in metadata.project_urls.values())
    assert metadata.project_urls["Changelog"].endswith("/CHANGELOG.md")
    assert metadata.description_content_type == "text/markdown"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert metadata.description is not None
    assert metadata.description.strip() == readme.strip()
    assert metadata.author == "The remotemap developers"


def test_classifiers_are_known_and_claim_the_supported_pythons(dists: Dists) -> None:
    classifiers = wheel_metadata(dists.wheel).classifiers or []
    # PyPI refuses an upload with an unknown classifier; twine check does not look.
    unknown = [c for c in classifiers if c not in trove_classifiers.classifiers]
    assert not unknown, f"unknown classifiers: {unknown}"
    # PEP 639: no license classifier next to a License-Expression.
    assert not [c for c in classifiers if c.startswith("License ::")]
    for wanted in ("Intended Audience :: Science/Research", "Operating System :: POSIX :: Linux",
                   "Typing :: Typed"):
        assert wanted in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert any(c.startswith("Topic :: ") for c in classifiers)
    versions = [Version(c.rsplit(" :: ", 1)[1]) for c in classifiers
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    requires = SpecifierSet(wheel_metadata(dists.wheel).requires_python or "")
    assert all(v in requires for v in versions), f"{versions} outside {requires}"
    # The oldest version claimed is the declared lower bound, and the one running this test
    # (CI's) is claimed.
    assert [min(versions)] == [Version(s.version) for s in requires if s.operator == ">="]
    assert Version(f"{sys.version_info.major}.{sys.version_info.minor}") in versions


def test_wheel_holds_the_package_data_and_license_only(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as archive:
        names = set(archive.namelist())
    info = f"remotemap-{__version__}.dist-info/"
    for wanted in ("remotemap/py.typed", "remotemap/config/example.toml",
                   "remotemap/__init__.py", f"{info}licenses/LICENSE", f"{info}entry_points.txt"):
        assert wanted in names, f"{dists.wheel.name} lacks {wanted}"
    # Only the package and its metadata: no tests/, benchmarks/, scripts/ at the top level.
    strays = sorted(n for n in names if not n.startswith(("remotemap/", info)))
    assert not strays, f"{dists.wheel.name} holds {strays}"


def test_sdist_holds_the_sources_of_a_release(dists: Dists) -> None:
    with tarfile.open(dists.sdist) as archive:
        names = set(archive.getnames())
    top = f"remotemap-{__version__}/"
    for wanted in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "PKG-INFO",
                   "remotemap/py.typed", "remotemap/config/example.toml"):
        assert top + wanted in names, f"{dists.sdist.name} lacks {wanted}"
    # MANIFEST.in prunes the tests setuptools would add without their conftest and helpers.
    assert not [n for n in names if n.startswith(top + "tests/")]


def test_wheel_runs_the_demo_in_a_clean_venv(dists: Dists, tmp_path: Path) -> None:
    """The wheel alone, in a venv that sees neither this checkout nor the test venv, installs
    with its declared dependencies and runs ``remotemap demo``."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    # This venv's pip installs into the new one (--python): no pip bootstrap there.
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--disable-pip-version-check", "-c", str(CONSTRAINTS), str(dists.wheel)],
        env=clean_env(), capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=elsewhere, env=clean_env(), capture_output=True,
                              text=True, timeout=120)

    demo = run(str(venv / "bin" / "remotemap"), "demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "squares of 0.." in demo.stdout, demo.stdout
    where = run(str(python), "-c", "import remotemap, sysconfig; "
                "print(remotemap.__file__); print(sysconfig.get_path('purelib'))")
    assert where.returncode == 0, where.stderr
    module, site_packages = map(Path, where.stdout.split())
    assert module.is_relative_to(site_packages), f"remotemap imported from {module}"
    assert site_packages.is_relative_to(venv) and not module.is_relative_to(REPO)
