"""A chunk of log lines read as numpy columns: no Python work per line for lines in the usual shape.

Each line's fields are found at byte offsets computed for all lines at once (line ends, the first
space, digit runs), read through fixed-width windows of the chunk's bytes, and keys (an address,
an endpoint) are grouped by a hash, a sort and an exact check that each group holds one key only.
Lines that are not in the strict shape (junk, JSON, fractional times, very long fields) are
returned to the caller, which judges them one by one as before: results are the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Bytes2D = npt.NDArray[np.uint8]
Words = npt.NDArray[np.uint64]

PAD = 256  # zero bytes after the chunk, so every window read near its end stays in the buffer
NEWLINE, SPACE, QUOTE, QMARK = 10, 32, 34, 63
DASHES = int.from_bytes(b" - - ", "little")
FIVE_BYTES = (1 << 40) - 1
SPACE_QUOTE = int.from_bytes(b' "', "little")
ADDRESS_WIDTHS = (16, 48)  # an IPv4 address fits the first window, IPv6 the second
DIGITS = 16  # an epoch or a number of milliseconds of 16 digits or more goes the slow way
EPOCH_DIGITS = 11  # a longer epoch (past the year 5138) goes the slow way, which judges it
METHOD_WIDTH = 8  # a longer method goes the slow way
ENDPOINT_WIDTH = 48  # so does an endpoint (method, space, path) as long or longer
CLOSING_WIDTH = 24  # the request's closing quote is looked for this far after the path, then further
_MIX = np.uint64(0x9E3779B97F4A7C15)
_ODD_SPACES = (b"\t", b"\x0b", b"\x0c", b"\r")  # whitespace to `\S` besides the space


class ChunkLines:
    """The lines of a chunk of whole lines (ending in a newline) as start and end offsets."""

    def __init__(self, chunk: bytes) -> None:
        self.size = len(chunk)
        self._padded = chunk + bytes(PAD)
        self.buf: Bytes2D = np.frombuffer(self._padded, np.uint8)
        self.ends: Ints = np.flatnonzero(self.buf[: self.size] == NEWLINE)
        self.starts: Ints = np.concatenate((np.zeros(1, np.int64), self.ends[:-1] + 1))
        self.odd_spaces = any(space in chunk for space in _ODD_SPACES)
        self._quotes: Ints | None = None

    def __len__(self) -> int:
        return len(self.ends)

    def line(self, index: int) -> bytes:
        return self._padded[int(self.starts[index]) : int(self.ends[index])]

    def pair(self, at: Ints) -> npt.NDArray[np.uint16]:
        """The two bytes at each offset, as a little-endian number."""
        view = np.ndarray((self.size + 1,), "<u2", self._padded, 0, (1,))
        return view[np.minimum(at, self.size)]

    def window(self, at: Ints, width: int) -> Bytes2D:
        """`width` bytes from each offset, one row per offset (zeros past the chunk's end)."""
        view = np.ndarray((self.size + 1,), f"V{width}", self._padded, 0, (1,))
        return view[np.minimum(at, self.size)].view(np.uint8).reshape(-1, width)

    def quotes(self) -> Ints:
        """Offsets of every double quote, then one past the chunk (so a search always lands)."""
        if self._quotes is None:
            found = np.flatnonzero(self.buf[: self.size] == QUOTE).astype(np.int64)
            self._quotes = np.append(found, self.size + 1)
        return self._quotes


def number(window: Bytes2D, length: Ints) -> Ints:
    """The decimal number in each row's first `length` bytes (all digits)."""
    if not len(length):
        return np.zeros(0, np.int64)
    longest = int(length.max())
    if longest == int(length.min()):  # the usual case: all as long (epochs, statuses)
        # In floating point (BLAS), exact below 2**53: DIGITS keeps numbers under 10**15.
        powers = 10.0 ** np.arange(longest - 1, -1, -1)
        return ((window[:, :longest] - 48).astype(np.float64) @ powers).astype(np.int64)
    value = np.zeros(len(window), np.int64)
    for column in range(longest):  # Horner's rule, a column at a time
        digit = window[:, column].astype(np.int64) - 48
        value = np.where(column < length, value * 10 + digit, value)
    return value


@dataclass
class AccessPart:
    """Lines of the access-log shape `<address> - - <epoch> "…`, whose address fits `head`."""

    index: Ints  # line numbers in the chunk
    head: Bytes2D  # the line's first bytes
    address_length: Ints
    epoch: Bytes2D  # a window starting at the epoch's first digit
    epoch_length: Ints
    quote: Ints  # offset of the quote that opens the request


def leading_address(lines: ChunkLines, todo: Ints, width: int) -> tuple[Bytes2D, Ints, Ints, Bools]:
    """One width's pass over the lines `todo`: their first `width` bytes, the address's length (up
    to the first space; 0 when there is none within the width), where it ends, and whether it is a
    plain address (a space within the line, no other white space before it)."""
    every = len(todo) == len(lines)  # the first pass: no gathering of offsets
    starts, ends = (lines.starts, lines.ends) if every else (lines.starts[todo], lines.ends[todo])
    head = lines.window(starts, width)
    length = (head == SPACE).argmax(axis=1)  # 0 when there is none
    address_end = starts + length
    ok = (length > 0) & (address_end < ends)
    if lines.odd_spaces:
        odd = (head == 9) | ((head >= 11) & (head <= 13))
        ok &= ~(odd & (np.arange(width) < length[:, None])).any(axis=1)
    return head, length, address_end, ok


def access_parts(lines: ChunkLines) -> list[AccessPart]:
    """The lines in the strict access shape, by address width; other lines are in none."""
    parts: list[AccessPart] = []
    todo = np.arange(len(lines), dtype=np.int64)
    for width in ADDRESS_WIDTHS:
        if not len(todo):
            break
        head, length, address_end, ok = leading_address(lines, todo, width)
        dashes = lines.window(address_end, 8).view("<u8")[:, 0] & np.uint64(FIVE_BYTES)
        ok &= dashes == np.uint64(DASHES)
        epoch = lines.window(address_end + 5, DIGITS)
        run = ((epoch - 48) < 10).argmin(axis=1)  # the first non-digit; 0 when all are digits
        ok &= (run >= 1) & (run <= EPOCH_DIGITS) & (lines.pair(address_end + 5 + run) == SPACE_QUOTE)
        chosen = slice(None) if ok.all() else np.flatnonzero(ok)  # no copies in the usual case
        parts.append(
            AccessPart(
                index=todo[chosen],
                head=head[chosen],
                address_length=length[chosen],
                epoch=epoch[chosen],
                epoch_length=run[chosen],
                quote=(address_end + 5 + run + 1)[chosen],
            )
        )
        todo = todo[(length == 0) & (head[:, 0] != SPACE)]  # no space within this width: try wider
    return parts


def leftover(lines: ChunkLines, handled: list[Ints]) -> Ints:
    """Line numbers of the chunk handled by none of the fast parts, in order."""
    done = np.zeros(len(lines), np.bool_)
    for index in handled:
        done[index] = True
    return np.flatnonzero(~done)


def _word_masks(width: int) -> Words:
    """Row n: the 64-bit words that keep a window's first n bytes and zero the rest."""
    keep = (np.arange(width)[None, :] < np.arange(width + 1)[:, None]).astype(np.uint8) * 255
    return np.ascontiguousarray(keep).view("<u8")


_WORD_MASKS = {width: _word_masks(width) for width in (8, 16, 24, 32, 40, 48)}


def masked_words(window: Bytes2D, length: Ints) -> Words:
    """Each row's first `length` bytes, zero after, as little-endian 64-bit words."""
    width = window.shape[1]
    masks = _WORD_MASKS.get(width)
    if masks is None:
        masks = _WORD_MASKS[width] = _word_masks(width)
    return np.ascontiguousarray(window).view("<u8") & masks[np.minimum(length, width)]


def group(columns: list[npt.NDArray[np.uint64] | Ints]) -> tuple[Ints, Ints]:
    """Rows with equal values in every column, grouped: (one row of each group, its size).

    Hash, sort by hash, then check every row against its group's first row; a hash collision
    (never seen, but possible) falls back to an exact lexicographic sort."""
    keys = [np.asarray(c).astype(np.uint64, copy=False) for c in columns]
    if not len(keys[0]):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    hashed = np.zeros(len(keys[0]), np.uint64)
    for key in keys:
        hashed = (hashed ^ key) * _MIX
        hashed ^= hashed >> np.uint64(29)
    order = np.argsort(hashed)
    sorted_hash = hashed[order]
    new = np.concatenate(([True], sorted_hash[1:] != sorted_hash[:-1]))
    if not all(_same_within(key[order], new) for key in keys):
        order = np.lexsort(keys[::-1])
        new = np.concatenate(([True], np.zeros(len(order) - 1, np.bool_)))
        for key in keys:
            ordered = key[order]
            new[1:] |= ordered[1:] != ordered[:-1]
    begins = np.flatnonzero(new)
    sizes = np.diff(np.append(begins, len(order)))
    return order[begins].astype(np.int64), sizes.astype(np.int64)


def _same_within(ordered: Words, new: Bools) -> bool:
    """Whether each row not starting a group equals the row before it."""
    return bool(((ordered[1:] == ordered[:-1]) | new[1:]).all())


@dataclass
class Requests:
    """The request fields of access lines in the strict shape: `"<METHOD> <path>…" <status> <ms>`.

    The endpoint is the method, a space and the path up to '?', ' ' or '"': the bytes right after
    the opening quote, so it is read (and grouped) as one window."""

    index: Ints  # line numbers in the chunk
    endpoint: Bytes2D  # a window starting at the method
    endpoint_length: Ints
    status: Ints
    ms: Ints

    def endpoints(self, rows: Ints) -> list[bytes]:
        """The endpoints of these rows, as bytes."""
        return cut_rows(self.endpoint[rows], self.endpoint_length[rows])

    def endpoint_words(self) -> Words:
        """Each endpoint as 64-bit words, zero after its end, as many words as the longest needs."""
        longest = int(self.endpoint_length.max()) if len(self.endpoint_length) else 0
        words = -(-longest // 8) or 1
        return masked_words(self.endpoint[:, : words * 8], self.endpoint_length)


def cut_rows(window: Bytes2D, length: Ints) -> list[bytes]:
    """Each row's first `length` bytes, as bytes (one copy of the block, then slices of it)."""
    block, width = window.tobytes(), window.shape[1]
    return [block[at : at + n] for at, n in zip(range(0, len(block), width), length.tolist(), strict=True)]


def _closing_quotes(lines: ChunkLines, after: Ints) -> Ints:
    """Offset of the first double quote at or after each offset (one past the chunk if none)."""
    near = lines.window(after, CLOSING_WIDTH) == QUOTE
    found = near.argmax(axis=1)
    closing: Ints = after + found
    far = np.flatnonzero(~near[np.arange(len(found)), found])
    if len(far):
        quotes = lines.quotes()
        closing[far] = quotes[np.searchsorted(quotes, after[far])]
    return closing


def requests(lines: ChunkLines, part: AccessPart) -> Requests:
    """The lines of `part` whose request, status and milliseconds are in the strict shape."""
    endpoint = lines.window(part.quote + 1, ENDPOINT_WIDTH)
    rows = np.arange(len(endpoint))
    method_end = ((endpoint[:, :METHOD_WIDTH] - 65) >= 26).argmax(axis=1)  # the first byte not in A-Z
    ok = (method_end > 0) & (endpoint[rows, method_end] == SPACE)
    # `[^ ?"]*` ends at ' ', '"', '?' (or the line's end); before the method's space are only A-Z
    stop = ((endpoint | 2) == 34) | (endpoint == QMARK) | (endpoint == NEWLINE)
    stop[rows, method_end] = False
    length = stop.argmax(axis=1)  # 0 when the path runs past the window
    ok &= length > 0
    closing = _closing_quotes(lines, part.quote + 1 + length)
    ok &= closing < lines.ends[part.index]
    tail = lines.window(closing, 6 + DIGITS)
    digits = (tail - 48) < 10
    ok &= (tail[:, 1] == SPACE) & digits[:, 2:5].all(axis=1) & (tail[:, 5] == SPACE)
    ms_length = digits[:, 6:].argmin(axis=1)  # 0 when there is no digit, or only digits
    ok &= ms_length > 0
    chosen = slice(None) if ok.all() else np.flatnonzero(ok)
    tail = tail[chosen]
    return Requests(
        index=part.index[chosen],
        endpoint=endpoint[chosen],
        endpoint_length=length[chosen],
        status=number(tail[:, 2:5], np.full(len(tail), 3)),
        ms=number(tail[:, 6:], ms_length[chosen]),
    )


_ISO_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9])


