#!/usr/bin/env python3
"""Regenerates the fuzzers' seed corpus in tests/fuzz/corpus/ (committed; run
this only to change it). frame: the example frames of docs/protocol.md and
their bodies; cdb: typical commands in cdb_fuzzer's input layout; config:
example.toml plus small valid and invalid configs; reassembly and connection:
fixed pseudo-random inputs (their inputs are FuzzedDataProvider streams).
Kept beside them, not generated: reassembly/ and connection/placement-*,
inputs the fuzzers found that drive reply placement (each fails at once on a
reassembler that writes a forgotten destination, placement-forgotten-midway,
or places twice on one registration, placement-used-once)."""
import pathlib
import random
import re
import shutil
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fuzz/corpus"


def write(harness, name, data):
    d = OUT / harness
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def frames():
    doc = (ROOT / "docs/protocol.md").read_text()
    for name, block in re.findall(r"<!-- example:([\w-]+) -->\s*```text\n(.*?)```", doc, re.S):
        hexes = [w for line in block.splitlines() for w in line.split()[1:]]
        frame = bytes(int(h, 16) for h in hexes)
        write("frame", name, frame)
        sacks = frame[14 + 7]
        length = struct.unpack(">H", frame[14 + 32:14 + 34])[0]
        start = 14 + 5 + frame[14 + 5] + 8 * sacks
        write("frame", name + "-body", frame[start:start + length])


def cdb_record(cdb, expected=0, data=b"", ctl=0):
    return bytes([ctl]) + expected.to_bytes(3, "big") + len(data).to_bytes(2, "big") + \
        bytes([len(cdb)]) + bytes(cdb) + data


def cdbs():
    tur = [0x00] + [0] * 5
    seeds = {
        "inquiry": [tur, [0x12, 0, 0, 0, 96, 0], [0x12, 1, 0x00, 0, 255, 0],
                    [0x12, 1, 0x80, 0, 255, 0], [0x12, 1, 0x83, 0, 255, 0],
                    [0x12, 1, 0xB0, 0, 255, 0]],
        "read-write-6": [tur, [0x0A, 0, 0, 8, 2, 0], [0x08, 0, 0, 8, 2, 0]],
        "read-write-10": [tur, [0x2A, 0, 0, 0, 0, 16, 0, 0, 4, 0], [0x28, 0, 0, 0, 0, 16, 0, 0, 4, 0],
                          [0x2F, 0, 0, 0, 0, 16, 0, 0, 4, 0]],
        "read-write-16": [tur, [0x8A, 0] + [0] * 7 + [32] + [0, 0, 0, 8, 0, 0],
                          [0x88, 0] + [0] * 7 + [32] + [0, 0, 0, 8, 0, 0]],
        "mode-sense": [tur, [0x1A, 0, 0x3F, 0, 255, 0], [0x5A, 0, 0x08, 0, 0, 0, 0, 1, 0, 0],
                       [0x1A, 8, 0x0A, 0, 255, 0]],
        "report-luns": [[0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], tur],
        "capacity": [tur, [0x25] + [0] * 9, [0x9E, 0x10] + [0] * 8 + [0, 0, 0, 32, 0, 0]],
        "sense-and-sync": [tur, [0x03, 0, 0, 0, 18, 0], [0x35] + [0] * 9],
    }
    for name, list_ in seeds.items():
        body = bytes([0])
        for c in list_:
            op = c[0]
            blocks = {0x0A: 2, 0x2A: 4, 0x8A: 8}.get(op, 0)
            data = bytes((i * 7) & 0xFF for i in range(blocks * 512))
            expected = 0 if data else 4096 if op in (0x08, 0x28, 0x88, 0x9E, 0xA0, 0x25) else 255
            body += cdb_record(c, expected, data)
        write("cdb", name, body)
    # Persistent reservations across two initiators, and UNMAP with a descriptor.
    key = (0x1234).to_bytes(8, "big")
    register = cdb_record([0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0], 0, bytes(8) + key + bytes(8), 0)
    reserve = cdb_record([0x5F, 1, 0x03, 0, 0, 0, 0, 0, 24, 0], 0, key + bytes(16), 0)
    other_write = cdb_record([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], 0, bytes(512), 1)
    read_keys = cdb_record([0x5E, 0, 0, 0, 0, 0, 0, 4, 0, 0], 1024, b"", 1)
    write("cdb", "persistent-reservation", bytes([0]) + register + reserve + other_write + read_keys)
    unmap = bytes([0, 22, 0, 16, 0, 0, 0, 0]) + (8).to_bytes(8, "big") + (4).to_bytes(4, "big") + bytes(4)
    write("cdb", "unmap", bytes([0]) + cdb_record([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], 0, unmap))
    write("cdb", "4k-blocks", bytes([1]) + cdb_record([0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0], 4096))


CONFIGS = {
    "minimal.toml": '[target]\nports = ["afpacket:veth0"]\n[[lun]]\nnumber = 0\nstore = "ram:16M"\n',
    "ram-size.toml": '[target]\nname = "iqn.2026-11.org.example:t"\nports = ["pcap:eth0", "afpacket:eth1"]\n'
                     'keepalive_ms = 500\ndead_time_ms = 5000\n[[lun]]\nnumber = 3\nstore = "ram"\n'
                     'size = "1G"\nblock_size = 4096\nread_only = true\n',
    "allow.toml": '[target]\nports = ["afpacket:eth1"]\n[[lun]]\nnumber = 1\nstore = "/tmp/x.img"\n'
                  'size = 1048576\ndirect_io = true\n  [[lun.allow]]\n  initiator = "iqn.a"\n'
                  '  [[lun.allow]]\n  mac = "02:00:5e:10:00:02"\n',
    "duplicate-lun.toml": '[target]\nports = ["afpacket:eth1"]\n[[lun]]\nnumber = 0\nstore = "ram:1M"\n'
                          '[[lun]]\nnumber = 0\nstore = "ram:1M"\n',
    "bad-type.toml": '[target]\nports = "afpacket:eth1"\nkeepalive_ms = "soon"\n',
    "unknown-key.toml": '[target]\nports = ["afpacket:eth1"]\nportz = 1\n[[lun]]\nnumber = 0\nstore = "ram:1M"\n',
    "syntax-error.toml": '[target\nports = [\n',
    "lun-flag": "0=ram:64M",
}


def configs():
    shutil.copy(ROOT / "target/daemon/example.toml", OUT / "config" / "example.toml")
    for name, text in CONFIGS.items():
        write("config", name, text)


def streams():
    rng = random.Random(0x5EED)
    for harness in ("reassembly", "connection"):
        for i in range(6):
            write(harness, f"random-{i}", bytes(rng.randrange(256) for _ in range(256 << (i % 3))))


if __name__ == "__main__":
    (OUT / "config").mkdir(parents=True, exist_ok=True)
    frames()
    cdbs()
    configs()
    streams()
