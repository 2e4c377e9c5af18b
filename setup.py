"""Build hook: copy the run-time files that live outside the package into the wheel.

The systemd unit (deploy/relay.service) and the radio profiles (firmware_configs/) stay where
people look for them in the source tree, and go into the wheel as package data under
relay/data/ (``relay files list`` shows them). Every other setting is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# source (relative to the project root) -> folder under relay/data/ in the wheel
EXTERNAL = {"deploy/relay.service": "systemd", "firmware_configs": "firmware_configs"}


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        data = Path(self.build_lib) / "relay" / "data"
        for source, folder in EXTERNAL.items():
            src = ROOT / source
            dest = data / folder
            dest.mkdir(parents=True, exist_ok=True)
            files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
            for f in files:
                rel = f.name if src.is_file() else f.relative_to(src)
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)


setup(cmdclass={"build_py": BuildPyWithData})
