"""A small authoritative DNS server on loopback, for the tests (dnspython's wire format).

It listens on 127.0.0.1, UDP and TCP on the same free port, in a thread of
its own with its own sockets, so asynchronous code and synchronous callers
(dkimpy, in a thread) reach it alike; the code under test is pointed at it
through its ``dns_nameservers`` setting (:attr:`DnsServer.address`)::

    with DnsServer({"example.com": {"MX": [(10, "mx.example.com")]}}) as server:
        Resolver([server.address])

**Records are Python data**: ``{name: {type: [value, ...]}}``, names with or
without the final dot, in any case. The values of each type:

- ``TXT``: a ``str`` (or ``bytes``) is one record, split into strings of 255
  bytes at most as a DNS server must (UTF-8 for a ``str``); a ``tuple`` gives
  the record's strings as they are;
- ``MX``: ``(preference, host)``;
- any other type: the record's text as in a zone file (``"192.0.2.1"``,
  ``"10 5 25 mx.example.com."``), names absolute.

**Zones.** ``zones`` names the apexes served; by default, the last two labels
of every name given (``example.com`` for ``_dmarc.example.com``). Each zone
has an SOA record at its apex (``negative_ttl`` is both its TTL and its
``minimum``, so that is how long resolvers cache a negative answer).

**Answers**, always with AA set: the records asked (CNAMEs followed within
the served zones); NOERROR and no records, the zone's SOA in the authority
section, for a name that exists without that type (an empty non-terminal
exists); NXDOMAIN, with the SOA, for a name of a zone that does not exist;
REFUSED (without AA) for a name outside every zone. Over UDP, an answer
larger than 512 bytes, or than the query's EDNS payload when it has one, is
truncated with TC set, so the client asks again over TCP (length-prefixed,
several queries per connection).

**Knobs**: :meth:`set` and :meth:`remove` change records while the server
runs; :meth:`servfail` makes a name answer SERVFAIL; :meth:`silence` makes
a name never answered (the query is read and dropped, over UDP and TCP);
:attr:`queries` lists every question asked, with its transport.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, TypeAlias

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.TXT import TXT

__all__ = ["DnsServer", "Query", "RecordValue", "Records"]

RecordValue: TypeAlias = str | bytes | tuple[str | bytes, ...] | tuple[int, str]
"""One record: see the module for the forms of each type."""

Records: TypeAlias = Mapping[str, Mapping[str, Sequence[RecordValue]]]
"""``{name: {type: [value, ...]}}``."""

_IN = dns.rdataclass.IN
_UDP_LIMIT = 512  # RFC 1035: a UDP answer without EDNS
_TCP_LIMIT = 65535


@dataclass(frozen=True, slots=True)
class Query:
    """A question the server was asked: ``name`` (lower case, no final dot), ``rdtype``
    (``"TXT"``...) and how it came (``"udp"`` or ``"tcp"``)."""

    name: str
    rdtype: str
    transport: Literal["udp", "tcp"]


class DnsServer:
    """The server: ``records`` served from ``zones``, with ``ttl`` (seconds) unless
    :meth:`set` says otherwise; a context manager that starts and stops it."""

    def __init__(
        self,
        records: Records | None = None,
        *,
        zones: Iterable[str] | None = None,
        ttl: int = 300,
        negative_ttl: int = 300,
    ) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.queries: list[Query] = []
        self._lock = threading.Lock()
        self._zones: set[dns.name.Name] = set()
        self._nodes: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rrset.RRset]] = {}
        self._servfail: set[dns.name.Name] = set()
        self._silent: set[dns.name.Name] = set()
        self._auto_zones = zones is None
        for zone in zones or ():
            self._add_zone(_name(zone))
        for name, types in (records or {}).items():
            for rdtype, values in types.items():
                self.set(name, rdtype, values)
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.port = 0

    # -- the records -------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as the ``dns_nameservers`` setting takes it."""
        return f"127.0.0.1:{self.port}"

    def set(
        self, name: str, rdtype: str, values: Sequence[RecordValue], *, ttl: int | None = None
    ) -> None:
        """Serve ``values`` as the ``rdtype`` records of ``name`` from now on (no values:
        remove them); ``ttl`` defaults to the server's."""
        owner, kind = _name(name), dns.rdatatype.from_text(rdtype)
        rrset = dns.rrset.RRset(owner, _IN, kind)
        rrset.update_ttl(self.ttl if ttl is None else ttl)
        for value in values:
            rrset.add(_rdata(kind, value))
        with self._lock:
            if self._zone_of(owner) is None:
                if not self._auto_zones:
                    raise ValueError(
                        f"{name} is in no zone served ({sorted(map(str, self._zones))})"
                    )
                self._add_zone(_default_zone(owner))
            node = self._nodes.setdefault(owner, {})
            if rrset:
                node[kind] = rrset
            else:
                node.pop(kind, None)

    def remove(self, name: str, rdtype: str | None = None) -> None:
        """Stop serving the ``rdtype`` records of ``name``, or all of them (the name is gone)."""
        owner = _name(name)
        with self._lock:
            if rdtype is None:
                node = self._nodes.pop(owner, {})
                if owner in self._zones:  # an apex keeps its SOA
                    self._nodes[owner] = {dns.rdatatype.SOA: node[dns.rdatatype.SOA]}
            else:
                self._nodes.get(owner, {}).pop(dns.rdatatype.from_text(rdtype), None)

    def servfail(self, name: str) -> None:
        """Answer every question about ``name`` with SERVFAIL."""
        with self._lock:
            self._servfail.add(_name(name))

    def silence(self, name: str) -> None:
        """Never answer a question about ``name`` (a lookup of it times out)."""
        with self._lock:
            self._silent.add(_name(name))

    def _add_zone(self, apex: dns.name.Name) -> None:
        self._zones.add(apex)
        soa = dns.rrset.RRset(apex, _IN, dns.rdatatype.SOA)
        soa.update_ttl(self.negative_ttl)
        soa.add(
            dns.rdata.from_text(
                _IN,
                dns.rdatatype.SOA,
                f"ns.{apex} hostmaster.{apex} 1 3600 600 86400 {self.negative_ttl}",
            )
        )
        self._nodes.setdefault(apex, {})[dns.rdatatype.SOA] = soa

    def _zone_of(self, name: dns.name.Name) -> dns.name.Name | None:
        """The longest apex ``name`` is in, or None."""
        apexes = [apex for apex in self._zones if name.is_subdomain(apex)]
        return max(apexes, key=len, default=None)

    def _exists(self, name: dns.name.Name) -> bool:
        """Whether ``name`` holds records or has a name below it that does."""
        return any(node and owner.is_subdomain(name) for owner, node in self._nodes.items())

    # -- answering ---------------------------------------------------------------------

    def _answer(self, wire: bytes, transport: Literal["udp", "tcp"]) -> bytes | None:
        """The answer to one query in wire format, or None to say nothing."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not a DNS message: nothing to answer to
        response = dns.message.make_response(query)
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        else:
            question = query.question[0]
            qname, qtype = question.name, dns.rdatatype.RdataType(question.rdtype)
            with self._lock:
                self.queries.append(
                    Query(
                        qname.to_text(omit_final_dot=True).lower(),
                        dns.rdatatype.to_text(qtype),
                        transport,
                    )
                )
                if qname in self._silent:
                    return None
                self._resolve(response, qname, qtype)
        if transport == "tcp":
            return response.to_wire(max_size=_TCP_LIMIT)
        limit = max(_UDP_LIMIT, query.payload) if query.edns >= 0 else _UDP_LIMIT
        return response.to_wire(max_size=limit, prefer_truncation=True)

    def _resolve(
        self, response: dns.message.Message, qname: dns.name.Name, qtype: dns.rdatatype.RdataType
    ) -> None:
        """Fill ``response`` for ``qname``/``qtype`` (the lock is held)."""
        zone = self._zone_of(qname)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return
        response.flags |= dns.flags.AA
        if qname in self._servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return
        name = qname
        for _ in range(8):  # CNAME chains, within the served zones
            node = self._nodes.get(name, {})
            if qtype in node:
                response.answer.append(node[qtype])
                return
            cname = node.get(dns.rdatatype.CNAME)
            if cname is None:
                break
            response.answer.append(cname)
            name = cname[0].target
            zone = self._zone_of(name)
            if zone is None:
                return  # the rest of the chain is someone else's
        soa = self._nodes[zone][dns.rdatatype.SOA]
        response.authority.append(soa)
        if not self._exists(name):
            response.set_rcode(dns.rcode.NXDOMAIN)

    # -- sockets and thread ------------------------------------------------------------

    def start(self) -> DnsServer:
        """Listen (UDP and TCP, one free port of 127.0.0.1) and answer in a thread."""
        self._udp, self._tcp = _bind_pair()
        self.port = self._udp.getsockname()[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="dns-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close every socket."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for worker in self._workers:
            worker.join()
        self._workers.clear()
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = None

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        assert self._udp is not None
        assert self._tcp is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._udp, selectors.EVENT_READ, "udp")
            selector.register(self._tcp, selectors.EVENT_READ, "tcp")
            while not self._stopping.is_set():
                for key, _ in selector.select(timeout=0.05):
                    if key.data == "udp":
                        self._serve_datagram()
                    else:
                        self._accept()

    def _serve_datagram(self) -> None:
        assert self._udp is not None
        try:
            wire, peer = self._udp.recvfrom(_TCP_LIMIT)
        except OSError:
            return
        reply = self._answer(wire, "udp")
        if reply is not None:
            self._udp.sendto(reply, peer)

    def _accept(self) -> None:
        assert self._tcp is not None
        try:
            connection, _ = self._tcp.accept()
        except OSError:
            return
        with self._lock:
            self._connections.add(connection)
        worker = threading.Thread(target=self._serve_stream, args=(connection,), daemon=True)
        self._workers.append(worker)
        worker.start()

    def _serve_stream(self, connection: socket.socket) -> None:
        """Answer the length-prefixed queries of one TCP connection until it closes."""
        try:
            while not self._stopping.is_set():
                head = _read_exactly(connection, 2)
                if head is None:
                    return
                wire = _read_exactly(connection, struct.unpack("!H", head)[0])
                if wire is None:
                    return
                reply = self._answer(wire, "tcp")
                if reply is not None:
                    connection.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return
        finally:
            with self._lock:
                self._connections.discard(connection)
            connection.close()


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a listening TCP socket on the same free port of 127.0.0.1."""
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        return udp, tcp
    raise OSError("no port of 127.0.0.1 is free for both UDP and TCP")


