"""Packaging for vuegraf; the version lives once, in src/vuegraf/__init__.py."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "src/vuegraf/__init__.py").read_text(), re.M
).group(1)

setup(
    name="vuegraf",
    version=VERSION,
    description="Emporia Vue energy usage into InfluxDB 1.x/2.x, SQLite and MQTT",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={
        "vuegraf": ["py.typed"],
        "vuegraf.simulator": ["*.json"],
        "vuegraf.web": ["static/*"],
    },
    install_requires=[
        "pyemvue>=0.18.9,<0.19",  # emporia.SUPPORTED_PYEMVUE: vuegraf adopts its Auth
        "influxdb-client>=1.40",
        "influxdb>=5.3",
        "requests>=2.25",  # the read back (sinks/readback.py); influxdb brings it too
        "paho-mqtt>=2.0",
        "python-dateutil>=2.8",
        "prometheus_client>=0.17",  # the reference exposition format writer and parser
    ],
    extras_require={
        "test": [
            "pytest>=7",
            # Two workers: most tests wait on servers and child processes, so the suite takes
            # about half the time on two cores (and runs beside other work, as it must).
            "pytest-xdist>=3",
            "ruff",
            # mypy is pinned to a minor release: a newer one may add checks, and lint must not
            # turn red on its own. The stubs are for the two untyped libraries vuegraf imports.
            "mypy~=2.4.1",
            "types-requests",
            "types-python-dateutil",
            # The graphs page's tests drive Debian's chromium through its chromedriver
            # (/usr/bin/chromedriver, from apt): Selenium only speaks WebDriver to it and never
            # downloads a browser. Pinned to a minor release like mypy.
            "selenium~=4.51.0",
        ]
    },
    entry_points={
        "console_scripts": [
            "vuegraf=vuegraf.cli:main",
            "vuegraf-simulator=vuegraf.simulator.__main__:main",
            "vuegraf-health=vuegraf.health:main",
            "vuegraf-graph=vuegraf.graphs.cli:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
    ],
)
