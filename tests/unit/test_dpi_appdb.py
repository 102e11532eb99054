"""The DPI application database: data files, pattern semantics, sources,
registrable domains."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homegw.modules.dpi import appdb
from homegw.modules.dpi.appdb import App, AppDb, AppDbError, registrable_domain
from homegw.modules.dpi.categories import CATEGORIES, category_id, category_number
from homegw.modules.dpi.classify import APP_IDS


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def shipped() -> AppDb:
    return AppDb.load()


def tiny(tmp_path: Path, text: str) -> AppDb:
    """A database of one shipped file (not the real data)."""
    folder = tmp_path / "shipped"
    folder.mkdir(exist_ok=True)
    write(folder / "a.yaml", text)
    return AppDb.load(shipped=folder)


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(AppDbError) as caught:
        tiny(tmp_path, text)
    return str(caught.value)


# -- the shipped data ----------------------------------------------------------
def test_shipped_database_has_enough_apps_and_categories(shipped: AppDb) -> None:
    assert len(shipped.apps) >= 150
    used = {app.category for app in shipped.apps}
    assert len(used) >= 15
    assert used <= {c.id for c in CATEGORIES} - {"unknown"}
    assert len({app.id for app in shipped.apps}) == len(shipped.apps)
    assert shipped.source == "shipped"


# The market baseline (REFERENCES.md: ~30 popular apps) and their category.
BASELINE = {
    "youtube": "video",
    "netflix": "video",
    "tiktok": "social",
    "roblox": "games",
    "discord": "messaging",
    "whatsapp": "messaging",
    "fortnite": "games",
    "twitch": "video",
    "disney_plus": "video",
    "steam": "games",
    "spotify": "music",
    "instagram": "social",
    "facebook": "social",
    "snapchat": "social",
    "minecraft": "games",
    "zoom": "messaging",
    "teams": "messaging",
    "prime_video": "video",
    "hulu": "video",
    "max": "video",
    "twitter": "social",
    "reddit": "social",
    "pinterest": "social",
    "telegram": "messaging",
    "signal": "messaging",
    "messenger": "messaging",
    "xbox": "games",
    "playstation": "games",
    "nintendo": "games",
    "chatgpt": "ai",
    "pornhub": "adult",
    "bet365": "gambling",
    "khan_academy": "education",
    "duolingo": "education",
    "amazon": "shopping",
}


def test_market_baseline_apps_are_there(shipped: AppDb) -> None:
    found = {app_id: shipped.category_of(app_id) for app_id in BASELINE}
    assert found == BASELINE


# Real names each baseline app's traffic uses: the database must know them.
REAL_NAMES = {
    "www.youtube.com": "youtube",
    "rr3---sn-4g5e6nsz.googlevideo.com": "youtube",
    "i.ytimg.com": "youtube",
    "youtu.be": "youtube",
    "www.youtube-nocookie.com": "youtube",
    "music.youtube.com": "youtube_music",
    "www.netflix.com": "netflix",
    "ipv4-c001-lhr001-ix.1.oca.nflxvideo.net": "netflix",
    "occ-0-1-2.1.nflxso.net": "netflix",
    "assets.nflxext.com": "netflix",
    "www.tiktok.com": "tiktok",
    "v16-webapp.tiktok.com": "tiktok",
    "p16-sign-va.tiktokcdn.com": "tiktok",
    "api16-normal-c-useast1a.tiktokv.com": "tiktok",
    "www.roblox.com": "roblox",
    "tr.rbxcdn.com": "roblox",
    "gateway.discord.gg": "discord",
    "cdn.discordapp.com": "discord",
    "media.discordapp.net": "discord",
    "web.whatsapp.com": "whatsapp",
    "mmg.whatsapp.net": "whatsapp",
    "account-public-service-prod.ol.epicgames.com": "fortnite",
    "usher.ttvnw.net": "twitch",
    "www.twitch.tv": "twitch",
    "disney.api.edge.bamgrid.com": "disney_plus",
    "www.disneyplus.com": "disney_plus",
    "store.steampowered.com": "steam",
    "cache1-fra1.steamcontent.com": "steam",
    "open.spotify.com": "spotify",
    "i.scdn.co": "spotify",
    "scontent.cdninstagram.com": "instagram",
    "static.xx.fbcdn.net": "facebook",
    "app.snapchat.com": "snapchat",
    "session.minecraft.net": "minecraft",
    "us05web.zoom.us": "zoom",
    "teams.microsoft.com": "teams",
    "login.microsoftonline.com": "microsoft_365",
    "pbs.twimg.com": "twitter",
    "dns.google": "google_dns",
    "cloudflare-dns.com": "cloudflare_dns",
    "mozilla.cloudflare-dns.com": "firefox_doh",
    "dns.quad9.net": "quad9",
    "doh.opendns.com": "opendns",
    "dns.nextdns.io": "nextdns",
    "firefox.dns.nextdns.io": "nextdns",
    "connectivitycheck.gstatic.com": "connectivity_check",
    "www.gstatic.com": "google",
}


def test_real_names_match_their_app(shipped: AppDb) -> None:
    found = {name: getattr(shipped.match(name), "id", None) for name in REAL_NAMES}
    assert found == REAL_NAMES


def test_doh_endpoints_are_apps_of_category_doh(shipped: AppDb) -> None:
    for name in (
        "dns.google",
        "cloudflare-dns.com",
        "mozilla.cloudflare-dns.com",
        "dns.quad9.net",
        "doh.opendns.com",
        "dns.nextdns.io",
        "dns.adguard-dns.com",
    ):
        assert shipped.label_of(name)[1] == "doh", name


def test_classifier_app_ids_are_in_the_database(shipped: AppDb) -> None:
    ids = sorted(APP_IDS)  # every app id a signature or a port guess returns
    assert {i: shipped.app(i) is not None for i in ids} == dict.fromkeys(ids, True)
    assert shipped.category_of("wireguard") == "vpn"
    assert shipped.category_of("dhcp") == "system"
    assert shipped.category_of("bittorrent") == "p2p"


def test_describe_is_the_control_apps_shape(shipped: AppDb) -> None:
    described = shipped.describe()
    assert described["categories"][0] == {"id": "unknown", "label": "Unknown"}
    youtube = next(a for a in described["apps"] if a["id"] == "youtube")
    assert youtube["category"] == "video" and "googlevideo.com" in youtube["domains"]
    assert described["source"] == "shipped" and described["loaded_at"] > 0


# -- pattern semantics -----------------------------------------------------------
SEMANTICS = """
apps:
  - {id: plain, label: Plain, category: video, domains: [example.com]}
  - {id: below, label: Below, category: games, domains: ["*.wild.org"]}
  - {id: deep, label: Deep, category: music, domains: [music.example.com]}
  - {id: sub_only, label: Sub only, category: news, domains: ["*.example.com"]}
