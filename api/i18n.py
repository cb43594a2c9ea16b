"""Dashboard text in Simplified Chinese (the default) and English, and how dates are shown.

Every string a page shows goes through `t(key, **values)`. Each entry is written once as a (中文, English) pair,
so a key can never exist in one language only; `CATALOG` is the dict per language that `t` reads. A missing key
renders as the key itself (visible, and caught by tests/e2e/test_catalog.py). Dates are shown in the market's
time zone (`Market.timezone`, Asia/Shanghai when a device has no market).

Which language: the `mf_lang` cookie (the person switched explicitly), else the account's `language`, else
Chinese.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"
LANG_COOKIE = "mf_lang"
DEFAULT_TIMEZONE = "Asia/Shanghai"

# key: (Simplified Chinese, English). Grouped by page; a new page adds its own group.
_TEXT: dict[str, tuple[str, str]] = {
    # --- frame: header, navigation, language, common words
    "app.name": ("MarketFleet", "MarketFleet"),
    "app.tagline": ("智慧农贸设备平台", "Smart-market device fleet"),
    "nav.label": ("主导航", "Main navigation"),
    "nav.overview": ("总览", "Overview"),
    "nav.fleet": ("设备", "Devices"),
    "nav.vendors": ("厂商管理", "Vendors"),
    "nav.alerts": ("告警", "Alerts"),
    "nav.ota": ("固件升级", "OTA"),
    "nav.reports": ("报表", "Reports"),
    "nav.api": ("API 文档", "API docs"),
    "nav.skip": ("跳到正文", "Skip to content"),
    "nav.signed_in_as": ("当前用户", "Signed in as"),
    "nav.sign_out": ("退出登录", "Sign out"),
    "lang.label": ("语言", "Language"),
    "lang.zh": ("中文", "中文"),
    "lang.en": ("English", "English"),
    "role.admin": ("管理员", "Administrator"),
    "role.maintainer": ("运维人员", "Maintainer"),
    "role.manager": ("市场管理方", "Market manager"),
    "role.vendor": ("设备厂商", "Vendor"),
    "common.none": ("—", "—"),
    "common.never": ("从未", "never"),
    "common.all_markets": ("全部市场", "All markets"),
    "common.no_market": ("未分配市场", "No market"),
    "common.market": ("市场", "Market"),
    "common.timezone": ("时区", "Time zone"),
    "common.reload": ("刷新页面", "Reload page"),
    "common.close": ("关闭", "Close"),
    "common.copy": ("复制", "Copy"),
    "common.copied": ("已复制", "Copied"),
    "presence.online": ("在线", "online"),
    "presence.offline": ("离线", "offline"),
    "status.active": ("启用", "active"),
    "status.disabled": ("停用", "disabled"),
    "status.retired": ("已退役", "retired"),
    # --- live updates (server-sent events)
    "live.connecting": ("正在连接实时更新…", "Connecting live updates…"),
    "live.on": ("实时更新", "Live"),
    "live.off": ("实时更新未开启（此实例未运行消息总线）", "Live updates are off (no message bus on this instance)"),
    "live.reconnecting": ("实时更新中断，正在重连…", "Live updates interrupted, reconnecting…"),
    "live.missed": ("部分实时更新可能已遗漏。", "Some live updates may have been missed."),
    "live.went_online": ("{device} 上线", "{device} came online"),
    "live.went_offline": ("{device} 离线", "{device} went offline"),
    # --- sign-in
    "login.title": ("登录", "Sign in"),
    "login.intro": ("使用您的平台账号登录。", "Sign in with your platform account."),
    "login.first_start": (
        "首次启动：用户名 admin，密码为 var/admin.token 中的管理令牌。",
        "First start: user admin, password = the admin token in var/admin.token.",
    ),
    "login.username": ("用户名", "Username"),
    "login.password": ("密码", "Password"),
    "login.submit": ("登录", "Sign in"),
    "login.error.credentials": ("用户名或密码错误。", "Wrong username or password."),
    "login.error.locked": (
        "多次登录失败，账号已被暂时锁定，请几分钟后再试。",
        "The account is locked after repeated failed sign-ins; try again in a few minutes.",
    ),
    "login.error.throttled": (
        "此地址登录失败次数过多，请几分钟后再试。",
        "Too many failed sign-ins from this address; wait a few minutes.",
    ),
    "login.error.session": ("登录已过期，请重新登录。", "Your session has ended; please sign in again."),
    # --- overview
    "overview.title": ("设备总览", "Overview"),
    "overview.heading": ("{market} 设备总览", "{market} overview"),
    "overview.as_of": ("更新于 {time}", "As of {time}"),
    "overview.choose_market": ("选择市场", "Choose market"),
    "overview.show": ("查看", "Show"),
    "overview.total": ("设备总数", "Devices"),
    "overview.online": ("在线", "Online"),
    "overview.offline": ("离线", "Offline"),
    "overview.availability": ("在线率", "Online rate"),
    "overview.by_kind": ("按设备类型", "By device kind"),
    "overview.by_market": ("按市场", "By market"),
    "overview.kind": ("设备类型", "Kind"),
    "overview.share": ("在线占比", "Online share"),
    "overview.no_devices": ("此范围内还没有设备。", "No devices in this scope yet."),
    "overview.recent": ("最近状态变化", "Recent presence changes"),
    "overview.recent_empty": ("打开本页后尚无设备上线或离线。", "No device has come or gone since this page opened."),
    "overview.view_offline": ("查看离线设备", "View offline devices"),
    # --- fleet table
    "fleet.title": ("设备列表", "Devices"),
    "fleet.count": ("共 {n} 台", "{n} devices"),
    "fleet.filters": ("筛选", "Filters"),
    "fleet.search": ("搜索", "Search"),
    "fleet.search_placeholder": ("设备编号、序列号或名称", "id, serial or name"),
    "fleet.kind": ("类型", "Kind"),
    "fleet.any_kind": ("全部类型", "All kinds"),
    "fleet.market": ("市场", "Market"),
    "fleet.status": ("管理状态", "Status"),
    "fleet.any_status": ("全部状态", "Any status"),
    "fleet.presence": ("在线状态", "Presence"),
    "fleet.any_presence": ("在线或离线", "Online or offline"),
    "fleet.label": ("标签", "Label"),
    "fleet.label_placeholder": ("键=值", "key=value"),
    "fleet.apply": ("筛选", "Apply"),
    "fleet.reset": ("清除", "Reset"),
    "fleet.caption": ("设备列表，第 {page} 页，共 {pages} 页", "Devices, page {page} of {pages}"),
    "fleet.col.device": ("设备", "Device"),
    "fleet.col.kind": ("类型", "Kind"),
    "fleet.col.market": ("市场", "Market"),
    "fleet.col.vendor": ("厂商", "Vendor"),
    "fleet.col.status": ("管理状态", "Status"),
    "fleet.col.presence": ("在线状态", "Presence"),
    "fleet.col.last_seen": ("最后在线（市场时间）", "Last seen (market time)"),
    "fleet.col.firmware": ("固件", "Firmware"),
    "fleet.empty": ("没有符合条件的设备。", "No devices match these filters."),
    "fleet.pager": ("分页", "Pages"),
    "fleet.page_of": ("第 {page} / {pages} 页", "Page {page} of {pages}"),
    "fleet.first": ("首页", "First"),
    "fleet.previous": ("上一页", "Previous"),
    "fleet.next": ("下一页", "Next"),
    "fleet.last": ("末页", "Last"),
    "fleet.bad_filter": ("筛选条件无效：{reason}", "Invalid filter: {reason}"),
    # --- device detail
    "device.title": ("设备详情", "Device"),
    "device.back": ("返回设备列表", "Back to devices"),
    "device.registry": ("登记信息", "Registry"),
    "device.id": ("设备编号", "Device id"),
    "device.serial": ("序列号", "Serial"),
    "device.kind": ("类型", "Kind"),
    "device.vendor": ("厂商", "Vendor"),
    "device.model": ("型号", "Model"),
    "device.market": ("市场", "Market"),
    "device.stall": ("摊位", "Stall"),
    "device.name": ("名称", "Name"),
    "device.status": ("管理状态", "Status"),
    "device.presence": ("在线状态", "Presence"),
    "device.last_seen": ("最后在线", "Last seen"),
    "device.firmware": ("固件版本", "Firmware"),
    "device.keepalive": ("心跳间隔", "Keepalive"),
    "device.keepalive_s": ("{n} 秒", "{n} s"),
    "device.created": ("登记时间", "Registered"),
    "device.labels": ("标签", "Labels"),
    "device.no_labels": ("无标签", "No labels"),
    "device.metadata": ("附加信息", "Metadata"),
    "device.credentials": ("接入凭据", "Credentials"),
    "device.credentials_intro": (
        "每台设备同一时间只有一个有效密钥；平台只保存其哈希值。",
        "A device has at most one active secret at a time; the platform stores only its hash.",
    ),
    "device.cred.id": ("编号", "No."),
    "device.cred.issued": ("签发时间", "Issued"),
    "device.cred.revoked": ("吊销时间", "Revoked"),
    "device.cred.state": ("状态", "State"),
    "device.cred.active": ("有效", "active"),
    "device.cred.revoked_state": ("已吊销", "revoked"),
    "device.cred.none": ("尚无凭据。", "No credentials yet."),
    "device.rotate": ("轮换密钥", "Rotate secret"),
    "device.revoke": ("吊销密钥", "Revoke secret"),
    "device.rotate_confirm": (
        "签发新密钥并吊销当前密钥？设备需使用新密钥重新连接。",
        "Issue a new secret and revoke the current one? The device must reconnect with the new secret.",
    ),
    "device.revoke_confirm": (
        "吊销此设备的全部有效密钥？设备将无法连接，直到重新签发。",
        "Revoke every active secret of this device? It cannot connect until a new one is issued.",
    ),
    "device.new_secret": ("新密钥（仅显示一次，请立即保存）", "New secret (shown once; store it now)"),
    "device.revoked_n": ("已吊销 {n} 个密钥。", "{n} secret(s) revoked."),
    "device.action_failed": ("操作失败：{reason}", "Action failed: {reason}"),
    "device.telemetry": ("最新数据", "Latest telemetry"),
    "device.state": ("最新状态上报", "Latest state report"),
    "device.reported_at": ("上报时间 {time}", "Reported {time}"),
    "device.no_telemetry": ("尚无数据。", "No readings yet."),
    "device.no_store": ("此实例未配置遥测存储。", "No telemetry store on this instance."),
    "device.field": ("字段", "Field"),
    "device.value": ("数值", "Value"),
    "device.chart": ("趋势", "Trend"),
    "device.chart_field": ("指标", "Measure"),
    "device.range": ("时间范围", "Range"),
    "device.range.1h": ("1 小时", "1 h"),
    "device.range.24h": ("24 小时", "24 h"),
    "device.range.7d": ("7 天", "7 d"),
    "device.chart_desc": (
        "{field} 在 {range} 内的均值（线）与最小–最大范围（阴影），每点 {bucket}。",
        "{field} over {range}: mean (line) and min–max range (shade), one point per {bucket}.",
    ),
    "device.bucket.1m": ("1 分钟", "minute"),
    "device.bucket.5m": ("5 分钟", "5 minutes"),
    "device.bucket.1h": ("1 小时", "hour"),
    "device.chart_empty": ("此时间范围内没有数据。", "No readings in this range."),
    "device.chart_table": ("数据表", "Data table"),
    "device.chart.time": ("时间", "Time"),
    "device.chart.mean": ("均值", "Mean"),
    "device.chart.min": ("最小", "Min"),
    "device.chart.max": ("最大", "Max"),
    "device.no_numeric": ("此设备类型没有可绘制的数值。", "This kind reports no numeric values to chart."),
    # --- vendor administration
    "vendors.title": ("厂商管理", "Vendors"),
    "vendors.intro": (
        "设备厂商使用 API 密钥通过注册接口接入设备（见 docs/onboarding.md）。",
        "Vendors onboard devices through the registration API with their API key (see docs/onboarding.md).",
    ),
    "vendors.code": ("代码", "Code"),
    "vendors.name": ("名称", "Name"),
    "vendors.contact": ("联系方式", "Contact"),
    "vendors.devices": ("设备数", "Devices"),
    "vendors.active": ("状态", "State"),
    "vendors.enabled": ("启用", "enabled"),
    "vendors.disabled": ("停用", "disabled"),
    "vendors.created": ("创建时间", "Created"),
    "vendors.empty": ("还没有厂商。", "No vendors yet."),
    "vendors.add": ("新增厂商", "Add a vendor"),
    "vendors.code_hint": (
        "小写字母、数字或下划线，2–16 位；作为设备编号前缀", "2–16 lowercase letters, digits or _; prefixes device ids"
    ),
    "vendors.create": ("创建", "Create"),
    "vendors.api_key": ("API 密钥（仅显示一次，请立即交给厂商）", "API key (shown once; hand it to the vendor now)"),
    # --- services that may not run on an instance
    "feature.rules": ("规则与告警引擎", "The rules and alerts engine"),
    "feature.store": ("遥测存储", "The telemetry store"),
    "feature.broker": ("消息代理", "The message broker"),
    "feature.bus": ("消息总线", "The message bus"),
    "feature.firmware": ("固件升级服务", "The firmware (OTA) service"),
    "notrunning.title": ("{feature}未运行", "{feature} is not running"),
    "notrunning.text": (
        "此实例未运行{feature}，本页相关功能暂不可用。请联系平台管理员。",
        "{feature} is not running on this instance, so this part of the dashboard is unavailable. "
        "Ask the platform administrator.",
    ),
    "notrunning.short": ("{feature}未运行", "{feature} is not running"),
    "severity.critical": ("严重", "Critical"),
    "severity.warning": ("警告", "Warning"),
    "severity.info": ("提示", "Info"),
    # --- overview panels
    "overview.alerts": ("未处理告警", "Open alerts"),
    "overview.alarming": ("告警中", "Alarming"),
    "overview.updating": ("升级中", "Updating"),
    "overview.transactions": ("今日交易笔数", "Transactions today"),
    "overview.sales": ("交易额 ¥{yuan}", "Sales ¥{yuan}"),
    "overview.passenger_flow": ("今日进场客流", "Visitors today"),
    "overview.flow_out": ("出场 {n}", "{n} left"),
    "overview.partial": ("仅统计部分设备", "Partial: device limit reached"),
    "overview.quality": ("数据质量评分", "Data-quality score"),
    "overview.quality_detail": (
        "{devices} 台中 {silent} 台今日无数据；死信 {dead} 条",
        "{silent} of {devices} devices silent today; {dead} dead letters",
    ),
    "overview.pick_market": ("请选择一个市场", "Choose a market"),
    # --- alerts inbox
    "alerts.title": ("告警处理", "Alerts"),
    "alerts.views": ("视图", "Views"),
    "alerts.view.active": ("待处理", "Inbox"),
    "alerts.view.archive": ("处理归档", "Archive"),
    "alerts.view.tasks": ("下架任务", "Removal tasks"),
    "alerts.severity": ("级别", "Severity"),
    "alerts.any_severity": ("全部级别", "Any severity"),
    "alerts.what": ("告警", "Alert"),
    "alerts.device": ("设备", "Device"),
    "alerts.opened": ("发生时间", "Opened"),
    "alerts.state": ("状态", "State"),
    "alerts.handle": ("处理", "Handle"),
    "alerts.ack": ("确认", "Acknowledge"),
    "alerts.resolve": ("解除", "Resolve"),
    "alerts.more": ("指派 / 备注", "Assign / comment"),
    "alerts.assignee": ("处理人", "Assignee"),
    "alerts.assign": ("指派", "Assign"),
    "alerts.comment": ("备注", "Comment"),
    "alerts.add_comment": ("添加备注", "Add comment"),
    "alerts.assigned_to": ("已指派给 {who}", "Assigned to {who}"),
    "alerts.resolved_by": ("由 {who} 解除", "Resolved by {who}"),
    "alerts.need_assignee": ("请填写处理人。", "Name the assignee."),
    "alerts.need_comment": ("备注不能为空。", "Write a comment first."),
    "alerts.failed": ("操作未完成：{reason}", "Not done: {reason}"),
    "alerts.done.ack": ("告警 {id} 已确认。", "Alert {id} acknowledged."),
    "alerts.done.resolve": ("告警 {id} 已解除并归档。", "Alert {id} resolved and archived."),
    "alerts.done.assign": ("告警 {id} 已指派。", "Alert {id} assigned."),
    "alerts.done.comment": ("已为告警 {id} 添加备注。", "Comment added to alert {id}."),
    "alerts.empty.active": ("没有待处理的告警。", "No open alerts."),
    "alerts.empty.archive": ("归档中还没有告警。", "No resolved alerts yet."),
    "alerts.empty.tasks": ("没有待处理的下架任务。", "No open removal tasks."),
    "alerts.detail": ("告警详情", "Alert"),
    "alerts.back": ("返回告警列表", "Back to alerts"),
    "alerts.history": ("处理记录", "Handling history"),
    "alert.status.open": ("未处理", "open"),
    "alert.status.acknowledged": ("已确认", "acknowledged"),
    "alert.status.resolved": ("已解除", "resolved"),
    "alert.action.opened": ("触发", "opened"),
    "alert.action.acknowledged": ("确认", "acknowledged"),
    "alert.action.assigned": ("指派", "assigned"),
    "alert.action.commented": ("备注", "commented"),
    "alert.action.escalated": ("升级通知", "escalated"),
    "alert.action.resolved": ("解除", "resolved"),
    "alert.action.repeated": ("再次发生", "repeated"),
    "tasks.sample": ("样品", "Sample"),
    "tasks.item": ("检测项目", "Test item"),
    "tasks.stall": ("摊位", "Stall"),
    "tasks.tested": ("检测时间", "Tested"),
    "tasks.close": ("完成下架", "Close"),
    "tasks.action": ("处理措施", "Action taken"),
    "tasks.action_placeholder": ("如：已下架销毁 5 kg", "e.g. 5 kg removed and destroyed"),
    "tasks.need_action": ("请填写处理措施。", "Say what was done with the product."),
    "tasks.closed": ("下架任务 {id} 已完成并归档。", "Removal task {id} closed and archived."),
    # --- device commands and events
    "device.channel.telemetry": ("遥测", "Telemetry"),
    "device.channel.state": ("状态", "State"),
    "device.events": ("最近事件", "Recent events"),
    "device.no_events": ("最近 7 天没有事件。", "No events in the last 7 days."),
    "device.zoom_hint": ("在图上拖动可放大，双击复原。", "Drag on the chart to zoom, double-click to reset."),
    "device.commands": ("远程指令", "Commands"),
    "device.reboot_confirm": ("确定重启此设备？", "Reboot this device?"),
    "device.command_sent": ("已下发指令「{command}」（编号 {id}）。", "Sent “{command}” (id {id})."),
    "device.command_failed": ("指令未能下发：{reason}", "The command could not be sent: {reason}"),
    "device.command_unknown": ("此设备不支持指令 {command}。", "This device does not take the command {command}."),
    "command.reboot": ("重启", "Reboot"),
    "command.ping": ("连通测试", "Ping"),
    "command.flash_led": ("闪灯定位", "Flash LED"),
    "command.authorise_calibration": ("授权校准（30 分钟）", "Authorise calibration (30 min)"),
    # --- OTA
    "ota.title": ("固件升级活动", "OTA campaigns"),
    "ota.empty": ("还没有升级活动。", "No campaigns yet."),
    "ota.summary": (
        "共 {total} 台 · 完成 {done}% · 成功 {ok}% · 失败 {failed}%",
        "{total} devices · {done}% done · {ok}% succeeded · {failed}% failed",
    ),
    "ota.wave": ("批次", "Wave"),
    "ota.devices": ("设备数", "Devices"),
    "ota.progress": ("进度（成功 / 失败）", "Progress (succeeded / failed)"),
    "ota.threshold": ("成功率门槛", "Success threshold"),
    "ota.pause": ("暂停", "Pause"),
    "ota.resume": ("继续", "Resume"),
    "ota.abort": ("终止", "Abort"),
    "ota.abort_confirm": (
        "终止此升级活动？未开始的设备将不再升级。", "Abort this campaign? Devices not yet updated stay as they are."
    ),
    "ota.failed": ("操作未完成：{reason}", "Not done: {reason}"),
    "ota.done.pause": ("活动 {id} 已暂停。", "Campaign {id} paused."),
    "ota.done.resume": ("活动 {id} 已继续。", "Campaign {id} resumed."),
    "ota.done.abort": ("活动 {id} 已终止。", "Campaign {id} aborted."),
    "ota.state.scheduled": ("待开始", "scheduled"),
    "ota.state.running": ("进行中", "running"),
    "ota.state.paused": ("已暂停", "paused"),
    "ota.state.completed": ("已完成", "completed"),
    "ota.state.aborted": ("已终止", "aborted"),
    "ota.state.cancelled": ("已取消", "cancelled"),
    "ota.wave_state.waiting": ("等待", "waiting"),
    "ota.wave_state.running": ("进行中", "running"),
    "ota.wave_state.done": ("完成", "done"),
    # --- reports
    "reports.title": ("报表", "Reports"),
    "reports.day": ("日期", "Day"),
    "reports.print": ("打印", "Print"),
    "reports.csv": ("下载 CSV", "Download CSV"),
    "reports.no_market": ("没有可查看的市场。", "No market to report on."),
    "reports.quality": ("数据质量日报 {day}", "Data-quality report {day}"),
    "reports.quality_intro": (
        "按北京标准 6.2.2：无数据设备、死信、序号缺口、异常订单与告警。",
        "After BJ 6.2.2: silent devices, dead letters, sequence gaps, abnormal orders and alerts.",
    ),
    "reports.q.devices": ("设备数", "Devices"),
    "reports.q.silent_devices": ("无数据设备", "Silent devices"),
    "reports.q.dead_letters": ("死信", "Dead letters"),
    "reports.q.missing_sequence_numbers": ("缺失序号", "Missing sequence numbers"),
    "reports.q.abnormal_orders": ("异常订单", "Abnormal orders"),
    "reports.q.alerts_opened": ("新增告警", "Alerts opened"),
    "reports.silent": ("当日无数据的设备", "Devices silent that day"),
    "reports.more_in_csv": ("另有 {n} 台见 CSV。", "{n} more in the CSV."),
    "reports.alerts_by_rule": ("按规则统计的告警", "Alerts by rule"),
    "reports.scorecard": ("标准达标评分", "Standards scorecard"),
    "reports.scorecard_intro": (
        "依据深圳附录 A 与郑州评分细则，统计近 {days} 天。",
        "After SZ appendix A and the Zhengzhou rules, over the last {days} days.",
    ),
    "reports.section": ("部分", "Section"),
    "reports.points": ("得分", "Points"),
    "reports.item": ("评分项", "Item"),
    "reports.clause": ("条款", "Clause"),
    "reports.action": ("改进建议", "What to do"),
    "reports.gains": ("最能提高得分的事项", "What would raise the score most"),
    "reports.unknown": ("{n} 分无法由平台数据判断", "{n} points cannot be judged from platform data"),
    "reports.cannot_judge": ("无法判断", "cannot judge"),
    # --- errors
    "error.403.title": ("无权访问", "Not allowed"),
    "error.403.text": ("您的角色不能使用此页面。", "Your role may not use this page."),
    "error.404.title": ("未找到", "Not found"),
    "error.404.text": ("没有此设备，或您无权查看。", "There is no such device, or you may not see it."),
    "error.home": ("返回总览", "Back to the overview"),
}

CATALOG: dict[str, dict[str, str]] = {
    language: {key: pair[index] for key, pair in _TEXT.items()} for index, language in enumerate(LANGUAGES)
}

_HTML_LANG = {"zh": "zh-CN", "en": "en"}


@dataclass(frozen=True)
class Translator:
    """`t(key, **values)` for one language; `values` fill `{name}` fields of the text."""

    language: str

    def __call__(self, key: str, **values: object) -> str:
        text = CATALOG[self.language].get(key, key)
        return text.format(**values) if values else text

    @property
    def html_lang(self) -> str:
        return _HTML_LANG[self.language]


def normalise_language(value: str | None) -> str | None:
    """'en', 'en-US', 'zh_CN', 'zh-Hans' → a supported language, else None."""
    if not value:
        return None
    base = value.strip().lower().replace("_", "-").split("-", 1)[0]
    return base if base in LANGUAGES else None


def choose_language(cookie: str | None, account_language: str | None = None) -> str:
    return normalise_language(cookie) or normalise_language(account_language) or DEFAULT_LANGUAGE


@lru_cache(maxsize=256)
def zone(name: str | None) -> ZoneInfo:
    """The named IANA zone; an unknown or empty name falls back to Asia/Shanghai."""
    try:
        return ZoneInfo(name or DEFAULT_TIMEZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_TIMEZONE)


def local_time(value: datetime, timezone: str | None) -> datetime:
    """`value` in the market's zone; naive values are taken as UTC (what the registry stores)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(zone(timezone))


def format_datetime(value: datetime | None, timezone: str | None, pattern: str = "%Y-%m-%d %H:%M:%S") -> str:
    """Market-local wall time, the same digits in both languages (what people read off the device, too)."""
    if value is None:
        return ""
    return local_time(value, timezone).strftime(pattern)
