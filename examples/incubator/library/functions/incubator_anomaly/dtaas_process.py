"""dtaas_process: a DT process in Python with the standard library only.

The dtaas process contract (docs/process-contract.md): the platform starts a process with
DTAAS_NATS_URL, DTAAS_DT, DTAAS_ROLE, DTAAS_PARAMS (JSON), DTAAS_IN_<NAME> and
DTAAS_OUT_<NAME> (subjects), DTAAS_WORKDIR and, when restoring, DTAAS_STATE (a file).
Inputs are telemetry records (MessagePack or JSON, one or an array); outputs are
telemetry records on dtaas.v1.dt.<dt>.out.<output>, published to JetStream and
confirmed before the next input is taken; `dtaas.v1.dt.<dt>.ctl.save` is answered
with the process's state as the body and its role in the `Dtaas-Role` header, and
`dtaas.v1.dt.<dt>.ctl.ready` (asked before a replay) with its role once the inputs are
subscribed.

This module is vendored, identical, into every incubator function asset (an asset must
run alone on any exec node); tests/incubator_dt.rs checks that the copies agree.
It speaks the core NATS protocol: CONNECT, PUB/HPUB, SUB, MSG/HMSG, PING/PONG.
"""

import json
import os
import re
import socket
import struct
import sys
import time
import uuid

# --------------------------------------------------------------------------- MessagePack


class MsgPackError(ValueError):
    pass


def unpackb(data):
    """Decodes one MessagePack value (the subset dtaas sends: maps, arrays, strings,
    binaries, integers, floats, booleans, nil)."""
    value, end = _unpack(memoryview(data), 0)
    if end != len(data):
        raise MsgPackError("trailing bytes after the MessagePack value")
    return value


def _unpack(b, i):
    t = b[i]
    i += 1
    if t <= 0x7F:
        return t, i
    if 0x80 <= t <= 0x8F:
        return _map(b, i, t & 0x0F)
    if 0x90 <= t <= 0x9F:
        return _array(b, i, t & 0x0F)
    if 0xA0 <= t <= 0xBF:
        n = t & 0x1F
        return bytes(b[i : i + n]).decode(), i + n
    if t >= 0xE0:
        return t - 0x100, i
    fixed = {
        0xC0: (None, 0),
        0xC2: (False, 0),
        0xC3: (True, 0),
    }
    if t in fixed:
        return fixed[t][0], i
    formats = {
        0xCA: ">f", 0xCB: ">d",
        0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
        0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
    }
    if t in formats:
        fmt = formats[t]
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, b, i)[0], i + size
    lengths = {
        0xD9: (">B", "str"), 0xDA: (">H", "str"), 0xDB: (">I", "str"),
        0xC4: (">B", "bin"), 0xC5: (">H", "bin"), 0xC6: (">I", "bin"),
        0xDC: (">H", "array"), 0xDD: (">I", "array"),
        0xDE: (">H", "map"), 0xDF: (">I", "map"),
    }
    if t not in lengths:
        raise MsgPackError("unsupported MessagePack type byte 0x%02x" % t)
    fmt, kind = lengths[t]
    n = struct.unpack_from(fmt, b, i)[0]
    i += struct.calcsize(fmt)
    if kind == "str":
        return bytes(b[i : i + n]).decode(), i + n
    if kind == "bin":
        return bytes(b[i : i + n]), i + n
    if kind == "array":
        return _array(b, i, n)
    return _map(b, i, n)


def _array(b, i, n):
    out = []
    for _ in range(n):
        v, i = _unpack(b, i)
        out.append(v)
    return out, i


def _map(b, i, n):
    out = {}
    for _ in range(n):
        k, i = _unpack(b, i)
        v, i = _unpack(b, i)
        out[k] = v
    return out, i


def decode_records(payload, content_type=None):
    """The telemetry records of a message: a record or an array of them."""
    if content_type == "application/msgpack" or (payload and payload[0] >= 0x80):
        value = unpackb(payload)
    else:
        value = json.loads(payload)
    return value if isinstance(value, list) else [value]


# --------------------------------------------------------------------------- NATS


class NatsError(RuntimeError):
    pass


class Message:
    def __init__(self, subject, reply, headers, payload):
        self.subject = subject
        self.reply = reply
        self.headers = headers
        self.payload = payload


