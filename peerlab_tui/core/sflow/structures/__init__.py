"""The field tables: every sFlow v5 structure (128 tags) declared once as a list of fields.

A :class:`Structure` drives decoding, encoding, JSON and the documentation
(``python -m peerlab_tui.core.sflow.structures --markdown``). Tables are keyed by ``(kind, enterprise,
format)`` with kind ``sample``, ``flow`` or ``counter``: the same number means different things per kind.
Field names are the snake_case of the specification names (sflow.org texts and XDR, host-sflow/sflowtool for
the tags without a text; see ../shared/specs/sflow/EXTRA_STRUCTURES.md).
"""

from __future__ import annotations

import random
import struct
import sys
from collections.abc import Iterable
from typing import Any

from peerlab_tui.core.sflow.fields import (
    F32,
    F64,
    I32,
    U32,
    U64,
    UUID,
    Address,
    Array,
    DecodeError,
    EncodeError,
    Enum,
    Field,
    FixedOpaque,
    IfIndex,
    InterfaceCompact,
    InterfaceExpanded,
    IPv4,
    IPv6,
    Mac,
    Nested,
    NulString,
    Opaque,
    SourceId,
    String,
    Struct,
    Switch,
)

Key = tuple[str, int, int]


class _Run:
    """A compiled run of consecutive fixed-size scalar fields, unpacked by one struct call."""

    __slots__ = ("convert", "fields", "names", "optional", "size", "st")

    def __init__(self, fields: list[Field]) -> None:
        self.fields = fields
        self.names = [f.name for f in fields]
        self.st = struct.Struct(">" + "".join(f.code or "" for f in fields))
        self.size = self.st.size
        # Only fields whose value differs from the raw struct item need a conversion.
        self.convert = [f for f in fields if type(f).from_raw is not Field.from_raw]
        self.optional = fields[0].optional


class Structure:
    """One structure: its tag, its name and its ordered fields."""

    def __init__(
        self,
        kind: str,
        enterprise: int,
        fmt: int,
        name: str,
        fields: list[Field],
        source: str = "",
        doc: str = "",
    ) -> None:
        self.kind = kind
        self.enterprise = enterprise
        self.format = fmt
        self.name = name
        self.fields = fields
        self.source = source
        self.doc = doc
        self.min_size = sum(f.min_size for f in fields if not f.optional)
        sizes = [f.size for f in fields]
        self.size: int | None = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)
        self._plan: list[_Run | Field] = []
        run: list[Field] = []
        for f in fields:
            if (
                f.code is not None
                and f.size
                and not isinstance(f, Switch)
                and (not run or run[0].optional == f.optional)
            ):
                run.append(f)
                continue
            if run:
                self._plan.append(_Run(run))
                run = []
            if f.code is not None and f.size:
                run.append(f)
            else:
                self._plan.append(f)
        if run:
            self._plan.append(_Run(run))
        self.by_name = {f.name: f for f in fields}
        # Fast path: a structure that is one run of plain scalars decodes with a single unpack.
        only = self._plan[0] if len(self._plan) == 1 else None
        self._simple = only if isinstance(only, _Run) and not only.convert and not only.optional else None
        # The plan with each step's kind resolved once (0 run, 1 switch, 2 other field): decode is the
        # per-record decoder's hottest loop, and isinstance chains per step showed in its profile.
        self._steps: list[tuple[int, Any]] = [
            (0 if isinstance(p, _Run) else 1 if isinstance(p, Switch) else 2, p) for p in self._plan
        ]

    @property
    def key(self) -> Key:
        """``(kind, enterprise, format)``."""
        return (self.kind, self.enterprise, self.format)

    @property
    def tag(self) -> str:
        """``"enterprise:format"``."""
        return f"{self.enterprise}:{self.format}"

    def decode(self, data: bytes, off: int, end: int) -> tuple[dict[str, Any], int]:
        """Decode the fields at ``off`` within ``end``; optional trailing fields only when bytes remain."""
        simple = self._simple
        if simple is not None:
            if off + simple.size > end:
                raise DecodeError(f"{self.name}: needs {simple.size} bytes, {end - off} left", off)
            return dict(zip(simple.names, simple.st.unpack_from(data, off), strict=True)), off + simple.size
        out: dict[str, Any] = {}
        for kind, step in self._steps:
            if kind == 0:
                if step.optional and off >= end:
                    break
                if off + step.size > end:
                    raise DecodeError(
                        f"{self.name}.{step.names[0]}: needs {step.size} bytes, {end - off} left", off
                    )
                out.update(zip(step.names, step.st.unpack_from(data, off), strict=True))
                for f in step.convert:
                    out[f.name] = f.from_raw(out[f.name])
                off += step.size
            elif kind == 1:
                arm = step.arm(out.get(step.on), off)
                out[step.name], off = arm.decode(data, off, end)
            else:
                if step.optional and off >= end:
                    break
                out[step.name], off = step.decode(data, off, end)
        return out, off

    def encode(self, values: dict[str, Any], out: bytearray) -> None:
        """Append the wire form; missing fields take their default, a missing optional one ends the body."""
        if not isinstance(values, dict):
            raise EncodeError(f"{self.name}: expected a dict of fields, got {type(values).__name__}")
        for f in self.fields:
            if f.name not in values:
                if f.optional:
                    break
                value = f.default()
            else:
                value = values[f.name]
            if isinstance(f, Switch):
                selector = values.get(f.on, 0)
                if selector not in f.cases:
                    raise EncodeError(f"{self.name}.{f.name}: no arm for {f.on}={selector}")
                f.cases[selector].encode(value, out)
            else:
                f.encode(value, out)

    def defaults(self) -> dict[str, Any]:
        """A value with every required field at its default."""
        return {f.name: f.default() for f in self.fields if not f.optional and not isinstance(f, Switch)}

    def to_json(self, values: dict[str, Any]) -> dict[str, Any]:
        """JSON-ready dict: bytes as hex, interfaces as objects, enum names added as ``<field>_name``."""
        out: dict[str, Any] = {}
        for key, value in values.items():
            f = self.by_name.get(key)
            if f is None:
                out[key] = _plain_json(value)
                continue
            if isinstance(f, Switch):
                arm = f.cases.get(values.get(f.on, -1))
                out[key] = arm.to_json(value) if arm is not None else _plain_json(value)
                continue
            out[key] = f.to_json(value)
            if isinstance(f, Enum):
                out[key + "_name"] = f.names.get(value)
        return out

    def describe(self) -> str:
        """Wire type for the generated documentation (when used as an array element)."""
        return f"struct {self.name}"

    def random_value(self, rnd: random.Random) -> dict[str, Any]:
        """A random valid value derived from the fields (used by the round-trip tests)."""
        out: dict[str, Any] = {}
        with_optional = rnd.random() < 0.5  # optional trailing fields come all together or not at all
        for f in self.fields:
            if f.optional and not with_optional:
                break
            if isinstance(f, Switch):
                selector = rnd.choice(list(f.cases))
                out[f.on] = selector
                out[f.name] = f.cases[selector].random_value(rnd)
            else:
                out[f.name] = f.random_value(rnd)
        return out