"""


def test_plain_pattern_matches_the_name_and_below_on_label_boundaries(tmp_path: Path) -> None:
    db = tiny(tmp_path, SEMANTICS)
    assert db.match("example.com").id == "plain"
    assert db.match("EXAMPLE.com.").id == "plain"  # case and the root dot
    assert db.match("notexample.com") is None
    assert db.match("example.com.evil.net") is None
    assert db.match("com") is None


def test_star_pattern_matches_only_names_below(tmp_path: Path) -> None:
    db = tiny(tmp_path, SEMANTICS)
    assert db.match("wild.org") is None
    assert db.match("a.wild.org").id == "below"
    assert db.match("a.b.wild.org").id == "below"


def test_most_specific_pattern_wins(tmp_path: Path) -> None:
    db = tiny(tmp_path, SEMANTICS)
    assert db.match("music.example.com").id == "deep"
    assert db.match("eu.music.example.com").id == "deep"
    # below example.com the "*." pattern is more specific than the plain one
    assert db.match("www.example.com").id == "sub_only"
    assert db.match("example.com").id == "plain"


def test_match_refuses_junk_without_raising(tmp_path: Path) -> None:
    db = tiny(tmp_path, SEMANTICS)
    for junk in ("", ".", "..example.com", "a..example.com", None, 5, b"example.com"):
        assert db.match(junk) is None  # type: ignore[arg-type]


def test_label_of_gives_app_or_registrable_domain(tmp_path: Path) -> None:
    db = tiny(tmp_path, SEMANTICS)
    assert db.label_of("x.music.example.com") == ("deep", "music")
    assert db.label_of("cdn.a.b.example.co.uk") == ("example.co.uk", "unknown")
    assert db.label_of("::1") == ("::1", "unknown")
    assert db.label_of("bad name!") == ("", "unknown")


def test_match_is_fast(shipped: AppDb) -> None:
    names = [f"host{i}.cdn{i % 97}.example{i % 13}.com" for i in range(5000)]
    names += [f"r{i}---sn-abc.googlevideo.com" for i in range(5000)]
    start = time.perf_counter()
    for name in names:
        shipped.match(name)
    elapsed = time.perf_counter() - start
    print(f"10k lookups: {elapsed * 1000:.1f} ms")
    assert elapsed < 1.0  # measured ~10 ms; a scan of all patterns would be ~100x slower


# -- refused files ---------------------------------------------------------------
def test_pattern_in_two_apps_is_refused_with_both_places(tmp_path: Path) -> None:
    message = refused(
        tmp_path,
        """
