"""Real-time inference over HTTP: concurrent requests to an `image.embedding` share batched SQL statements."""
from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.serve.conftest import TOKEN, clothing_test_files
from tests.serve.live import LiveServer
from tests.support.httpserver import TestHTTPServer

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def photos(clothing: Path) -> list[tuple[str, Path]]:
    return clothing_test_files(["dress", "hat", "pants", "shoes"], per_class=6)


@pytest.fixture(scope="module")
def www(clothing: Path):
    with TestHTTPServer(clothing) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, clothing: Path):
    db_path = tmp_path_factory.mktemp("db") / "serve.vdb"
    with LiveServer(db_path, token=TOKEN, allow_fetch=["127.0.0.1"], max_wait_ms=30) as srv:
        resp = requests.put(f"{srv.url}/v1/functions/emb", headers=AUTH, timeout=120,
                            json={"type": "image.embedding", "params": {"model": "efficientnet_lite0"}})
        assert resp.status_code == 201, resp.text
        yield srv


def test_concurrent_uploads_are_micro_batched(server: LiveServer, photos: list[tuple[str, Path]]) -> None:
    emb = server.db.functions.instance("emb")
    blobs = [p.read_bytes() for _, p in photos[:16]]

    def classify(data: bytes) -> dict:
        r = requests.post(f"{server.url}/v1/functions/emb/application", files={"file": ("x.jpg", data)}, timeout=300)
        assert r.status_code == 200, r.text
        return r.json()

    rows_before = emb.forward_rows
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(classify, blobs))
    assert all(len(o["output"]["embedding"]) == 1280 and o["timing_ms"] > 0 for o in outs)
    stats = requests.get(f"{server.url}/v1/batching", timeout=30).json()["emb"]
    assert stats["requests"] == 16
    assert stats["statements"] < 16 and stats["largestBatch"] > 1, stats  # fewer UDF invocations than requests
    assert emb.forward_rows - rows_before == 16
    # the same photo as base64 JSON gives the same vector (cached by content hash: no new forward pass)
    again = requests.post(f"{server.url}/v1/functions/emb/application", timeout=120,
                          json={"input": {"url": {"base64": base64.b64encode(blobs[3]).decode()}}}).json()
    assert again["output"]["embedding"] == pytest.approx(outs[3]["output"]["embedding"], rel=1e-5)
    assert emb.forward_rows - rows_before == 16


def test_urls_batched_and_bad_rows_isolated(server: LiveServer, www: TestHTTPServer,
                                            photos: list[tuple[str, Path]], clothing: Path) -> None:
    urls = [www.url(str(p.relative_to(clothing))) for _, p in photos[16:22]]
    inputs = [{"url": u} for u in urls] + [{"url": "http://10.1.2.3/x.jpg"}, {"url": www.url("missing.jpg")}]

    def apply(inp: dict) -> requests.Response:
        return requests.post(f"{server.url}/v1/functions/emb/application", json={"input": inp}, timeout=300)

    with ThreadPoolExecutor(len(inputs)) as pool:
        answers = list(pool.map(apply, inputs))
    for r in answers[:6]:
        assert r.status_code == 200 and len(r.json()["output"]["embedding"]) == 1280, r.text
    private, missing = answers[6], answers[7]
    assert private.status_code in (400, 403) and "10.1.2.3" in private.json()["error"], private.text
    assert www.hits["/x.jpg"] == 0  # refused before any connection
    assert missing.status_code == 400 and "404" in missing.json()["error"], missing.text
    got = requests.get(f"{server.url}/v1/functions/emb/application", timeout=120,
                       params={"input": f'{{"url": "{urls[0]}"}}'})
    assert got.status_code == 200 and len(got.json()["output"]["embedding"]) == 1280


def test_restart_keeps_entities(tmp_path: Path, photos: list[tuple[str, Path]]) -> None:
    db_path = tmp_path / "restart.vdb"
    with LiveServer(db_path, token=TOKEN, warm=()) as srv:
        for fid, cfg in {
            "emb2": {"type": "image.embedding", "params": {"model": "efficientnet_lite0"}},
            "inc": {"type": "sql.expression", "params": {"expression": "x + 1"}},
        }.items():
            assert requests.put(f"{srv.url}/v1/functions/{fid}", json=cfg, headers=AUTH, timeout=120).status_code == 201
        requests.get(f"{srv.url}/v1/query", params={"q": "CREATE TABLE t AS SELECT 1 AS a"}, headers=AUTH, timeout=60)
    with LiveServer(db_path, token=TOKEN, warm=["emb2"]) as srv:
        assert srv.app.state.warm_problems == []
        assert set(requests.get(f"{srv.url}/v1/functions", timeout=30).json()) == {"emb2", "inc"}
        assert requests.get(f"{srv.url}/v1/functions/inc/application", params={"input": '{"x": 1}'},
                            timeout=30).json()["output"] == {"output": 2}
        r = requests.post(f"{srv.url}/v1/functions/emb2/application", timeout=120,
                          files={"file": ("p.jpg", photos[0][1].read_bytes())})
        assert r.status_code == 200 and len(r.json()["output"]["embedding"]) == 1280
        assert requests.get(f"{srv.url}/v1/query", params={"q": "SELECT a FROM t"}, timeout=30).json() == [{"a": 1}]
