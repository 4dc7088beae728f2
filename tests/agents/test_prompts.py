"""Prompt template files: parsing the header and sections, rendering fields, loading from a package."""

from __future__ import annotations

from pathlib import Path

import pytest

from microvqa_pp.agents.base import ImagePart, Message
from microvqa_pp.agents.prompts import PromptError, PromptTemplate, load_prompt

TEMPLATE = """---
name: describe
version: 3
purpose: a test template
---
# system
You write {{count}} questions.

# user
Caption: {{ caption }}

Reply as {"questions": [...]}.
"""


def test_parse_header_and_sections():
    template = PromptTemplate.parse(TEMPLATE)
    assert template.name == "describe"
    assert template.version == "3"
    assert template.header["purpose"] == "a test template"
    assert template.system == "You write {{count}} questions."
    assert template.user == 'Caption: {{ caption }}\n\nReply as {"questions": [...]}.'
    assert template.fields == {"count", "caption"}


def test_render_fills_fields_and_places_images_first():
    template = PromptTemplate.parse(TEMPLATE)
    messages = template.render(images=[Path("figure.jpg")], count=3, caption="Cells {stained} with DAPI.")
    assert messages == [
        Message.text("system", "You write 3 questions."),
        Message(
            "user",
            (ImagePart(Path("figure.jpg")), 'Caption: Cells {stained} with DAPI.\n\nReply as {"questions": [...]}.'),
        ),
    ]


def test_render_rejects_missing_and_unknown_fields():
    template = PromptTemplate.parse(TEMPLATE)
    with pytest.raises(PromptError, match="needs the field"):
        template.render(count=3)
    with pytest.raises(PromptError, match="has no field"):
        template.render(count=3, caption="c", extra="x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# user\nhello", "must start with a '---' header"),
        ("---\nname: a\nversion: 1\n# user\nhello", "no closing '---'"),
        ("---\nname: a\n---\n# user\nhello", "no 'version'"),
        ("---\nname: a\nversion: 1\n---\n# system\nhello", "no '# user' section"),
        ("---\nname a\nversion: 1\n---\n# user\nhello", "expected KEY: VALUE"),
        ("---\nname: a\nversion: 1\n---\n# user\none\n# user\ntwo", "two '# user' sections"),
    ],
)
def test_malformed_templates(text, message):
    with pytest.raises(PromptError, match=message):
        PromptTemplate.parse(text)


def test_load_prompt_from_package(tmp_path, monkeypatch):
    package = tmp_path / "prompt_test_package"
    (package / "prompts").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "prompts" / "describe.md").write_text(TEMPLATE, encoding="utf-8")
    (package / "prompts" / "misnamed.md").write_text(TEMPLATE.replace("name: describe", "name: other"), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))

    template = load_prompt("prompt_test_package", "describe")
    assert template.version == "3"
    assert template.source == "prompt_test_package/prompts/describe.md"
    with pytest.raises(PromptError, match="not found"):
        load_prompt("prompt_test_package", "absent")
    with pytest.raises(PromptError, match="declares name 'other'"):
        load_prompt("prompt_test_package", "misnamed")
