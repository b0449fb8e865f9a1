"""The Terraform writer: operator-supplied text never becomes an interpolation or breaks quoting."""

from __future__ import annotations

import json

from keysvc.cloudsetup.terraform import Block, Document, Ref, Template

from . import hcl

TRICKY = 'a "quoted" \\ back ${not.a.ref} %{if x} tab\tnewline\nbell\x07 é'


def document() -> Document:
    doc = Document(header="header line\nsecond")
    doc.add(
        Block("resource", ("thing", "t"))
        .attr("literal", TRICKY)
        .attr("reference", Ref("other.o.id"))
        .attr("template", Template.of("prefix-", Ref("other.o.name"), "-${suffix}"))
        .attr("items", [TRICKY, Ref("x.y")])
        .attr("mapping", {"dotted.key": TRICKY, "plain": 1, "flag": True})
        .block(Block("nested").attr("v", "1"))
        .block(Block("nested").attr("v", "2"))
    )
    return doc


def test_hcl_round_trips_through_an_independent_parser() -> None:
    body = hcl.parse(document().to_hcl())["resource"][0]["thing"]["t"]
    assert body["literal"] == TRICKY
    assert body["reference"] == "${other.o.id}"
    assert body["template"] == "prefix-${other.o.name}-${suffix}"
    assert body["items"] == [TRICKY, "${x.y}"]
    assert body["mapping"] == {"dotted.key": TRICKY, "plain": 1, "flag": True}
    assert [n["v"] for n in body["nested"]] == ["1", "2"]


def test_hcl_escapes_template_sequences_in_literals() -> None:
    text = document().to_hcl()
    assert "$${not.a.ref}" in text and "%%{if x}" in text
    assert '"prefix-${other.o.name}-$${suffix}"' in text
    assert "# header line\n# second\n" in text


def test_terraform_json_escapes_literals_and_interpolates_refs() -> None:
    body = json.loads(document().to_json())["resource"]["thing"]["t"]
    assert body["literal"] == TRICKY.replace("${", "$${").replace("%{", "%%{")
    assert body["reference"] == "${other.o.id}"
    assert body["template"] == "prefix-${other.o.name}-$${suffix}"
    assert body["mapping"]["plain"] == 1 and body["mapping"]["flag"] is True
    assert body["nested"] == [{"v": "1"}, {"v": "2"}]
