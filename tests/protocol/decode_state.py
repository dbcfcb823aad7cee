#!/usr/bin/env python3
"""An independent decoder of Tessera's state packet, written from
docs/protocol.md section 5 alone. Reads one hex packet per line on stdin,
prints one JSON object per line (or {"error": ...})."""
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


def decode(data):
    r = Reader(data)
    if r.u8() != 1:
        raise Short("not a state packet")
    p = {"scene": r.u32le(), "epoch": r.varint(), "tick": r.u32le(), "ack": r.varint()}
    p["you"] = {"id": r.varint(), "q": r.q()} if r.u8() == 1 else None
    p["leaves"] = r.ids(r.varint(), lambda i: i)
    p["enters"] = r.ids(r.varint(), lambda i: {"id": i, "kind": r.u8(), "figure": r.varint(),
                                               "q": r.q()})
    p["updates"] = r.ids(r.varint(), lambda i: {"id": i, "q": r.q()})
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
