"""The source check of user modules (homegw.usermodules.spec.check_source)
and the upload model: every refusal with its line, the evasions of the
preprocessor (splices, digraphs, trigraphs, pasting, stringizing, escapes),
and the shipped examples passing."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from homegw.usermodules.examples.examples import EXAMPLES, examples
from homegw.usermodules.spec import (
    MAX_SOURCE_BYTES,
    ModuleUpload,
    SourceRefused,
    check_source,
)

HEADER = '#include "homegw_user.h"\n'
BODY = "int m(struct xdp_md *ctx)\n{\n\treturn hgw_next_xdp(ctx);\n}\n"
CLEAN = HEADER + BODY


def refusals(source: str) -> list[tuple[int, str]]:
    with pytest.raises(SourceRefused) as refused:
        check_source(source)
    return [(p.line, p.message) for p in refused.value.problems]


def refused_lines(source: str) -> list[int]:
    return [line for line, _ in refusals(source)]


def test_a_module_of_the_sdk_only_passes() -> None:
    check_source(CLEAN)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_the_examples_pass_the_check_and_the_upload_model(example) -> None:
    upload = example.upload()
    check_source(upload.source)
    assert ModuleUpload.model_validate(upload.model_dump()) == upload


def test_examples_lists_each_upload_with_its_source() -> None:
    from homegw.usermodules import examples as package  # as Control.module_examples calls it

    assert package.examples() == examples()
    listed = {e["name"]: e for e in examples()}
    assert sorted(listed) == ["isolate", "mac_blocklist", "port_bytes"]
    for example in EXAMPLES:
        upload = listed[example.name]["upload"]
        assert upload["source"] == example.source_path.read_text()
        assert (upload["nic"], upload["hook"], upload["maps"]) == (
            example.nic,
            example.hook,
            list(example.maps),
        )
        assert listed[example.name]["description"]


# -- names of homegw's own ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("homegw_devices", "homegw's own names"),
        ("homegw_device_policy", "homegw's own names"),
        ("homegw_cursor_xdp", "homegw's own names"),
        ("HOMEGW_MODULE_ID", "homegw's own names"),
        ("chain_xdp", "the chain's maps"),
        ("chain_generation", "the chain's maps"),
        ("cursor_tc", "the chain's maps"),
        ("slowpath", "the chain's maps"),
        ("BPF_TABLE_PINNED", "no pinned or shared"),
        ("BPF_TABLE_PUBLIC", "no pinned or shared"),
        ("BPF_TABLE_SHARED", "no pinned or shared"),
        ("bpf_pseudo_fd", "no raw map descriptors"),
        ("__builtin_bpf_load_byte", "no raw map descriptors"),
        ("asm", "no inline assembly"),
        ("__asm__", "no inline assembly"),
        ("_Pragma", "pragmas"),
        ("__pragma", "pragmas"),
        ("__attribute__", "no attributes"),
        ("bpf_redirect", "forwarding is the router's"),
        ("bpf_redirect_map", "forwarding is the router's"),
        ("bpf_clone_redirect", "forwarding is the router's"),
        ("XDP_TX", "forwarding is the router's"),
        ("XDP_REDIRECT", "forwarding is the router's"),
        ("TC_ACT_REDIRECT", "forwarding is the router's"),
    ],
)
def test_each_forbidden_name_is_refused_on_its_line(name: str, why: str) -> None:
    ((line, message),) = refusals(f"{HEADER}int x;\n\tuse({name});\n{BODY}")
    assert line == 3
    assert message.startswith(f"{name}: ") and why in message


def test_names_that_only_look_alike_pass() -> None:
    check_source(f"{HEADER}int my_homegw_x, chain_xdp2, xslowpath, asm_count;\n{BODY}")


def test_every_problem_is_listed_by_line_and_the_first_is_the_message() -> None:
    source = f"{HEADER}int a = slowpath;\n\n#pragma once\nint b = homegw_neigh;\n{BODY}"
    with pytest.raises(SourceRefused) as refused:
        check_source(source)
    assert [(p.line, p.message.split(":")[0]) for p in refused.value.problems] == [
        (2, "slowpath"),
        (4, "#pragma is not allowed"),
        (5, "homegw_neigh"),
    ]
    assert str(refused.value).startswith("line 2: slowpath")


def test_size_and_nul_are_refused() -> None:
    assert refusals(CLEAN + "\0") == [(1, "the source holds a NUL byte")]
    assert refused_lines(CLEAN + " " * MAX_SOURCE_BYTES) == [1]


# -- directives and includes ----------------------------------------------------------------
@pytest.mark.parametrize(
    "include",
    ['#include "homegw_user.h"', "#include <linux/bpf.h>", "# include <uapi/linux/if_ether.h>"],
)
def test_the_sdk_and_kernel_headers_may_be_included(include: str) -> None:
    check_source(f"{include}\n{BODY}")


@pytest.mark.parametrize(
    "include",
    [
        '#include "homegw.h"',
        '#include "/etc/passwd"',
        "#include <stdio.h>",
        "#include </sys/fs/bpf/x.h>",
        "#include <linux/../../../etc/x.h>",
        "#include HEADER",  # a computed include: whatever the macro says
        '#include "homegw_user.h" "x"',
    ],
)
def test_other_includes_are_refused(include: str) -> None:
    assert 2 in refused_lines(f"{HEADER}{include}\n{BODY}")


@pytest.mark.parametrize(
    "directive",
    ["#pragma once", "#line 1", '# 1 "x.c"', "#error x", "#include_next <x.h>", "#import <x>"],
)
def test_directives_other_than_the_conditional_and_define_ones_are_refused(
    directive: str,
) -> None:
    assert refused_lines(f"{HEADER}{directive}\n{BODY}") == [2]


def test_define_and_conditionals_pass() -> None:
    conditionals = "#ifndef M\n#if N > 2\n#elif 1\n#else\n#endif\n#undef N\n#endif\n"
    check_source(f"{HEADER}#define N 4\n{conditionals}{BODY}")


# -- evasions ---------------------------------------------------------------------------------
def test_a_line_splice_inside_a_name_is_seen_through() -> None:
    assert refusals(f"{HEADER}int x = homeg\\\nw_devices;\n{BODY}") == [
        (2, "homegw_devices: homegw's own names are not for user modules: use hgw_*")
    ]


def test_a_splice_with_crlf_line_ends_is_seen_through() -> None:
    assert refused_lines(f"{HEADER}int x = slow\\\r\npath;\r\n{BODY}") == [2]


def test_lines_after_splices_keep_their_numbers() -> None:
    source = f"{HEADER}int a = 1 + \\\n 2 + \\\n 3;\nint b = cursor_xdp;\n{BODY}"
    assert refused_lines(source) == [5]


def test_a_spliced_directive_is_seen_through() -> None:
    assert refused_lines(f'{HEADER}#inc\\\nlude "homegw.h"\n{BODY}') == [2]
    assert refused_lines(f"{HEADER}#prag\\\nma once\n{BODY}") == [2]


def test_comments_hide_nothing_and_split_names() -> None:
    """A comment is a space to the compiler: home/**/gw_x is two names."""
    check_source(f"{HEADER}/* homegw_devices */ // chain_xdp\nint home/**/gw_x;\n{BODY}")


def test_a_spliced_line_comment_goes_on_as_the_compiler_reads_it() -> None:
    check_source(f"{HEADER}// a comment \\\nhomegw_devices still the comment\n{BODY}")


def test_an_unclosed_block_comment_is_not_code() -> None:
    check_source(f"{BODY}/* homegw_devices")


def test_string_and_char_literals_do_not_hide_the_names_after_them() -> None:
    source = f"{HEADER}char q = '\"'; int x = slowpath; char e = '\\'';\nint y = chain_tc;\n{BODY}"
    assert refused_lines(source) == [2, 3]
    source = f'{HEADER}char *s = "a \\" b"; int x = slowpath;\n{BODY}'
    assert refused_lines(source) == [2]


def test_names_inside_strings_are_text() -> None:
    check_source(f'{HEADER}char *s = "homegw_devices chain_xdp";\n{BODY}')


def test_a_macro_naming_a_forbidden_name_is_refused_where_it_is_defined() -> None:
    assert refused_lines(f"{HEADER}#define DEVICES homegw_devices\nint x;\n{BODY}") == [2]


@pytest.mark.parametrize(
    "paste",
    [
        "#define CAT(a, b) a ## b",
        "#define CAT(a, b) a##b",
        "#define CAT(a, b) a %:%: b",  # the digraph of ##
    ],
)
def test_token_pasting_is_refused(paste: str) -> None:
    assert refusals(f"{HEADER}{paste}\nint x = CAT(home, gw_devices);\n{BODY}") == [
        (2, "no token pasting (##)")
    ]


@pytest.mark.parametrize("stringize", ["#define S(x) #x", "%:define S(x) %:x", "#define S(x) # x"])
def test_stringizing_is_refused(stringize: str) -> None:
    """S(hash:/sys/fs/bpf/home) S(gw/devices) would spell a pinned map's
    type string with no forbidden name in it."""
    table = "BPF_F_TABLE(S(hash:/sys/fs/bpf/home) S(gw/devices), int, int, t, 1, 0);"
    source = f"{HEADER}{stringize}\n{table}\n"
    assert (2, "no stringizing (#)") in refusals(source + BODY)


@pytest.mark.parametrize(
    "directive", ['%:include "/etc/passwd"', "%:pragma once", "%: include <stdio.h>"]
)
def test_digraph_directives_are_directives(directive: str) -> None:
    assert set(refused_lines(f"{HEADER}{directive}\n{BODY}")) == {2}


@pytest.mark.parametrize("trigraph", ["??=include <stdio.h>", "int x = home??/\ngw_devices;"])
def test_trigraphs_are_refused(trigraph: str) -> None:
    assert 2 in refused_lines(f"{HEADER}{trigraph}\n{BODY}")


@pytest.mark.parametrize("name", ["hom\\u0065gw_devices", "slowpat\\U00000068", "\\u0068omegw_x"])
def test_universal_character_names_are_refused(name: str) -> None:
    ((line, message),) = refusals(f"{HEADER}int x = {name};\n{BODY}")
    assert (line, message) == (2, "no backslash outside strings (\\u names)")


@pytest.mark.parametrize(
    "table",
    [
        '"hash:/sys/fs/bpf/homegw/devices"',
        '"hash:" "/sys/fs/bpf/home" "gw/devices"',
        '"hash\\x3a\\x2fsys\\x2ffs"',
        '"hash\\072\\057sys"',
        '"hash\\u003a"',
    ],
)
def test_a_map_type_string_naming_a_pinned_path_is_refused(table: str) -> None:
    source = f"{HEADER}BPF_F_TABLE({table}, __u64, __u32, mine, 16, 0);\n{BODY}"
    assert refusals(source)[0] == (2, 'no ":" or "/" in strings (a pinned map\'s path)')


def test_a_section_attribute_in_c2x_syntax_is_refused() -> None:
    source = f'{HEADER}[[gnu::section("maps/hash")]] int mine;\n{BODY}'
    assert refused_lines(source) == [2]


def test_strings_without_a_path_pass() -> None:
    check_source(
        f'{HEADER}BPF_F_TABLE("hash", __u64, __u32, mine, 16, 0);\nchar *s = "a\\tb\\n";\n{BODY}'
    )


# -- the upload's -D options ------------------------------------------------------------------
def upload(**fields) -> ModuleUpload:
    return ModuleUpload(name="m", source=CLEAN, nic="lan", **fields)


@pytest.mark.parametrize(
    "defines",
    [
        {"HOMEGW_MODULE_ID": 2},  # punt as the router
        {"HOMEGW_PIN_DIR": "x"},
        {"DEVICES": "homegw_devices"},
        {"T": "cursor_xdp"},
        {"T": "BPF_TABLE_PINNED"},
        {"T": "a+slowpath"},
    ],
)
def test_defines_go_through_the_name_check(defines: dict) -> None:
    with pytest.raises(ValidationError) as refused:
        upload(defines=defines)
    (error,) = refused.value.errors()
    assert error["loc"] == ("defines",)


def test_defines_of_the_modules_own_pass() -> None:
    assert (
        upload(defines={"PORTS_MAX": 3, "MODE": "fast", "PATH": "a/b:c"}).defines["PORTS_MAX"] == 3
    )
