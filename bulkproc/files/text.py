"""Text files: their encoding (never guessed into a transcoding), their delimiter, and their records.

A file's text is never held whole: its bytes are decoded a block at a time each time they are
read, so that a check of a large upload costs its bytes and little more (a decoded copy can take
four bytes a character, and csv's StringIO four more).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .problems import Problem, quoted

BYTE_ORDER_MARK = "\ufeff"
DELIMITERS = (",", ";", "\t", "|")
# Longest first: a UTF-32 mark begins with the UTF-16 one.
_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32le", "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32be", "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig", "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16le", "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16be", "utf-16"),
)
# Codecs Python calls text encodings that are no character sets a spreadsheet saves (punycode's
# decoder is also quadratic in its input).
_NOT_CHARSETS = frozenset({"idna", "punycode", "unicode_escape", "raw_unicode_escape", "undefined", "charmap",
                           "mbcs", "oem", "palmos"})
# The encodings spreadsheet programs save text in, most widespread first: a sample is compared
# with these only (a short one fits many old DOS and Mac code pages equally well), and among
# those that read it alike, the first is named.
_PREFERRED = ("cp1252", "latin_1", "iso8859_15", "cp1250", "iso8859_2", "mac_roman", "cp1251", "cp1257",
              "cp1253", "cp1254", "cp1255", "cp1256", "cp1258", "cp932", "shift_jis", "gb18030", "gbk",
              "big5", "euc_kr", "euc_jp", "koi8_r", "cp437", "cp850")
_NAMES = {"latin_1": "iso-8859-1", "mac_roman": "mac-roman", "shift_jis": "shift_jis", "cp932": "cp932"}
_SAMPLE_BYTES = 64 * 1024
# Bytes decoded at a time when a file's encoding is checked.
_CHECK_BYTES = 64 * 1024
_QUOTED = re.compile(r'"[^"]*"?')
_BLANK_LINE = re.compile(r"[ \t\f\v]*(?:\r\n|\r|\n)")


@dataclass(frozen=True)
class Encoding:
    """How a text file's bytes read: the codec that reads every one of them and the encoding's name,
    or why none does."""

    codec: str | None
    name: str | None
    problem: Problem | None = None
    # The encoding the bytes most likely have, when they are not the one tried.
    suggested: str | None = None


def charset(name: str) -> str | None:
    """Return the codec for an `encoding` a person named, or None when it is no character set."""
    try:
        info = codecs.lookup(name.strip())
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name.replace("-", "_") in _NOT_CHARSETS:
        return None
    return info.name


# A file named UTF-16 or UTF-32 that has no byte-order mark (its mark would have been read above)
# reads little-endian, as Windows writes it and as Python decodes it whole; decoded a block at a
# time, Python's decoder would refuse it for the missing mark instead.
_WITHOUT_MARK = {"utf-16": "utf-16le", "utf-32": "utf-32le"}


def encoding_of(data: bytes, encoding: str | None = None) -> Encoding:
    """Return how the file reads: by its byte-order mark, else the named encoding, else UTF-8."""
    for mark, codec, name in _MARKS:
        if data.startswith(mark):
            return _checked(data, codec, name)
    if encoding:
        codec = charset(encoding)
        if codec is None:
            return Encoding(None, None, Problem(None, None, unknown_encoding_message(encoding)))
        return _checked(data, _WITHOUT_MARK.get(codecs.lookup(codec).name, codec), encoding.strip().lower())
    if _looks_like_utf16_without_mark(data):
        order = "utf-16le" if data[1:2] == b"\x00" else "utf-16be"
        return Encoding(None, None, Problem(None, None, (
            f"The file looks like UTF-16 without a byte-order mark; send encoding={order} "
            'with it or save it as "CSV UTF-8" and upload it again.')), suggested=order)
    bad = _first_bad_byte(data, "utf-8")
    return Encoding("utf-8", "utf-8") if bad is None else _not_utf8(data, bad)


def unknown_encoding_message(name: str) -> str:
    """Why `encoding` cannot be used, and what can."""
    return (f"The encoding {quoted(name)} is not one this service knows; name a character set such as "
            "windows-1252, iso-8859-1, windows-1250, mac-roman or utf-16.")


def _checked(data: bytes, codec: str, name: str) -> Encoding:
    bad = _first_bad_byte(data, codec)
    if bad is None:
        return Encoding(codec, name)
    line = data[:bad].decode(codec, "replace").count("\n") + 1
    return Encoding(None, None, Problem(None, None, (
        f"The file is not {name}: byte 0x{data[bad]:02X} on line {line} has no meaning in it; "
        f'send the encoding it was saved in or save it as "CSV UTF-8" and upload it again.'), line))


def _first_bad_byte(data: bytes, codec: str) -> int | None:
    """Where the first byte that does not read in `codec` is, or None when every one does; decoded a
    block at a time, as lines() decodes them, so that the text is never held whole."""
    decoder = codecs.getincrementaldecoder(codec)()
    try:
        for start in range(0, len(data), _CHECK_BYTES):
            decoder.decode(data[start:start + _CHECK_BYTES])
        decoder.decode(b"", final=True)
        return None
    except UnicodeDecodeError:
        pass
    try:
        data.decode(codec)  # whole, now that it is refused: the error then names its exact byte
    except UnicodeDecodeError as exc:
        return exc.start
    raise AssertionError(f"{codec} reads the whole file but not its blocks")


def _looks_like_utf16_without_mark(data: bytes) -> bool:
    sample = data[:4096]
    return len(sample) >= 4 and sample.count(0) * 4 >= len(sample) and sample.count(0) * 4 < len(sample) * 3


def _not_utf8(data: bytes, offset: int) -> Encoding:
    line = data.count(b"\n", 0, offset) + 1
    guess = likely_encoding(data)
    if guess is None:
        advice = 'save it as "CSV UTF-8" and upload it again'
    else:
        advice = f'it looks like {_title(guess)}: send encoding={guess} with it or save it as "CSV UTF-8"'
    message = f"The file is not UTF-8 (the first bad byte is on line {line}); {advice}."
    return Encoding(None, None, Problem(None, None, message, line), suggested=guess)


def likely_encoding(data: bytes) -> str | None:
    """Return the name of the encoding bytes most likely have, to tell a person; never used to decode."""
    from charset_normalizer import from_bytes  # only refused files need it

    matches = list(from_bytes(data[:_SAMPLE_BYTES], cp_isolation=list(_PREFERRED)))
    if not matches:
        return None
    best = matches[0]
    alike = set(best.could_be_from_charset) | {best.encoding}
    if not best.multi_byte_usage:
        # A few accented letters fit most single-byte code pages equally well: of those that read
        # the sample as cleanly as the best, name the one most files are saved in.
        alike |= {name for match in matches if match.percent_chaos <= best.percent_chaos + 1.0
                  for name in match.could_be_from_charset}
    codec = next((name for name in _PREFERRED if name in alike), best.encoding)
    return _person_name(codec)


def _person_name(codec: str) -> str:
    if codec in _NAMES:
        return _NAMES[codec]
    if re.fullmatch(r"cp125\d", codec):
        return "windows-" + codec[2:]
    if codec.startswith("iso8859_"):
        return "iso-8859-" + codec[len("iso8859_"):]
    return codec.replace("_", "-")


_CAPITALS = frozenset({"iso", "utf", "euc", "koi8", "gbk", "gb18030", "jp", "kr", "jis", "cp"})


def _title(name: str) -> str:
    """Windows-1252, ISO-8859-1, Mac-Roman: an encoding's name as people write it in prose."""
    return "-".join(part.upper() if part in _CAPITALS else part.capitalize() for part in name.split("-"))


