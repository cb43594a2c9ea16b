"""Rules as data: parse one rule or a rule pack (YAML), with every problem named; export a pack back to YAML.

A pack file is `{name, description, rules: [...]}` (or a bare list of rules). `rules/packs/builtin.yaml` is
the built-in pack: one rule per alert the seed standards ask for (docs/rules.md lists them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fleet.errors import InvalidRequest
from rules.language import Rule, describe_errors

__all__ = ["BUILTIN_PACK", "RuleError", "dump_pack", "load_pack", "parse_pack", "parse_rule"]

BUILTIN_PACK = Path(__file__).parent / "packs" / "builtin.yaml"


class RuleError(InvalidRequest):
    """A rule or pack that cannot be accepted; `problems` has one line per problem, each naming the field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(shown + more)


def parse_rule(data: Any, prefix: str = "") -> Rule:
    if not isinstance(data, dict):
        raise RuleError([f"{prefix or 'rule'}: expected a mapping of fields, got {type(data).__name__}"])
    try:
        return Rule.model_validate(data)
    except ValidationError as err:
        raise RuleError(describe_errors(err, prefix)) from None


def parse_pack(text: str, source: str = "pack") -> tuple[list[Rule], dict[str, Any]]:
    """Rules and the pack's header (name, description) from YAML text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RuleError([f"{source}: not valid YAML: {err}"]) from None
    header: dict[str, Any] = {}
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"name", "description", "rules"})
        if unknown:
            raise RuleError([f"{source}: unknown field {name!r} (a pack has name, description, rules)"
                             for name in unknown])
        header = {k: v for k, v in data.items() if k != "rules"}
        data = data.get("rules")
    if not isinstance(data, list):
        raise RuleError([f"{source}: expected a list of rules (or a mapping with 'rules')"])
    rules: list[Rule] = []
    problems: list[str] = []
    seen: set[str] = set()
    for n, item in enumerate(data):
        label = f"rules[{n}]" + (f" ({item['id']})" if isinstance(item, dict) and "id" in item else "")
        try:
            rule = parse_rule(item, label)
        except RuleError as err:
            problems += err.problems
            continue
        if rule.id in seen:
            problems.append(f"{label}.id: {rule.id!r} appears twice in the pack")
        seen.add(rule.id)
        rules.append(rule)
    if problems:
        raise RuleError(problems)
    return rules, header


def load_pack(path: Path) -> list[Rule]:
    return parse_pack(path.read_text(encoding="utf-8"), path.name)[0]


def dump_pack(rules: list[Rule], name: str = "export", description: str = "") -> str:
    document: dict[str, Any] = {"name": name}
    if description:
        document["description"] = description
    document["rules"] = [rule.dump() for rule in rules]
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120)
