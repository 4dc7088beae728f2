"""Versioned prompt templates, stored as files beside the code that fills them.

A template is a Markdown file in a `prompts/` folder of a package, e.g.
`microvqa_pp/generate/prompts/generate_qa.md`. It starts with a header between `---` lines that
gives at least `name` and `version`, followed by a `# system` section and a `# user` section:

    ---
    name: generate_qa
    version: 3
    ---
    # system
    You are an expert microscopist ...

    # user
    Caption: {{caption}}

Fields are written `{{name}}`; `render` fills every field and fails on a missing or unknown one.
Other braces, such as those of a JSON example, are left as they are. Change `version` whenever
the text changes: it is part of the response cache key, so replies to an older prompt are never
reused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from microvqa_pp.agents.base import ImagePart, Message

_FIELD = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SECTION = re.compile(r"^# (system|user)[ \t]*$", re.MULTILINE)


class PromptError(ValueError):
    """A template file that is malformed, or a render call that does not fit the template."""


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed template: its name, version, header values and the system and user texts."""

    name: str
    version: str
    system: str
    user: str
    header: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def fields(self) -> frozenset[str]:
        """Names of the `{{field}}` placeholders in both sections."""
        return frozenset(_FIELD.findall(self.system) + _FIELD.findall(self.user))

    @classmethod
    def parse(cls, text: str, source: str = "<string>") -> "PromptTemplate":
        """Parse a template file's text; `source` names the file in error messages."""
        lines = text.lstrip("\ufeff").splitlines()
        if not lines or lines[0].strip() != "---":
            raise PromptError(f"prompt template {source} must start with a '---' header line")
        try:
            end = next(index for index in range(1, len(lines)) if lines[index].strip() == "---")
        except StopIteration as error:
            raise PromptError(f"prompt template {source} has no closing '---' after its header") from error

        header: dict[str, str] = {}
        for line in lines[1:end]:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, separator, value = line.partition(":")
            if not separator:
                raise PromptError(f"invalid header line {line!r} in prompt template {source}: expected KEY: VALUE")
            header[key.strip()] = value.strip()
        for key in ("name", "version"):
            if not header.get(key):
                raise PromptError(f"prompt template {source} has no {key!r} in its header")

        body = "\n".join(lines[end + 1 :])
        sections: dict[str, str] = {}
        matches = list(_SECTION.finditer(body))
        for index, match in enumerate(matches):
            stop = matches[index + 1].start() if index + 1 < len(matches) else len(body)
            if match.group(1) in sections:
                raise PromptError(f"prompt template {source} has two '# {match.group(1)}' sections")
            sections[match.group(1)] = body[match.end() : stop].strip("\n").strip()
        if "user" not in sections:
            raise PromptError(f"prompt template {source} has no '# user' section")
        return cls(
            name=header["name"],
            version=header["version"],
            system=sections.get("system", ""),
            user=sections["user"],
            header=header,
            source=source,
        )

    def render_text(self, text: str, values: dict[str, Any]) -> str:
        """Fill the `{{field}}` placeholders of `text` with `values`."""

        def substitute(match: re.Match[str]) -> str:
            return str(values[match.group(1)])

        return _FIELD.sub(substitute, text)

    def render(self, images: tuple[Path, ...] | list[Path] = (), **values: Any) -> list[Message]:
        """Return the system message (when the template has one) and the user message.

        `images` are placed before the user text, the order most vision-language models are
        trained on.
        """
        missing = self.fields - values.keys()
        if missing:
            raise PromptError(f"prompt {self.name}@{self.version} needs the field(s) {', '.join(sorted(missing))}")
        unknown = values.keys() - self.fields
        if unknown:
            raise PromptError(f"prompt {self.name}@{self.version} has no field(s) {', '.join(sorted(unknown))}")

        messages = []
        if self.system:
            messages.append(Message.text("system", self.render_text(self.system, values)))
        parts: list[str | ImagePart] = [ImagePart(Path(image)) for image in images]
        parts.append(self.render_text(self.user, values))
        messages.append(Message("user", tuple(parts)))
        return messages


def load_prompt(package: str, name: str) -> PromptTemplate:
    """Load `prompts/NAME.md` from a package, e.g. `load_prompt("microvqa_pp.generate", "generate_qa")`."""
    return _load_prompt(package, name)


@cache
def _load_prompt(package: str, name: str) -> PromptTemplate:
    resource = resources.files(package).joinpath("prompts").joinpath(f"{name}.md")
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise PromptError(f"prompt template prompts/{name}.md not found in package {package}") from error
    template = PromptTemplate.parse(text, source=f"{package}/prompts/{name}.md")
    if template.name != name:
        raise PromptError(f"prompt template {template.source} declares name {template.name!r}; expected {name!r}")
    return template
