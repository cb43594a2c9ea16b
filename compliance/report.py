"""The scorecard as a printable HTML page, in Chinese or English, with what would raise the score most.

Self-contained (inline CSS, no scripts, no external assets), so the file can be mailed, archived with the
evaluation, or printed from any browser; `@media print` keeps each table row on one page.
"""

from __future__ import annotations

from html import escape
from typing import Literal

from compliance.schemas import Scorecard, ScoreItem

__all__ = ["filter_source", "scorecard_html", "top_gains"]

Lang = Literal["zh", "en"]

_TEXT: dict[str, dict[Lang, str]] = {
    "title": {"zh": "智慧农贸市场评价 · 设备与数据项", "en": "Smart-market evaluation · devices and data"},
    "market": {"zh": "市场", "en": "Market"},
    "generated": {"zh": "生成时间", "en": "Generated"},
    "window": {"zh": "统计窗口", "en": "Window"},
    "days": {"zh": "天", "en": "days"},
    "gains": {"zh": "最能提高得分的事项", "en": "What would raise the score most"},
    "clause": {"zh": "条款", "en": "Clause"},
    "item": {"zh": "评价项目", "en": "Item"},
    "points": {"zh": "得分", "en": "Points"},
    "max": {"zh": "分值", "en": "Max"},
    "status": {"zh": "状态", "en": "Status"},
    "evidence": {"zh": "依据", "en": "Evidence"},
    "action": {"zh": "扣分原因 / 改进", "en": "Deduction / action"},
    "total": {"zh": "小计", "en": "Total"},
    "unknown": {"zh": "无法由平台数据判断的分值", "en": "points the platform's data cannot judge"},
    "manual": {"zh": "需现场评价", "en": "assessed on site"},
    "none": {"zh": "没有可由平台改进的扣分项。", "en": "Nothing the platform can see is losing points."},
}
_STATUS: dict[str, dict[Lang, str]] = {
    "met": {"zh": "满足", "en": "met"},
    "partly": {"zh": "部分满足", "en": "partly met"},
    "not_met": {"zh": "不满足", "en": "not met"},
    "unknown": {"zh": "待评", "en": "to assess"},
}

_CSS = """
body { font: 14px/1.45 "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", system-ui, sans-serif; margin: 2em; }
h1 { font-size: 1.4em; margin: 0 0 .3em; } h2 { font-size: 1.1em; margin: 1.6em 0 .4em; }
.meta { color: #555; margin-bottom: 1em; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #bbb; padding: .3em .5em; vertical-align: top; text-align: left; }
th { background: #f0f0f0; } td.num { text-align: right; white-space: nowrap; }
tr.met td.status { color: #176b2c; } tr.partly td.status { color: #9a6700; }
tr.not_met td.status { color: #b3261e; font-weight: bold; } tr.unknown td.status { color: #555; }
tr.total td { font-weight: bold; background: #fafafa; }
ol.gains li { margin: .2em 0; }
@media print { body { margin: 0; } tr { page-break-inside: avoid; } }
"""


def filter_source(card: Scorecard, source: Literal["SZ", "ZZ"] | None) -> Scorecard:
    """Only one evaluation table's items and totals (None: all of them)."""
    if source is None:
        return card
    items = [i for i in card.items if i.source == source]
    sections = {i.section for i in items}
    return card.model_copy(update={"items": items, "totals": [t for t in card.totals if t.section in sections]})


def top_gains(card: Scorecard, count: int = 5) -> list[ScoreItem]:
    """The judged items that lose the most points and say what to do, most points first."""
    losing = [i for i in card.items if i.points is not None and i.points < i.max_points and i.action]
    return sorted(losing, key=lambda i: (-(i.max_points - i.points), i.id))[:count]  # type: ignore[operator]


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def scorecard_html(card: Scorecard, lang: Lang = "zh") -> str:
    t = {key: text[lang] for key, text in _TEXT.items()}
    out = [f'<!doctype html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">',
           f"<title>{escape(t['title'])} · {escape(card.market)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{escape(t['title'])}</h1>",
           f'<div class="meta">{t["market"]}: <b>{escape(card.market)}</b> · {t["generated"]}: '
           f"{card.generated_at:%Y-%m-%d %H:%M} UTC · {t['window']}: {card.window_days} {t['days']}</div>",
           f"<h2>{escape(t['gains'])}</h2>"]
    gains = top_gains(card)
    if gains:
        out.append('<ol class="gains">')
        for item in gains:
            title = item.title_zh if lang == "zh" else item.title
            out.append(f"<li><b>+{item.max_points - (item.points or 0):g}</b> {escape(title)} "
                       f"({escape(item.clause)}): {escape(item.action)}</li>")
        out.append("</ol>")
    else:
        out.append(f"<p>{escape(t['none'])}</p>")
    for section in dict.fromkeys(i.section for i in card.items):
        out.append(f"<h2>{escape(section)}</h2><table><tr><th>{t['clause']}</th><th>{t['item']}</th>"
                   f"<th>{t['status']}</th><th>{t['points']}</th><th>{t['max']}</th><th>{t['evidence']}</th>"
                   f"<th>{t['action']}</th></tr>")
        for item in (i for i in card.items if i.section == section):
            title = item.title_zh if lang == "zh" else item.title
            evidence = "; ".join(f"{k}={v}" for k, v in item.evidence.items())
            action = item.action or ("" if item.points is not None else t["manual"])
            out.append(f'<tr class="{item.status}"><td>{escape(item.clause)}</td><td>{escape(title)}</td>'
                       f'<td class="status">{_STATUS[item.status][lang]}</td><td class="num">{_num(item.points)}</td>'
                       f'<td class="num">{_num(item.max_points)}</td><td>{escape(evidence)}</td>'
                       f"<td>{escape(action)}</td></tr>")
        for total in (x for x in card.totals if x.section == section):
            out.append(f'<tr class="total"><td></td><td>{t["total"]}</td><td></td>'
                       f'<td class="num">{_num(total.points)}</td><td class="num">{_num(total.max_points)}</td>'
                       f'<td colspan="2">{t["unknown"]}: {_num(total.unknown_points)}</td></tr>')
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
