"""The embedding cache: a re-run does no forward pass, one photo under two paths is computed once."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import visiondb
from visiondb.models.embedder import get_embedder, tapered_batches
from visiondb.sql.embedding import balanced_batch_size
from visiondb.errors import FetchError, NotFoundError
from visiondb.storage import embedding_cache as cache_module
from visiondb.storage import media as media_module
from visiondb.storage.images import ImageRef, ref_from_value, uri_sha256
from visiondb.storage.media import sha256_hex

from .conftest import write_uri_csv


def test_rerun_hits_cache_and_duplicates_computed_once(tmp_path: Path, photos: list[Path], cache_dir: Path) -> None:
    twin = tmp_path / "copies" / "same-photo-other-name.jpg"
    twin.parent.mkdir()
    shutil.copyfile(photos[0], twin)
    uris = [str(p) for p in photos] + [str(twin)]
    db = visiondb.connect(tmp_path / "cache.duckdb", cache_dir=cache_dir)
    try:
        db.procedures.put("imp", {"type": "import.images", "params": {
            "dataFileUrl": str(write_uri_csv(tmp_path / "photos.csv", uris)), "outputDataset": "photos"}})
        db.functions.put("emb", {"type": "image.embedding", "params": {"model": "efficientnet_lite0", "batchSize": 4}})
        fn = db.functions.instance("emb")
        config = {"type": "transform", "params": {
            "inputData": "SELECT image.uri AS uri, emb(image) AS v FROM photos", "outputDataset": "vecs",
            "chunkSize": 8}}
        first = db.procedures.put("feat", config)["status"]["firstRun"]["status"]
        assert first["rowCount"] == len(uris) and first["errorCount"] == 0
        assert fn.forward_rows == len(photos)  # the twin's bytes hash to photos[0]: one forward pass for both
        db.procedures.run("feat")
        assert fn.forward_rows == len(photos)  # identical re-run: every vector from vdb.embeddings
        rows = dict(db.sql("SELECT uri, v FROM vecs").fetchall())
        np.testing.assert_array_equal(rows[str(twin)], rows[str(photos[0])])
        # the same photo by plain URI string (not an imported image value) is also a cache hit
        by_uri = db.sql("SELECT emb(?)", [str(twin)]).fetchall()[0][0]
        assert fn.forward_rows == len(photos)
        np.testing.assert_array_equal(by_uri, rows[str(photos[0])])
        # an upload's `mem:<sha>` URI names its content: a cache hit by that name, even once the upload is evicted
        upload = db.media.put_transient(photos[1].read_bytes())
        db.media._transient.clear()
        by_upload = db.sql("SELECT emb(?)", [upload]).fetchall()[0][0]
        assert fn.forward_rows == len(photos)
        np.testing.assert_array_equal(by_upload, rows[str(photos[1])])
        # vectors from the parallel pipeline equal the embedder's direct, unpipelined path
        embedder = get_embedder("efficientnet_lite0", cache_dir=cache_dir / "onnx", opener=db.read_uri)
        direct = embedder.embed_bytes([p.read_bytes() for p in photos])
        got = np.stack([rows[str(p)] for p in photos])
        np.testing.assert_allclose(got, direct, atol=1e-5)
        cached = db.sql("SELECT count(*) FROM vdb.embeddings WHERE model_key = ?", [embedder.key]).fetchone()[0]
        assert cached == len(photos)
    finally:
        db.close()


def test_content_uris_carry_their_hash() -> None:
    sha = "ab" * 32
    assert uri_sha256(f"mem:{sha}") == sha and uri_sha256(f"media:{sha}") == sha
    assert uri_sha256("mem:not-a-hash") is None and uri_sha256(f"https://x/{sha}") is None
    assert ref_from_value(f"mem:{sha}") == ImageRef(uri=f"mem:{sha}", sha256=sha)
    assert ref_from_value({"uri": f"media:{sha}", "sha256": "cd" * 32}).sha256 == "cd" * 32  # stored hash wins


def test_content_names_must_be_digests(tmp_path: Path) -> None:
    """`media:`/`mem:` URIs and image values' sha256 name stored content only: never a path on the server."""
    secret = tmp_path / "secret.txt"
    secret.write_text("not for you")
    db = visiondb.connect(tmp_path / "names.duckdb")
    try:
        for uri in (f"media:{secret}", f"mem:{secret}", "media:../../secret.txt"):
            with pytest.raises(FetchError, match="sha256 digest"):
                db.read_uri(uri)
        with pytest.raises(FetchError, match="not a sha256 digest"):
            ref_from_value({"sha256": str(secret)})
        with pytest.raises(FetchError, match="not a sha256 digest"):
            db.media.get(str(secret))
        with pytest.raises(visiondb.VisionDBError, match="sha256 digest"):
            db.sql("SELECT fetch_bytes(?)", [f"media:{secret}"]).fetchall()
    finally:
        db.close()


