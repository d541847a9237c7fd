#!/usr/bin/env python3
"""Ask one Kafka broker for cluster metadata and print the broker ids it lists.

Usage: kafka_metadata_probe.py HOST:PORT

Sends a Metadata request, version 1, asking for all topics, and prints each broker's
node_id on its own line; exits 0. On any error (connection refused, timeout, short or
malformed response) prints the error to stderr and exits 1. Standard library only.

Wire format (all integers big-endian):
  request  = int32 size, then
             header v1: int16 api_key=3, int16 api_version=1, int32 correlation_id,
                        nullable string client_id (int16 length + bytes)
             body:      topics array = int32 -1 (null: all topics)
  response = int32 size, then int32 correlation_id,
             brokers: int32 count, each: int32 node_id, string host (int16 length + bytes),
                      int32 port, nullable string rack (int16 length, -1 = null)
             (the rest of the response, controller id and topics, is not read)
"""

import socket
import struct
import sys

TIMEOUT_S = 2.0
CORRELATION_ID = 0x70726F62  # "prob"
CLIENT_ID = b"probe"


def build_request():
    """Returns the size-prefixed Metadata v1 request for all topics."""
    header = struct.pack(">hhih", 3, 1, CORRELATION_ID, len(CLIENT_ID)) + CLIENT_ID
    body = struct.pack(">i", -1)
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def recv_exact(sock, n):
    """Reads exactly n bytes or raises."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


class Reader:
    """Sequential big-endian decoder over a response buffer."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError("response truncated at byte %d" % self.pos)
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self, nullable=False):
        length = self.take(">h")
        if length < 0:
            if nullable:
                return None
            raise ValueError("null string where one is required at byte %d" % self.pos)
        if self.pos + length > len(self.data):
            raise ValueError("string runs past the response at byte %d" % self.pos)
        value = self.data[self.pos:self.pos + length].decode("utf-8", "replace")
        self.pos += length
        return value


def broker_ids(host, port):
    """Sends the request and returns the broker node ids from the response."""
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        sock.settimeout(TIMEOUT_S)
        sock.sendall(build_request())
        (size,) = struct.unpack(">i", recv_exact(sock, 4))
        if size < 8 or size > 64 << 20:
            raise ValueError("implausible response size %d" % size)
        reader = Reader(recv_exact(sock, size))
    correlation_id = reader.take(">i")
    if correlation_id != CORRELATION_ID:
        raise ValueError("correlation id %d, expected %d" % (correlation_id, CORRELATION_ID))
    count = reader.take(">i")
    if count < 0:
        raise ValueError("negative broker count %d" % count)
    ids = []
    for _ in range(count):
        ids.append(reader.take(">i"))
        reader.string()  # host
        reader.take(">i")  # port
        reader.string(nullable=True)  # rack
    return ids


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print("usage: %s HOST:PORT" % argv[0], file=sys.stderr)
        return 2 if len(argv) != 2 else 0
    try:
        host, sep, port = argv[1].rpartition(":")
        if not sep or not host:
            raise ValueError("expected HOST:PORT, got %r" % argv[1])
        for node_id in broker_ids(host.strip("[]"), int(port)):
            print(node_id)
    except Exception as err:  # any failure is reported the same way
        print("kafka_metadata_probe: %s: %s: %s" % (argv[1], type(err).__name__, err), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
