#!/usr/bin/env python3
"""An independent decoder of Tessera's state packet, written from
docs/protocol.md sections 5 and 7 alone. Reads one hex packet per line on
stdin, prints one JSON object per line (or {"error": ...}). For a game that
replicates components, argv[1] is their widths ("2,1,1") and argv[2] the
mask of the public ones."""
import json
import struct
import sys


class Short(Exception):
    pass


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise Short("packet ends early")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16le(self):
        return struct.unpack("<H", self.take(2))[0]

    def u32le(self):
        return struct.unpack("<I", self.take(4))[0]

    def varint(self):
        value, shift = 0, 0
        for _ in range(10):
            b = self.u8()
            value |= (b & 0x7F) << shift
            shift += 7
            if b & 0x80 == 0:
                return value
        raise Short("varint too long")

    def q(self):
        q = {"x": self.u16le(), "y": self.u16le(), "heading": self.u8()}
        pose = self.u8()
        if pose < 0x80:
            q["action"], q["mount"] = pose & 0x0F, pose >> 4
        elif pose == 0x80:
            q["action"], q["mount"] = self.u8(), self.u8()
        else:
            raise Short("bad pose byte")
        return q

    def ids(self, n, item):
        """n items whose ids go as differences from the previous one."""
        out, prev = [], 0
        for _ in range(n):
            prev = (prev + self.varint()) & 0xFFFFFFFF
            out.append(item(prev))
        return out


WIDTHS = [int(w) for w in sys.argv[1].split(",")] if len(sys.argv) > 1 else []
PUBLIC = int(sys.argv[2]) if len(sys.argv) > 2 else 0
ALL = (1 << len(WIDTHS)) - 1


def bits(mask):
    return [i for i in range(32) if mask >> i & 1]


def block(r, allowed):
    """A game block (section 7): carried, then present and the fields."""
    carried = r.varint()
    if carried & ~allowed:
        raise Short("component not allowed here")
    if carried == 0:
        return {"carried": 0, "present": 0, "bytes": []}
    present = r.varint()
    if present & ~carried:
        raise Short("present but not carried")
    data = list(r.take(sum(WIDTHS[i] for i in bits(present))))
    return {"carried": carried, "present": present, "bytes": data}


def decode(data):
    r = Reader(data)
    game = bool(WIDTHS)
    if r.u8() != 1:
        raise Short("not a state packet")
    p = {"scene": r.u32le(), "epoch": r.varint(), "tick": r.u32le(), "ack": r.varint()}
    p["you"], p["you_game"] = None, None
    if r.u8() == 1:
        p["you"] = {"id": r.varint(), "q": r.q()}
        if game:
            p["you_game"] = block(r, ALL)
    p["leaves"] = r.ids(r.varint(), lambda i: i)
    p["enter_game"], p["update_game"] = [], []

    def enter(i):
        e = {"id": i, "kind": r.u8(), "figure": r.varint(), "q": r.q()}
        if game:
            p["enter_game"].append(block(r, PUBLIC))
        return e

    def update(i):
        u = {"id": i, "q": r.q()}
        if game:
            p["update_game"].append(block(r, PUBLIC))
        return u

    p["enters"] = r.ids(r.varint(), enter)
    p["updates"] = r.ids(r.varint(), update)
    if r.pos != len(data):
        raise Short("trailing bytes")
    return p


for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    try:
        print(json.dumps(decode(bytes.fromhex(line))))
    except Short as e:
        print(json.dumps({"error": str(e)}))
