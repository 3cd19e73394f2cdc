"""Egress policies without a jail: rules, decisions, secrets and narrowing (``egress.policy``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionpool import errors
from sessionpool.config import EgressSettings, PoolConfig
from sessionpool.egress.policy import (
    DEFAULT_PORTS,
    EgressPolicy,
    EgressRule,
    narrow,
    parse_rules,
    parse_secrets,
    pool_policy,
    settings_policy,
)

# --- rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pattern", "ports"),
    [
        ("example.com", "example.com", DEFAULT_PORTS),
        ("  Example.COM. ", "example.com", DEFAULT_PORTS),
        ("*.example.com", "*.example.com", DEFAULT_PORTS),
        ("example.com:8443", "example.com", frozenset({8443})),
        ("*.Example.com:22", "*.example.com", frozenset({22})),
        ("bücher.de", "xn--bcher-kva.de", DEFAULT_PORTS),
        ("*.BÜCHER.de:443", "*.xn--bcher-kva.de", frozenset({443})),
        ("a-b.c-d.io", "a-b.c-d.io", DEFAULT_PORTS),
        ("localhost", "localhost", DEFAULT_PORTS),
    ],
)
def test_rules_parse_to_a_normal_form(text: str, pattern: str, ports: frozenset[int]) -> None:
    rule = EgressRule.parse(text)
    assert (rule.pattern, rule.ports) == (pattern, ports)
    assert rule.wildcard == pattern.startswith("*.")
    # the text form parses back to the same rule
    assert EgressRule.parse(str(rule)) == rule


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("1.2.3.4", "is an IP address"),
        ("1.2.3.4:443", "is an IP address"),
        ("::1", "is an IP address"),
        ("[::1]", "is an IP address"),
        ("[::1]:443", "not a valid host name"),
        ("example.com:0", "port 0 is out of range"),
        ("example.com:65536", "port 65536 is out of range"),
        ("example.com:http", "the port must be a number"),
        ("example.com:", "the port must be a number"),
        ("example.com:+80", "the port must be a number"),
        ("example.com: 80", "the port must be a number"),
        ("example.com:8_0", "the port must be a number"),
        ("example.com:٨٠", "the port must be a number"),  # Arabic-Indic digits
        ("a.*.b", "a wildcard is only allowed as the first label"),
        ("*", "a wildcard is only allowed as the first label"),
        ("*.*.example.com", "a wildcard is only allowed as the first label"),
        ("ex*ample.com", "a wildcard is only allowed as the first label"),
        ("*example.com", "a wildcard is only allowed as the first label"),
        ("", "an empty host name"),
        ("*.", "an empty host name"),
        ("ex ample.com", "not a valid host name"),
        ("-example.com", "not a valid host name"),
        ("example-.com", "not a valid host name"),
        ("exa_mple.com", "not a valid host name"),
        ("a..b", "not a valid host name"),
        ("x" * 64 + ".com", "not a valid host name"),
        (".".join(["abcdefghi"] * 26), "not a valid host name"),  # 259 characters
        ("http://example.com", "the port must be a number"),
    ],
)
def test_bad_rules_are_refused_saying_why(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        EgressRule.parse(text)
    assert needle in str(info.value)


def test_a_wildcard_matches_subdomains_only_and_ports_count() -> None:
    rule = EgressRule.parse("*.example.com")
    assert rule.matches("api.example.com", 443)
    assert rule.matches("a.b.example.com", 80)
    assert not rule.matches("example.com", 443)  # not the bare domain
    assert not rule.matches("badexample.com", 443)  # a suffix, not a subdomain
    assert not rule.matches("example.com.evil.net", 443)
    assert not rule.matches("api.example.com", 8080)  # default ports: 80 and 443 only
    exact = EgressRule.parse("example.com:8443")
    assert exact.matches("example.com", 8443)
    assert not exact.matches("example.com", 443)
    assert not exact.matches("api.example.com", 8443)
    assert exact.matches_host("example.com")


def test_covers_is_about_hosts_and_ports_together() -> None:
    wide = EgressRule.parse("*.example.com")
    assert wide.covers(EgressRule.parse("api.example.com"))
    assert wide.covers(EgressRule.parse("*.api.example.com"))
    assert wide.covers(EgressRule.parse("api.example.com:443"))
    assert wide.covers(wide)
    assert not wide.covers(EgressRule.parse("example.com"))
    assert not wide.covers(EgressRule.parse("api.example.com:8443"))
    assert not wide.covers(EgressRule.parse("*.other.com"))
    assert not wide.covers(EgressRule.parse("*.badexample.com"))
    exact = EgressRule.parse("api.example.com")
    assert not exact.covers(wide)
    assert not exact.covers(EgressRule.parse("*.api.example.com"))
    assert exact.covers(EgressRule.parse("api.example.com:80"))
    assert not EgressRule.parse("api.example.com:80").covers(exact)  # 443 is not in it


def test_parse_rules_names_where_a_non_string_came_from() -> None:
    with pytest.raises(ValueError, match=r"egress\.allow: expected host names, got 3"):
        parse_rules(["example.com", 3], "egress.allow")  # type: ignore[list-item]
    assert parse_rules(["a.com", "*.b.com:81"]) == (
        EgressRule("a.com"),
        EgressRule("*.b.com", frozenset({81})),
    )


# --- decisions ---------------------------------------------------------------------------------

ALLOW = EgressPolicy(
    "allowlist", parse_rules(["api.example.com", "*.cdn.net", "db.example.com:5432"])
)


@pytest.mark.parametrize(
    ("host", "port", "reason"),
    [
        ("api.example.com", 443, None),
        ("api.example.com", 80, None),
        ("x.cdn.net", 443, None),
        ("db.example.com", 5432, None),
        ("cdn.net", 443, "host not in allowlist"),
        ("example.com", 443, "host not in allowlist"),
        ("evil.com", 443, "host not in allowlist"),
        ("api.example.com", 22, "port 22 not in allowlist for this host"),
        ("db.example.com", 443, "port 443 not in allowlist for this host"),
        ("x.cdn.net", 8080, "port 8080 not in allowlist for this host"),
        ("93.184.216.34", 443, "IP addresses are not allowed (name the host)"),
        ("2606:2800:220:1::1", 443, "IP addresses are not allowed (name the host)"),
        ("[2606:2800:220:1::1]", 443, "IP addresses are not allowed (name the host)"),
    ],
)
def test_an_allowlist_decides_with_a_reason(host: str, port: int, reason: str | None) -> None:
    assert ALLOW.decide(host, port) == reason


def test_off_refuses_everything_and_on_admits_everything() -> None:
    off = EgressPolicy("off", parse_rules(["api.example.com"]))
    for host, port in (("api.example.com", 443), ("1.2.3.4", 80)):
        assert off.decide(host, port) == "network access is off for this session"
    on = EgressPolicy("on")
    assert on.decide("anything.example", 12345) is None
    assert on.decide("1.2.3.4", 80) is None
    assert EgressPolicy().mode == "off"


def test_describe_shows_domains_and_header_names_never_values() -> None:
    policy = EgressPolicy(
        "allowlist",
        parse_rules(["api.example.com", "*.cdn.net:8443"]),
        parse_secrets({"api.example.com": {"Authorization": "Bearer s3cret", "X-Key": "k-999"}}),
    )
    shown = policy.describe()
    assert shown == {
        "mode": "allowlist",
        "allow": ["api.example.com", "*.cdn.net:8443"],
        "secrets": {"api.example.com": ["Authorization", "X-Key"]},
    }
    assert "s3cret" not in repr(shown) and "k-999" not in repr(shown)
    assert policy.headers_for("api.example.com") == (
        ("Authorization", "Bearer s3cret"),
        ("X-Key", "k-999"),
    )
    assert policy.headers_for("other.example.com") is None


# --- secrets -----------------------------------------------------------------------------------


def test_secrets_are_normalised_by_domain() -> None:
    assert parse_secrets({"API.Example.com.": {"X-Token": "v"}}) == {
        "api.example.com": (("X-Token", "v"),)
    }


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"a.com": {"X-Key": "v\r\nX-Injected: 1"}}, "must be one line"),
        ({"a.com": {"X-Key": "v\nw"}}, "must be one line"),
        ({"a.com": {"X-Key": "v\rw"}}, "must be one line"),
        ({"a.com": {"X-Key": "v\0w"}}, "must be one line"),
        ({"a.com": {"X-Key": 5}}, "must be one line"),
        ({"*.a.com": {"X-Key": "v"}}, "not a wildcard"),
        ({"a.com": {"Host": "b.com"}}, "Host cannot be set by a policy"),
        ({"a.com": {"content-length": "0"}}, "content-length cannot be set by a policy"),
        ({"a.com": {"Transfer-Encoding": "chunked"}}, "cannot be set by a policy"),
        ({"a.com": {"Connection": "close"}}, "cannot be set by a policy"),
        ({"a.com": {"Bad Name": "v"}}, "is not a header name"),
        ({"a.com": {"X-Key:": "v"}}, "is not a header name"),
        ({"a.com": {"": "v"}}, "is not a header name"),
        ({"a.com": {}}, "expected a table of header names"),
        ({"a.com": "Bearer x"}, "expected a table of header names"),
        ({"10.0.0.1": {"X-Key": "v"}}, "is an IP address"),
    ],
)
def test_bad_secrets_are_refused(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_secrets(raw, "egress.secrets")  # type: ignore[arg-type]
    assert needle in str(info.value)
    assert str(info.value).startswith("egress.secrets: ")


def test_a_pools_settings_make_its_policy() -> None:
    settings_ = EgressSettings(
        allow=("*.example.com",), secrets=(("api.example.com", (("X-Key", "k"),)),)
    )
    policy = pool_policy(PoolConfig(network="allowlist", egress=settings_))
    assert policy == settings_policy("allowlist", settings_)
    assert policy.mode == "allowlist"
    assert policy.rules == (EgressRule("*.example.com"),)
    assert policy.headers_for("api.example.com") == (("X-Key", "k"),)
    assert pool_policy(PoolConfig()).mode == "off"
    with pytest.raises(ValueError, match=r"egress\.allow"):
        settings_policy("allowlist", EgressSettings(allow=(7,)))  # type: ignore[arg-type]


# --- narrowing ---------------------------------------------------------------------------------

POOL = EgressPolicy(
    "allowlist",
    parse_rules(["*.example.com", "api.other.com", "db.example.org:5432"]),
    parse_secrets({"api.example.com": {"Authorization": "pool-token", "X-Pool": "p"}}),
)


def test_narrowing_to_off_is_always_allowed() -> None:
    for base in (EgressPolicy("off"), POOL, EgressPolicy("on")):
        narrowed = narrow("p", base, "off", ["anything.example"], {"x.example": {"A": "b"}})
        assert narrowed == EgressPolicy("off")


def test_nothing_widens_an_off_pool() -> None:
    for mode in ("allowlist", "on"):
        with pytest.raises(errors.EgressWidens) as info:
            narrow("quiet", EgressPolicy("off"), mode, ["example.com"])  # type: ignore[arg-type]
        assert "pool 'quiet': the pool's network is off" in info.value.message
        assert info.value.param == "network"
        assert info.value.pool == "quiet"
        assert info.value.limit == "network"


def test_on_is_refused_to_an_allowlist_pool() -> None:
    with pytest.raises(errors.EgressWidens) as info:
        narrow("p", POOL, "on")
    assert "unrestricted network (`on`)" in info.value.message
    assert "can only be narrowed" in info.value.message


@pytest.mark.parametrize(
    "allow",
    [
        ["evil.com"],
        ["example.com"],  # the wildcard does not admit the bare domain
        ["*.com"],
        ["api.example.com:8443"],  # a port the pool does not admit
        ["db.example.org"],  # 80 and 443, the pool has 5432 only
        ["api.other.com", "*.other.com"],
    ],
)
def test_hosts_or_ports_outside_the_pool_are_refused(allow: list[str]) -> None:
    with pytest.raises(errors.EgressWidens) as info:
        narrow("p", POOL, "allowlist", allow)
    assert info.value.param == "allow"
    assert "is not in the pool's allowlist" in info.value.message


def test_narrowing_within_the_pool() -> None:
    narrowed = narrow(
        "p", POOL, "allowlist", ["api.example.com", "*.cdn.example.com", "db.example.org:5432"]
    )
    assert narrowed.decide("api.example.com", 443) is None
    assert narrowed.decide("x.cdn.example.com", 443) is None
    assert narrowed.decide("db.example.org", 5432) is None
    assert narrowed.decide("www.example.com", 443) == "host not in allowlist"
    assert narrowed.decide("api.other.com", 443) == "host not in allowlist"
    # allow None keeps the pool's hosts; an empty list admits none
    assert narrow("p", POOL, "allowlist").rules == POOL.rules
    assert narrow("p", POOL, "allowlist", []).decide("api.example.com", 443) == (
        "host not in allowlist"
    )


def test_an_on_pool_takes_any_narrowing() -> None:
    on = EgressPolicy("on")
    assert narrow("p", on, "on").decide("anything.example", 1) is None
    narrowed = narrow("p", on, "allowlist", ["api.example.com"])
    assert narrowed.decide("api.example.com", 443) is None
    assert narrowed.decide("other.example.com", 443) == "host not in allowlist"


def test_bad_rules_or_secrets_in_a_narrowing_are_invalid_arguments() -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        narrow("p", POOL, "allowlist", ["1.2.3.4"])
    assert not isinstance(info.value, errors.EgressWidens)
    assert info.value.message.startswith("egress policy: allow: '1.2.3.4' is an IP address")
    with pytest.raises(errors.InvalidArgument, match="must be one line"):
        narrow("p", POOL, "allowlist", None, {"api.example.com": {"X": "a\r\nb"}})


def test_secrets_only_for_domains_the_result_admits() -> None:
    with pytest.raises(errors.EgressWidens) as info:
        narrow("p", POOL, "allowlist", ["api.example.com"], {"www.example.com": {"X": "v"}})
    assert info.value.param == "secrets"
    assert "secrets for www.example.com, which this policy does not admit" in info.value.message
    ok = narrow("p", POOL, "allowlist", ["www.example.com"], {"www.example.com": {"X": "v"}})
    assert ok.headers_for("www.example.com") == (("X", "v"),)
    # the pool's secrets for a domain the result no longer admits are not carried along
    assert ok.headers_for("api.example.com") is None


def test_secrets_follow_a_domain_admitted_on_another_port() -> None:
    """A domain admitted only on a non-default port still has its secrets (the proxy adds them
    whatever the port): narrowing keeps the pool's and takes the session's."""
    base = EgressPolicy(
        "allowlist",
        parse_rules(["api.example.com:8443"]),
        parse_secrets({"api.example.com": {"X-Pool": "p"}}),
    )
    kept = narrow("p", base, "allowlist")
    assert kept.headers_for("api.example.com") == (("X-Pool", "p"),)
    added = narrow("p", base, "allowlist", None, {"api.example.com": {"X-Session": "s"}})
    assert added.headers_for("api.example.com") == (("X-Pool", "p"), ("X-Session", "s"))


def test_the_pools_secrets_win_over_the_sessions() -> None:
    narrowed = narrow(
        "p",
        POOL,
        "allowlist",
        None,
        {"api.example.com": {"authorization": "session-token", "X-Session": "s"}},
    )
    assert narrowed.headers_for("api.example.com") == (
        ("Authorization", "pool-token"),
        ("X-Pool", "p"),
        ("X-Session", "s"),
    )
    assert "session-token" not in repr(narrowed.secrets)


# --- property: a narrowing never admits what its pool refuses ----------------------------------

LABELS = st.sampled_from(["a", "b", "api", "x-1"])
DOMAINS = st.lists(LABELS, min_size=1, max_size=3).map(lambda ls: ".".join([*ls, "example"]))
PORTS = st.sampled_from([None, 80, 443, 8443])


@st.composite
def rule_texts(draw: st.DrawFn) -> str:
    host = draw(DOMAINS)
    if draw(st.booleans()):
        host = "*." + host
    port = draw(PORTS)
    return host if port is None else f"{host}:{port}"


@given(
    base_rules=st.lists(rule_texts(), max_size=4),
    base_mode=st.sampled_from(["off", "allowlist", "on"]),
    mode=st.sampled_from(["off", "allowlist", "on"]),
    asked=st.none() | st.lists(rule_texts(), max_size=4),
    probes=st.lists(st.tuples(DOMAINS, st.sampled_from([80, 443, 8443, 22])), max_size=8),
)
@settings(max_examples=300, deadline=None)
def test_a_narrowing_never_admits_what_the_pool_refuses(
    base_rules: list[str],
    base_mode: str,
    mode: str,
    asked: list[str] | None,
    probes: list[tuple[str, int]],
) -> None:
    base = EgressPolicy(base_mode, parse_rules(base_rules))  # type: ignore[arg-type]
    try:
        narrowed = narrow("p", base, mode, asked)  # type: ignore[arg-type]
    except errors.EgressWidens:
        return
    for host, port in probes:
        if base.decide(host, port) is not None:
            assert narrowed.decide(host, port) is not None, (host, port)
    for rule in narrowed.rules if narrowed.mode == "allowlist" else ():
        for host in (rule.pattern.removeprefix("*."), "z." + rule.pattern.removeprefix("*.")):
            for port in rule.ports:
                if narrowed.decide(host, port) is None:
                    assert base.decide(host, port) is None, (rule, host, port)
