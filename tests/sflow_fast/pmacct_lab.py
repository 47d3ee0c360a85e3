"""A real sFlow agent in network namespaces: pmacct's ``pmacctd`` with the ``sfprobe`` plugin.

Two namespaces joined by a veth pair (192.0.2.1/24 + 2001:db8:5f::1/64 in A, .2 / ::2 in B). pmacctd in A
sniffs A's veth end and sends sFlow to 127.0.0.1:<port> inside A, where our :class:`UdpListener` receives it
on a socket created inside A (``setns`` in a helper thread, so the test process itself never moves). Traffic:
ICMP echo (IPv4 and IPv6) and UDP from A to B. Used by the live test and by ``make_pmacct_fixture``.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from peerlab_tui.core import netns
from peerlab_tui.core.sflow.sources import RawBatch, UdpListener

CLONE_NEWNET = 0x40000000
A4, B4 = "192.0.2.1", "192.0.2.2"
A6, B6 = "2001:db8:5f::1", "2001:db8:5f::2"


def in_netns(name: str, func: Callable[[], object]) -> object:
    """Run ``func`` in a helper thread that has joined namespace ``name`` (sockets it makes stay there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    result: list[object] = []
    error: list[BaseException] = []

    def run() -> None:
        fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns({name}) failed")
            result.append(func())
        except BaseException as exc:
            error.append(exc)
        finally:
            os.close(fd)

    t = threading.Thread(target=run)  # the thread ends in the namespace; the main thread never moves
    t.start()
    t.join(30)
    if error:
        raise error[0]
    return result[0]


def udp_socket_in(name: str, host: str = "127.0.0.1") -> socket.socket:
    """A UDP socket bound to ``host``:<free port> inside namespace ``name``."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((host, 0))
        return s

    return in_netns(name, make)  # type: ignore[return-value]


@dataclass
class PmacctLab:
    """The namespaces, the veth pair and the running pmacctd."""

    ns_a: str
    ns_b: str
    if_a: str
    workdir: Path
    pmacctd: str = "pmacctd"
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def setup(self) -> None:
        """Wire the namespaces: veth, addresses, links up."""
        if_b = self.if_a[:-1] + ("b" if self.if_a[-1] != "b" else "c")
        netns.create_veth(self.if_a, if_b, netns_a=self.ns_a, netns_b=self.ns_b)
        netns.add_address(self.if_a, f"{A4}/24", netns=self.ns_a)
        netns.add_address(if_b, f"{B4}/24", netns=self.ns_b)
        netns.add_address(self.if_a, f"{A6}/64", netns=self.ns_a)
        netns.add_address(if_b, f"{B6}/64", netns=self.ns_b)
        for ns, ifname in ((self.ns_a, self.if_a), (self.ns_b, if_b)):
            netns.run(["ip", "link", "set", ifname, "up"], netns=ns)

    def start_pmacctd(self, port: int) -> None:
        """Start pmacctd in A: sniff the veth end, sample 1/1, send sFlow to 127.0.0.1:port."""
        conf = self.workdir / "pmacctd.conf"
        conf.write_text(
            "daemonize: false\n"
            f"pcap_interface: {self.if_a}\n"
            "plugins: sfprobe\n"
            "sampling_rate: 1\n"
            f"sfprobe_receiver: 127.0.0.1:{port}\n"
            f"sfprobe_agentip: {A4}\n"
            "sfprobe_agentsubid: 7\n"
            "sfprobe_ifspeed: 1000000000\n"
            f"pidfile: {self.workdir / 'pmacctd.pid'}\n"
        )
        self.log = self.workdir / "pmacctd.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns_a, self.pmacctd, "-f", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def traffic(self, rounds: int = 3) -> None:
        """ICMP echo over IPv4 and IPv6, and UDP datagrams, from A to B."""
        for _ in range(rounds):
            netns.run(
                ["ping", "-c", "2", "-i", "0.2", "-W", "1", B4], netns=self.ns_a, timeout=10, check=False
            )
            netns.run(
                ["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", B6],
                netns=self.ns_a,
                timeout=10,
                check=False,
            )

            def send() -> None:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    for i in range(5):
                        s.sendto(b"peerlab sflow test %d" % i, (B4, 9999))

            in_netns(self.ns_a, send)

    def stop(self) -> None:
        """Stop pmacctd (only our own process)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # ``ip netns exec`` has exec'd pmacctd; its plugin child stays in the namespace and the namespace
        # factory kills what is left there.


async def collect(lab: PmacctLab, *, want_flows: int = 10, timeout: float = 40.0) -> list[bytes]:  # noqa: ASYNC109
    """Run pmacctd + traffic and return the datagrams our listener received inside namespace A."""
    sock = udp_socket_in(lab.ns_a)
    port = sock.getsockname()[1]
    listener = UdpListener("127.0.0.1", port, sock=sock, interval=0.05)
    await listener.start()
    datagrams: list[bytes] = []
    try:
        lab.start_pmacctd(port)
        await asyncio.sleep(1.0)  # pmacctd opens its capture
        deadline = time.monotonic() + timeout
        flows = 0
        from peerlab_tui.core.sflow.fast import decode_batch_ex

        while time.monotonic() < deadline and flows < want_flows:
            await asyncio.to_thread(lab.traffic, 1)
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                batch: RawBatch | None = await listener.get(timeout=0.5)
                if batch is None:
                    continue
                datagrams.extend(batch.datagram(i) for i in range(len(batch)))
                flows += len(decode_batch_ex(batch.buffer, batch.offsets, batch.lengths).flows)
    finally:
        lab.stop()
        listener.close()
    return datagrams


def write_pcap(path: Path, datagrams: list[bytes], port: int = 6343) -> None:
    """Wrap datagrams in Ethernet/IPv4/UDP (127.0.0.1 -> 127.0.0.1:port) and write a classic pcap."""
    import dpkt

    with path.open("wb") as fh:
        w = dpkt.pcap.Writer(fh, linktype=dpkt.pcap.DLT_EN10MB)
        t = 1_700_000_000.0
        for i, d in enumerate(datagrams):
            udp = dpkt.udp.UDP(sport=40000, dport=port, data=d)
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(
                src=socket.inet_aton("127.0.0.1"),
                dst=socket.inet_aton("127.0.0.1"),
                p=dpkt.ip.IP_PROTO_UDP,
                data=udp,
                ttl=64,
            )
            ip.len = len(ip)
            eth = dpkt.ethernet.Ethernet(
                src=b"\0" * 6, dst=b"\0" * 6, type=dpkt.ethernet.ETH_TYPE_IP, data=ip
            )
            w.writepkt(bytes(eth), ts=t + i * 0.01)


__all__ = ["A4", "A6", "B4", "B6", "PmacctLab", "collect", "in_netns", "udp_socket_in", "write_pcap"]
