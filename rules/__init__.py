"""Rules and alerts: rule definitions as data, the evaluator, the alert lifecycle, notification channels,
scheduled checks. docs/rules.md is the guide; the public API is below.

    service = rules.setup(RulesSettings(), data_dir=..., timezone=..., publish=mqtt_publish)
    await service.start()
    service.process(envelope)                        # every stored uplink
    service.on_presence(device_id, kind, market, online, at)
    await service.aclose()
"""

from rules.delivery import SmtpSettings, verify_signature
from rules.durations import format_duration, parse_duration
from rules.engine import RuleEngine, Transition
from rules.language import Rule, describe_errors
from rules.packs import BUILTIN_PACK, RuleError, dump_pack, load_pack, parse_pack, parse_rule
from rules.replay import dry_run, envelopes_from_store
from rules.scheduler import JobSchedule
from rules.service import RulesService, RulesSettings, setup
from rules.stream import AlertStream

__all__ = [
    "BUILTIN_PACK",
    "AlertStream",
    "JobSchedule",
    "Rule",
    "RuleEngine",
    "RuleError",
    "RulesService",
    "RulesSettings",
    "SmtpSettings",
    "Transition",
    "describe_errors",
    "dry_run",
    "dump_pack",
    "envelopes_from_store",
    "format_duration",
    "load_pack",
    "parse_duration",
    "parse_pack",
    "parse_rule",
    "setup",
    "verify_signature",
]
