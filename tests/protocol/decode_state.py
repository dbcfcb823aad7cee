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
        return {"x": self.u16le(), "y": self.u16le(), "heading": self.u8(),
                "action": self.u8(), "mount": self.u8()}


def decode(data):
    r = Reader(data)
    if r.u8() != 1:
        raise Short("not a state packet")
    p = {"scene": r.u32le(), "epoch": r.varint(), "tick": r.u32le(), "ack": r.varint()}
    p["you"] = {"id": r.varint(), "q": r.q()} if r.u8() == 1 else None
    p["leaves"] = [r.varint() for _ in range(r.varint())]
    p["enters"] = [{"id": r.varint(), "kind": r.u8(), "figure": r.varint(), "q": r.q()}
                   for _ in range(r.varint())]
    p["updates"] = [{"id": r.varint(), "q": r.q()} for _ in range(r.varint())]
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
