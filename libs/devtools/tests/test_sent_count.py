"""The bench counts the SMS the console provider handed over by reading only what was appended since it last looked."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from devtools.platform import Infrastructure, Platform


def test_the_sms_handed_over_are_counted_from_what_was_appended_whole_lines_only(tmp_path: Path) -> None:
    platform = Platform(cast(Infrastructure, None), tmp_path)
    assert platform.sent_count() == 0  # no SMS yet, no file
    platform.sms_file.write_bytes(b'{"id": "1"}\n{"id": "2"}\n{"id": ')
    assert platform.sent_count() == 2  # the third line is still being written
    with platform.sms_file.open("ab") as handle:
        handle.write(b'"3"}\n{"id": "4"}\n')
    assert platform.sent_count() == 4
    assert platform.sent_count() == 4  # nothing appended since
