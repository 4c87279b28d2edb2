#!/usr/bin/env python3
"""RFC 9113's rules checked against an HTTP/2 server from outside: raw frames written
and read with the python-h2 project's codecs (hyperframe, hpack; Debian's python3-h2),
not tether's. Each check names the clause. Exits 1 if any fails.

usage: h2edge.py HOST PORT   (the server must route / to a pod answering 200)"""
import socket, struct, sys, time
from hyperframe.frame import (Frame, HeadersFrame, DataFrame, SettingsFrame, PingFrame,
    WindowUpdateFrame, RstStreamFrame, ContinuationFrame, GoAwayFrame)
from hpack import Encoder, Decoder

HOST, PORT = sys.argv[1], int(sys.argv[2])
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CODES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
         5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL",
         9: "COMPRESSION_ERROR", 11: "ENHANCE_YOUR_CALM"}

def raw(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

class Conn:
    def __init__(self):
        self.s = socket.create_connection((HOST, PORT), timeout=3)
        self.enc = Encoder()
        self.dec = Decoder()
        self.buf = b""
        self.s.sendall(PREFACE + SettingsFrame(0).serialize())
    def send(self, data):
        try:
            self.s.sendall(data)
        except OSError:
            pass
    def hdrs(self, stream, fields, end_stream=True, end_headers=True):
        f = HeadersFrame(stream)
        f.data = self.enc.encode(fields)
        f.flags.add("END_HEADERS") if end_headers else None
        if end_stream:
            f.flags.add("END_STREAM")
        self.send(f.serialize())
    def frames(self, until=None, timeout=2.0):
        """Frames until `until(frame)` is true, the peer closes, or the time is up."""
        out = []
        end = time.time() + timeout
        while time.time() < end:
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
                f.parse_body(memoryview(self.buf[9:9 + n]))
                self.buf = self.buf[9 + n:]
                if isinstance(f, (HeadersFrame, ContinuationFrame)):
                    try:
                        f.decoded = self.dec.decode(bytes(f.data))
                    except Exception as e:
                        f.decoded = f"undecodable: {e}"
                out.append(f)
                if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                    self.send(SettingsFrame(0, flags=["ACK"]).serialize())
                if until and until(f):
                    return out
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not data:
                out.append("EOF")
                return out
            self.buf += data
        return out

def req(path="/", extra=(), method="GET"):
    return [(":method", method), (":scheme", "http"), (":authority", "localhost"), (":path", path)] + list(extra)

def goaway(fs):
    g = [f for f in fs if isinstance(f, GoAwayFrame)]
    return CODES.get(g[-1].error_code, g[-1].error_code) if g else None

def rst(fs, stream):
    r = [f for f in fs if isinstance(f, RstStreamFrame) and f.stream_id == stream]
    return CODES.get(r[0].error_code, r[0].error_code) if r else None

def status(fs, stream):
    for f in fs:
        if isinstance(f, HeadersFrame) and f.stream_id == stream and isinstance(f.decoded, list):
            for k, v in f.decoded:
                if k == ":status":
                    return v
    return None

results = []
def check(name, ok, got):
    results.append(ok)
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else f"  (got {got})"))

def is_goaway(f): return isinstance(f, GoAwayFrame)
def ends(stream):
    return lambda f: (isinstance(f, (DataFrame, HeadersFrame)) and f.stream_id == stream and "END_STREAM" in f.flags) or (isinstance(f, RstStreamFrame) and f.stream_id == stream) or isinstance(f, GoAwayFrame)

# 1 baseline
c = Conn(); c.hdrs(1, req()); fs = c.frames(ends(1))
check("GET is answered 200", status(fs, 1) == "200", [type(f).__name__ for f in fs])
# after it, a second stream on the same connection
c.hdrs(3, req()); fs = c.frames(ends(3))
check("a second stream is answered", status(fs, 3) == "200", status(fs, 3))

# 2 even stream id
c = Conn(); c.hdrs(2, req()); fs = c.frames(is_goaway)
check("HEADERS on an even stream: GOAWAY PROTOCOL_ERROR (5.1.1)", goaway(fs) == "PROTOCOL_ERROR", goaway(fs))

# 3 uppercase name -> stream error, connection lives
c = Conn(); c.hdrs(1, req(extra=[("X-Upper", "a")])); fs = c.frames(ends(1))
check("uppercase field name: RST PROTOCOL_ERROR (8.2.1)", rst(fs, 1) == "PROTOCOL_ERROR", fs)
c.hdrs(3, req()); fs = c.frames(ends(3))
check("...and the connection goes on", status(fs, 3) == "200", fs)