def _plain_json(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {k: _plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_json(v) for v in value]
    if hasattr(value, "to_json"):
        return value.to_json()
    return value


# --- helpers to keep the tables short ------------------------------------------------------------------


def u32s(names: str) -> list[Field]:
    """U32 fields from a whitespace-separated list of specification names."""
    return [U32(n) for n in names.split()]


def u64s(names: str) -> list[Field]:
    """U64 fields from a whitespace-separated list of specification names."""
    return [U64(n) for n in names.split()]


def _sub(name: str, fields: list[Field]) -> Structure:
    """An anonymous sub-structure (array element / embedded struct)."""
    return Structure("struct", 0, 0, name, fields)


# --- enumerations ---------------------------------------------------------------------------------------

HEADER_PROTOCOLS: dict[int, str] = {
    1: "ETHERNET_ISO88023",
    2: "ISO88024_TOKENBUS",
    3: "ISO88025_TOKENRING",
    4: "FDDI",
    5: "FRAME_RELAY",
    6: "X25",
    7: "PPP",
    8: "SMDS",
    9: "AAL5",
    10: "AAL5_IP",
    11: "IPv4",
    12: "IPv6",
    13: "MPLS",
    14: "POS",
    15: "IEEE80211MAC",
    16: "IEEE80211_AMPDU",
    17: "IEEE80211_AMSDU_SUBFRAME",
    18: "INFINIBAND",
}

_DROP_NAMES = """
0 net_unreachable 1 host_unreachable 2 protocol_unreachable 3 port_unreachable 4 frag_needed
5 src_route_failed 6 dst_net_unknown 7 dst_host_unknown 8 src_host_isolated 9 dst_net_prohibited
10 dst_host_prohibited 11 dst_net_tos_unreachable 12 dst_host_tos_unreacheable 13 comm_admin_prohibited
14 host_precedence_violation 15 precedence_cutoff 33 dev_hdr 36 tc_egress
256 unknown 257 ttl_exceeded 258 acl 259 no_buffer_space 260 red 261 traffic_shaping 262 pkt_too_big
263 src_mac_is_multicast 264 vlan_tag_mismatch 265 ingress_vlan_filter 266 ingress_spanning_tree_filter
267 port_list_is_empty 268 port_loopback_filter 269 blackhole_route 270 non_ip 271 uc_dip_over_mc_dmac
272 dip_is_loopback_address 273 sip_is_mc 274 sip_is_loopback_address 275 ip_header_corrupted
276 ipv4_sip_is_limited_bc 277 ipv6_mc_dip_reserved_scope 278 ipv6_mc_dip_interface_local_scope
279 unresolved_neigh 280 mc_reverse_path_forwarding 281 non_routable_packet 282 decap_error
283 overlay_smac_is_mc 284 unknown_l2 285 unknown_l3 286 unknown_l3_exception 287 unknown_buffer
288 unknown_tunnel 289 unknown_l4 290 sip_is_unspecified 291 mlag_port_isolation 292 blackhole_arp_neigh
293 src_mac_is_dmac 294 dmac_is_reserved 295 sip_is_class_e 296 mc_dmac_mismatch 297 sip_is_dip
298 dip_is_local_network 299 dip_is_link_local 300 overlay_smac_is_dmac 301 egress_vlan_filter
302 uc_reverse_path_forwarding 303 split_horizon 304 locked_port 305 dmac_filter 306 blackhole_nexthop
307 vxlan_parsing 308 llc_snap_parsing 309 vlan_parsing 310 pppoe_ppp_parsing 311 mpls_parsing
312 arp_parsing 313 ip_1_parsing 314 ip_n_parsing 315 gre_parsing 316 udp_parsing 317 tcp_parsing
318 ipsec_parsing 319 sctp_parsing 320 dccp_parsing 321 gtp_parsing 322 esp_parsing 323 unknown_parsing
324 pkt_too_small 325 unhandled_proto 326 ipv6disabled 327 invalid_proto 328 ip_noproto 329 skb_csum
330 skb_ucopy_fault 331 dev_ready 332 dev_hdr 333 dup_frag 334 skb_gso_seg 335 reverse_path_forwarding
336 icmp_parsing 337 tcp_md5notfound 338 tcp_md5unexpected 339 tcp_md5failure 340 tcp_flags
341 tcp_zerowindow 342 tcp_old_data 343 tcp_overwindow 344 tcp_ofomerge 345 tcp_rfc7323_paws
346 tcp_invalid_sequence 347 tcp_reset 348 tcp_invalid_syn 349 tcp_close 350 tcp_fastopen 351 tcp_old_ack
352 tcp_too_old_ack 353 tcp_ack_unsent_data 354 tcp_ofo_queue_prune 355 tcp_ofo_drop 356 tcp_minttl
357 ipv6_bad_exthdr 358 ipv6_ndisc_frag 359 ipv6_ndisc_hop_limit 360 ipv6_ndisc_bad_code
361 ipv6_ndisc_bad_options 362 ipv6_ndisc_ns_otherhost 363 tap_filter 364 tap_txfilter 365 tc_ingress
366 tc_egress 367 xdp 368 cpu_backlog 369 bpf_cgroup_egress 370 xfrm_policy 371 socket_filter 372 bgp_flowspec
"""
_drop_words = _DROP_NAMES.split()
#: Drop-reason codes (discarded_packet ``reason`` and discard output interfaces); 33/36 and 332/366 alias.
DROP_REASONS: dict[int, str] = {
    int(_drop_words[i]): _drop_words[i + 1] for i in range(0, len(_drop_words), 2)
}

MACHINE_TYPES = dict(
    enumerate(
        [
            "unknown",
            "other",
            "x86",
            "x86_64",
            "ia64",
            "sparc",
            "alpha",
            "powerpc",
            "m68k",
            "mips",
            "arm",
            "hppa",
            "s390",
        ]
    )
)
OS_NAMES = dict(
    enumerate(
        [
            "unknown",
            "other",
            "linux",
            "windows",
            "darwin",
            "hpux",
            "aix",
            "dragonfly",
            "freebsd",
            "netbsd",
            "openbsd",
            "osf",
            "solaris",
        ]
    )
)
AS_PATH_SEGMENT_TYPES = {1: "AS_SET", 2: "AS_SEQUENCE"}
URL_DIRECTIONS = {1: "src", 2: "dst"}
IEEE80211_VERSIONS = {1: "a", 2: "b", 3: "g", 4: "n"}
APP_STATUS = dict(
    enumerate(
        [
            "SUCCESS",
            "OTHER",
            "TIMEOUT",
            "INTERNAL_ERROR",
            "BAD_REQUEST",
            "FORBIDDEN",
            "TOO_LARGE",
            "NOT_IMPLEMENTED",
            "NOT_FOUND",
            "UNAVAILABLE",
            "UNAUTHORIZED",
        ]
    )
)
HTTP_METHODS = dict(
    enumerate(["OTHER", "OPTIONS", "GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "CONNECT"])
)
MEMCACHED_PROTOCOLS = {0: "OTHER", 1: "ASCII", 2: "BINARY"}
MEMCACHED_CMDS = dict(
    enumerate(
        [
            "OTHER",
            "SET",
            "ADD",
            "REPLACE",
            "APPEND",
            "PREPEND",
            "CAS",
            "GET",
            "GETS",
            "INCR",
            "DECR",
            "DELETE",
            "STATS",
            "FLUSH",
            "VERSION",
            "QUIT",
            "TOUCH",
        ]
    )
)
MEMCACHED_STATUS = dict(
    enumerate(
        [
            "UNKNOWN",
            "OK",
            "ERROR",
            "CLIENT_ERROR",
            "SERVER_ERROR",
            "STORED",
            "NOT_STORED",
            "EXISTS",
            "NOT_FOUND",
            "DELETED",
        ]
    )
)
ACL_DIRECTIONS = {0: "unknown", 1: "ingress", 2: "egress"}
SERVICE_DIRECTIONS = {1: "client", 2: "server"}
TRANSACTION_STATUS = {0: "succeeded", 1: "generic_failure", 2: "outofmemory", 3: "timeout", 4: "notpermitted"}
PACKET_DIRECTIONS = {0: "unknown", 1: "received", 2: "sent"}
RT_METRIC_TYPES = dict(
    enumerate(["string", "counter32", "counter64", "gauge32", "gauge64", "gaugeFloat", "gaugeDouble"])
)
RT_FLOW_TYPES = dict(enumerate(["string", "mac", "ip", "ip6", "int32", "int64", "float", "double"]))
DATA_SOURCE_TYPES = {0: "ifIndex", 1: "smonVlanDataSource", 2: "entPhysicalEntry"}

# --- shared sub-structures -------------------------------------------------------------------------------

_SAMPLED_ETHERNET = [U32("length"), Mac("src_mac"), Mac("dst_mac"), U32("type")]
_SAMPLED_IPV4 = [
    U32("length"),
    U32("protocol"),
    IPv4("src_ip"),
    IPv4("dst_ip"),
    U32("src_port"),
    U32("dst_port"),
    U32("tcp_flags"),
    U32("tos"),
]
_SAMPLED_IPV6 = [
    U32("length"),
    U32("protocol"),
    IPv6("src_ip"),
    IPv6("dst_ip"),
    U32("src_port"),
    U32("dst_port"),
    U32("tcp_flags"),
    U32("priority"),
]
_SOCKET_IPV4 = [U32("protocol"), IPv4("local_ip"), IPv4("remote_ip"), U32("local_port"), U32("remote_port")]
_SOCKET_IPV6 = [U32("protocol"), IPv6("local_ip"), IPv6("remote_ip"), U32("local_port"), U32("remote_port")]
_AS_PATH_SEGMENT = _sub(
    "as_path_segment",
    [
        Enum("type", AS_PATH_SEGMENT_TYPES),
        Array("value", U32("as")),
    ],
)
_CONTEXT = _sub(
    "context",
    [String("application", max_len=32), String("operation", max_len=32), String("attributes", max_len=255)],
)
_LANE = _sub(
    "lane",
    u32s(
        "index tx_bias_current tx_power tx_power_min tx_power_max tx_wavelength rx_power rx_power_min "
        "rx_power_max rx_wavelength"
    ),
)
_HOST_ADAPTER = _sub("host_adapter", [U32("ifIndex"), Array("mac_address", Mac("mac"))])
_PDU = _sub("pdu", [Nested("flow_records", "flow_records")])
_RT_METRIC = _sub(
    "rtmetric",
    [
        String("name", max_len=64),
        Enum("type", RT_METRIC_TYPES),
        Switch(
            "value",
            "type",
            {
                0: String("value", max_len=255),
                1: U32("value"),
                2: U64("value"),
                3: U32("value"),
                4: U64("value"),
                5: F32("value"),
                6: F64("value"),
            },
        ),
    ],
)
_RT_FLOW_FIELD = _sub(
    "rtflow_field",
    [
        String("name", max_len=64),
        Enum("type", RT_FLOW_TYPES),
        Switch(
            "value",
            "type",
            {
                0: String("value", max_len=255),
                1: Mac("value"),
                2: IPv4("value"),
                3: IPv6("value"),
                4: U32("value"),
                5: U64("value"),
                6: F32("value"),
                7: F64("value"),
            },
        ),
    ],
)

# --- samples ---------------------------------------------------------------------------------------------

_V5 = "sflow_version_5.txt"
_SAMPLES = [
    Structure(
        "sample",
        0,
        1,
        "flow_sample",
        [
            U32("sequence_number"),
            SourceId("source_id"),
            U32("sampling_rate"),
            U32("sample_pool"),
            U32("drops"),
            InterfaceCompact("input"),
            InterfaceCompact("output"),
            Nested("flow_records", "flow_records"),
        ],
        _V5,
    ),
    Structure(
        "sample",
        0,
        2,
        "counters_sample",
        [
            U32("sequence_number"),
            SourceId("source_id"),
            Nested("counters", "counter_records"),
        ],
        _V5,
    ),
    Structure(
        "sample",
        0,
        3,
        "flow_sample_expanded",
        [
            U32("sequence_number"),
            U32("source_id_type"),
            U32("source_id_index"),
            U32("sampling_rate"),
            U32("sample_pool"),
            U32("drops"),
            InterfaceExpanded("input"),
            InterfaceExpanded("output"),
            Nested("flow_records", "flow_records"),
        ],
        _V5,
    ),
    Structure(
        "sample",
        0,
        4,
        "counters_sample_expanded",
        [
            U32("sequence_number"),
            U32("source_id_type"),
            U32("source_id_index"),
            Nested("counters", "counter_records"),
        ],
        _V5,
    ),
    Structure(
        "sample",
        0,
        5,
        "discarded_packet",
        [
            U32("sequence_number"),
            U32("source_id_type"),
            U32("source_id_index"),
            U32("drops"),
            IfIndex("inputifindex", name="input"),
            IfIndex("outputifindex", name="output"),
            Enum("reason", DROP_REASONS),
            Nested("discard_records", "flow_records"),
        ],
        "sflow_drops.txt",
    ),
    Structure(
        "sample",
        4300,
        1002,
        "rtmetric",
        [
            String("datasource", max_len=64),
            Array("metrics", _RT_METRIC),
        ],
        "EXTRA_STRUCTURES.md 3.1 (hsflowd mod_json, sflowtool)",
    ),
    Structure(
        "sample",
        4300,
        1003,
        "rtflow",
        [
            String("datasource", max_len=64),
            U32("sampling_rate"),
            U32("sample_pool"),
            Array("fields", _RT_FLOW_FIELD, name="flow_fields"),
        ],
        "EXTRA_STRUCTURES.md 3.2 (hsflowd mod_json, sflowtool)",
    ),
    Structure(
        "sample",
        1991,
        1,
        "foundry_acl_sample",
        [
            U32("flags"),
            U32("group_id"),
            Nested("sample", "sample"),
        ],
        "EXTRA_STRUCTURES.md 3.3 (Brocade BigIron RX guide, pmacct)",
    ),
]

# --- flow records ----------------------------------------------------------------------------------------

_TUN = "sflow_tunnels.txt"
_HOST = "sflow_host.txt"
_APP = "sflow_application.txt"
_HTTP = "sflow_http.txt"
_EX = "EXTRA_STRUCTURES.md"
_FLOWS = [
    Structure(
        "flow",
        0,
        1,
        "sampled_header",
        [
            Enum("protocol", HEADER_PROTOCOLS, name="protocol"),
            U32("frame_length"),
            U32("stripped"),
            Opaque("header"),
        ],
        _V5,
        "header bytes decoded by header_protocol into fields['decoded']",
    ),
    Structure("flow", 0, 2, "sampled_ethernet", list(_SAMPLED_ETHERNET), _V5),
    Structure("flow", 0, 3, "sampled_ipv4", list(_SAMPLED_IPV4), _V5),
    Structure("flow", 0, 4, "sampled_ipv6", list(_SAMPLED_IPV6), _V5),
    Structure("flow", 0, 1001, "extended_switch", u32s("src_vlan src_priority dst_vlan dst_priority"), _V5),
    Structure(
        "flow",
        0,
        1002,
        "extended_router",
        [
            Address("nexthop"),
            U32("src_mask_len"),
            U32("dst_mask_len"),
        ],
        _V5,
    ),
    Structure(
        "flow",
        0,
        1003,
        "extended_gateway",
        [
            Address("nexthop"),
            U32("as"),
            U32("src_as"),
            U32("src_peer_as"),
            Array("dst_as_path", _AS_PATH_SEGMENT),
            Array("communities", U32("community")),
            U32("localpref"),
        ],
        _V5,
    ),
    Structure(
        "flow",
        0,
        1004,
        "extended_user",
        [
            U32("src_charset"),
            Opaque("src_user"),
            U32("dst_charset"),
            Opaque("dst_user"),
        ],
        _V5,
    ),
    Structure(
        "flow",
        0,
        1005,
        "extended_url",
        [
            Enum("direction", URL_DIRECTIONS),
            String("url"),
            String("host"),
        ],
        _V5,
    ),
    Structure(
        "flow",
        0,
        1006,
        "extended_mpls",
        [
            Address("nexthop"),
            Array("in_stack", I32("label")),
            Array("out_stack", I32("label")),
        ],
        _V5,
    ),
    Structure("flow", 0, 1007, "extended_nat", [Address("src_address"), Address("dst_address")], _V5),
    Structure(
        "flow",
        0,
        1008,
        "extended_mpls_tunnel",
        [
            String("tunnel_lsp_name"),
            U32("tunnel_id"),
            U32("tunnel_cos"),
        ],
        _V5,
    ),
    Structure(
        "flow",
        0,
        1009,
        "extended_mpls_vc",
        [
            String("vc_instance_name"),
            U32("vll_vc_id"),
            U32("vc_label_cos"),
        ],
        _V5,
    ),
    Structure("flow", 0, 1010, "extended_mpls_ftn", [String("mplsFTNDescr"), U32("mplsFTNMask")], _V5),
    Structure("flow", 0, 1011, "extended_mpls_ldp_fec", [U32("mplsFecAddrPrefixLength")], _V5),
    Structure("flow", 0, 1012, "extended_vlantunnel", [Array("stack", U32("tag"))], _V5),
    Structure(
        "flow", 0, 1013, "extended_80211_payload", [U32("ciphersuite"), Opaque("data")], "sflow_80211.txt"
    ),
    Structure(
        "flow",
        0,
        1014,
        "extended_80211_rx",
        [
            String("ssid", max_len=32),
            Mac("bssid"),
            Enum("version", IEEE80211_VERSIONS),
            U32("channel"),
            U64("speed"),
            U32("rsni"),
            U32("rcpi"),
            U32("packet_duration"),
        ],
        "sflow_80211.txt",
    ),
    Structure(
        "flow",
        0,
        1015,
        "extended_80211_tx",
        [
            String("ssid", max_len=32),
            Mac("bssid"),
            Enum("version", IEEE80211_VERSIONS),
            U32("transmissions"),
            U32("packet_duration"),
            U32("retrans_duration"),
            U32("channel"),
            U64("speed"),
            U32("power"),
        ],
        "sflow_80211.txt",
    ),
    Structure("flow", 0, 1016, "extended_80211_aggregation", [Array("pdus", _PDU)], "sflow_80211.txt"),
    Structure(
        "flow",
        0,
        1017,
        "extended_openflow_v1",
        [
            U64("flow_cookie"),
            U32("flow_match"),
            U32("flow_actions"),
        ],
        _EX + " 4.1",
    ),
    Structure(
        "flow", 0, 1018, "extended_fc", u32s("src_mask_len dst_mask_len next_hop metric"), _EX + " 4.2"
    ),
    Structure("flow", 0, 1019, "extended_queue_length", u32s("queue_index queue_length"), _EX + " 4.3"),
    Structure("flow", 0, 1020, "extended_nat_port", u32s("src_port dst_port"), _EX + " 4.4"),
    Structure(
        "flow",
        0,
        1021,
        "extended_l2_tunnel_egress",
        [Struct("header", _sub("sampled_ethernet", list(_SAMPLED_ETHERNET)))],
        _TUN,
    ),
    Structure(
        "flow",
        0,
        1022,
        "extended_l2_tunnel_ingress",
        [Struct("header", _sub("sampled_ethernet", list(_SAMPLED_ETHERNET)))],
        _TUN,
    ),
    Structure(
        "flow",
        0,
        1023,
        "extended_ipv4_tunnel_egress",
        [Struct("header", _sub("sampled_ipv4", list(_SAMPLED_IPV4)))],
        _TUN,
    ),
    Structure(
        "flow",
        0,
        1024,
        "extended_ipv4_tunnel_ingress",
        [Struct("header", _sub("sampled_ipv4", list(_SAMPLED_IPV4)))],
        _TUN,
    ),
    Structure(
        "flow",
        0,
        1025,
        "extended_ipv6_tunnel_egress",
        [Struct("header", _sub("sampled_ipv6", list(_SAMPLED_IPV6)))],
        _TUN,
    ),
    Structure(
        "flow",
        0,
        1026,
        "extended_ipv6_tunnel_ingress",
        [Struct("header", _sub("sampled_ipv6", list(_SAMPLED_IPV6)))],
        _TUN,
    ),
    Structure("flow", 0, 1027, "extended_decapsulate_egress", [U32("inner_header_offset")], _TUN),
    Structure("flow", 0, 1028, "extended_decapsulate_ingress", [U32("inner_header_offset")], _TUN),
    Structure("flow", 0, 1029, "extended_vni_egress", [U32("vni")], _TUN),
    Structure("flow", 0, 1030, "extended_vni_ingress", [U32("vni")], _TUN),
    Structure(
        "flow",
        0,
        1031,
        "extended_ib_lrh",
        u32s("src_vl src_sl src_dlid src_slid src_lnh dst_vl dst_sl dst_dlid dst_slid dst_lnh"),
        _EX + " 4.5",
    ),
    Structure(
        "flow",
        0,
        1032,
        "extended_ib_grh",
        [
            U32("flow_label"),
            U32("tc"),
            FixedOpaque("s_gid", 16),
            FixedOpaque("d_gid", 16),
            U32("next_header"),
            U32("length"),
        ],
        _EX + " 4.5",
    ),
    Structure("flow", 0, 1033, "extended_ib_bth", u32s("pkey dst_qp opcode"), _EX + " 4.5"),
    Structure("flow", 0, 1034, "extended_vlanin", [Array("stack", U32("tag"))], _EX + " 4.6"),
    Structure("flow", 0, 1035, "extended_vlanout", [Array("stack", U32("tag"))], _EX + " 4.6"),
    Structure("flow", 0, 1036, "extended_egress_queue", [U32("queue")], "sflow_drops.txt"),
    Structure(
        "flow",
        0,
        1037,
        "extended_acl",
        [
            U32("number"),
            String("name"),
            Enum("direction", ACL_DIRECTIONS),
        ],
        "sflow_drops.txt",
    ),
    Structure("flow", 0, 1038, "extended_function", [String("symbol")], "sflow_drops.txt"),
    Structure("flow", 0, 1039, "extended_transit", [U32("delay")], "sflow_transit.txt"),
    Structure("flow", 0, 1040, "extended_queue", [U32("depth")], "sflow_transit.txt"),
    Structure("flow", 0, 1041, "extended_hw_trap", [String("group"), String("trap")], _EX + " 4.7"),
    Structure("flow", 0, 1042, "extended_linux_drop_reason", [String("reason")], _EX + " 4.8"),
    Structure("flow", 0, 1043, "extended_timestamp", [U64("nanoseconds")], _EX + " 4.9"),
    Structure(
        "flow",
        0,
        2000,
        "transaction",
        [
            Enum("direction", SERVICE_DIRECTIONS),
            U32("wait"),
            U32("duration"),
            Enum("status", TRANSACTION_STATUS),
            U64("bytes_received"),
            U64("bytes_sent"),
        ],
        _EX + " 4.10",
    ),
    Structure(
        "flow",
        0,
        2001,
        "extended_nfs_storage_transaction",
        [
            Opaque("path"),
            U32("operation"),
            U32("status"),
        ],
        _EX + " 4.10",
    ),
    Structure(
        "flow", 0, 2002, "extended_scsi_storage_transaction", u32s("lun operation status"), _EX + " 4.10"
    ),
    Structure(
        "flow",
        0,
        2003,
        "extended_http_transaction",
        [
            String("url"),
            String("host"),
            String("referer"),
            String("useragent"),
            String("user"),
            U32("status"),
        ],
        _EX + " 4.10",
    ),
    Structure("flow", 0, 2100, "extended_socket_ipv4", list(_SOCKET_IPV4), _HOST),
    Structure("flow", 0, 2101, "extended_socket_ipv6", list(_SOCKET_IPV6), _HOST),
    Structure("flow", 0, 2102, "extended_proxy_socket_ipv4", list(_SOCKET_IPV4), _HTTP),
    Structure("flow", 0, 2103, "extended_proxy_socket_ipv6", list(_SOCKET_IPV6), _HTTP),
    Structure(
        "flow",
        0,
        2200,
        "memcached_operation",
        [
            Enum("protocol", MEMCACHED_PROTOCOLS),
            Enum("cmd", MEMCACHED_CMDS),
            String("key", max_len=255),
            U32("nkeys"),
            U32("value_bytes"),
            U32("uS", name="us"),
            Enum("status", MEMCACHED_STATUS),
        ],
        "sflow_memcache.txt (xdr/sflow_memcached.xdr)",
    ),
    Structure(
        "flow",
        0,
        2201,
        "http_request_deprecated",
        [
            Enum("method", HTTP_METHODS),
            U32("protocol"),
            String("uri", max_len=255),
            String("host", max_len=32),
            String("referer", max_len=255),
            String("useragent", max_len=64),
            String("authuser", max_len=32),
            String("mime_type", max_len=32),
            U64("bytes"),
            U32("uS", name="us"),
            U32("status"),
        ],
        _EX + " 4.11 (mod-sflow / sflowtool layout)",
    ),
    Structure(
        "flow",
        0,
        2202,
        "app_operation",
        [
            Struct("context", _CONTEXT),
            String("status_descr", max_len=64),
            U64("req_bytes"),
            U64("resp_bytes"),
            U32("uS", name="us"),
            Enum("status", APP_STATUS),
        ],
        _APP,
    ),
    Structure("flow", 0, 2203, "app_parent_context", [Struct("context", _CONTEXT)], _APP),
    Structure("flow", 0, 2204, "app_initiator", [String("actor", max_len=64)], _APP),
    Structure("flow", 0, 2205, "app_target", [String("actor", max_len=64)], _APP),
    Structure(
        "flow",
        0,
        2206,
        "http_request",
        [
            Enum("method", HTTP_METHODS),
            U32("protocol"),
            String("uri", max_len=255),
            String("host", max_len=64),
            String("referer", max_len=255),
            String("useragent", max_len=128),
            String("xff", max_len=64),
            String("authuser", max_len=32),
            String("mime_type", max_len=64),
            U64("req_bytes"),
            U64("resp_bytes"),
            U32("uS", name="us"),
            I32("status"),
        ],
        _HTTP,
    ),
    Structure(
        "flow",
        0,
        2207,
        "extended_proxy_request",
        [
            String("uri", max_len=255),
            String("host", max_len=64),
        ],
        _HTTP,
    ),
    Structure(
        "flow",
        0,
        2208,
        "extended_nav_timing",
        [
            Enum("type", {0: "navigate", 1: "reload", 2: "back_forward", 255: "reserved"}),
            *u32s(
                "redirectCount navigationStart unloadEventStart unloadEventEnd "
                "redirectStart redirectEnd fetchStart "
                "domainLookupStart domainLookupEnd connectStart connectEnd secureConnectionStart "
                "requestStart "
                "responseStart responseEnd domLoading domInteractive domContentLoadedEventStart "
                "domContentLoadedEventEnd domComplete loadEventStart loadEventEnd"
            ),
        ],
        _EX + " 4.12",
    ),
    Structure(
        "flow",
        0,
        2209,
        "extended_tcp_info",
        [
            Enum("dir", PACKET_DIRECTIONS),
            *u32s("snd_mss rcv_mss unacked lost retrans pmtu rtt rttvar snd_cwnd reordering min_rtt"),
        ],
        _EX + " 4.13",
    ),
    Structure(
        "flow",
        0,
        2210,
        "extended_entities",
        u32s("src_ds_class src_ds_index dst_ds_class dst_ds_index"),
        _EX + " 4.14",
    ),
    Structure("flow", 4413, 1, "bst_egress_queue", [U32("queue")], "bv-sflow.txt"),
    Structure("flow", 43874, 1, "pmacct_class", [NulString("protocol", 16)], _EX + " 4.15"),
    Structure("flow", 43874, 2, "pmacct_tag", [U64("tag"), U64("tag2")], _EX + " 4.16"),
    Structure("flow", 43874, 3, "pmacct_class2", u32s("master_protocol app_protocol"), _EX + " 4.17"),
]

# --- counter records -------------------------------------------------------------------------------------

_COUNTERS = [
    Structure(
        "counter",
        0,
        1,
        "if_counters",
        [
            U32("ifIndex"),
            U32("ifType"),
            U64("ifSpeed"),
            U32("ifDirection"),
            U32("ifStatus"),
            U64("ifInOctets"),
            *u32s(
                "ifInUcastPkts ifInMulticastPkts ifInBroadcastPkts ifInDiscards ifInErrors ifInUnknownProtos"
            ),
            U64("ifOutOctets"),
            *u32s(
                "ifOutUcastPkts ifOutMulticastPkts ifOutBroadcastPkts ifOutDiscards ifOutErrors "
                "ifPromiscuousMode"
            ),
        ],
        _V5,
    ),
    Structure(
        "counter",
        0,
        2,
        "ethernet_counters",
        u32s(
            "dot3StatsAlignmentErrors dot3StatsFCSErrors dot3StatsSingleCollisionFrames "
            "dot3StatsMultipleCollisionFrames dot3StatsSQETestErrors dot3StatsDeferredTransmissions "
            "dot3StatsLateCollisions dot3StatsExcessiveCollisions dot3StatsInternalMacTransmitErrors "
            "dot3StatsCarrierSenseErrors dot3StatsFrameTooLongs dot3StatsInternalMacReceiveErrors "
            "dot3StatsSymbolErrors"
        ),
        _V5,
    ),
    Structure(
        "counter",
        0,
        3,
        "tokenring_counters",
        u32s(
            "dot5StatsLineErrors dot5StatsBurstErrors dot5StatsACErrors dot5StatsAbortTransErrors "
            "dot5StatsInternalErrors dot5StatsLostFrameErrors dot5StatsReceiveCongestions "
            "dot5StatsFrameCopiedErrors dot5StatsTokenErrors dot5StatsSoftErrors dot5StatsHardErrors "
            "dot5StatsSignalLoss dot5StatsTransmitBeacons dot5StatsRecoverys "
            "dot5StatsLobeWires dot5StatsRemoves "
            "dot5StatsSingles dot5StatsFreqErrors"
        ),
        _V5,
    ),
    Structure(
        "counter",
        0,
        4,
        "vg_counters",
        [
            U32("dot12InHighPriorityFrames"),
            U64("dot12InHighPriorityOctets"),
            U32("dot12InNormPriorityFrames"),
            U64("dot12InNormPriorityOctets"),
            *u32s(
                "dot12InIPMErrors dot12InOversizeFrameErrors dot12InDataErrors dot12InNullAddressedFrames "
                "dot12OutHighPriorityFrames"
            ),
            U64("dot12OutHighPriorityOctets"),
            U32("dot12TransitionIntoTrainings"),
            *u64s("dot12HCInHighPriorityOctets dot12HCInNormPriorityOctets dot12HCOutHighPriorityOctets"),
        ],
        _V5,
    ),
    Structure(
        "counter",
        0,
        5,
        "vlan_counters",
        [
            U32("vlan_id"),
            U64("octets"),
            *u32s("ucastPkts multicastPkts broadcastPkts discards"),
        ],
        _V5,
    ),
    Structure(
        "counter",
        0,
        6,
        "ieee80211_counters",
        [
            *u32s(
                "dot11TransmittedFragmentCount dot11MulticastTransmittedFrameCount dot11FailedCount "
                "dot11RetryCount dot11MultipleRetryCount dot11FrameDuplicateCount dot11RTSSuccessCount "
                "dot11RTSFailureCount dot11ACKFailureCount dot11ReceivedFragmentCount "
                "dot11MulticastReceivedFrameCount dot11FCSErrorCount dot11TransmittedFrameCount "
                "dot11WEPUndecryptableCount"
            ),
            U32("dot11QoSDiscardedFragmentCount", name="dot11_qos_discarded_fragment_count"),
            U32("dot11AssociatedStationCount"),
            U32("dot11QoSCFPollsReceivedCount", name="dot11_qos_cf_polls_received_count"),
            U32("dot11QoSCFPollsUnusedCount", name="dot11_qos_cf_polls_unused_count"),
            U32("dot11QoSCFPollsUnusableCount", name="dot11_qos_cf_polls_unusable_count"),
            U32("dot11QoSCFPollsLostCount", name="dot11_qos_cf_polls_lost_count"),
        ],
        "sflow_80211.txt",
    ),
    Structure(
        "counter",
        0,
        7,
        "lag_port_stats",
        [
            Mac("dot3adAggPortActorSystemID"),
            Mac("dot3adAggPortPartnerOperSystemID"),
            U32("dot3adAggPortAttachedAggID"),
            FixedOpaque("dot3adAggPortState", 4),
            *u32s(
                "dot3adAggPortStatsLACPDUsRx dot3adAggPortStatsMarkerPDUsRx "
                "dot3adAggPortStatsMarkerResponsePDUsRx dot3adAggPortStatsUnknownRx "
                "dot3adAggPortStatsIllegalRx "
                "dot3adAggPortStatsLACPDUsTx dot3adAggPortStatsMarkerPDUsTx "
                "dot3adAggPortStatsMarkerResponsePDUsTx"
            ),
        ],
        "sflow_lag.txt",
    ),
    Structure(
        "counter",
        0,
        8,
        "slow_path_counts",
        u32s("unknown other cam_miss cam_full no_hw_support cntrl"),
        _EX + " 5.1",
    ),
    Structure(
        "counter",
        0,
        9,
        "ib_counters",
        [
            U64("PortXmitPkts"),
            U64("PortRcvPkts"),
            *u32s(
                "SymbolErrorCounter LinkErrorRecoveryCounter LinkDownedCounter PortRcvErrors "
                "PortRcvRemotePhysicalErrors PortRcvSwitchRelayErrors "
                "PortXmitDiscards PortXmitConstraintErrors "
                "PortRcvConstraintErrors LocalLinkIntegrityErrors ExcessiveBufferOverrunErrors VL15Dropped"
            ),
        ],
        _EX + " 5.2",
    ),
    Structure(
        "counter",
        0,
        10,
        "sfp",
        [
            U32("module_id"),
            U32("module_num_lanes"),
            U32("module_supply_voltage"),
            I32("module_temperature"),
            Array("lanes", _LANE),
        ],
        "sflow_optics.txt",
    ),
    Structure(
        "counter",
        0,
        11,
        "pfc_counters",
        u32s("requests indications pause_duration storm_detected storm_restored"),
        _EX + " 5.3",
    ),
    Structure(
        "counter",
        0,
        1001,
        "processor",
        [
            I32("cpu_5s"),
            I32("cpu_1m"),
            I32("cpu_5m"),
            U64("total_memory"),
            U64("free_memory"),
        ],
        _V5,
    ),
    Structure(
        "counter",
        0,
        1002,
        "radio_utilization",
        u32s("elapsed_time on_channel_time on_channel_busy_time"),
        "sflow_80211.txt",
    ),
    Structure(
        "counter",
        0,
        1003,
        "queue_length",
        u32s(
            "queueIndex segmentSize queueSegments queueLength0 queueLength1 queueLength2 queueLength4 "
            "queueLength8 queueLength32 queueLength128 queueLength1024 queueLengthMore dropped"
        ),
        _EX + " 5.4",
    ),
    Structure("counter", 0, 1004, "of_port", [U64("datapath_id"), U32("port_no")], "sflow_openflow.txt"),
    Structure("counter", 0, 1005, "port_name", [String("name", max_len=255)], "sflow_openflow.txt"),
    Structure(
        "counter",
        0,
        2000,
        "host_descr",
        [
            String("hostname", max_len=64),
            UUID("uuid"),
            Enum("machine_type", MACHINE_TYPES),
            Enum("os_name", OS_NAMES),
            String("os_release", max_len=32),
        ],
        _HOST + " (UUID fixed 16 bytes: EXTRA_STRUCTURES.md 2.3)",
    ),
    Structure("counter", 0, 2001, "host_adapters", [Array("adapters", _HOST_ADAPTER)], _HOST),
    Structure("counter", 0, 2002, "host_parent", u32s("container_type container_index"), _HOST),
    Structure(
        "counter",
        0,
        2003,
        "host_cpu",
        [
            F32("load_one"),
            F32("load_five"),
            F32("load_fifteen"),
            *u32s(
                "proc_run proc_total cpu_num cpu_speed uptime cpu_user cpu_nice cpu_system cpu_idle cpu_wio "
                "cpu_intr cpu_sintr interrupts contexts"
            ),
            U32("cpu_steal", optional=True),
            U32("cpu_guest", optional=True),
            U32("cpu_guest_nice", optional=True),
        ],
        _HOST + " (+3 optional fields: EXTRA_STRUCTURES.md 2.5)",
    ),
    Structure(
        "counter",
        0,
        2004,
        "host_memory",
        [
            *u64s("mem_total mem_free mem_shared mem_buffers mem_cached swap_total swap_free"),
            *u32s("page_in page_out swap_in swap_out"),
        ],
        _HOST,
    ),
    Structure(
        "counter",
        0,
        2005,
        "host_disk_io",
        [
            U64("disk_total"),
            U64("disk_free"),
            I32("part_max_used"),
            U32("reads"),
            U64("bytes_read"),
            U32("read_time"),
            U32("writes"),
            U64("bytes_written"),
            U32("write_time"),
        ],
        _HOST,
    ),
    Structure(
        "counter",
        0,
        2006,
        "host_net_io",
        [
            U64("bytes_in"),
            *u32s("pkts_in errs_in drops_in"),
            U64("bytes_out"),
            *u32s("packets_out errs_out drops_out"),
        ],
        _HOST,
    ),
    Structure(
        "counter",
        0,
        2007,
        "mib2_ip_group",
        u32s(
            "ipForwarding ipDefaultTTL ipInReceives ipInHdrErrors "
            "ipInAddrErrors ipForwDatagrams ipInUnknownProtos "
            "ipInDiscards ipInDelivers ipOutRequests ipOutDiscards ipOutNoRoutes ipReasmTimeout ipReasmReqds "
            "ipReasmOKs ipReasmFails ipFragOKs ipFragFails ipFragCreates"
        ),
        "sflow_host_ip.txt",
    ),
    Structure(
        "counter",
        0,
        2008,
        "mib2_icmp_group",
        u32s(
            "icmpInMsgs icmpInErrors icmpInDestUnreachs icmpInTimeExcds icmpInParamProbs icmpInSrcQuenchs "
            "icmpInRedirects icmpInEchos icmpInEchoReps icmpInTimestamps icmpInAddrMasks icmpInAddrMaskReps "
            "icmpOutMsgs icmpOutErrors icmpOutDestUnreachs "
            "icmpOutTimeExcds icmpOutParamProbs icmpOutSrcQuenchs "
            "icmpOutRedirects icmpOutEchos icmpOutEchoReps icmpOutTimestamps icmpOutTimestampReps "
            "icmpOutAddrMasks icmpOutAddrMaskReps"
        ),
        "sflow_host_ip.txt",
    ),
    Structure(
        "counter",
        0,
        2009,
        "mib2_tcp_group",
        u32s(
            "tcpRtoAlgorithm tcpRtoMin tcpRtoMax tcpMaxConn tcpActiveOpens tcpPassiveOpens tcpAttemptFails "
            "tcpEstabResets tcpCurrEstab tcpInSegs tcpOutSegs "
            "tcpRetransSegs tcpInErrs tcpOutRsts tcpInCsumErrs"
        ),
        "sflow_host_ip.txt",
    ),
    Structure(
        "counter",
        0,
        2010,
        "mib2_udp_group",
        u32s(
            "udpInDatagrams udpNoPorts udpInErrors udpOutDatagrams udpRcvbufErrors udpSndbufErrors "
            "udpInCsumErrors"
        ),
        "sflow_host_ip.txt",
    ),
    Structure(
        "counter",
        0,
        2100,
        "virt_node",
        [
            U32("mhz"),
            U32("cpus"),
            U64("memory"),
            U64("memory_free"),
            U32("num_domains"),
        ],
        _HOST,
    ),
    Structure("counter", 0, 2101, "virt_cpu", u32s("state cpuTime nrVirtCpu"), _HOST),
    Structure("counter", 0, 2102, "virt_memory", u64s("memory maxMemory"), _HOST),
    Structure(
        "counter",
        0,
        2103,
        "virt_disk_io",
        [
            *u64s("capacity allocation available"),
            U32("rd_req"),
            U64("rd_bytes"),
            U32("wr_req"),
            U64("wr_bytes"),
            U32("errs"),
        ],
        _HOST,
    ),
    Structure(
        "counter",
        0,
        2104,
        "virt_net_io",
        [
            U64("rx_bytes"),
            *u32s("rx_packets rx_errs rx_drop"),
            U64("tx_bytes"),
            *u32s("tx_packets tx_errs tx_drop"),
        ],
        _HOST,
    ),
    Structure(
        "counter",
        0,
        2105,
        "jmx_runtime",
        [
            String("vm_name", max_len=64),
            String("vm_vendor", max_len=32),
            String("vm_version", max_len=32),
        ],
        "sflow_jvm.txt",
    ),
    Structure(
        "counter",
        0,
        2106,
        "jmx_statistics",
        [
            *u64s(
                "heap_initial heap_used heap_committed heap_max non_heap_initial non_heap_used "
                "non_heap_committed non_heap_max"
            ),
            *u32s(
                "gc_count gc_time classes_loaded classes_total classes_unloaded compilation_time "
                "thread_num_live thread_num_daemon thread_num_started"
            ),
            U32("fd_open_count", optional=True),
            U32("fd_max_count", optional=True),
        ],
        "sflow_jvm.txt (fd_* optional: EXTRA_STRUCTURES.md 2.6)",
    ),
    Structure(
        "counter",
        0,
        2200,
        "memcached_counters_deprecated",
        [
            *u32s(
                "uptime rusage_user rusage_system curr_connections total_connections connection_structures "
                "cmd_get cmd_set cmd_flush get_hits get_misses "
                "delete_misses delete_hits incr_misses incr_hits "
                "decr_misses decr_hits cas_misses cas_hits cas_badval auth_cmds auth_errors"
            ),
            *u64s("bytes_read bytes_written"),
            *u32s("limit_maxbytes accepting_conns listen_disabled_num threads conn_yields"),
            U64("bytes"),
            *u32s("curr_items total_items evictions"),
        ],
        _EX + " 5.5",
    ),
    Structure(
        "counter",
        0,
        2201,
        "http_counters",
        [
            *u32s(
                "method_option_count method_get_count method_head_count method_post_count method_put_count "
                "method_delete_count method_trace_count method_connect_count method_other_count"
            ),
            *[U32(f"status_{n}XX_count", name=f"status_{n}xx_count") for n in range(1, 6)],
            U32("status_other_count"),
        ],
        _HTTP,
    ),
    Structure(
        "counter",
        0,
        2202,
        "app_operations",
        [
            String("application", max_len=32),
            *u32s(
                "success other timeout internal_error bad_request "
                "forbidden too_large not_implemented not_found "
                "unavailable unauthorized"
            ),
        ],
        _APP,
    ),
    Structure(
        "counter",
        0,
        2203,
        "app_resources",
        [
            U32("user_time"),
            U32("system_time"),
            U64("mem_used"),
            U64("mem_max"),
            *u32s("fd_open fd_max conn_open conn_max"),
        ],
        _APP,
    ),
    Structure(
        "counter",
        0,
        2204,
        "memcached_counters",
        [
            *u32s(
                "cmd_set cmd_touch cmd_flush get_hits get_misses "
                "delete_hits delete_misses incr_hits incr_misses "
                "decr_hits decr_misses cas_hits cas_misses cas_badval "
                "auth_cmds auth_errors threads conn_yields "
                "listen_disabled_num curr_connections rejected_connections total_connections "
                "connection_structures evictions reclaimed curr_items total_items"
            ),
            *u64s("bytes_read bytes_written bytes limit_maxbytes"),
        ],
        "sflow_memcache.txt (xdr/sflow_memcached.xdr)",
    ),
    Structure(
        "counter",
        0,
        2205,
        "vdi_counters",
        u32s(
            "sessions_current sessions_total sessions_duration rx_bytes tx_bytes rx_packets tx_packets "
            "rx_packets_lost tx_packets_lost rtt_min_ms rtt_max_ms rtt_avg_ms audio_rx_bytes audio_tx_bytes "
            "audio_tx_limit img_rx_bytes img_tx_bytes img_frames img_qual_min img_qual_max img_qual_avg "
            "usb_rx_bytes usb_tx_bytes"
        ),
        _EX + " 5.6",
    ),
    Structure(
        "counter",
        0,
        2206,
        "app_workers",
        u32s("workers_active workers_idle workers_max req_delayed req_dropped"),
        _APP,
    ),
    Structure(
        "counter", 0, 2207, "ovs_dp_stats", u32s("hits misses lost mask_hits flows masks"), _EX + " 5.7"
    ),
    Structure(
        "counter",
        0,
        3000,
        "energy",
        [
            *u32s("voltage current real_power"),
            I32("power_factor"),
            *u32s("energy errors"),
        ],
        _EX + " 5.8",
    ),
    Structure(
        "counter", 0, 3001, "temperature", [I32("minimum"), I32("maximum"), U32("errors")], _EX + " 5.8"
    ),
    Structure("counter", 0, 3002, "humidity", [I32("relative")], _EX + " 5.8"),
    Structure("counter", 0, 3003, "fans", u32s("total failed speed"), _EX + " 5.8"),
    Structure("counter", 4413, 1, "bst_device_buffers", [I32("uc_pc"), I32("mc_pc")], "bv-sflow.txt"),
    Structure(
        "counter",
        4413,
        2,
        "bst_port_buffers",
        [
            I32("ingress_uc_pc"),
            I32("ingress_mc_pc"),
            I32("egress_uc_pc"),
            I32("egress_mc_pc"),
            Array("egress_queue_uc_pc", I32("percentage")),
            Array("egress_queue_mc_pc", I32("percentage")),
        ],
        "bv-sflow.txt",
    ),
    Structure(
        "counter",
        4413,
        3,
        "hw_tables",
        u32s(
            "host_entries host_entries_max ipv4_entries ipv4_entries_max ipv6_entries ipv6_entries_max "
            "ipv4_ipv6_entries ipv6_ipv6_entries_max long_ipv6_entries long_ipv6_entries_max total_routes "
            "total_routes_max ecmp_nexthops ecmp_nexthops_max mac_entries mac_entries_max ipv4_neighbors "
            "ipv6_neighbors ipv4_routes ipv6_routes acl_ingress_entries acl_ingress_entries_max "
            "acl_ingress_counters acl_ingress_counters_max acl_ingress_meters acl_ingress_meters_max "
            "acl_ingress_slices acl_ingress_slices_max acl_egress_entries acl_egress_entries_max "
            "acl_egress_counters acl_egress_counters_max acl_egress_meters acl_egress_meters_max "
            "acl_egress_slices acl_egress_slices_max"
        ),
        "sflow_broadcom_tables.txt",
    ),
    Structure(
        "counter",
        5703,
        1,
        "nvidia_gpu",
        [
            *u32s("device_count processes gpu_time mem_time"),
            *u64s("mem_total mem_free"),
            *u32s("ecc_errors energy temperature fan_speed"),
        ],
        "sflow_nvml.txt",
    ),
]

#: Every known structure by ``(kind, enterprise, format)``.
STRUCTURES: dict[Key, Structure] = {s.key: s for s in (*_SAMPLES, *_FLOWS, *_COUNTERS)}
#: Structures by name (``sampled_header``, ``if_counters``...), for builders.
BY_NAME: dict[str, Structure] = {s.name: s for s in STRUCTURES.values()}


def structure_name(kind: str, enterprise: int, fmt: int) -> str:
    """The name of a tag, or ``unknown_<kind>_<ent>_<fmt>``."""
    s = STRUCTURES.get((kind, enterprise, fmt))
    return s.name if s is not None else f"unknown_{kind}_{enterprise}_{fmt}"


def markdown(structures: Iterable[Structure] | None = None) -> str:
    """The generated documentation: every tag with its fields (name, wire type, specification name)."""
    items = sorted(
        structures or STRUCTURES.values(),
        key=lambda s: ({"sample": 0, "flow": 1, "counter": 2}[s.kind], s.enterprise, s.format),
    )
    lines = [
        "# sFlow v5 structures decoded by peerlab_tui.core.sflow",
        "",
        f"Generated from the field tables ({len(items)} tags). Every structure is `data_format` "
        "(enterprise << 12 | format) + `length` + body; names are the JSON/`fields` keys.",
        "",
        "| kind | tag | name | size | source |",
        "|---|---|---|---|---|",
    ]
    for s in items:
        size = str(s.size) if s.size is not None else f">= {s.min_size}"
        lines.append(f"| {s.kind} | {s.tag} | {s.name} | {size} | {s.source} |")
    for s in items:
        lines += ["", f"## {s.kind} {s.tag} {s.name}", ""]
        if s.doc:
            lines += [s.doc, ""]
        lines += ["| field | type | spec name |", "|---|---|---|"]
        for f in s.fields:
            opt = " (optional)" if f.optional else ""
            lines.append(f"| {f.name} | {f.describe()}{opt} | {f.spec_name} |")
    subs: dict[str, Structure] = {}
    for s in items:
        _collect_subs(s, subs)
    if subs:
        lines += ["", "## Sub-structures (array elements and embedded structs)"]
    for name, sub in sorted(subs.items()):
        lines += ["", f"### {name}", "", "| field | type | spec name |", "|---|---|---|"]
        lines += [f"| {f.name} | {f.describe()} | {f.spec_name} |" for f in sub.fields]
    return "\n".join(lines) + "\n"


def _collect_subs(structure: Structure, subs: dict[str, Structure]) -> None:
    for f in structure.fields:
        inner = getattr(f, "element", None) or getattr(f, "structure", None)
        if isinstance(inner, Structure) and inner.name not in subs:
            subs[inner.name] = inner
            _collect_subs(inner, subs)


def main(argv: list[str] | None = None) -> int:
    """``python -m peerlab_tui.core.sflow.structures --markdown``: print the documentation."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] not in ("--markdown", "--count"):
        sys.stderr.write("usage: python -m peerlab_tui.core.sflow.structures [--markdown|--count]\n")
        return 2
    if args and args[0] == "--count":
        sys.stdout.write(f"{len(STRUCTURES)}\n")
        return 0
    sys.stdout.write(markdown())
    return 0
