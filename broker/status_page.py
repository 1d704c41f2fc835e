"""The status page as a person reads it: one self-contained HTML document (inline CSS, no
scripts, no external assets) rendered from a :class:`~broker.status.StatusReport`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape

from model_proxy.broker.status import StatusReport, iso_time
from model_proxy.shared.jobs import JOB_STATES
from model_proxy.shared.probe import EndpointStatus

__all__ = ["prefers_html", "render_status_page"]

_VERDICTS = {
    "ok": ("All systems up", "Every check passed."),
    "degraded": ("Degraded", "model-proxy is serving, but some checks failed:"),
    "down": ("Down", "No inference job can run until this is fixed:"),
}

_CSS = """
:root { --ok: #1a7f37; --ok-bg: #dafbe1; --down: #cf222e; --down-bg: #ffebe9;
  --warn: #9a6700; --warn-bg: #fff8c5; --grey: #59636e; --grey-bg: #eaeef2;
  --line: #d1d9e0; --text: #1f2328; --page: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--page); color: var(--text);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans",
  Arial, sans-serif; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono",
  monospace; font-size: 12.5px; }
header { color: #fff; padding: 22px 0 18px; }
header.ok { background: var(--ok); } header.degraded { background: #9a6700; }
header.down { background: var(--down); }
.wrap { max-width: 1240px; margin: 0 auto; padding: 0 28px; }
.product { font-size: 13px; opacity: .9; letter-spacing: .04em; text-transform: uppercase; }
h1 { margin: 2px 0 4px; font-size: 28px; line-height: 1.2; }
header p { margin: 0; opacity: .95; }
header ul { margin: 6px 0 0; padding-left: 20px; }
.chips { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 12px; }
.chip { background: rgba(255,255,255,.18); border-radius: 6px; padding: 3px 10px; font-size: 13px; }
main.wrap { padding-top: 24px; padding-bottom: 4px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; margin: 0 0 20px;
  overflow: hidden; }
h2 { font-size: 15px; margin: 0; padding: 10px 16px; background: #f6f8fa;
  border-bottom: 1px solid var(--line); }
h2 .count { color: var(--grey); font-weight: 400; margin-left: 6px; }
table { width: 100%; border-collapse: collapse; }
table.entries { table-layout: fixed; }
col.status { width: 120px; } col.key { width: 320px; } col.code { width: 70px; }
col.latency { width: 96px; } col.detail { width: 250px; }
td.key { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
th, td { text-align: left; padding: 9px 16px; border-bottom: 1px solid #eef1f4;
  vertical-align: top; }
tr:last-child td { border-bottom: 0; }
th { font-size: 12px; color: var(--grey); font-weight: 600; text-transform: uppercase;
  letter-spacing: .03em; }
td.num, th.num { text-align: right; white-space: nowrap; }
.addr, .card dd { overflow-wrap: anywhere; }
.addr .sub { color: var(--grey); display: block; margin-top: 2px; }
.badge { display: inline-block; min-width: 72px; text-align: center; padding: 2px 10px;
  border-radius: 999px; font-size: 12px; font-weight: 700; text-transform: uppercase;
  letter-spacing: .04em; border: 1px solid transparent; }
.badge.up { background: var(--ok-bg); color: var(--ok); border-color: #aceebb; }
.badge.down { background: var(--down-bg); color: var(--down); border-color: #ffcecb; }
.badge.unknown { background: var(--grey-bg); color: var(--grey); border-color: var(--line); }
.error { color: var(--down); } .muted { color: var(--grey); }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(270px, 1fr)); gap: 20px; }
.grid section { margin: 0; }
.card { padding: 12px 16px; }
.card dl { margin: 0; display: grid; grid-template-columns: max-content 1fr; gap: 6px 14px; }
.card dt { color: var(--grey); } .card dd { margin: 0; }
.card ul { margin: 0; padding-left: 18px; }
.card .sub { color: var(--grey); margin-top: 8px; overflow-wrap: anywhere; }
.states { display: grid; grid-template-columns: repeat(3, 1fr); gap: 8px; }
.state { border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; }
.state b { display: block; font-size: 20px; line-height: 1.2; }
.state span { font-size: 12px; color: var(--grey); }
.state.failed b { color: var(--down); } .state.succeeded b { color: var(--ok); }
footer.wrap { color: var(--grey); font-size: 12px; padding-top: 16px; padding-bottom: 28px; }
footer a { color: inherit; }
"""


def prefers_html(accept: str) -> bool:
    """Whether an ``Accept`` header prefers ``text/html`` to ``application/json`` (a browser's
    does; ``*/*``, none, or a tie answers JSON)."""
    return _quality(accept, "text", "html") > _quality(accept, "application", "json")


def _quality(accept: str, kind: str, subtype: str) -> float:
    """The q of the most specific range of ``accept`` matching ``kind/subtype`` (0: none)."""
    best: tuple[int, float] = (-1, 0.0)
    for item in accept.split(","):
        media, *parameters = (part.strip() for part in item.split(";"))
        main, _, sub = media.lower().partition("/")
        if (main, sub) == (kind, subtype):
            specificity = 2
        elif (main, sub) == (kind, "*"):
            specificity = 1
        elif (main, sub) == ("*", "*"):
            specificity = 0
        else:
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if specificity > best[0]:
            best = (specificity, quality)
    return best[1]


def render_status_page(report: StatusReport) -> str:
    title, lead = _VERDICTS[report.overall]
    problems = "".join(f"<li>{escape(problem)}</li>" for problem in report.problems)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>model-proxy status: {escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header class="{report.overall}" data-overall="{report.overall}">
<div class="wrap">
<div class="product">model-proxy status</div>
<h1>{escape(title)}</h1>
<p>{escape(lead)}</p>
{f"<ul>{problems}</ul>" if problems else ""}
<div class="chips">{_chips(report)}</div>
</div>
</header>
<main class="wrap">
{_endpoint_table("PACS servers", "server", report.servers)}
{_endpoint_table("Models", "model", report.models)}
<div class="grid">
{_redis_card(report)}
{_workers_card(report)}
{_queues_card(report)}
{_jobs_card(report)}
</div>
</main>
<footer class="wrap">Checked {escape(_readable_time(report))}.
<a href="/status">Check again</a> · for programs: <code>Accept: application/json</code>
or <a href="/status?format=json">/status?format=json</a></footer>
</body>
</html>
"""


def _readable_time(report: StatusReport) -> str:
    return iso_time(report.checked_at).replace("T", " ").replace("Z", " UTC")


def _tally(entries: Mapping[str, EndpointStatus]) -> str:
    counts = {status: 0 for status in ("up", "down", "unknown")}
    for entry in entries.values():
        counts[entry.status] += 1
    return " · ".join(f"{n} {status}" for status, n in counts.items() if n) or "none"


def _chips(report: StatusReport) -> str:
    redis = (
        f"Redis {report.redis.latency_ms:g} ms"
        if report.redis.status == "up" and report.redis.latency_ms is not None
        else f"Redis {report.redis.status}"
    )
    workers = report.workers.count
    chips = [
        f"Servers: {_tally(report.servers)}",
        f"Models: {_tally(report.models)}",
        redis,
        f"{workers} worker{'' if workers == 1 else 's'}"
        if report.workers.status != "unknown"
        else "workers unknown",
        f"Checked {_readable_time(report)}",
    ]
    return "".join(f'<span class="chip">{escape(chip)}</span>' for chip in chips)


def _badge(status: str) -> str:
    return f'<span class="badge {escape(status)}">{escape(status)}</span>'


def _endpoint_table(title: str, kind: str, entries: Mapping[str, EndpointStatus]) -> str:
    if not entries:
        body = f'<div class="card muted">No {escape(kind)}s configured.</div>'
        return f"<section><h2>{escape(title)}</h2>{body}</section>"
    rows = []
    for key, entry in entries.items():
        checks = _checked_address(entry)
        if entry.error:
            detail = f'<span class="error">{escape(entry.error)}</span>'
        elif entry.status == "unknown":
            detail = '<span class="muted">no statusUri configured</span>'
        else:
            detail = '<span class="muted">OK</span>'
        code = "" if entry.status_code is None else str(entry.status_code)
        latency = "" if entry.latency_ms is None else f"{entry.latency_ms:g} ms"
        rows.append(
            f'<tr data-kind="{kind}" data-key="{escape(key)}" data-status="{entry.status}">'
            f"<td>{_badge(entry.status)}</td>"
            f'<td class="mono key" title="{escape(key)}">{escape(key)}</td>'
            f'<td class="addr"><span class="mono">{_uri(entry.uri)}</span>{checks}</td>'
            f'<td class="num">{escape(code) or "&ndash;"}</td>'
            f'<td class="num">{escape(latency) or "&ndash;"}</td>'
            f"<td>{detail}</td></tr>"
        )
    columns = (
        '<colgroup><col class="status"><col class="key"><col><col class="code">'
        '<col class="latency"><col class="detail"></colgroup>'
    )
    head = (
        "<tr><th>Status</th><th>Key</th><th>Address</th>"
        '<th class="num">HTTP</th><th class="num">Latency</th><th>Detail</th></tr>'
    )
    return (
        f'<section id="{kind}s"><h2>{escape(title)}<span class="count">{len(entries)}</span>'
        f'</h2><table class="entries">{columns}<thead>{head}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _uri(uri: str) -> str:
    """``uri`` escaped, with places to wrap a long one after ``://`` and each ``/``."""
    scheme, separator, rest = uri.partition("://")
    if not separator:
        return escape(uri)
    return escape(scheme + separator) + "<wbr>" + "/<wbr>".join(escape(p) for p in rest.split("/"))


def _checked_address(entry: EndpointStatus) -> str:
    """The statusUri under the address; shortened to its tail when it extends the address."""
    if entry.status_uri is None:
        return ""
    base = entry.uri.rstrip("/")
    if entry.status_uri.startswith(base + "/") or entry.status_uri == base:
        tail = entry.status_uri[len(base) :] or "/"
        shown = f'checks <span class="mono">&hellip;{escape(tail)}</span>'
    else:
        shown = f'checks <span class="mono">{_uri(entry.status_uri)}</span>'
    return f'<span class="sub" title="{escape(entry.status_uri)}">{shown}</span>'


def _card(title: str, anchor: str, body: str) -> str:
    heading = f"<h2>{escape(title)}</h2>"
    return f'<section id="{anchor}">{heading}<div class="card">{body}</div></section>'


def _definitions(pairs: Iterable[tuple[str, str]]) -> str:
    """``<dl>`` of (label, HTML) pairs; the labels are escaped here, the values by the caller."""
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def _redis_card(report: StatusReport) -> str:
    redis = report.redis
    pairs = [("Status", _badge(redis.status))]
    if redis.latency_ms is not None:
        pairs.append(("Ping", f"{redis.latency_ms:g} ms"))
    if redis.error:
        pairs.append(("Error", f'<span class="error">{escape(redis.error)}</span>'))
    address = f'<div class="sub mono">{_uri(redis.uri)}</div>'
    return _card("Redis", "redis", _definitions(pairs) + address)


def _workers_card(report: StatusReport) -> str:
    workers = report.workers
    pairs = [("Status", _badge(workers.status)), ("Live", str(workers.count))]
    if workers.error:  # unknown: not a failure of the workers themselves
        tone = "muted" if workers.status == "unknown" else "error"
        pairs.append(("Note", f'<span class="{tone}">{escape(workers.error)}</span>'))
    elif workers.status == "down":
        pairs.append(("", '<span class="error">no worker answered the ping</span>'))
    names = "".join(f'<li class="mono">{escape(name)}</li>' for name in workers.names)
    listed = f"<ul>{names}</ul>" if names else ""
    return _card("Celery workers", "workers", _definitions(pairs) + listed)


def _queues_card(report: StatusReport) -> str:
    rows = "".join(
        f'<tr data-queue="{escape(name)}"><td class="mono">{escape(name)}</td>'
        f'<td class="num">{"&ndash;" if depth is None else depth}</td></tr>'
        for name, depth in report.queues.items()
    )
    table = (
        '<table><thead><tr><th>Queue</th><th class="num">Tasks waiting</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )
    return f'<section id="queues"><h2>Queues</h2>{table}</section>'


def _jobs_card(report: StatusReport) -> str:
    if not report.jobs:
        body = '<span class="muted">not read: Redis cannot be reached</span>'
    else:
        states = [*JOB_STATES, *(s for s in report.jobs if s not in JOB_STATES)]
        body = '<div class="states">' + "".join(
            f'<div class="state {escape(state)}"><b>{report.jobs.get(state, 0)}</b>'
            f"<span>{escape(state)}</span></div>"
            for state in states
        )
        body += "</div>"
    title = f"Jobs (latest {report.jobs_window})"
    return _card(title, "jobs", body)
