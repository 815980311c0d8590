"""scripts/download.py against a local HTTP server: verified download, resume with Range, hash mismatch."""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import ROOT, load_script, shared_file

from lkdn import zoo

NAME = "LKDN-S_del_rep_x4"  # the smallest official checkpoint (0.5 MB)


def _load_script():
    return load_script("scripts/download.py")


download = _load_script()


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single-range ``Range: bytes=N-`` support; records the Range headers it saw."""

    ranges: list[str | None]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature of the base class)
        pass

    def do_GET(self) -> None:
        self.ranges.append(self.headers.get("Range"))
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        path = Path(self.translate_path(self.path))
        if not match or not path.is_file():
            super().do_GET()
            return
        data = path.read_bytes()
        start = int(match.group(1))
        if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path, list]]:
    """A server on 127.0.0.1 serving a tmp folder laid out like --dest; yields (url, folder, ranges seen)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    served = tmp_path / "mirror"
    (served / "LKDN").mkdir(parents=True)
    shutil.copyfile(shared_file("pretrained", "LKDN", f"{NAME}.pth"), served / "LKDN" / f"{NAME}.pth")
    ranges: list[str | None] = []
    handler = type("Handler", (RangeHandler,), {"ranges": ranges})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served, ranges
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _run(url: str, dest: Path) -> int:
    return download.main(["--names", NAME, "--dest", str(dest), "--base-url", url, "--timeout", "10"])


def test_registry_has_every_official_checkpoint_with_its_hash() -> None:
    assert set(download.CHECKPOINTS) == {
        "LKDN_x2", "LKDN_x3", "LKDN_x4", "LKDN-S_x4", "LKDN-S_del_rep_x4", "RFDN_AIM", "BSRN_x2", "BSRN_x3", "BSRN_x4",
        "SPAN_NTIRE_ESR_c28_x4", "IMDN_x2", "IMDN_x3", "IMDN_x4", "IMDN_NTIRE2022", "RLFN_NTIRE2022", "EFDN_NTIRE2025",
        "DSCLoRA_NTIRE2025", "SPANF_NTIRE2025", "SPANV2_NTIRE2026", "PDS_NTIRE2026", "PKDSR_NTIRE2026", "DISP_NTIRE2026",
        "DSCF_Fused_NTIRE2026",
    }
    assert download.CHECKPOINTS["BSRN_x3"].path == "BSRN/BSRN_x3.pth"
    assert download.CHECKPOINTS["BSRN_x3"].url.endswith("/net_g_BSRN_x3.pth")
    assert download.CHECKPOINTS["DSCLoRA_NTIRE2025"].path == "DSCLoRA/DSCLoRA_NTIRE2025.pth"
    assert download.CHECKPOINTS["DSCLoRA_NTIRE2025"].url.endswith("NTIRE2025_ESR/raw/main/model_zoo/team23_DSCF.pth")
    assert all(re.fullmatch(r"[0-9a-f]{64}", c.sha256) for c in download.CHECKPOINTS.values())


def test_download_verifies_and_skips_when_present(mirror, tmp_path: Path) -> None:
    url, served, ranges = mirror
    dest = tmp_path / "dest"
    assert _run(url, dest) == 0
    target = dest / "LKDN" / f"{NAME}.pth"
    assert target.read_bytes() == (served / "LKDN" / f"{NAME}.pth").read_bytes()
    assert not target.with_name(target.name + ".part").exists()
    assert ranges == [None]
    assert _run(url, dest) == 0  # verified file in place: no second request
    assert ranges == [None]


def test_download_resumes_a_partial_file(mirror, tmp_path: Path) -> None:
    url, served, ranges = mirror
    data = (served / "LKDN" / f"{NAME}.pth").read_bytes()
    part = tmp_path / "dest" / "LKDN" / f"{NAME}.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:200_000])
    assert _run(url, tmp_path / "dest") == 0
    assert ranges == ["bytes=200000-"]
    target = tmp_path / "dest" / "LKDN" / f"{NAME}.pth"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == download.CHECKPOINTS[NAME].sha256
    assert not part.exists()


