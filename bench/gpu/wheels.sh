#!/usr/bin/env bash
# Here (no GPU): put into .whl/ the wheels the lent GPU machine lacks to run the service's
# benchmarks (its image has PyTorch, numpy, Pillow, httpx, pytest, typer, rich, ... but no
# FastAPI, SQLAlchemy, Celery, pydantic). Python 3.12 x86-64 wheels, pinned to the versions
# in this checkout's .venv; packages the image already has are left out so that they do not
# shadow its own. Then: bench/gpu/run.sh there, with `.whl` carried (see bench/gpu/README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "wheels: run ./scripts/setup first (pins come from .venv)" >&2; exit 1; }

# already on the GPU image (/work/.library/device/KINDS.md, "Python packages already there")
present="anyio certifi click h11 httpcore httpx idna markupsafe numpy packaging pillow
prometheus-client pygments python-dateutil pyyaml rich shellingham six typer
typing-extensions urllib3 uvloop markdown-it-py mdurl filelock"

rm -rf .whl && mkdir -p .whl
constraints="$(mktemp)"
"$PY" -m pip freeze --exclude-editable | grep -v '^torch' >"$constraints"
"$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any \
    -c "$constraints" -d .whl \
    fastapi uvicorn python-multipart sqlalchemy alembic "psycopg[binary]" celery redis \
    pydantic pydantic-settings sse-starlette httptools
rm -f "$constraints"
for name in $present; do
    pattern="$(echo "$name" | tr '-' '_')"
    rm -f .whl/"$pattern"-[0-9]*.whl
done
ls .whl
du -sh .whl
