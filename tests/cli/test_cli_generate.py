"""`sngan samples --walk` and `sngan export` against a real API process: the files they write
are the bytes the routes answer with, and the format follows the output file's suffix."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.app.test_interpolations import _job
from tests.cli.cli_helpers import run_sngan, sngan_env
from tests.stacks import new_stack

pytestmark = pytest.mark.slow


def test_walk_and_export_commands(tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("cli-generate")
    with new_stack("embedded", workdir) as stack:
        key = stack.new_key("cli-owner")
        job_id = _job(stack, "cli-owner", conditional=True)
        url = stack.start_api("api")
        env = sngan_env(workdir / "unused")  # the client needs no data directory of its own
        auth = {"Authorization": f"Bearer {key}"}

        def get(route: str, **params: str | int | float) -> bytes:
            response = httpx.get(
                f"{url}/v1/jobs/{job_id}/{route}", params=params, headers=auth, timeout=300
            )
            assert response.status_code == 200, response.text
            return response.content

        walk = run_sngan(
            "samples", job_id, "--walk", "3,17,42", "--frames", "4", "--loop",
            "--truncation", "0.8", "-o", str(workdir / "walk.webp"), "--url", url, "--key", key,
            env=env, cwd=workdir,
        )  # fmt: skip
        assert walk.returncode == 0, walk.stderr
        assert "12 frames" in walk.stderr
        expected = get(
            "interpolations", seeds="3,17,42", frames=4, loop="true", truncation=0.8,
            format="webp",
        )  # fmt: skip
        assert (workdir / "walk.webp").read_bytes() == expected

        sheet = run_sngan(
            "samples", job_id, "--labels", "all", "-n", "2", "-o", str(workdir / "sheet.png"),
            "--url", url, "--key", key, env=env, cwd=workdir,
        )  # fmt: skip
        assert sheet.returncode == 0, sheet.stderr
        assert (workdir / "sheet.png").read_bytes() == get("samples", labels="all", n=2)

        export = run_sngan(
            "export", job_id, "-o", str(workdir / "g.pt2"), "--url", url, "--key", key,
            env=env, cwd=workdir, timeout=300,
        )  # fmt: skip
        assert export.returncode == 0, export.stderr
        assert "inputs z,y" in export.stderr and "z_dim 16" in export.stderr
        assert Path(export.stdout.strip().splitlines()[-1]) == workdir / "g.pt2"
        assert (workdir / "g.pt2").read_bytes() == get("export", format="pt2")

        bad = run_sngan(
            "samples", job_id, "--walk", "3", "--url", url, "--key", key, env=env, cwd=workdir
        )
        assert bad.returncode != 0 and "seeds" in bad.stderr
