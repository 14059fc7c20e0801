#!/usr/bin/env bash
# Creates .venv and installs olmo-tango into it. Safe to re-run: it does nothing when the
# environment already matches pyproject.toml and this script.
# Torch comes first so that nothing pulls the multi-GB CUDA build onto a machine without a GPU:
# torch==2.13.0 resolves to the local CPU wheel there. Set TORCH_SPEC to choose another build.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
stamp=.venv/.olmo-tango-setup
want=$(cat pyproject.toml setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# A pip whose resolver finds boto3's match for aiobotocore's botocore pin in seconds (pip 23, which Python 3.11's
# venv brings, backtracks through boto3's releases for minutes).
pip install "pip>=26"
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    pip install "${TORCH_SPEC:-torch==2.13.0}"
fi

# Three released wheels whose metadata caps or requires what their code does not need (README "Dependencies
# and pins"). Each is installed as released, code untouched, with only those requirements in its metadata
# changed and its version relabelled <version>+olmotango, so that pip list, `pip check` and every artifact's
# manifest say what is installed. `relabel NAME==VERSION REQUIREMENT=NEW ...`: NEW replaces the (one, unconditional)
# requirement of that name; an empty NEW drops it.
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
relabel() {
    .venv/bin/python - "$wheels" "$@" <<'PY'
import base64, hashlib, re, subprocess, sys, tempfile, zipfile
from pathlib import Path

out, spec, *edits = sys.argv[1:]
name, version = spec.split("==")
label = f"{version}+olmotango"
with tempfile.TemporaryDirectory() as download:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "-d", download, spec], check=True)
    (wheel,) = Path(download).glob("*.whl")
    source = zipfile.ZipFile(wheel)
    names = source.namelist()
    (metadata,) = [n for n in names if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
    old_info = metadata.split("/")[0]
    new_info = old_info.replace(f"-{version}.dist-info", f"-{label}.dist-info")
    lines = source.read(metadata).decode().split("\n")
    header_end = lines.index("")  # the description follows the headers
    canonical = lambda project: re.sub(r"[-_.]+", "-", project).lower()
    unconditional = {i: canonical(re.match(r"Requires-Dist:\s*([A-Za-z0-9._-]+)", line)[1])
                     for i, line in enumerate(lines[:header_end]) if line.startswith("Requires-Dist:") and ";" not in line}
    for edit in edits:
        requirement, new = edit.split("=", 1)
        found = [i for i, project in unconditional.items() if project == canonical(requirement)]
        if len(found) != 1:
            sys.exit(f"setup.sh: {spec}: expected one requirement {requirement!r} in its metadata, found {len(found)}")
        print(f"setup.sh: {name} {label}: {lines[found[0]][len('Requires-Dist: '):]} -> {new or '(dropped)'}")
        lines[found[0]] = f"Requires-Dist: {new}" if new else None
    lines = [f"Version: {label}" if line is not None and line.startswith("Version:") else line for line in lines]
    text = "\n".join(line for line in lines if line is not None).encode()
    target = Path(out) / wheel.name.replace(f"-{version}-", f"-{label}-")
    record = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as wheel_out:
        for entry in names:
            if entry == f"{old_info}/RECORD":
                continue
            data = text if entry == metadata else source.read(entry)
            entry = entry.replace(f"{old_info}/", f"{new_info}/", 1)
            wheel_out.writestr(entry, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{entry},sha256={digest},{len(data)}")
        wheel_out.writestr(f"{new_info}/RECORD", "\n".join(record + [f"{new_info}/RECORD,,"]) + "\n")
PY
}
# Tango: click < 8.1.4 was a cap for a type checker (2023); Tango's CLI runs on today's click (tests/integrations).
relabel ai2-tango==1.3.2 "click=click>=8.0"
# Tango's cached-path: huggingface-hub < 2 would hold transformers back; Tango and ai2-olmo use its local-file
# and scheme-registry parts, which do not touch huggingface-hub.
relabel cached-path==1.8.10 "huggingface-hub=huggingface-hub>=0.8.1"
# ai2-olmo: the olmo_data package (OLMo's tokenizers, the validation sets of the core tasks) and, for
# tests/evaluation/test_eval_reference.py, its downstream evaluator. ai2-olmo-core is imported only by its
# olmo-core checkpointer, and numpy < 2 is not needed by those parts (they run on numpy 2).
relabel ai2-olmo==0.6.0 "ai2-olmo-core=" "numpy=numpy"
# One resolution for this package, its test extra and the three wheels, so what their metadata requires is installed.
pip install -e ".[test]" "$wheels"/*.whl
echo "$want" > "$stamp"
