"""`visiondb.Client`: a small httpx client for a visiondb (or MLDB-shaped) REST server, like pymldb."""
from __future__ import annotations

import json
import time
from typing import Any, Mapping

import httpx

from ..errors import VisionDBError


class Client:
    """Talk to `http://host:port`; paths may be given as `/v1/functions/x` or `functions/x`."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 600.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    # plumbing --------------------------------------------------------------------------------
    @staticmethod
    def _path(path: str) -> str:
        path = "/" + path.lstrip("/")
        return path if path.startswith("/v1/") or path == "/v1" else "/v1" + path

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, self._path(path), **kwargs)
        if response.status_code >= 400:
            raise _error(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # MLDB verbs ------------------------------------------------------------------------------
    def put(self, path: str, config: Mapping[str, Any]) -> Any:
        """PUT an entity config; returns the entity record (procedures: with status.firstRun)."""
        return self._call("PUT", path, json=dict(config))

    def post(self, path: str, config: Mapping[str, Any] | None = None, **params: Any) -> Any:
        """POST a config (entity creation) or a body (runs, application)."""
        return self._call("POST", path, json=dict(config or {}), params=params or None)

    def get(self, path: str, **params: Any) -> Any:
        """GET with query parameters; dict/list values are sent as JSON (e.g. `input=`)."""
        encoded = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in params.items()}
        return self._call("GET", path, params=encoded)

    def delete(self, path: str) -> None:
        self._call("DELETE", path)

    def query(self, sql: str) -> Any:
        """Run SQL and return a pandas DataFrame (indexed by `_rowName` when the result has one)."""
        import pandas as pd

        rows = self._call("GET", "/v1/query", params={"q": sql, "format": "table"})
        frame = pd.DataFrame(rows[1:], columns=rows[0])
        if "_rowName" in frame.columns:
            frame = frame.set_index("_rowName")
        return frame

    def apply(self, function: str, input: Mapping[str, Any]) -> dict:
        """Apply a function: bytes inputs are sent as base64 images; returns the response body."""
        payload = {k: ({"base64": _b64(v)} if isinstance(v, (bytes, bytearray)) else v) for k, v in input.items()}
        return self._call("POST", f"/v1/functions/{function}/application", json={"input": payload})

    def classify_file(self, function: str, data: bytes, filename: str = "image.jpg", **extra: str) -> dict:
        """Apply a function to an image upload (multipart field `file`)."""
        return self._call("POST", f"/v1/functions/{function}/application",
                          files={"file": (filename, data, "application/octet-stream")}, data=extra or None)

    def put_and_track(self, path: str, config: Mapping[str, Any], poll: float = 0.5) -> dict:
        """Create a procedure without running it, run it in the background and show a progress bar
        until it finishes; returns the run record (raises VisionDBError on a failed run)."""
        from tqdm.auto import tqdm

        config = dict(config)
        params = dict(config.get("params") or {})
        params["runOnCreation"] = False
        config["params"] = params
        proc_path = self._path(path)
        if proc_path.rstrip("/") == "/v1/procedures":
            record = self._call("POST", proc_path, json=config)
            proc_path = f"/v1/procedures/{record['id']}"
        else:
            self._call("PUT", proc_path, json=config)
        run = self._call("POST", f"{proc_path}/runs", params={"async": "true"}, json={})
        bar = tqdm(desc=proc_path.rsplit("/", 1)[-1], unit="row")
        try:
            while run["state"] not in ("finished", "error"):
                time.sleep(poll)
                run = self._call("GET", f"{proc_path}/runs/{run['id']}")
                progress = run.get("progress") or {}
                if progress.get("total") is not None:
                    bar.total = progress["total"]
                if "done" in progress:
                    bar.n = progress["done"]
                if progress.get("phase"):
                    bar.set_postfix_str(str(progress["phase"])[:40], refresh=False)
                bar.refresh()
        finally:
            bar.close()
        if run["state"] == "error":
            status = run.get("status") or {}
            raise VisionDBError(f"run {run['id']} of {proc_path} failed: {status.get('error', 'unknown error')}",
                                run=run)
        return run


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(bytes(data)).decode("ascii")


def _error(response: httpx.Response) -> VisionDBError:
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:500]}
    message = body.get("error") if isinstance(body, dict) else str(body)
    details = body.get("details") if isinstance(body, dict) and isinstance(body.get("details"), dict) else {}
    exc = VisionDBError(f"HTTP {response.status_code} {response.request.method} {response.request.url.path}: "
                        f"{message}", **details)
    exc.http_code = response.status_code
    return exc
