"""The environment setup.sh makes: every installed distribution's requirements hold (``pip check``).

setup.sh installs ai2-tango, its cached-path and ai2-olmo from their released wheels with the requirements their
code does not need removed from their metadata and their versions relabelled ``+olmotango`` (README "Dependencies
and pins"), so a clean ``pip check`` also says the uncapped click, huggingface-hub and numpy are what those
relabelled requirements allow."""
import importlib.metadata
import subprocess
import sys


def test_pip_check_finds_no_broken_requirement():
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tango_cached_path_and_ai2_olmo_are_the_relabelled_wheels():
    for name, version in (("ai2-tango", "1.3.2"), ("cached-path", "1.8.10"), ("ai2-olmo", "0.6.0")):
        assert importlib.metadata.version(name) == f"{version}+olmotango"
    requirements = importlib.metadata.requires("ai2-tango")
    assert "click>=8.0" in requirements and not any(r.replace(" ", "").startswith("click<") for r in requirements)