apps:
  - {id: one, label: One, category: video, domains: [a.com, shared.com]}
  - {id: two, label: Two, category: video, domains: [shared.com]}
""",
    )
    assert "a.yaml: apps[1].domains[0]: 'shared.com' is already a pattern" in message
    assert "a.yaml: apps[0].domains[1]" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("apps: [\n  {id: x, label: [unclosed\n", "a.yaml: not valid YAML at line"),
        ("- just\n- a list\n", "a.yaml: must be a mapping with an 'apps' list"),
        ("apps: {id: x}\n", "a.yaml: apps: must be a list of apps"),
        (
            "apps: [{id: x, label: X, category: video, domains: example.com}]",
            "a.yaml: apps[0].domains: must be a list",
        ),
        (
            "apps: [{id: x, label: 7, category: video}]",
            "a.yaml: apps[0].label: must be a non-empty",
        ),
        (
            "apps: [{id: x, label: X, category: cartoons}]",
            "a.yaml: apps[0].category: unknown category 'cartoons'",
        ),
        (
            "apps: [{id: x, label: X, category: unknown}]",
            "a.yaml: apps[0].category: unknown category",
        ),
        ("apps: [{id: x, label: X}]", "a.yaml: apps[0].category: unknown category None"),
        (
            "apps: [{id: Bad-Id, label: X, category: video}]",
            "a.yaml: apps[0].id: 'Bad-Id' is not an app id",
        ),
        (
            "apps: [{id: x, label: X, category: video, colour: red}]",
            "a.yaml: apps[0].colour: unknown key",
        ),
        (
            "apps: [{id: x, label: X, category: video, domains: ['exa mple.com']}]",
            "a.yaml: apps[0].domains[0]: 'exa mple.com' is not a domain pattern",
        ),
        (
            "apps: [{id: x, label: X, category: video, domains: ['a.*.com']}]",
            "apps[0].domains[0]: 'a.*.com' is not a domain pattern",
        ),
        (
            "apps: [{id: x, label: X, category: video, domains: [co.uk]}]",
            "apps[0].domains[0]: 'co.uk' is a public suffix",
        ),
        (
            "apps: [{id: x, label: X, category: video, domains: ['*.com']}]",
            "'*.com' is a public suffix",
        ),
        (
            "apps: [{id: x, label: X, category: video}, {id: x, label: Y, category: games}]",
            "a.yaml: apps[1].id: app 'x' is already defined at",
        ),
        ("category: toons\napps: []", "a.yaml: category: unknown category 'toons'"),
        (
            "apps: [{id: x, label: X, category: [video]}]",
            "a.yaml: apps[0].category: unknown category ['video']",
        ),
        (
            'apps: [{id: x, label: "a\\nb", category: video}]',
            "a.yaml: apps[0].label: must be a non-empty, printable",
        ),
        (
            "apps: [{id: x, label: X, category: video, domains: [192.0.2.1]}]",
            "apps[0].domains[0]: '192.0.2.1' is not a domain pattern",
        ),
        ("apps: " + "[" * 20000 + "]" * 20000, "a.yaml: not valid YAML (nested too deeply)"),
    ],
)
def test_bad_files_are_refused_with_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in refused(tmp_path, text)


def test_not_text_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "shipped"
    folder.mkdir()
    (folder / "a.yaml").write_bytes(b"apps: [\xc3\x28\x80\xff]")  # not UTF-8
    with pytest.raises(AppDbError, match="a.yaml: not valid YAML"):
        AppDb.load(shipped=folder)


def test_file_level_category_is_the_default(tmp_path: Path) -> None:
    db = tiny(
        tmp_path,
        "category: games\napps:\n  - {id: a, label: A}\n  - {id: b, label: B, category: news}\n",
    )
    assert (db.category_of("a"), db.category_of("b"), db.category_of("zzz")) == (
        "games",
        "news",
        "unknown",
    )


def test_id_twice_across_shipped_files_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "shipped"
    folder.mkdir()
    write(folder / "a.yaml", "apps: [{id: x, label: X, category: video}]")
    write(folder / "b.yaml", "apps: [{id: x, label: X, category: games}]")
    with pytest.raises(
        AppDbError, match=r"b.yaml: apps\[0\].id: app 'x' is already defined at .*a.yaml"
    ):
        AppDb.load(shipped=folder)


# -- sources -----------------------------------------------------------------
def test_a_later_source_overrides_an_app_by_id(tmp_path: Path, shipped: AppDb) -> None:
    extra = write(
        tmp_path / "extra.yaml",
        """
