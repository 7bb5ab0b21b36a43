"""Real servers for the distributed tests: a throwaway PostgreSQL 15 cluster and an MLflow
tracking server backed by it, both on 127.0.0.1, started by scripts/servers.sh and stopped
after the session. Without PostgreSQL installed the server tests are skipped, unless
TAGIFAI_REQUIRE_SERVERS=1 (set by .ci/run), where that is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import SERVERS, free_port, subprocess_env


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, Any]]:
    """Start PostgreSQL and an MLflow server; yield their URLs and environment."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        if os.environ.get("TAGIFAI_REQUIRE_SERVERS") == "1":
            pytest.fail("PostgreSQL is not installed (.ci/run installs postgresql-15)")
        pytest.skip("PostgreSQL is not installed")
    root = Path(tempfile.mkdtemp(prefix="tagifai-servers-", dir="/tmp"))
    env = subprocess_env(
        TAGIFAI_SERVERS_DIR=str(root), PG_PORT=str(free_port()), MLFLOW_PORT=str(free_port())
    )

    def run(action: str) -> str:
        done = subprocess.run(
            ["bash", str(SERVERS), action], env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, f"{action}: {done.stderr[-2000:]}"
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""

    # PostgreSQL asks for the password servers.sh generates; clients read it from here.
    previous = os.environ.get("PGPASSFILE")
    os.environ["PGPASSFILE"] = str(root / "pgpass")
    try:
        pg_url = run("pg-start")
        mlflow_url = run("mlflow-start")
        yield {"pg": pg_url, "mlflow": mlflow_url, "root": str(root), "run": run}
    finally:
        if previous is None:
            os.environ.pop("PGPASSFILE", None)
        else:
            os.environ["PGPASSFILE"] = previous
        subprocess.run(["bash", str(SERVERS), "mlflow-stop"], env=env, timeout=60)
        subprocess.run(["bash", str(SERVERS), "pg-stop"], env=env, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
