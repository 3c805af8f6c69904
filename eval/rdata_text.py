"""Extract the character vectors of an R lazy-load data base (data/Rdata.rdb + .rdx) as text.

Used by stage_text.sh to read the novels that Debian's r-cran-janeaustenr ships, without R.
Only the parts of R's serialization format (XDR, version 2 or 3) that such a data base uses
are decoded: character vectors, lists, pairlists, symbols, references, numbers.

    python3 eval/rdata_text.py DATA_DIR OUT_DIR    # writes OUT_DIR/<name>.txt for each vector
"""
import gzip
import os
import struct
import sys
import zlib

NILVALUE, REFSXP = 254, 255
SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = 1, 2, 9, 10, 13, 14, 16, 19


class Reader:
    def __init__(self, data):
        self.data, self.pos, self.refs = data, 0, []

    def int(self):
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return v

    def bytes(self, n):
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def header(self):
        assert self.bytes(2) == b"X\n", "only the XDR format is supported"
        version = self.int()
        self.int(), self.int()  # writer and minimal reader versions
        if version == 3:
            self.bytes(self.int())  # native encoding name

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == NILVALUE:
            return None
        if kind == REFSXP:
            return self.refs[(flags >> 8) - 1]
        if kind == SYMSXP:
            name = self.item()  # a CHARSXP
            self.refs.append(name)
            return name
        if kind == LISTSXP:  # pairlist: attributes? tag? car, cdr
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            car = self.item()
            cdr = self.item()
            return [(tag, car)] + (cdr or [])
        if kind == CHARSXP:
            n = self.int()
            return None if n == -1 else self.bytes(n).decode("utf-8", "replace")
        n = self.int()
        if kind == STRSXP or kind == VECSXP:
            value = [self.item() for _ in range(n)]
        elif kind in (LGLSXP, INTSXP):
            value = list(struct.unpack_from(">%di" % n, self.data, self.pos))
            self.pos += 4 * n
        elif kind == REALSXP:
            value = list(struct.unpack_from(">%dd" % n, self.data, self.pos))
            self.pos += 8 * n
        else:
            raise ValueError("unsupported R type %d" % kind)
        if has_attr:
            attrs = dict(self.item())
            if "names" in attrs and kind == VECSXP:
                value = dict(zip(attrs["names"], value))
        return value


def unserialize(raw):
    r = Reader(raw)
    r.header()
    return r.item()


def read_rdb(data_dir):
    """Returns {name: value} for every object of DATA_DIR/Rdata.rdb."""
    index = unserialize(gzip.decompress(open(os.path.join(data_dir, "Rdata.rdx"), "rb").read()))
    blob = open(os.path.join(data_dir, "Rdata.rdb"), "rb").read()
    out = {}
    for name, (offset, length) in index["variables"].items():
        chunk = blob[int(offset):int(offset) + int(length)]
        # 4-byte big-endian uncompressed length, then a zlib stream
        out[name] = unserialize(zlib.decompress(chunk[4:]))
    return out


if __name__ == "__main__":
    data_dir, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    for name, value in sorted(read_rdb(data_dir).items()):
        if isinstance(value, list) and all(isinstance(s, str) or s is None for s in value):
            path = os.path.join(out_dir, name + ".txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(s or "" for s in value) + "\n")
            print("%-20s %8d lines -> %s" % (name, len(value), path))