class Nats:
    """A blocking, single-threaded core NATS client: enough for a DT process."""

    def __init__(self, url, name="dtaas-process", timeout=10.0):
        m = re.match(r"^(?:nats://)?(?:([^:@/]+)(?::([^@/]*))?@)?([^:/]+)(?::(\d+))?/?$", url.split(",")[0].strip())
        if not m:
            raise NatsError("cannot parse the NATS URL %r (expected nats://host:port)" % url)
        user, password, host, port = m.group(1), m.group(2), m.group(3), int(m.group(4) or 4222)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.sids = {}
        self.next_sid = 1
        self.pending = []
        self.inbox_prefix = os.environ.get("DTAAS_INBOX_PREFIX", "_INBOX") + "." + uuid.uuid4().hex
        line = self._line()
        if not line.startswith(b"INFO "):
            raise NatsError("the server did not greet with INFO: %r" % line[:80])
        connect = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                   "name": name, "lang": "python-stdlib", "version": "0.1", "protocol": 1}
        if user:
            connect.update({"user": user, "pass": password or ""})
        self._send(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        while True:
            line = self._line()
            if line == b"PONG":
                break
            if line.startswith(b"-ERR"):
                raise NatsError("NATS refused the connection: %s" % line.decode(errors="replace"))
        self.inbox_sid = self.subscribe(self.inbox_prefix + ".*")
        self.sock.settimeout(None)

    def _send(self, data):
        self.sock.sendall(data)

    def _line(self):
        line = self.file.readline()
        if not line:
            raise NatsError("the NATS connection closed")
        return line.rstrip(b"\r\n")

    def subscribe(self, subject, queue=None):
        sid = str(self.next_sid)
        self.next_sid += 1
        q = (" " + queue) if queue else ""
        self._send(("SUB %s%s %s\r\n" % (subject, q, sid)).encode())
        self.sids[sid] = subject
        return sid

    def publish(self, subject, payload, reply=None, headers=None):
        r = (" " + reply) if reply else ""
        if headers:
            head = "NATS/1.0\r\n" + "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
            head = head.encode()
            self._send(("HPUB %s%s %d %d\r\n" % (subject, r, len(head), len(head) + len(payload))).encode()
                       + head + payload + b"\r\n")
        else:
            self._send(("PUB %s%s %d\r\n" % (subject, r, len(payload))).encode() + payload + b"\r\n")

    def request(self, subject, payload, headers=None, timeout=5.0):
        """Publishes with a reply inbox and waits for the one reply; other messages that
        arrive meanwhile are kept for next_message."""
        inbox = "%s.%s" % (self.inbox_prefix, uuid.uuid4().hex)
        self.publish(subject, payload, reply=inbox, headers=headers)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NatsError("no reply on %s within %.1f s" % (subject, timeout))
            msg = self._read(left)
            if msg is None:
                continue
            if msg.subject == inbox:
                status = (msg.headers or {}).get(":status")
                if status == "503":
                    raise NatsError("no responders on %s" % subject)
                return msg
            if msg.subject.startswith(self.inbox_prefix + "."):
                continue  # a late reply to an earlier request
            self.pending.append(msg)

    def next_message(self, timeout=None):
        """The next message of a subscription, or None when `timeout` passes."""
        if self.pending:
            return self.pending.pop(0)
        while True:
            msg = self._read(timeout)
            if msg is None or not msg.subject.startswith(self.inbox_prefix + "."):
                return msg

    def _read(self, timeout):
        self.sock.settimeout(timeout)
        try:
            line = self._line()
        except socket.timeout:
            return None
        finally:
            self.sock.settimeout(None)
        if line == b"PING":
            self._send(b"PONG\r\n")
            return None
        if line in (b"PONG", b"+OK") or line.startswith(b"INFO "):
            return None
        if line.startswith(b"-ERR"):
            raise NatsError("NATS error: %s" % line.decode(errors="replace"))
        parts = line.decode().split(" ")
        if parts[0] == "MSG":
            subject, sid = parts[1], parts[2]
            reply = parts[3] if len(parts) == 5 else None
            size = int(parts[-1])
            payload = self.file.read(size + 2)[:size]
            return Message(subject, reply, None, payload)
        if parts[0] == "HMSG":
            subject = parts[1]
            reply = parts[3] if len(parts) == 6 else None
            head_len, total = int(parts[-2]), int(parts[-1])
            data = self.file.read(total + 2)[:total]
            headers = _parse_headers(data[:head_len])
            return Message(subject, reply, headers, data[head_len:])
        raise NatsError("unexpected line from NATS: %r" % line[:80])

    def close(self):
        try:
            self._send(b"PING\r\n")
            self.sock.close()
        except OSError:
            pass


def _parse_headers(block):
    lines = block.decode(errors="replace").split("\r\n")
    headers = {}
    first = lines[0].split(" ", 2)
    if len(first) >= 2 and first[1].strip():
        headers[":status"] = first[1].strip()
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip()] = v.strip()
    return headers


# --------------------------------------------------------------------------- the process