def _read_exactly(connection: socket.socket, size: int) -> bytes | None:
    """``size`` bytes from ``connection``, or None if it closes first."""
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def _default_zone(name: dns.name.Name) -> dns.name.Name:
    """The zone a name is served from when none is named: its last two labels."""
    labels = name.labels[-3:]  # two labels and the root's empty one
    return dns.name.Name(labels)


def _rdata(rdtype: dns.rdatatype.RdataType, value: RecordValue) -> dns.rdata.Rdata:
    """One record of ``rdtype`` from its Python form (see the module)."""
    if rdtype == dns.rdatatype.TXT:
        if isinstance(value, tuple):
            strings = [part.encode() if isinstance(part, str) else part for part in value]
        elif isinstance(value, str | bytes):
            strings = _split(value.encode() if isinstance(value, str) else value)
        else:
            raise TypeError(f"a TXT value is a str, bytes or a tuple of strings: {value!r}")
        return TXT(_IN, rdtype, [bytes(s) for s in strings])
    if rdtype == dns.rdatatype.MX and isinstance(value, tuple):
        preference, host = value
        return MX(_IN, rdtype, int(preference), dns.name.from_text(str(host)))
    if not isinstance(value, str):
        raise TypeError(f"a {dns.rdatatype.to_text(rdtype)} value is its text: {value!r}")
    return dns.rdata.from_text(_IN, rdtype, value, origin=dns.name.root, relativize=False)


def _split(data: bytes) -> list[bytes]:
    """Strings of 255 bytes at most (a UTF-8 character may straddle two: DNS has no text)."""
    return [data[start : start + 255] for start in range(0, len(data), 255)] or [b""]