# 4 connection-specific
for name, value in [("connection", "keep-alive"), ("keep-alive", "5"), ("transfer-encoding", "chunked"), ("upgrade", "h2c"), ("te", "gzip"), ("proxy-connection", "x")]:
    c = Conn(); c.hdrs(1, req(extra=[(name, value)])); fs = c.frames(ends(1))
    check(f"{name}: RST PROTOCOL_ERROR (8.2.2)", rst(fs, 1) == "PROTOCOL_ERROR", fs)
c = Conn(); c.hdrs(1, req(extra=[("te", "trailers")])); fs = c.frames(ends(1))
check("te: trailers is allowed", status(fs, 1) == "200", fs)

# 5 DATA on idle stream
c = Conn(); c.send(raw(0, 1, 5, b"hi")); fs = c.frames(is_goaway)
check("DATA on an idle stream: GOAWAY PROTOCOL_ERROR (5.1)", goaway(fs) == "PROTOCOL_ERROR", goaway(fs))

# 6 WINDOW_UPDATE 0 on connection
c = Conn(); c.send(raw(8, 0, 0, struct.pack(">I", 0))); fs = c.frames(is_goaway)
check("WINDOW_UPDATE 0 on stream 0: GOAWAY PROTOCOL_ERROR (6.9)", goaway(fs) == "PROTOCOL_ERROR", goaway(fs))

# 7 window overflow
c = Conn(); c.send(raw(8, 0, 0, struct.pack(">I", 2**31 - 1))); fs = c.frames(is_goaway)
check("connection window past 2^31-1: GOAWAY FLOW_CONTROL_ERROR (6.9.1)", goaway(fs) == "FLOW_CONTROL_ERROR", goaway(fs))

# 8 settings initial window too large
c = Conn(); c.send(raw(4, 0, 0, struct.pack(">HI", 4, 2**31))); fs = c.frames(is_goaway)
check("SETTINGS_INITIAL_WINDOW_SIZE 2^31: GOAWAY FLOW_CONTROL_ERROR (6.5.2)", goaway(fs) == "FLOW_CONTROL_ERROR", goaway(fs))

# 9 CONTINUATION without HEADERS
c = Conn(); c.send(raw(9, 4, 1, c.enc.encode(req()))); fs = c.frames(is_goaway)
check("CONTINUATION without HEADERS: GOAWAY PROTOCOL_ERROR (6.10)", goaway(fs) == "PROTOCOL_ERROR", goaway(fs))

# 10 HEADERS without END_HEADERS then PING
c = Conn(); c.hdrs(1, req(), end_headers=False); c.send(raw(6, 0, 0, b"12345678")); fs = c.frames(is_goaway)
check("a frame inside a header block: GOAWAY PROTOCOL_ERROR (6.10)", goaway(fs) == "PROTOCOL_ERROR", goaway(fs))

# 10b HEADERS split across CONTINUATION works
c = Conn(); block = c.enc.encode(req()); c.send(raw(1, 1, 1, block[:3]) + raw(9, 4, 1, block[3:])); fs = c.frames(ends(1))
check("HEADERS + CONTINUATION is answered", status(fs, 1) == "200", fs)

# 11 frame too large
c = Conn(); c.send(raw(0, 0, 1, b"x" * 16385)); fs = c.frames(is_goaway)
check("a 16385-byte frame: GOAWAY FRAME_SIZE_ERROR (4.2)", goaway(fs) == "FRAME_SIZE_ERROR", goaway(fs))

# 12 content-length mismatch
c = Conn(); c.hdrs(1, req(method="POST", extra=[("content-length", "5")]), end_stream=False); c.send(raw(0, 1, 1, b"abc")); fs = c.frames(ends(1))
check("content-length 5, 3 bytes sent: RST PROTOCOL_ERROR (8.1.1)", rst(fs, 1) == "PROTOCOL_ERROR", fs)
c = Conn(); c.hdrs(1, req(method="POST", extra=[("content-length", "2")]), end_stream=False); c.send(raw(0, 1, 1, b"abc")); fs = c.frames(ends(1))
check("content-length 2, 3 bytes sent: RST PROTOCOL_ERROR (8.1.1)", rst(fs, 1) == "PROTOCOL_ERROR", fs)
c = Conn(); c.hdrs(1, req(method="POST", extra=[("content-length", "3")]), end_stream=False); c.send(raw(0, 1, 1, b"abc")); fs = c.frames(ends(1))
check("content-length 3, 3 bytes sent: answered", status(fs, 1) == "200", fs)

# 13 PING echoed
c = Conn(); c.send(raw(6, 0, 0, b"abcdefgh")); fs = c.frames(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags)
p = [f for f in fs if isinstance(f, PingFrame) and "ACK" in f.flags]
check("PING is answered with its payload (6.7)", bool(p) and bytes(p[0].opaque_data) == b"abcdefgh", fs)