def test_uploads_held_in_memory_are_bounded_in_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_module, "TRANSIENT_MAX_BYTES", 2500)
    db = visiondb.connect(tmp_path / "held.duckdb")
    try:
        uris = [db.media.put_transient(bytes([i]) * 1000) for i in range(3)]
        with pytest.raises(NotFoundError):
            db.read_uri(uris[0])  # the oldest went when the third pushed the total past 2,500 bytes
        assert [db.read_uri(u)[:1] for u in uris[1:]] == [b"\x01", b"\x02"]
        db.media.put_transient(b"x" * 10_000)  # one upload over the bound is still held (it is being served)
        assert db.read_uri(f"mem:{sha256_hex(b'x' * 10_000)}") == b"x" * 10_000
    finally:
        db.close()


def test_stale_image_value_is_keyed_by_the_bytes_read(tmp_path: Path, photos: list[Path], cache_dir: Path) -> None:
    """An image value whose sha256 the store lacks is read by URI, and its vector cached under what was read."""
    a, b = photos[0], photos[-1]
    db = visiondb.connect(tmp_path / "stale.duckdb", cache_dir=cache_dir)
    try:
        db.functions.put("emb", {"type": "image.embedding", "params": {"model": "efficientnet_lite0"}})
        sha_a = sha256_hex(a.read_bytes())
        stale = db.sql("SELECT emb({'uri': ?, 'sha256': ?})", [str(b), sha_a]).fetchall()[0][0]
        true_b = db.sql("SELECT emb(?)", [str(b)]).fetchall()[0][0]
        np.testing.assert_array_equal(stale, true_b)
        true_a = db.sql("SELECT emb(?)", [str(a)]).fetchall()[0][0]
        assert not np.allclose(true_a, true_b)  # a's hash did not receive b's vector
        embedder = get_embedder("efficientnet_lite0", cache_dir=cache_dir / "onnx", opener=db.read_uri)
        np.testing.assert_allclose(true_a, embedder.embed_bytes([a.read_bytes()])[0], atol=1e-5)
    finally:
        db.close()


def test_cache_backlog_is_bounded_and_late_puts_are_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`put` waits for the writer past MAX_BACKLOG_ROWS instead of growing without bound; a put after close
    still reaches the table."""
    monkeypatch.setattr(cache_module, "MAX_BACKLOG_ROWS", 8)
    monkeypatch.setattr(cache_module, "LINGER_S", 60.0)  # the writer would otherwise sit on its rows for a minute
    db = visiondb.connect(tmp_path / "backlog.duckdb")
    cache = db.embedding_cache
    vectors = {f"{i:064x}": np.full(4, i, dtype=np.float32) for i in range(20)}
    items = list(vectors.items())
    cache.put("k", dict(items[:8]))
    cache.put("k", dict(items[8:12]))  # over the bound: the first eight are handed to the writer first
    assert len(cache._pending) <= 8
    cache.flush()
    cache.close()
    cache.put("k", dict(items[12:]))  # closed: written on the caller's thread
    stored = db.sql("SELECT count(*) FROM vdb.embeddings WHERE model_key = 'k'").fetchone()[0]
    db.close()
    assert stored == 20


def _count_inserts(cache, monkeypatch: pytest.MonkeyPatch) -> list[int]:  # noqa: ANN001 - an EmbeddingCache
    """Record the row count of every INSERT the cache makes."""
    inserts: list[int] = []
    real = cache._insert
    monkeypatch.setattr(cache, "_insert", lambda rows: (inserts.append(len(rows)), real(rows))[1])
    return inserts


def _wait_for(condition, seconds: float = 10.0) -> None:  # noqa: ANN001 - a callable
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_hold_keeps_vectors_until_it_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a bulk computation holds the cache, its vectors wait (unless their backlog grows past MAX_HELD_ROWS);
    when it ends they are written at once, lookups seeing them all along."""
    monkeypatch.setattr(cache_module, "LINGER_S", 0.0)  # unheld, every put would be written at once
    monkeypatch.setattr(cache_module, "MAX_HELD_ROWS", 6)
    vectors = {f"{i:064x}": np.full(4, i, dtype=np.float32) for i in range(9)}
    items = list(vectors.items())
    with visiondb.connect(tmp_path / "hold.duckdb") as db:
        cache = db.embedding_cache
        inserts = _count_inserts(cache, monkeypatch)
        with cache.hold():
            cache.put("k", dict(items[:2]))
            cache.put("k", dict(items[2:4]))
            time.sleep(0.2)
            assert inserts == [] and len(cache.lookup("k", list(vectors))) == 4
            cache.put("k", dict(items[4:7]))  # 7 rows held: over the bound, the writer takes them
            _wait_for(lambda: inserts)
            assert inserts == [7]
            cache.put("k", dict(items[7:]))
        _wait_for(lambda: len(inserts) == 2)  # no flush asked for: the hold's end sends the writer
        assert inserts == [7, 2]
        assert db.sql("SELECT count(*) FROM vdb.embeddings").fetchone()[0] == 9


