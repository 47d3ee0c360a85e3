"""``peerlab-tui sflow``: decode captures, count structures, listen for live sFlow, show top talkers."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

# numpy's OpenBLAS starts a thread per core at import; nothing here does linear algebra.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click

from peerlab_tui._cli.common import emit_json, handle_errors, json_option
from peerlab_tui.core.errors import InputError


@click.group()
def sflow() -> None:
    """sFlow v5: decode capture files, count structures, listen for datagrams, top talkers."""


def _echo_line(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")


@sflow.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--count", "count_only", is_flag=True, help="Only count datagrams, samples and records by type."
)
@click.option("--no-headers", is_flag=True, help="Do not decode the sampled packet headers.")
@json_option
@handle_errors
def decode(file: str, count_only: bool, no_headers: bool, as_json: bool) -> None:
    """Decode FILE (pcap, pcapng or a raw datagram): one line (or JSON object) per sample."""
    if count_only:
        # No tune_allocator() here: counting allocates little per batch, and ctypes costs import time.
        from peerlab_tui.core.sflow.count import count_file

        counts = count_file(file)
        if as_json:
            emit_json(counts)
        else:
            _print_counts(counts)
        return

    from peerlab_tui.core.sflow import decode_datagram, sample_to_json
    from peerlab_tui.core.sflow.sources import read_file

    capture = read_file(file)
    batch = capture.batch
    errors = 0
    out = sys.stdout
    for i in range(len(batch)):
        d = decode_datagram(batch.datagram(i), decode_headers=not no_headers)
        if not d.ok:
            errors += 1
            msg = d.issues[0].message if d.issues else "not sFlow v5"
            click.echo(f"datagram {i}: {msg}", err=True)
            continue
        for k, s in enumerate(d.samples):
            if as_json:
                obj = sample_to_json(s, d)
                obj.setdefault("datagram_index", i)
                obj.setdefault("sample_index", k)
                _echo_line(obj)
            else:
                out.write(_sample_line(i, d, s) + "\n")
    if errors:
        click.echo(f"{errors} of {len(batch)} packets are not sFlow v5 datagrams", err=True)


def _sample_line(i: int, d: Any, s: Any) -> str:
    parts = [f"#{i}", d.agent_address, f"seq={s.sequence_number}", s.tag, s.name or "unknown"]
    if s.sampling_rate is not None:
        parts.append(f"rate={s.sampling_rate}")
    if s.input is not None and s.output is not None:
        parts.append(f"in={s.input.value} out={s.output.value}")
    elif s.source_id_index is not None:
        parts.append(f"src={s.source_id_type}:{s.source_id_index}")
    for r in s.records:
        dec = r.fields.get("decoded") if r.enterprise == 0 and r.format == 1 and r.kind == "flow" else None
        if dec and "src_ip" in dec:
            sport = f":{dec['src_port']}" if "src_port" in dec else ""
            dport = f":{dec['dst_port']}" if "dst_port" in dec else ""
            parts.append(
                f"proto={dec.get('ip_protocol')} {dec['src_ip']}{sport} > {dec['dst_ip']}{dport}"
                f" len={r.fields.get('frame_length')}"
            )
            break
    parts.append("records=" + ",".join(r.tag for r in s.records))
    if s.issue:
        parts.append(f"issue={s.issue!r}")
    return " ".join(parts)


def _print_counts(c: dict[str, Any]) -> None:
    click.echo(f"datagrams {c['datagrams']}  errors {c['errors']}")
    for key in ("samples", "flow_records", "counter_records", "discard_records"):
        table = c[key]
        if table:
            body = ", ".join(f"{k}={v}" for k, v in sorted(table.items(), key=_tag_key))
            click.echo(f"{key.replace('_', ' ')}: {body}")


def _tag_key(kv: tuple[str, int]) -> tuple[int, int]:
    ent, fmt = kv[0].split(":")
    return int(ent), int(fmt)


# --------------------------------------------------------------------------------------------- listen


@sflow.command()
@click.option("--host", default="::", show_default=True, help="Address to listen on.")
@click.option("--port", default=6343, show_default=True, type=click.IntRange(0, 65535), help="UDP port.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.05), help="Seconds.")
@click.option("--duration", default=None, type=click.FloatRange(min=0), help="Stop after this many seconds.")
@click.option("--rcvbuf", default=32 * 1024 * 1024, show_default=True, help="Socket buffer size to ask for.")
@json_option
@handle_errors
def listen(host: str, port: int, interval: float, duration: float | None, rcvbuf: int, as_json: bool) -> None:
    """Receive sFlow on UDP and print per-interval statistics (datagrams, samples, drops)."""
    import asyncio

    from peerlab_tui.core.sflow._fast_walk import tune_allocator

    tune_allocator()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_listen(host, port, interval, duration, rcvbuf, as_json))


async def _listen(
    host: str, port: int, interval: float, duration: float | None, rcvbuf: int, as_json: bool
) -> None:
    from peerlab_tui.core.sflow.fast import decode_batch_ex
    from peerlab_tui.core.sflow.sources import UdpListener

    listener = UdpListener(host, port, rcvbuf=rcvbuf)
    await listener.start()
    st = listener.stats
    bound = listener.address
    info = {
        "event": "listening",
        "host": bound[0],
        "port": bound[1],
        "rcvbuf_requested": st.rcvbuf_requested,
        "rcvbuf_granted": st.rcvbuf_granted,
        "kernel_drop_reporting": st.rxq_ovfl,
    }
    if as_json:
        _echo_line(info)
    else:
        click.echo(
            f"listening on [{bound[0]}]:{bound[1]} (SO_RCVBUF {st.rcvbuf_granted} granted, "
            f"{st.rcvbuf_requested} asked)"
        )
    sys.stdout.flush()
    start = time.monotonic()
    deadline = None if duration is None else start + duration
    tick = start + interval
    acc = {"datagrams": 0, "errors": 0, "samples": 0, "flow_samples": 0, "counter_samples": 0}
    total = dict(acc)
    try:
        while True:
            now = time.monotonic()
            stop_at = tick if deadline is None else min(tick, deadline)
            batch = await listener.get(timeout=max(stop_at - now, 0.0))
            if batch is not None:
                res = decode_batch_ex(batch.buffer, batch.offsets, batch.lengths)
                for d in (acc, total):
                    d["datagrams"] += res.datagrams
                    d["errors"] += res.errors
                    d["samples"] += res.samples
                    d["flow_samples"] += len(res.flows)
                    d["counter_samples"] += len(res.counters)
            now = time.monotonic()
            if now >= tick or (deadline is not None and now >= deadline):
                _report(acc, listener, now - (tick - interval), as_json)
                acc = dict.fromkeys(acc, 0)
                tick = now + interval
            if deadline is not None and now >= deadline:
                break
    finally:
        listener.close()
        if as_json:
            _echo_line({"event": "total", **total, **_drops(listener)})
        else:
            click.echo(
                f"total: {total['datagrams']} datagrams, {total['samples']} samples, "
                f"{total['errors']} errors, drops {_drops(listener)}"
            )
        sys.stdout.flush()


def _drops(listener: Any) -> dict[str, int]:
    return {"kernel_drops": listener.stats.kernel_drops, "queue_drops": listener.stats.queue_drops}


def _report(acc: dict[str, int], listener: Any, elapsed: float, as_json: bool) -> None:
    rec = {"event": "interval", "seconds": round(elapsed, 3), **acc, **_drops(listener)}
    if as_json:
        _echo_line(rec)
    else:
        click.echo(
            f"{acc['datagrams']} datagrams  {acc['samples']} samples ({acc['flow_samples']} flow, "
            f"{acc['counter_samples']} counter)  {acc['errors']} errors  drops kernel "
            f"{rec['kernel_drops']} queue {rec['queue_drops']}"
        )
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------- top


@sflow.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=str))
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Listen on this UDP port instead.")
@click.option("--host", default="::", show_default=True, help="Listen address (with --port).")
@click.option("--prefix", "prefixes", multiple=True, help="Prefix to report in/out rates for (repeatable).")
@click.option("--top", "top_n", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--window",
    "windows",
    multiple=True,
    type=click.FloatRange(min=0.1),
    help="Sliding window in seconds (repeatable; live default 10 and 60).",
)
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.1))
@click.option(
    "--duration", default=None, type=click.FloatRange(min=0), help="Stop listening after S seconds."
)
@json_option
@handle_errors
def top(
    file: str | None,
    port: int | None,
    host: str,
    prefixes: tuple[str, ...],
    top_n: int,
    windows: tuple[float, ...],
    interval: float,
    duration: float | None,
    as_json: bool,
) -> None:
    """Top talkers and estimated rates, from FILE or live (--port)."""
    from peerlab_tui.core.sflow._fast_walk import tune_allocator
    from peerlab_tui.core.sflow.aggregate import Aggregator

    if (file is None) == (port is None):
        raise InputError("give either a capture FILE or --port N")
    tune_allocator()
    if file is not None:
        _top_file(file, list(prefixes), top_n, as_json)
        return
    assert port is not None
    import asyncio

    agg = Aggregator(list(prefixes), windows=windows or (10.0, 60.0), top=top_n)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_top_live(agg, host, port, interval, duration, as_json))


def _top_file(file: str, prefixes: list[str], top_n: int, as_json: bool) -> None:
    import numpy as np

    from peerlab_tui.core.sflow.aggregate import Aggregator
    from peerlab_tui.core.sflow.fast import decode_batch_ex
    from peerlab_tui.core.sflow.sources import read_file

    capture = read_file(file)
    times = capture.batch.times
    if times is None or not times.size:
        times = np.zeros(len(capture.batch))
    t0 = float(times.min()) if times.size else 0.0
    t1 = float(times.max()) if times.size else 0.0
    # One window spanning the capture: rates are averages over its duration (at least one second).
    span = max(np.floor(t1) - np.floor(t0) + 1.0, 1.0)
    agg = Aggregator(prefixes, windows=(span,), top=top_n, clock=lambda: t1)
    for i, b in enumerate(capture.batches(1000)):
        res = decode_batch_ex(b.buffer, b.offsets, b.lengths)
        bt = times[i * 1000 : i * 1000 + len(b)]
        row_t = bt[res.flows.datagram] if len(res.flows) else bt[:0]
        agg.add(res.flows, row_t, datagrams=res.datagrams, errors=res.errors)
    snap = agg.snapshot(t1)
    snap["capture"] = {"file": file, "start": t0, "end": t1, **capture.stats.to_json()}
    if as_json:
        emit_json(snap)
    else:
        _print_snapshot(snap)


async def _top_live(
    agg: Any, host: str, port: int, interval: float, duration: float | None, as_json: bool
) -> None:
    from peerlab_tui.core.sflow.fast import decode_batch_ex
    from peerlab_tui.core.sflow.sources import UdpListener

    listener = UdpListener(host, port)
    await listener.start()
    click.echo(f"listening on [{listener.address[0]}]:{listener.address[1]}", err=True)
    start = time.monotonic()
    deadline = None if duration is None else start + duration
    tick = start + interval
    try:
        while True:
            now = time.monotonic()
            stop_at = tick if deadline is None else min(tick, deadline)
            batch = await listener.get(timeout=max(stop_at - now, 0.0))
            if batch is not None:
                res = decode_batch_ex(batch.buffer, batch.offsets, batch.lengths)
                agg.add(res.flows, datagrams=res.datagrams, errors=res.errors)
            now = time.monotonic()
            done = deadline is not None and now >= deadline
            if now >= tick or done:
                snap = agg.snapshot()
                snap["listener"] = listener.stats.to_json()
                if as_json:
                    _echo_line(snap)
                else:
                    _print_snapshot(snap)
                sys.stdout.flush()
                tick = now + interval
            if done:
                break
    finally:
        listener.close()


def _fmt_rate(bps: float) -> str:
    for unit, scale in (("Gb/s", 1e9), ("Mb/s", 1e6), ("kb/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.2f} {unit}"
    return f"{bps:.0f} b/s"


def _print_snapshot(snap: dict[str, Any]) -> None:
    for name, w in snap["windows"].items():
        click.echo(f"window {name}: {_fmt_rate(w['bps'])}  {w['pps']:.1f} pkt/s  ({w['samples']} samples)")
        for p in w["prefixes"]:
            click.echo(
                f"  {p['prefix']}: in {_fmt_rate(p['in']['bps'])} {p['in']['pps']:.1f} pkt/s, "
                f"out {_fmt_rate(p['out']['bps'])} {p['out']['pps']:.1f} pkt/s"
            )
        for title, key, label in (("sources", "top_src", "address"), ("destinations", "top_dst", "address")):
            if w[key]:
                click.echo(f"  top {title}:")
                for e in w[key]:
                    click.echo(f"    {e[label]:<40} {_fmt_rate(e['bps']):>14} {e['pps']:>10.1f} pkt/s")
        if w["top_ports"]:
            click.echo("  top ports:")
            for e in w["top_ports"]:
                click.echo(
                    f"    {e['protocol']}/{e['port']:<34} {_fmt_rate(e['bps']):>14} {e['pps']:>10.1f} pkt/s"
                )
        if w["top_protocols"]:
            click.echo("  top protocols:")
            for e in w["top_protocols"]:
                click.echo(f"    {e['protocol']:<40} {_fmt_rate(e['bps']):>14} {e['pps']:>10.1f} pkt/s")


__all__ = ["sflow"]
