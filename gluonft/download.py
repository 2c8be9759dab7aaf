"""One download of a weights file into the store: resumed after an interruption, verified by
its sha256 before it takes its name, never left half-written under that name.

The bytes go to ``<file>.part``; a later call continues it with an HTTP Range request (a
server that ignores the range sends the whole file again, and the part starts over). Only a
file whose sha256 starts with the expected prefix (torch hub's convention: the prefix is in the
file's name) is renamed into place; a mismatch removes the part and says so.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request

from .weights import WeightsMismatch, WeightsUnavailable

__all__ = ["fetch", "sha256_of", "CHUNK"]

CHUNK = 1 << 20


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy(response, part: str, append: bool) -> None:
    """The response's body into ``part``; an OSError when it ends before its Content-Length
    (what was received stays, to be resumed)."""
    expected = response.headers.get("Content-Length")
    received = 0
    with open(part, "ab" if append else "wb") as f:
        try:
            for block in iter(lambda: response.read(CHUNK), b""):
                f.write(block)
                received += len(block)
        except http.client.HTTPException as error:  # e.g. IncompleteRead
            raise OSError(f"the connection broke after {received} bytes ({error!r})") from None
        finally:
            f.flush()
            os.fsync(f.fileno())
    if expected is not None and received < int(expected):
        raise OSError(f"the connection closed after {received} of {expected} bytes")


def fetch(url: str, path: str, *, sha256_prefix: str, timeout: float = 60.0) -> str:
    """Download ``url`` to ``path`` (resuming ``path + '.part'``), check its sha256 prefix,
    rename it into place; returns ``path``.

    Raises:
        WeightsUnavailable: no connection, or the download stopped (run again: it resumes);
            the message names the URL and where to put the file by hand.
        WeightsMismatch: the bytes have another sha256 (the part is removed).
    """
    part = path + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            _copy(response, part, append=have > 0 and response.status == 206)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part is already whole: check it below
            pass
        else:
            raise WeightsUnavailable(f"downloading {url} failed (HTTP {error.code}); download it "
                                     f"by hand and put it at {path}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise WeightsUnavailable(f"downloading {url} failed ({reason}); run again to resume, "
                                 f"or download it by hand and put it at {path}") from None
    actual = sha256_of(part)
    if not actual.startswith(sha256_prefix):
        os.remove(part)
        raise WeightsMismatch(f"{url} gave a file whose sha256 is {actual[:16]}..., not the "
                              f"expected {sha256_prefix}...; it was not kept (run again, or put "
                              f"the right file at {path})")
    os.replace(part, path)
    return path