def lines(data: bytes, codec: str) -> Iterator[str]:
    """Yield the file's lines, each with its own line break (\\r\\n, \\r or \\n, as csv wants them),
    decoded a block at a time; `codec` must read every byte (encoding_of names one that does)."""
    with io.TextIOWrapper(io.BytesIO(data), encoding=codec, newline="") as stream:
        # Tools that each add a byte-order mark can stack several; all of them go, so the header stays a header.
        first = stream.readline().lstrip(BYTE_ORDER_MARK)
        if first:
            yield first
        yield from stream


def beginning(text_lines: Iterable[str], characters: int) -> str:
    """The first `characters` characters of the text these lines make."""
    parts: list[str] = []
    count = 0
    for line in text_lines:
        parts.append(line)
        count += len(line)
        if count >= characters:
            break
    return "".join(parts)[:characters]


def delimiter_of(text_lines: Iterable[str]) -> str:
    """Return the delimiter found most often outside quotes in the first non-blank line (`,` when none is)."""
    line = _QUOTED.sub("", _first_line(text_lines))
    counts = {delimiter: line.count(delimiter) for delimiter in DELIMITERS}
    best = max(DELIMITERS, key=counts.__getitem__)  # the first of equals: `,` wins a tie
    return best if counts[best] else ","


def _first_line(text_lines: Iterable[str]) -> str:
    """The first line that is not blank, with the line breaks inside its quotes (to the end of the
    file when a quote is never closed), without its own."""
    parts: list[str] = []
    quotes = 0
    for line in text_lines:
        if not parts and _BLANK_LINE.fullmatch(line):
            continue
        parts.append(line)
        quotes += line.count('"')
        # A break is outside quotes when the quotes before it pair up (a "" inside a field is a pair too).
        if quotes % 2 == 0 and line.endswith(("\n", "\r")):
            parts[-1] = line.rstrip("\r\n")  # a line holds one break, at its end
            break
    return "".join(parts)


def records(text_lines: Iterable[str], delimiter: str,
            unreadable: list[Problem]) -> Iterator[tuple[int, list[str]]]:
    """Yield (line the record starts on, its cells); on broken quoting, add a problem and stop."""
    # strict=True turns an unclosed quote into an error instead of silently eating the rest of the file;
    # skipinitialspace lets a hand-typed `A, "1 Main St, Springfield"` keep its quoted comma.
    reader = csv.reader(text_lines, delimiter=delimiter, strict=True, skipinitialspace=True)
    start_line = 1
    try:
        for cells in reader:
            yield start_line, cells
            start_line = reader.line_num + 1
    except csv.Error as exc:
        unreadable.append(_unreadable_problem(start_line, str(exc)))


def _unreadable_problem(line: int, reason: str) -> Problem:
    if "field larger than field limit" in reason:
        message = (
            f"The file cannot be read from line {line} on: a field there is longer than "
            f"{csv.field_size_limit()} characters (look for a quote that is never closed)."
        )
    else:
        message = (
            f"The file cannot be read from line {line} on: a quoted field is never closed "
            'or has text after its closing quote (write a quote inside a quoted field as "").'
        )
    return Problem(None, None, message, line)
