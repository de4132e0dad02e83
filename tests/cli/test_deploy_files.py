"""The deployment files say what the README promises: checked by reading them (docker itself
is not available here; .ci/run also runs `docker compose config -q` where it is)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from app.core.settings_doc import README_BEGIN, README_END, settings_table

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_health_and_ordering() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "api", "worker"}
    for name in ("postgres", "redis", "api"):
        assert services[name]["healthcheck"]["test"], name
    assert "/healthz" in str(services["api"]["healthcheck"]["test"])
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["api"]["condition"] == "service_healthy"
    for name, service in services.items():
        assert service["restart"] in ("unless-stopped", "always"), name


def test_compose_commands_gpu_volumes_and_secrets() -> None:
    doc = compose()
    services = doc["services"]
    assert services["api"]["command"][:2] == ["sngan", "serve"]
    assert services["worker"]["command"][:2] == ["sngan", "worker"]

    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "CUDA_VISIBLE_DEVICES" in services["worker"]["environment"]

    # One named data volume, mounted at the same path in the API and the worker.
    mounts = {name: set(services[name]["volumes"]) for name in ("api", "worker")}
    assert mounts["api"] == mounts["worker"]
    (mount,) = mounts["api"]
    volume, path = mount.split(":")[:2]
    assert volume in doc["volumes"]
    assert services["api"]["environment"]["SNGAN_DATA_DIR"] == path
    assert services["postgres"]["volumes"][0].split(":")[0] in doc["volumes"]

    # Secrets come from .env; the committed example names every ${VAR} the file needs.
    for name in ("postgres", "api", "worker"):
        assert services[name]["env_file"] == ".env", name
    example = (ROOT / ".env.example").read_text()
    required = re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text())
    assert required
    for var in required:
        assert re.search(rf"^{var}=", example, re.M), var
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_dockerfile_base_and_torch_choice() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert re.search(r"^ARG TORCH_VARIANT=", dockerfile, re.M)
    assert "torch==${TORCH_VERSION}" in dockerfile


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "./scripts/run serve" in first_block
    assert "./scripts/run test" in first_block
    assert readme.index("./scripts/run serve") < readme.index("\n## ")


def test_readme_settings_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    current = readme.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    assert current == settings_table(), "run: sngan config --readme README.md"