# 14 bad HPACK
c = Conn(); c.send(raw(1, 5, 1, b"\x80")); fs = c.frames(is_goaway)
check("HPACK index 0: GOAWAY COMPRESSION_ERROR (4.3)", goaway(fs) == "COMPRESSION_ERROR", goaway(fs))

# 15 pseudo after regular; missing :path; unknown pseudo; duplicated :path
cases = [("a pseudo-field after a regular one", [(":method", "GET"), (":scheme", "http"), ("x", "y"), (":path", "/")]),
         ("no :path", [(":method", "GET"), (":scheme", "http"), (":authority", "a")]),
         ("an unknown pseudo-field", req(extra=[(":foo", "bar")])),
         ("two :path", req(extra=[(":path", "/x")])),
         ("empty :path", [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "")]),
         ("a value with a leading space", req(extra=[("x", " y")]))]
for name, fields in cases:
    c = Conn(); c.hdrs(1, fields); fs = c.frames(ends(1))
    check(f"{name}: RST PROTOCOL_ERROR (8.3)", rst(fs, 1) == "PROTOCOL_ERROR", fs)

# 16 trailers with a pseudo-field
c = Conn(); c.hdrs(1, req(method="POST"), end_stream=False); c.send(raw(0, 0, 1, b"ab")); c.hdrs(1, [(":path", "/")], end_stream=True); fs = c.frames(ends(1))
check("trailers with a pseudo-field: RST PROTOCOL_ERROR (8.1)", rst(fs, 1) == "PROTOCOL_ERROR", fs)

# 17 RST on idle stream
c = Conn(); c.send(raw(3, 0, 7, struct.pack(">I", 8))); fs = c.frames(is_goaway)
check("RST_STREAM on an idle stream: GOAWAY PROTOCOL_ERROR (6.4)", goaway(fs) == "PROTOCOL_ERROR", goaway(fs))

# 18 rapid reset
c = Conn()
for i in range(400):
    sid = 1 + 2 * i
    c.hdrs(sid, req()); c.send(raw(3, 0, sid, struct.pack(">I", 8)))
fs = c.frames(is_goaway, timeout=5)
check("400 streams opened and reset at once: GOAWAY ENHANCE_YOUR_CALM", goaway(fs) == "ENHANCE_YOUR_CALM", goaway(fs))

# 19 empty DATA flood
c = Conn(); c.hdrs(1, req(method="POST"), end_stream=False)
c.send(b"".join(raw(0, 0, 1, b"") for _ in range(2000))); fs = c.frames(is_goaway, timeout=5)
check("2,000 empty DATA frames: GOAWAY ENHANCE_YOUR_CALM", goaway(fs) == "ENHANCE_YOUR_CALM", goaway(fs))

# 20 a stream past SETTINGS_MAX_CONCURRENT_STREAMS is refused
# 21 unknown frame type ignored
c = Conn(); c.send(raw(0x42, 0, 0, b"whatever")); c.hdrs(1, req()); fs = c.frames(ends(1))
check("an unknown frame type is ignored (5.5)", status(fs, 1) == "200", fs)

# 22 PRIORITY on its own stream
c = Conn(); c.send(raw(2, 0, 1, struct.pack(">IB", 1, 16))); fs = c.frames(is_goaway, timeout=1)
check("PRIORITY depending on itself: not a connection error (5.3.1)", goaway(fs) is None, goaway(fs))

# 23 DATA after END_STREAM
c = Conn(); c.hdrs(1, req(), end_stream=True); fs = c.frames(ends(1)); c.send(raw(0, 1, 1, b"late")); fs = c.frames(lambda f: isinstance(f, (RstStreamFrame, GoAwayFrame)), timeout=1)
check("DATA on a closed stream: STREAM_CLOSED (5.1)", rst(fs, 1) == "STREAM_CLOSED" or goaway(fs) == "STREAM_CLOSED", fs)

# 24 header list too large -> 431
c = Conn(); block = c.enc.encode(req(extra=[("x-big", "v" * 70000)]))
chunks = [block[i:i + 16000] for i in range(0, len(block), 16000)]
c.send(raw(1, 1, 1, chunks[0]) + b"".join(raw(9, 4 if i == len(chunks) - 1 else 0, 1, ch) for i, ch in enumerate(chunks[1:], 1)))
fs = c.frames(ends(1))
check("a head past MAX_HEADER_LIST_SIZE: 431, connection goes on (10.5.1)", status(fs, 1) == "431", fs)

print(f"{sum(results)}/{len(results)} passed")
sys.exit(0 if all(results) else 1)