def iso_lines(lines: ChunkLines) -> tuple[int, Ints]:
    """How many lines are in the auth shape `<address> YYYY-MM-DDT…` (`\\S+ \\d{4}-\\d\\d-\\d\\dT`),
    and the line numbers left to judge one by one (an address longer than the widest window)."""
    shaped = 0
    todo = np.arange(len(lines), dtype=np.int64)
    for width in ADDRESS_WIDTHS:
        if not len(todo):
            break
        head, length, address_end, ok = leading_address(lines, todo, width)
        date = lines.window(address_end + 1, 16)
        ok &= ((date[:, _ISO_DIGITS] - 48) < 10).all(axis=1)
        ok &= (date[:, 4] == ord("-")) & (date[:, 7] == ord("-")) & (date[:, 10] == ord("T"))
        shaped += int(ok.sum())
        todo = todo[(length == 0) & (head[:, 0] != SPACE)]
    return shaped, todo


LEVELS = (b"DEBUG", b"INFO", b"WARNING", b"ERROR", b"CRITICAL")
_TIME_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
TIME_RUN = 40  # how far the rest of a time (`\S*`: fractions, a zone) is looked for its end
_LEVEL_WORDS = [
    (int.from_bytes((level + b" ")[:8].ljust(8, b"\0"), "little"), min(len(level) + 1, 8)) for level in LEVELS
]


