"""Error text from native libraries, made fit for /health and a log line.

XGBoost's C++ errors arrive as `[06:36:22] /workspace/src/c_api/c_api.cc:1532: Check failed:
... \\nStack trace:\\n  [bt] (0) /path/libxgboost.so(+0x11031e) [0x7f6a68f1031e]\\n...`: a log
timestamp, the build machine's source path, then a stack of addresses; an unknown objective
lists every known one, one per line. Only the first meaningful line says what is wrong.
"""

from __future__ import annotations

import re


class ModelFileError(ValueError):
    """A model file its framework's native reader must not be given (it could crash or
    misread it): the message says what is wrong and where. Each framework's checker raises
    it before the native library sees one byte."""

#: default bound of a cleaned native message (the caller's own words come on top)
NATIVE_MESSAGE_CHARS = 300

# "[06:36:22] /workspace/src/c_api/c_api.cc:1532: " (XGBoost / dmlc LOG(FATAL) prefix)
_LOG_PREFIX = re.compile(r"^\s*\[\d{1,2}:\d{2}:\d{2}\]\s+(?:\S+?:\d+:\s*)?")
# a source location left inside the text: "/workspace/include/xgboost/json.h:88: "
_SOURCE_PATH = re.compile(r"(?:/[\w.+-]+)+\.(?:cc|cpp|cu|cxx|h|hpp|hxx|c):\d+:?\s*")
_STACK_START = re.compile(r"^\s*(?:Stack trace:|\[bt\]|Traceback \(most recent call last\))")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\ud7ff\ue000-\ufffd]")


def clean_native_error(text: str, limit: int = NATIVE_MESSAGE_CHARS) -> str:
    """The first meaningful line of a native library's error, without its log prefix,
    build paths, stack frames or addresses; control bytes escaped; at most `limit`
    characters (cut ones end in `...`)."""
    line = ""
    for raw in str(text).splitlines():
        if _STACK_START.match(raw):
            break
        candidate = _SOURCE_PATH.sub("", _LOG_PREFIX.sub("", raw))
        candidate = _ADDRESS.sub("<address>", candidate).strip()
        if candidate:
            line = candidate
            break
    line = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group(0)):02x}"
                            if ord(m.group(0)) < 0x100 else "?", line)
    line = " ".join(line.split())
    if not line:
        line = "no message"
    return bound(line, limit)


def bound(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters (ending in `...` when cut)."""
    return text if len(text) <= limit else text[: max(0, limit - 3)].rstrip() + "..."