apps:
  - {id: youtube, label: YouTube (ours), category: education, domains: [youtube.com]}
  - {id: homework, label: Homework site, category: education, domains: [homework.example.net]}
""",
    )
    db = AppDb.load([str(extra)])
    assert db.app("youtube").label == "YouTube (ours)"
    assert db.label_of("www.youtube.com") == ("youtube", "education")
    assert db.match("x.googlevideo.com") is None  # the override replaced the app whole
    assert db.label_of("homework.example.net") == ("homework", "education")
    assert db.app("netflix") == shipped.app("netflix")
    assert len(db.apps) == len(shipped.apps) + 1
    assert db.source == f"shipped + {extra}"


def test_a_source_conflicting_with_another_app_is_refused(tmp_path: Path) -> None:
    extra = write(
        tmp_path / "extra.yaml",
        "apps: [{id: mine, label: M, category: video, domains: [netflix.com]}]",
    )
    with pytest.raises(
        AppDbError, match=r"extra.yaml: apps\[0\].domains\[0\]: 'netflix.com' is already"
    ):
        AppDb.load([str(extra)])


def test_a_url_source_goes_through_fetch(tmp_path: Path) -> None:
    asked: list[str] = []

    def fetch(url: str) -> bytes:
        asked.append(url)
        return (
            b"apps: [{id: school, label: School, category: education, domains: [school.example]}]"
        )

    db = AppDb.load(["https://lists.example/apps.yaml"], fetch=fetch)
    assert asked == ["https://lists.example/apps.yaml"]
    assert db.label_of("www.school.example") == ("school", "education")
    assert db.source == "shipped + https://lists.example/apps.yaml"


def test_a_url_without_fetch_a_failing_fetch_and_a_relative_path_are_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(AppDbError, match="needs a fetch function"):
        AppDb.load(["http://lists.example/a.yaml"])

    def broken(url: str) -> bytes:
        raise OSError("connection refused")

    with pytest.raises(
        AppDbError, match="https://x.example/a.yaml: download failed: connection refused"
    ):
        AppDb.load(["https://x.example/a.yaml"], fetch=broken)
    with pytest.raises(AppDbError, match="must be an absolute path"):
        AppDb.load(["relative/apps.yaml"])
    with pytest.raises(AppDbError, match="cannot read"):
        AppDb.load([str(tmp_path / "missing.yaml")])


def test_an_oversized_download_is_refused(tmp_path: Path) -> None:
    big = b"# " + b"x" * appdb.MAX_SOURCE_BYTES
    with pytest.raises(AppDbError, match="larger than"):
        AppDb.load(["https://x.example/a.yaml"], fetch=lambda url: big)


def test_a_directory_source_loads_its_yaml_files(tmp_path: Path) -> None:
    folder = tmp_path / "more"
    folder.mkdir()
    write(
        folder / "one.yaml",
        "apps: [{id: one_app, label: One, category: news, domains: [one.example]}]",
    )
    write(
        folder / "two.yaml",
        "apps: [{id: two_app, label: Two, category: news, domains: [two.example]}]",
    )
    write(folder / "notes.txt", "not read")
    db = AppDb.load([str(folder)])
    assert (db.match("one.example").id, db.match("two.example").id) == ("one_app", "two_app")


def test_a_failed_reload_keeps_the_previous_database_and_says_why(
    tmp_path: Path, shipped: AppDb
) -> None:
    bad = write(tmp_path / "bad.yaml", "apps: [{id: x, label: X, category: cartoons}]")
    kept, why = shipped.reloaded([str(bad)])
    assert kept is shipped
    assert why is not None and "bad.yaml: apps[0].category: unknown category 'cartoons'" in why
    good = write(
        tmp_path / "good.yaml", "apps: [{id: x, label: X, category: news, domains: [x.example]}]"
    )
    fresh, why = shipped.reloaded([str(good)])
    assert why is None and fresh is not shipped and fresh.match("x.example").id == "x"


# -- registrable domains -----------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.b.example.co.uk", "example.co.uk"),
        ("www.example.com", "example.com"),
        ("Example.COM.", "example.com"),
        ("example.com", "example.com"),
        ("d111111abcdef8.cloudfront.net", "cloudfront.net"),  # ICANN suffixes only
        ("user.github.io", "github.io"),
        ("co.uk", "co.uk"),  # a bare public suffix is itself
        ("com", "com"),
        ("localhost", "localhost"),
        ("192.168.1.1", "192.168.1.1"),  # an IP literal is its address
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:0db8:0000::1", "2001:db8::1"),
        ("bücher.de", "xn--bcher-kva.de"),  # IDNA
        ("", ""),
        (".", ""),
        ("..", ""),
        ("a..b.com", ""),
        ("-bad-.com", ""),
        ("exa mple.com", ""),
        ("evil\x00.com", ""),
        ("a" * 64 + ".com", ""),
        (".".join(["a"] * 200), ""),
        ("x" * 10000, ""),
        ("\udcff.com", ""),
    ],
)
def test_registrable_domain(name: str, expected: str) -> None:
    assert registrable_domain(name) == expected


def test_registrable_domain_of_non_strings_is_empty() -> None:
    for junk in (None, 5, b"example.com", ["example.com"]):
        assert registrable_domain(junk) == ""  # type: ignore[arg-type]


def test_category_numbers_are_stable() -> None:
    assert [(c.id, c.number) for c in CATEGORIES][:19] == [
        ("unknown", 0),
        ("video", 1),
        ("social", 2),
        ("games", 3),
        ("messaging", 4),
        ("music", 5),
        ("adult", 6),
        ("gambling", 7),
        ("ads", 8),
        ("vpn", 9),
        ("updates", 10),
        ("shopping", 11),
        ("news", 12),
        ("education", 13),
        ("productivity", 14),
        ("cloud", 15),
        ("doh", 16),
        ("system", 17),
        ("other", 18),
    ]
    assert [c.number for c in CATEGORIES] == list(range(len(CATEGORIES)))
    assert max(c.number for c in CATEGORIES) < 256
    assert (category_number("doh"), category_number("nope"), category_id(3), category_id(999)) == (
        16,
        0,
        "games",
        "unknown",
    )


# -- fuzz: hostile names and files never raise anything but AppDbError ---------------
NAME_CHARS = st.sampled_from(list("abcxyz019-_.*[]:é\x00 ") + ["co.uk", "com", "xn--"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.lists(NAME_CHARS, max_size=80).map("".join)))
def test_names_never_raise(shipped: AppDb, name: str) -> None:
    domain = registrable_domain(name)
    assert isinstance(domain, str) and len(domain) <= 253
    found = shipped.match(name)
    if found is None:
        assert shipped.label_of(name) == (domain, "unknown")
    else:
        assert shipped.label_of(name) == (found.id, found.category)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400).map(str.encode)))
def test_any_bytes_load_or_are_refused_cleanly(data: bytes) -> None:
    try:
        appdb.parse_source(data, "fuzz.yaml")
    except AppDbError as error:
        assert str(error).startswith("fuzz.yaml")


def test_a_database_of_given_apps_is_checked_like_a_loaded_one() -> None:
    db = AppDb.of(
        [App("a", "A", "video", ("a.example",)), App("b", "B", "games", ("*.a.example",))]
    )
    assert (db.match("x.a.example").id, db.match("a.example").id, db.source) == ("b", "a", "given")
    with pytest.raises(AppDbError, match="'a.example' is already a pattern"):
        AppDb.of([App("a", "A", "video", ("a.example",)), App("c", "C", "news", ("a.example",))])
