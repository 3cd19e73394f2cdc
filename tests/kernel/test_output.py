"""The bounded cell output and its streaming sink (pure logic, no session needed)."""

from __future__ import annotations

from sessionpool.kernel.shell import CellOutput


def test_streaming_sends_whole_lines_and_the_rest_on_flush() -> None:
    sent: list[tuple[str, str]] = []
    out = CellOutput(1 << 20, 0, 0, sink=lambda name, text: sent.append((name, text)))
    out.write("stdout", "one")  # print() writes the text ...
    out.write("stdout", "\n")  # ... and then its newline
    out.write("stderr", "err\npart")
    out.write("stdout", "tail")
    assert sent == [("stdout", "one\n"), ("stderr", "err\n")]
    out.flush_stream()
    assert sorted(sent[2:]) == [("stderr", "part"), ("stdout", "tail")]
    assert "".join(out.stdout) == "one\ntail"


def test_streaming_respects_the_output_cap() -> None:
    sent: list[str] = []
    out = CellOutput(10, 0, 0, sink=lambda name, text: sent.append(text))
    out.write("stdout", "12345\n67890\nabcdef\n")
    out.flush_stream()
    assert "".join(sent) == "12345\n6789"
    assert out.dropped == len("12345\n67890\nabcdef\n") - 10