@dataclass
class LevelLines:
    """Lines of the error-log shape `YYYY-MM-DD[T ]HH:MM:SS\\S* <LEVEL> <message>`."""

    index: Ints  # line numbers in the chunk
    level: Ints  # index in LEVELS
    message: Ints  # offset of the message's first byte (the message runs to the line's end)


def level_lines(lines: ChunkLines) -> LevelLines:
    """The lines in the strict error-log shape; the others are left to be judged one by one."""
    head = lines.window(lines.starts, 19)
    ok = ((head[:, _TIME_DIGITS] - 48) < 10).all(axis=1)
    ok &= (head[:, 4] == ord("-")) & (head[:, 7] == ord("-")) & (head[:, 13] == ord(":"))
    ok &= ((head[:, 10] == ord("T")) | (head[:, 10] == SPACE)) & (head[:, 16] == ord(":"))
    index = np.flatnonzero(ok)
    rest_at = lines.starts[index] + 19
    rest = lines.window(rest_at, TIME_RUN)
    white = (rest == SPACE) | ((rest >= 9) & (rest <= 13))  # `\s` in a bytes pattern
    run = white.argmax(axis=1)
    ok = rest[np.arange(len(run)), run] == SPACE  # the time ends at a space (within the window)
    level_at = rest_at + run + 1
    words = lines.window(level_at, 16).view("<u8")
    level = np.full(len(index), -1, np.int64)
    for code, (word, size) in enumerate(_LEVEL_WORDS):
        mask = np.uint64((1 << (8 * size)) - 1)
        same = (words[:, 0] & mask) == np.uint64(word)
        if len(LEVELS[code]) + 1 > 8:  # "CRITICAL " spills into the second word
            same &= (words[:, 1] & np.uint64(0xFF)) == np.uint64(SPACE)
        level[same] = code
    ok &= level >= 0
    chosen = np.flatnonzero(ok)
    lengths = np.array([len(level) + 1 for level in LEVELS], np.int64)
    return LevelLines(
        index=index[chosen],
        level=level[chosen],
        message=level_at[chosen] + lengths[level[chosen]],
    )