def env_name(name):
    """The environment suffix of an input or output: upper case, other than A-Z0-9 as _."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


class Process:
    """Runs a function as a DT process: `function.on_record(input, record)` returns a list
    of (output, fields) to publish; `function.state()` / `function.restore(state)` for
    save and restore; `function.on_start(process)` is optional."""

    def __init__(self, function, inputs, outputs):
        self.function = function
        self.dt = os.environ["DTAAS_DT"]
        self.role = os.environ.get("DTAAS_ROLE", "process")
        self.params = json.loads(os.environ.get("DTAAS_PARAMS") or "{}")
        self.inputs = {}
        for name in inputs:
            subject = os.environ.get("DTAAS_IN_" + env_name(name))
            if subject:
                self.inputs[name] = subject
        self.outputs = {}
        for name in outputs:
            subject = os.environ.get("DTAAS_OUT_" + env_name(name))
            self.outputs[name] = subject or "dtaas.v1.dt.%s.out.%s" % (self.dt, name)
        self.nats = Nats(os.environ.get("DTAAS_NATS_URL", "nats://127.0.0.1:4222"),
                         name="dtaas-%s-%s" % (self.dt, self.role))

    def log(self, text):
        print("%s: %s" % (self.role, text), file=sys.stderr, flush=True)

    def publish_output(self, output, ts, fields):
        """Publishes one output record to JetStream and waits for its acknowledgement
        (retrying, so nothing the process computed is lost while NATS is slow)."""
        record = {"pt": self.dt, "measurement": output, "ts": int(ts), "fields": fields}
        headers = {"Content-Type": "application/json",
                   "Nats-Msg-Id": "%s.%s.%s.%d" % (self.dt, self.role, output, int(ts))}
        self.publish_confirmed(self.outputs[output], json.dumps(record).encode(), headers)

    def publish_confirmed(self, subject, body, headers, retry_errors=True):
        """Publishes with a reply inbox until a reply arrives (JetStream's acknowledgement,
        or a service's answer). An error reply is retried too, unless `retry_errors` is
        false: then it is returned for the caller to judge."""
        delay = 0.1
        while True:
            try:
                reply = self.nats.request(subject, body, headers=headers, timeout=5.0)
                answer = json.loads(reply.payload or b"{}")
                if "error" in answer and retry_errors:
                    raise NatsError("JetStream refused %s: %s" % (subject, answer["error"]))
                return answer
            except NatsError as e:
                self.log("publish to %s not confirmed (%s); retrying in %.1f s" % (subject, e, delay))
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def run(self):
        state_file = os.environ.get("DTAAS_STATE")
        if state_file and os.path.exists(state_file):
            with open(state_file, "rb") as f:
                state = json.loads(f.read() or b"null")
            if isinstance(state, dict) and "state" in state and "role" in state:
                state = state["state"]
            if state is not None:
                self.function.restore(state)
                self.log("restored its state from %s" % state_file)
        by_subject = {}
        for name, subject in self.inputs.items():
            by_subject.setdefault(subject, []).append(name)
            self.nats.subscribe(subject)
        save_subject = "dtaas.v1.dt.%s.ctl.save" % self.dt
        self.nats.subscribe(save_subject)
        # Subscribed after the inputs (one connection, in order): a ready request that
        # reaches the process finds its inputs subscribed, so a replay may start.
        ready_subject = "dtaas.v1.dt.%s.ctl.ready" % self.dt
        self.nats.subscribe(ready_subject)
        if hasattr(self.function, "on_start"):
            self.function.on_start(self)
        self.log("running: inputs %s, outputs %s" % (self.inputs, self.outputs))
        while True:
            msg = self.nats.next_message(timeout=30.0)
            if msg is None:
                continue
            if msg.subject == save_subject:
                if msg.reply:
                    # The state is the body; the role travels in the Dtaas-Role header.
                    body = json.dumps(self.function.state()).encode()
                    self.nats.publish(msg.reply, body, headers={
                        "Dtaas-Role": self.role, "Content-Type": "application/json"})
                continue
            if msg.subject == ready_subject:
                if msg.reply:
                    self.nats.publish(msg.reply, b"{}", headers={"Dtaas-Role": self.role})
                continue
            names = by_subject.get(msg.subject)
            if names is None:
                names = [n for n, s in self.inputs.items() if _matches(s, msg.subject)]
            try:
                records = decode_records(msg.payload, (msg.headers or {}).get("Content-Type"))
            except (ValueError, MsgPackError, UnicodeDecodeError) as e:
                self.log("skipped an undecodable message on %s: %s" % (msg.subject, e))
                continue
            for record in records:
                for name in names:
                    for output, ts, fields in self.function.on_record(name, record) or []:
                        self.publish_output(output, ts, fields)


def _matches(pattern, subject):
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def field(record, name, default=None):
    """A field of a telemetry record (fields map), or `default`."""
    return (record.get("fields") or {}).get(name, default)