def test_hash_mismatch_is_deleted_and_fails(mirror, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, served, _ = mirror
    corrupted = bytearray((served / "LKDN" / f"{NAME}.pth").read_bytes())
    corrupted[1000] ^= 0xFF
    (served / "LKDN" / f"{NAME}.pth").write_bytes(bytes(corrupted))
    dest = tmp_path / "dest"
    assert _run(url, dest) == 1
    assert "SHA-256 mismatch" in capsys.readouterr().err
    assert list((dest / "LKDN").iterdir()) == []  # neither the file nor a .part is left


def test_unknown_name_and_unreachable_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert download.main(["--names", "LKDN_x5", "--dest", str(tmp_path)]) == 2
    assert "LKDN_x5" in capsys.readouterr().err
    with pytest.raises(download.DownloadError, match="127.0.0.1:9"):
        download.download(NAME, tmp_path, base_url="http://127.0.0.1:9", timeout=2)


def test_the_weights_readme_lists_every_checkpoint_with_its_hash() -> None:
    text = (ROOT / "experiments" / "pretrained_models" / "README.md").read_text()
    for name, checkpoint in download.CHECKPOINTS.items():
        assert f"| `{name}` | `{checkpoint.path}` | `{checkpoint.sha256}` |" in text


# ------------------------------------------------------------------ servers that misbehave (no ../shared needed)

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes standing for a published checkpoint


PORTAL = b"<!DOCTYPE html><html><head><title>Hotel Wi-Fi: log in</title></head><body>Accept the terms</body></html>"
TRICKLE_BYTES = 60  # sent one every 50 ms: 20 bytes/s


class MisbehavingHandler(SimpleHTTPRequestHandler):
    """``/short``: announces the whole payload, sends half, closes. ``/endless``: no Content-Length, streams on.
    ``/trickle``: announces the whole payload, sends TRICKLE_BYTES of it one by one, then closes.
    ``/portal``: a captive portal's login page (text/html). ``/page``: the same page as application/octet-stream.
    ``/slow-headers``: the status line, then a header line of TRICKLE_BYTES bytes one by one, then closes."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature of the base class)
        pass

    def trickle(self, chunks: Iterable[bytes]) -> None:
        """Writes ``chunks`` one every 0.05 s (or until the client gives up), then closes the connection."""
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:  # the client gave up
            pass
        self.close_connection = True

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path.startswith(("/portal", "/page")):
            kind = "text/html; charset=utf-8" if self.path.startswith("/portal") else "application/octet-stream"
            self.send_header("Content-Type", kind)
            self.end_headers()
            self.wfile.write(PORTAL)
            self.close_connection = True
            return
        if self.path.startswith("/slow-headers"):
            self.flush_headers()  # the status line (and Server, Date) now
            # a header line that never ends while the client waits
            self.trickle(b"X-Slow: " if i == 0 else b"z" for i in range(TRICKLE_BYTES))
            return
        if self.path.startswith("/trickle"):
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.trickle(bytes([byte]) for byte in PAYLOAD[:TRICKLE_BYTES])
            return
        if self.path.startswith("/short"):
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.end_headers()
        for _ in range(1000):  # 100 MB if nobody stops reading
            self.wfile.write(PAYLOAD)


@pytest.fixture
def misbehaving(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A server on 127.0.0.1 and a registry entry ``synthetic`` for PAYLOAD at <server>/<mode>/synthetic.pth."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    entry = zoo.Checkpoint("X/synthetic.pth", "unused", hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD))
    monkeypatch.setitem(download.CHECKPOINTS, "synthetic", entry)
    server = ThreadingHTTPServer(("127.0.0.1", 0), MisbehavingHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_dropped_connection_keeps_the_part_file_to_resume(misbehaving: str, tmp_path: Path) -> None:
    with pytest.raises(download.DownloadError, match=r"51200 of 102400 bytes; run again to resume"):
        download.download("synthetic", tmp_path, base_url=f"{misbehaving}/short", timeout=5, quiet=True)
    part = tmp_path / "X" / "synthetic.pth.part"
    assert part.read_bytes() == PAYLOAD[: len(PAYLOAD) // 2]  # not hashed as if complete, not deleted


def test_a_stream_without_length_stops_at_the_published_size(misbehaving: str, tmp_path: Path) -> None:
    with pytest.raises(download.DownloadError, match=r"more than the published 102400 bytes arrived; not this file"):
        download.download("synthetic", tmp_path, base_url=f"{misbehaving}/endless", timeout=5, quiet=True)
    part = tmp_path / "X" / "synthetic.pth.part"
    assert not part.exists() or part.stat().st_size <= len(PAYLOAD)


def test_a_trickling_server_is_given_up_at_the_minimum_rate(misbehaving: str, tmp_path: Path) -> None:
    # 20 bytes/s for 3 s: the socket timeout never fires, the minimum rate of 1 KiB/s over 1 s does
    with pytest.raises(download.DownloadError, match=r"/trickle/X/synthetic.pth: \d+ bytes in \d+\.\d s, slower than "
                                                     r"1024 bytes/s; stopped after \d+ of 102400 bytes, run again"):
        download.download("synthetic", tmp_path, base_url=f"{misbehaving}/trickle", timeout=1, quiet=True)
    part = tmp_path / "X" / "synthetic.pth.part"
    assert 0 < part.stat().st_size < TRICKLE_BYTES  # given up before the server was done
    assert part.read_bytes() == PAYLOAD[: part.stat().st_size]  # kept to resume


def test_a_server_trickling_its_headers_is_given_up_at_the_deadline(misbehaving: str, tmp_path: Path) -> None:
    # 20 header bytes/s for 3 s: no read waits 0.5 s, the reply is not complete after 2 x 0.5 s
    with pytest.raises(download.DownloadError, match=r"/slow-headers/X/synthetic.pth: no complete reply within 1 s"):
        download.download("synthetic", tmp_path, base_url=f"{misbehaving}/slow-headers", timeout=0.5, quiet=True)
    assert list((tmp_path / "X").iterdir()) == []


@pytest.mark.parametrize(("mode", "kind"), [("portal", "Content-Type text/html; charset=utf-8"),
                                            ("page", "Content-Type application/octet-stream")])
def test_a_captive_portal_page_is_reported_and_not_kept(misbehaving: str, tmp_path: Path, mode: str, kind: str) -> None:
    message = rf"/{mode}/X/synthetic.pth: received a web page \({kind}, starting b'<!DOCTYPE html><html><head><title>Hotel"
    with pytest.raises(download.DownloadError, match=message):
        download.download("synthetic", tmp_path, base_url=f"{misbehaving}/{mode}", timeout=5, quiet=True)
    assert list((tmp_path / "X").iterdir()) == []  # no .part "to resume"
    part = tmp_path / "X" / "synthetic.pth.part"  # a part file of earlier runs is left as it was
    part.write_bytes(PAYLOAD[:1000])
    with pytest.raises(download.DownloadError, match="received a web page"):
        download.download("synthetic", tmp_path, base_url=f"{misbehaving}/portal", timeout=5, quiet=True)
    assert part.read_bytes() == PAYLOAD[:1000]
    part.write_bytes(PORTAL)  # a page kept by an older version is thrown away, not resumed
    with pytest.raises(download.DownloadError, match="51200 of 102400 bytes"):
        download.download("synthetic", tmp_path, base_url=f"{misbehaving}/short", timeout=5, quiet=True)
    assert part.read_bytes() == PAYLOAD[: len(PAYLOAD) // 2]


def test_a_symlinked_part_file_is_never_written_through(misbehaving: str, tmp_path: Path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("precious")
    part = tmp_path / "dest" / "X" / "synthetic.pth.part"
    part.parent.mkdir(parents=True)
    part.symlink_to(victim)
    with pytest.raises(download.DownloadError, match=r"synthetic\.pth\.part is a symbolic link; .* remove it"):
        download.download("synthetic", tmp_path / "dest", base_url=f"{misbehaving}/short", timeout=5, quiet=True)
    assert victim.read_text() == "precious" and part.is_symlink()


@pytest.mark.parametrize(("args", "expected"), [
    (["--timeout", "-1"], "--timeout must be a positive number of seconds, got -1.0"),
    (["--timeout", "nan"], "--timeout must be a positive number of seconds, got nan"),
    (["--timeout", "inf"], "--timeout must be a positive number of seconds, got inf"),
    (["--timeout", "1e300"], "--timeout must be at most 86400 seconds (a day), got 1e+300"),
    (["--base-url", "::::"], "--base-url '::::' is not a URL; give http://host/folder"),
    (["--base-url", "http://[::1"], "--base-url 'http://[::1' is not a URL (Invalid IPv6 URL)"),
    (["--base-url", "http://host:99999/x"], "--base-url 'http://host:99999/x' is not a URL (Port out of range"),
    (["--dest", "{file}"], "file is a file; give a folder"),
])
def test_bad_arguments_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                    expected: str) -> None:
    (tmp_path / "file").write_text("x")
    args = [a.replace("{file}", str(tmp_path / "file")) for a in args]
    assert download.main(["--names", NAME, *(["--dest", str(tmp_path / "d")] if "--dest" not in args else []),
                          *args]) != 0
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()  # refused before any work


def test_local_folders_are_the_clone_s_or_the_user_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lkdn.zoo import local_folders

    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "setup.py").write_text("")
    assert local_folders(clone) == (clone / "experiments" / "pretrained_models", clone / "datasets", tmp_path / "shared")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    site = tmp_path / "site-packages"
    site.mkdir()
    assert local_folders(site) == (tmp_path / "cache" / "lkdn" / "pretrained_models", tmp_path / "datasets", None)