def test_a_flush_during_a_write_does_not_hurry_the_next_vectors(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush that arrives while the writer is busy and nothing else waits is answered by that write; it must not
    linger as a request that sends the next, unrelated vectors to the table at once (an INSERT beside a transform's
    busy workers)."""
    monkeypatch.setattr(cache_module, "LINGER_S", 0.0)
    vectors = {f"{i:064x}": np.full(4, i, dtype=np.float32) for i in range(2)}
    a, b = ({h: v} for h, v in vectors.items())
    with visiondb.connect(tmp_path / "stale.duckdb") as db:
        cache = db.embedding_cache
        inserts = _count_inserts(cache, monkeypatch)
        real = cache._insert
        monkeypatch.setattr(cache, "_insert", lambda rows: (time.sleep(0.3), real(rows))[1])
        cache.put("k", a)
        _wait_for(lambda: cache._writing)
        cache.flush()  # while `a` is being written, nothing pending
        monkeypatch.setattr(cache_module, "LINGER_S", 60.0)
        cache.put("k", b)
        time.sleep(0.5)
        assert inserts == [1]  # `b` waits out its linger
        assert len(cache.lookup("k", list(vectors))) == 2


def test_a_flush_from_another_thread_does_not_wait_for_a_hold(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """SQL flushes the cache first; a statement run while a transform chunk holds the writer must get every vector
    stored without waiting for the chunk to end, even when more arrive while the flush's write runs."""
    import threading

    vectors = {f"{i:064x}": np.full(4, i, dtype=np.float32) for i in range(2)}
    first, second = ({h: v} for h, v in vectors.items())
    with visiondb.connect(tmp_path / "flushhold.duckdb") as db:
        cache = db.embedding_cache
        real = cache._insert
        monkeypatch.setattr(cache, "_insert", lambda rows: (time.sleep(0.3), real(rows))[1])
        held, release, ended = threading.Event(), threading.Event(), threading.Event()

        def chunk() -> None:
            with cache.hold():
                cache.put("k", first)
                held.set()
                _wait_for(lambda: cache._writing)
                cache.put("k", second)  # arrives while the flush's write of `first` runs
                release.wait(30)
            ended.set()

        worker = threading.Thread(target=chunk)
        worker.start()
        held.wait(10)
        cache.flush()
        assert not ended.is_set()  # returned while the chunk still holds the writer
        assert db.sql("SELECT count(*) FROM vdb.embeddings").fetchone()[0] == 2
        release.set()
        worker.join()


def test_a_transform_chunk_stores_its_vectors_in_one_insert(tmp_path: Path, photos: list[Path], cache_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk of many batches writes its vectors to `vdb.embeddings` once, after its forward passes, not once per
    batch beside them; a request of one image is written as before."""
    monkeypatch.setattr(cache_module, "LINGER_S", 0.0)
    with visiondb.connect(tmp_path / "bulk.duckdb", cache_dir=cache_dir) as db:
        db.procedures.put("imp", {"type": "import.images", "params": {
            "dataFileUrl": str(write_uri_csv(tmp_path / "photos.csv", [str(p) for p in photos[1:]])),
            "outputDataset": "photos"}})
        db.functions.put("emb", {"type": "image.embedding", "params": {"model": "efficientnet_lite0", "batchSize": 2}})
        inserts = _count_inserts(db.embedding_cache, monkeypatch)
        db.procedures.put("feat", {"type": "transform", "params": {
            "inputData": "SELECT emb(image) AS v FROM photos", "outputDataset": "vecs"}})
        db.embedding_cache.flush()
        assert inserts == [len(photos) - 1]
        db.sql("SELECT emb(?)", [str(photos[0])]).fetchall()
        db.embedding_cache.flush()
        assert inserts == [len(photos) - 1, 1]


def test_balanced_batches() -> None:
    assert balanced_batch_size(256, 32, 2) == 32  # 8 full batches, 4 per worker
    assert balanced_batch_size(100, 32, 2) == 25  # 4 x 25 instead of 32, 32, 32, 4
    assert balanced_batch_size(5, 32, 2) == 3 and balanced_batch_size(1, 32, 2) == 1
    assert balanced_batch_size(0, 32, 2) == 32 and balanced_batch_size(40, 32, 1) == 20


def test_long_inputs_end_in_small_batches() -> None:
    """The last round of a transform chunk comes in small batches so the workers finish together; a serving
    batch and an unsized stream keep full batches; order and content are kept."""
    sizes = [len(b) for b in tapered_batches(list(range(512)), 16, 2)]
    assert sizes == [16] * 30 + [4] * 8
    assert [x for b in tapered_batches(list(range(512)), 16, 2) for x in b] == list(range(512))
    assert [len(b) for b in tapered_batches(list(range(20)), 10, 2)] == [10, 10]
    assert [len(b) for b in tapered_batches(iter(range(40)), 16, 2)] == [16, 16, 8]
    assert [len(b) for b in tapered_batches(list(range(70)), 4, 2)] == [4] * 16 + [2] * 3


def test_write_behind_cache_is_read_through_and_survives_close(tmp_path: Path) -> None:
    """Vectors are visible to lookups before the writer stores them; SQL, clear() and close() see them all."""
    rng = np.random.default_rng(0)
    vectors = {f"{i:064x}": rng.random(8, dtype=np.float32) for i in range(300)}
    db = visiondb.connect(tmp_path / "wb.duckdb")
    cache = db.embedding_cache
    cache.put("m:1", dict(list(vectors.items())[:10]))
    got = cache.lookup("m:1", list(vectors)[:12])  # pending or written: either way a hit
    assert set(got) == set(list(vectors)[:10])
    np.testing.assert_array_equal(got[next(iter(vectors))], next(iter(vectors.values())))
    assert cache.lookup("m:2", list(vectors)[:10]) == {}  # another model key is another cache
    cache.put("m:1", dict(list(vectors.items())[10:]))
    # statements through db.sql flush first: the table holds every queued vector
    assert db.sql("SELECT count(*) FROM vdb.embeddings WHERE model_key = 'm:1'").fetchone()[0] == 300
    cache.put("m:1", {h: v * 2 for h, v in list(vectors.items())[:5]})  # already stored: not duplicated
    cache.put("m:2", {h: v[:4] for h, v in list(vectors.items())[:3]})  # another width, same write batch
    db.close()  # writes what is pending
    db = visiondb.connect(tmp_path / "wb.duckdb")
    try:
        assert db.sql("SELECT count(*) FROM vdb.embeddings").fetchone()[0] == 303
        again = db.embedding_cache.lookup("m:2", list(vectors))
        assert sorted(again) == sorted(list(vectors)[:3]) and all(len(v) == 4 for v in again.values())
        assert db.embedding_cache.clear("m:2") == 3
        assert db.embedding_cache.lookup("m:2", list(vectors)) == {}
        assert db.embedding_cache.write_errors == 0
    finally:
        db.close()


def test_recent_vectors_stay_in_memory_within_their_budget(tmp_path: Path, monkeypatch) -> None:
    """Stored and looked-up vectors are kept in memory, least recently used out past RECENT_BYTES, and answer
    lookups without the table; clear() empties both."""
    from visiondb.storage import embedding_cache

    monkeypatch.setattr(embedding_cache, "RECENT_BYTES", 10 * 8 * 4)  # ten 8-float vectors
    rng = np.random.default_rng(1)
    vectors = {f"{i:064x}": rng.random(8, dtype=np.float32) for i in range(30)}
    with visiondb.connect(tmp_path / "recent.duckdb") as db:
        cache = db.embedding_cache
        cache.put("m", vectors)
        cache.flush()
        assert len(cache._recent) == 10 and cache._recent_bytes == 10 * 32  # the last ten stored
        db.sql("DELETE FROM vdb.embeddings WHERE content_hash IN (SELECT unnest(?))", [[h for h, _ in cache._recent][:1]])
        hits = cache.lookup("m", list(vectors))  # one only in memory now, the rest from the table
        assert len(hits) == 30 and all(np.array_equal(hits[h], v) for h, v in vectors.items())
        assert len(cache._recent) == 10
        assert cache.clear("m") == 29
        assert cache.lookup("m", list(vectors)) == {} and cache._recent_bytes == 0


def test_media_sources_defer_file_reads(tmp_path: Path, photos: list[Path]) -> None:
    """Stored files come back as readers (the pipeline's workers read them); inline blobs as bytes."""
    db = visiondb.connect(tmp_path / "media.duckdb")
    try:
        big = photos[0].read_bytes()
        tiny = b"\x89PNG tiny"
        big_sha, tiny_sha = db.media.put(big), db.media.put(tiny)
        sources = db.media.sources([big_sha, tiny_sha, "0" * 64])
        assert callable(sources[big_sha]) and sources[big_sha]() == big
        assert sources[tiny_sha] == tiny and "0" * 64 not in sources
        assert db.media.get_many([big_sha, tiny_sha]) == {big_sha: big, tiny_sha: tiny}
    finally:
        db.close()


def test_cache_writer_ends_when_idle_and_restarts(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """An idle writer thread ends (unclosed databases keep no thread); the next vectors start another."""
    from visiondb.storage import embedding_cache

    monkeypatch.setattr(embedding_cache, "IDLE_EXIT_S", 0.05)
    monkeypatch.setattr(embedding_cache, "LINGER_S", 0.01)
    db = visiondb.connect(tmp_path / "idle.duckdb")
    try:
        cache = db.embedding_cache
        cache.put("m", {"a" * 64: np.ones(3, dtype=np.float32)})
        cache.flush()
        first = cache._writer
        deadline = time.monotonic() + 10
        while cache._writer is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cache._writer is None and first is not None and not first.is_alive()
        cache.put("m", {"b" * 64: np.zeros(3, dtype=np.float32)})
        assert db.sql("SELECT count(*) FROM vdb.embeddings").fetchone()[0] == 2
    finally:
        db.close()


def test_rows_sharing_failing_content_each_report_their_error(tmp_path: Path, photos: list[Path],
                                                               cache_dir: Path) -> None:
    """Two files with the same (not an image) bytes are decoded once, but both rows get an error, by name."""
    bad = [tmp_path / "notes-a.jpg", tmp_path / "notes-b.jpg"]
    for path in bad:
        path.write_bytes(b"these are my shopping notes, not a picture\n")
    db = visiondb.connect(tmp_path / "errs.duckdb", cache_dir=cache_dir)
    try:
        db.sql("CREATE TABLE src AS SELECT * FROM (VALUES ('r0', ?), ('r1', ?), ('r2', ?), ('r3', ?))"
               " t(_rowName, url)", [str(bad[0]), str(bad[1]), str(bad[0]), str(photos[0])])
        db.functions.put("emb", {"type": "image.embedding", "params": {"model": "efficientnet_lite0"}})
        run = db.procedures.put("feat", {"type": "transform", "params": {
            "inputData": "SELECT url, emb(url) AS v FROM src", "outputDataset": "vecs"}})["status"]["firstRun"]
        assert run["status"]["errorCount"] == 3
        assert sorted(e["uri"] for e in run["errors"]) == sorted(map(str, [bad[0], bad[0], bad[1]]))
        assert db.sql("SELECT _rowName FROM vecs WHERE v IS NULL ORDER BY 1").fetchall() == [("r0",), ("r1",), ("r2",)]
    finally:
        db.close()
