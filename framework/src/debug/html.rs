//! The debug page: the [`Snapshot`] as one self-contained HTML document,
//! readable without JavaScript. Every piece of text from the model is
//! escaped.

use std::fmt::{self, Write as _};

use super::http::{HTML_PATH, JSON_PATH, METRICS_PATH};
use super::model::{ConnectionInfo, Event, MethodStats, Snapshot};

/// Text escaped for HTML content and attribute values.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest
            .find(|c: char| matches!(c, '&' | '<' | '>' | '"' | '\'') || needs_visible_escape(c))
        {
            let (plain, tail) = rest.split_at(i);
            f.write_str(plain)?;
            let mut chars = tail.chars();
            match chars.next() {
                Some('&') => f.write_str("&amp;")?,
                Some('<') => f.write_str("&lt;")?,
                Some('>') => f.write_str("&gt;")?,
                Some('"') => f.write_str("&quot;")?,
                Some('\'') => f.write_str("&#39;")?,
                // Control characters and bidi overrides from peers are shown,
                // not obeyed.
                Some(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                None => {}
            }
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}

/// Whether `c` is shown as a `\u{..}` escape rather than as itself: control
/// characters (but the whitespace HTML folds) and bidirectional overrides.
fn needs_visible_escape(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

const STYLE: &str = "
:root { color-scheme: light dark; --line: #8884; --muted: #777; --head: #8881; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin: 1.6em 0 .4em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: .3em 0; }
th, td { border: 1px solid var(--line); padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, .mono { font-family: ui-monospace, monospace; font-size: .92em; }
.muted { color: var(--muted); }
.state-closed { opacity: .6; }
ul.plain { margin: 0; padding-left: 1.1em; }
ol.events { margin: 0; padding-left: 1.4em; font-size: .92em; }
tbody.conn { border-top: 3px solid var(--line); }
tr.connection-events td { border-top: none; }
dl.process { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; margin: .5em 0; }
dl.process dt { color: var(--muted); }
dl.process dd { margin: 0; }
.transport { font-weight: 600; }
";

/// The page.
pub(super) fn render(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(16 * 1024 + snapshot.connections.len() * 2048);
    // Writing into a String cannot fail.
    let _ = write_page(&mut out, snapshot);
    out
}

fn write_page(out: &mut String, s: &Snapshot) -> fmt::Result {
    let p = &s.process;
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>switchyard: {} (pid {})</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        Esc(&p.name),
        p.pid
    )?;
    write!(
        out,
        "<header>\n<h1>switchyard: <span class=\"process-name\">{}</span> \
         <span class=\"muted\">pid {}</span></h1>\n\
         <nav><a href=\"{HTML_PATH}\">refresh</a><a href=\"{JSON_PATH}\">JSON</a>\
         <a href=\"{METRICS_PATH}\">metrics</a></nav>\n\
         <p class=\"muted\">taken {} UTC · switchyard {} · schema {}</p>\n</header>\n",
        Esc(&p.name),
        p.pid,
        Utc(s.taken_unix_ms),
        Esc(&p.version),
        s.schema
    )?;

    out.push_str("<section id=\"process\">\n<h2>Process</h2>\n<dl class=\"process\">\n");
    let rows: [(&str, String); 9] = [
        ("name", p.name.clone()),
        ("pid", p.pid.to_string()),
        ("uid", p.uid.to_string()),
        ("host", p.hostname.clone()),
        ("boot id", p.boot_id.clone()),
        ("machine id", or_unknown(&p.machine_id)),
        ("IPC namespace", ns(p.ipc_ns)),
        ("network namespace", ns(p.net_ns)),
        ("recording since", format!("{} UTC", Utc(p.started_unix_ms))),
    ];
    for (label, value) in &rows {
        writeln!(
            out,
            "<dt>{label}</dt><dd class=\"mono\">{}</dd>",
            Esc(value)
        )?;
    }
    out.push_str("</dl>\n</section>\n");

    write_services(out, s)?;
    write_layers(out, s)?;
    write_listeners(out, s)?;
    write_connections(out, s)?;
    write_channels(out, s)?;
    write_methods(out, &s.methods)?;
    out.push_str("</body>\n</html>\n");
    Ok(())
}

fn write_services(out: &mut String, s: &Snapshot) -> fmt::Result {
    out.push_str("<section id=\"services\">\n<h2>Services</h2>\n");
    if s.services.is_empty() {
        out.push_str("<p class=\"muted\">This process serves no service.</p>\n</section>\n");
        return Ok(());
    }
    out.push_str(
        "<table>\n<thead><tr><th>service</th><th>method</th><th>id</th><th>kind</th>\
         <th>signature</th></tr></thead>\n<tbody>\n",
    );
    for service in &s.services {
        if service.methods.is_empty() {
            writeln!(
                out,
                "<tr class=\"service\"><td>{}</td><td colspan=\"4\" class=\"muted\">no \
                 methods</td></tr>",
                Esc(&service.name)
            )?;
        }
        for (i, m) in service.methods.iter().enumerate() {
            out.push_str("<tr class=\"method\">");
            if i == 0 {
                write!(
                    out,
                    "<td rowspan=\"{}\">{}</td>",
                    service.methods.len(),
                    Esc(&service.name)
                )?;
            }
            writeln!(
                out,
                "<td>{}</td><td class=\"mono\">{:#010x}</td><td>{}</td><td><code>{}</code></td></tr>",
                Esc(&m.name),
                m.id,
                if m.oneway { "one-way" } else { "unary" },
                Esc(&m.signature)
            )?;
        }
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
    Ok(())
}

fn write_layers(out: &mut String, s: &Snapshot) -> fmt::Result {
    if s.layers.is_empty() {
        return Ok(());
    }
    out.push_str(
        "<section id=\"layers\">\n<h2>Layers</h2>\n<p class=\"muted\">Outermost first; \
         refused: calls a layer answered itself.</p>\n<table>\n<thead><tr><th>side</th>\
         <th>of</th><th>layer</th><th>refused</th></tr></thead>\n<tbody>\n",
    );
    for stack in &s.layers {
        for (i, layer) in stack.layers.iter().enumerate() {
            out.push_str("<tr class=\"layer\">");
            if i == 0 {
                write!(
                    out,
                    "<td rowspan=\"{n}\">{}</td><td rowspan=\"{n}\">{}</td>",
                    Esc(&stack.side),
                    Esc(&stack.owner),
                    n = stack.layers.len()
                )?;
            }
            writeln!(
                out,
                "<td>{}</td><td class=\"num\">{}</td></tr>",
                Esc(&layer.name),
                layer.rejected
            )?;
        }
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
    Ok(())
}

fn write_listeners(out: &mut String, s: &Snapshot) -> fmt::Result {
    out.push_str("<section id=\"listeners\">\n<h2>Listeners</h2>\n");
    if s.listeners.is_empty() {
        out.push_str("<p class=\"muted\">This process listens nowhere.</p>\n</section>\n");
        return Ok(());
    }
    out.push_str(
        "<table>\n<thead><tr><th>transport</th><th>address</th><th>connection attempts</th></tr>\
         </thead>\n<tbody>\n",
    );
    for l in &s.listeners {
        let attempts: Vec<String> = l
            .attempts
            .iter()
            .map(|(event, n)| format!("{event} {n}"))
            .collect();
        writeln!(
            out,
            "<tr class=\"listener\"><td class=\"transport\">{}</td><td class=\"mono\">{}</td>\
             <td>{}</td></tr>",
            Esc(&l.transport),
            Esc(&l.url),
            Esc(&attempts.join(", "))
        )?;
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
    Ok(())
}

fn write_connections(out: &mut String, s: &Snapshot) -> fmt::Result {
    let open = s.connections.iter().filter(|c| c.state != "closed").count();
    write!(
        out,
        "<section id=\"connections\">\n<h2>Connections</h2>\n<p class=\"muted\">{open} open, \
         {} recently closed. Latency is per call as this side saw it; percentiles are bucket \
         upper bounds (within 25 %).</p>\n",
        s.connections.len() - open
    )?;
    if s.connections.is_empty() {
        out.push_str("<p class=\"muted\">No connections.</p>\n</section>\n");
        return Ok(());
    }
    out.push_str(
        "<table>\n<thead><tr><th>id</th><th>role</th><th>state</th><th>transport</th>\
         <th>why</th><th>rejected</th><th>peer</th><th>calls<br>started / ok / failed</th>\
         <th>bytes<br>sent / received</th><th>latency<br>p50 / p99</th><th>opened</th>\
         </tr></thead>\n",
    );
    // One tbody per connection: its row, then its event log beneath.
    for c in &s.connections {
        write_connection(out, c, s.taken_unix_ms)?;
    }
    out.push_str("</table>\n</section>\n");
    Ok(())
}

fn write_connection(out: &mut String, c: &ConnectionInfo, now: u64) -> fmt::Result {
    writeln!(
        out,
        "<tbody class=\"conn\">\n<tr class=\"connection state-{state}\" id=\"connection-{id}\" data-id=\"{id}\" \
         data-transport=\"{transport}\" data-role=\"{role}\" data-state=\"{state}\">",
        id = c.id,
        transport = Esc(&c.transport),
        role = Esc(&c.role),
        state = Esc(&c.state),
    )?;
    // The compression choice goes under the transport: the reason cell
    // holds the transport's reason alone.
    write!(
        out,
        "<td class=\"num id\">#{}</td><td class=\"role\">{}</td><td class=\"state\">{}</td>\
         <td class=\"transport\">{}",
        c.id,
        Esc(&c.role),
        Esc(&c.state),
        Esc(&c.transport),
    )?;
    write_compression(out, c)?;
    writeln!(out, "</td><td class=\"reason\">{}</td>", Esc(&c.reason))?;
    out.push_str("<td class=\"rejected\">");
    if c.rejected.is_empty() {
        out.push_str("<span class=\"muted\">none</span>");
    } else {
        out.push_str("<ul class=\"plain\">");
        for r in &c.rejected {
            write!(
                out,
                "<li><span class=\"transport\">{}</span>: {}</li>",
                Esc(&r.transport),
                Esc(&r.why)
            )?;
        }
        out.push_str("</ul>");
    }
    out.push_str("</td>\n");

    let peer = &c.peer;
    write!(
        out,
        "<td class=\"peer\"><div class=\"mono\">{}</div>",
        Esc(&peer.addr)
    )?;
    let mut who = Vec::new();
    if !peer.process.is_empty() {
        who.push(peer.process.clone());
    }
    if let Some(pid) = peer.pid {
        who.push(format!("pid {pid}"));
    }
    if let Some(uid) = peer.uid {
        who.push(format!("uid {uid}"));
    }
    if !peer.hostname.is_empty() {
        who.push(format!("on {}", peer.hostname));
    }
    if !who.is_empty() {
        write!(out, "<div>{}</div>", Esc(&who.join(", ")))?;
    }
    if !peer.locality.is_empty() {
        write!(out, "<div class=\"muted\">{}</div>", Esc(&peer.locality))?;
    }
    out.push_str("</td>\n");

    writeln!(
        out,
        "<td class=\"num calls\">{} / {} / {}</td>\
         <td class=\"num bytes\"><span title=\"{} bytes\">{}</span> / \
         <span title=\"{} bytes\">{}</span></td>\
         <td class=\"num latency\">{}</td>",
        c.calls_started,
        c.calls_succeeded,
        c.calls_failed,
        c.bytes_sent,
        Bytes(c.bytes_sent),
        c.bytes_received,
        Bytes(c.bytes_received),
        LatencyCell(c.latency.count, c.latency.p50_us, c.latency.p99_us),
    )?;
    write!(
        out,
        "<td class=\"opened\"><span title=\"{} UTC\">{} ago</span>",
        Utc(c.opened_unix_ms),
        Ago(now.saturating_sub(c.opened_unix_ms))
    )?;
    if let Some(closed) = c.closed_unix_ms {
        write!(
            out,
            "<div class=\"muted\">closed {} ago</div>",
            Ago(now.saturating_sub(closed))
        )?;
    }
    let streams = &c.streams;
    if streams.open + streams.messages_sent + streams.messages_received > 0 {
        write!(
            out,
            "<div class=\"streams\">streams: {} open, {} waiting for credit; {} messages \
             sent, {} received</div>",
            streams.open, streams.stalled, streams.messages_sent, streams.messages_received
        )?;
    }
    out.push_str("</td>\n</tr>\n");
    write_events(out, &c.events, now)?;
    out.push_str("</tbody>\n");
    Ok(())
}

/// The connection's compression choice, and what it saved, under its
/// reason.
fn write_compression(out: &mut String, c: &ConnectionInfo) -> fmt::Result {
    let z = &c.compression;
    if z.reason.is_empty() {
        return Ok(());
    }
    let class = if z.on {
        "compression on"
    } else {
        "compression muted"
    };
    let prefix = if z.on { "compression: " } else { "" };
    write!(
        out,
        "<div class=\"{class}\">{prefix}{}</div>",
        Esc(&z.reason)
    )?;
    let m = &z.moved;
    if m.payloads_sent + m.payloads_received > 0 {
        write!(
            out,
            "<div class=\"compression-moved\">{} payloads sent as {} of {} ({:.1}x), {} \
             received as {} of {}; {} saved</div>",
            m.payloads_sent,
            Bytes(m.wire_bytes_sent),
            Bytes(m.raw_bytes_sent),
            m.ratio_sent(),
            m.payloads_received,
            Bytes(m.wire_bytes_received),
            Bytes(m.raw_bytes_received),
            Bytes(m.saved())
        )?;
    }
    Ok(())
}

/// The event log, in a row of its own beneath the connection's.
fn write_events(out: &mut String, events: &[Event], now: u64) -> fmt::Result {
    out.push_str(
        "<tr class=\"connection-events\"><td class=\"muted\">events</td>\
         <td colspan=\"10\" class=\"events\">",
    );
    if events.is_empty() {
        out.push_str("<span class=\"muted\">none</span>");
    } else {
        out.push_str("<ol class=\"events\">");
        for e in events {
            write!(
                out,
                "<li class=\"event\" data-kind=\"{kind}\"><span title=\"{at} UTC\" \
                 class=\"muted\">{ago} ago</span> <b>{kind}</b>",
                kind = Esc(&e.kind),
                at = Utc(e.at_unix_ms),
                ago = Ago(now.saturating_sub(e.at_unix_ms)),
            )?;
            if !e.detail.is_empty() {
                write!(out, ": {}", Esc(&e.detail))?;
            }
            out.push_str("</li>");
        }
        out.push_str("</ol>");
    }
    out.push_str("</td></tr>\n");
    Ok(())
}

/// Each channel to a name: its policy, where its replicas were found,
/// retries, and per replica its state, transport and why, load and
/// ejection; then what changed.
fn write_channels(out: &mut String, s: &Snapshot) -> fmt::Result {
    if s.channels.is_empty() {
        return Ok(());
    }
    out.push_str("<section id=\"channels\">\n<h2>Channels</h2>\n");
    for c in &s.channels {
        writeln!(
            out,
            "<h3 class=\"channel\">{} <span class=\"muted\">{} · replicas from {} · {} retries, \
             {} hedges, {} held back by the budget</span></h3>",
            Esc(&c.target),
            Esc(&c.balance),
            Esc(c.source.as_deref().unwrap_or("-")),
            c.retries,
            c.hedges,
            c.retries_throttled
        )?;
        if let Some(problem) = &c.discovery_error {
            writeln!(out, "<p class=\"warn\">discovery: {}</p>", Esc(problem))?;
        }
        for skipped in &c.skipped {
            writeln!(out, "<p class=\"warn\">skipped: {}</p>", Esc(skipped))?;
        }
        out.push_str(
            "<table>\n<thead><tr><th>replica</th><th>state</th><th>transport</th><th>why</th>\
             <th>in flight</th><th>calls</th><th>EWMA</th><th>not serving</th>\
             <th>ejections</th><th>connection</th><th>last error</th></tr></thead>\n<tbody>\n",
        );
        for r in &c.replicas {
            let ewma = r
                .latency_ewma_us
                .map_or_else(|| "-".to_owned(), |us| Micros(us).to_string());
            let ejected = match r.ejected_for_ms {
                Some(ms) => format!("{} ({ms} ms left)", r.ejections),
                None => r.ejections.to_string(),
            };
            writeln!(
                out,
                "<tr class=\"replica\" data-state=\"{}\"><td class=\"mono\">{}</td><td>{}</td>\
                 <td class=\"transport\">{}</td><td>{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                Esc(&r.state),
                Esc(&r.key),
                Esc(&r.state),
                Esc(r.transport.as_deref().unwrap_or("-")),
                Esc(r.reason.as_deref().unwrap_or("")),
                r.in_flight,
                r.calls_started,
                ewma,
                Esc(&r.not_serving.join(", ")),
                ejected,
                r.connection
                    .map_or_else(|| "-".to_owned(), |id| format!("#{id}")),
                Esc(r.last_error.as_deref().unwrap_or(""))
            )?;
        }
        out.push_str("</tbody>\n</table>\n");
        if !c.changes.is_empty() {
            out.push_str("<ul class=\"changes\">\n");
            for change in &c.changes {
                writeln!(out, "<li>{}</li>", Esc(change))?;
            }
            out.push_str("</ul>\n");
        }
    }
    out.push_str("</section>\n");
    Ok(())
}

fn write_methods(out: &mut String, methods: &[MethodStats]) -> fmt::Result {
    out.push_str("<section id=\"methods\">\n<h2>Methods</h2>\n");
    if methods.is_empty() {
        out.push_str("<p class=\"muted\">No calls yet.</p>\n</section>\n");
        return Ok(());
    }
    out.push_str(
        "<table>\n<thead><tr><th>service</th><th>method</th><th>transport</th><th>role</th>\
         <th>calls</th><th>errors</th><th>latency<br>p50 / p99</th><th>bytes<br>sent / \
         received</th></tr></thead>\n<tbody>\n",
    );
    for m in methods {
        write!(
            out,
            "<tr class=\"method-stats\" data-transport=\"{t}\"><td>{}</td><td>{}</td>\
             <td class=\"transport\">{t}</td><td>{}</td><td class=\"num\">{}</td><td>",
            Esc(&m.service),
            Esc(&m.method),
            Esc(&m.role),
            m.calls,
            t = Esc(&m.transport),
        )?;
        if m.errors.is_empty() {
            out.push_str("<span class=\"muted\">none</span>");
        } else {
            let list: Vec<String> = m
                .errors
                .iter()
                .map(|(code, n)| format!("{code}: {n}"))
                .collect();
            write!(out, "{}", Esc(&list.join(", ")))?;
        }
        writeln!(
            out,
            "</td><td class=\"num\">{}</td><td class=\"num\">{} / {}</td></tr>",
            LatencyCell(m.latency.count, m.latency.p50_us, m.latency.p99_us),
            Bytes(m.bytes_sent),
            Bytes(m.bytes_received)
        )?;
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
    Ok(())
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        "unknown".to_owned()
    } else {
        s.to_owned()
    }
}

fn ns(inode: u64) -> String {
    if inode == 0 {
        "unknown".to_owned()
    } else {
        inode.to_string()
    }
}

/// `p50 / p99` in readable units, or a dash before the first call.
struct LatencyCell(u64, f64, f64);

impl fmt::Display for LatencyCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("<span class=\"muted\">–</span>");
        }
        write!(f, "{} / {}", Micros(self.1), Micros(self.2))
    }
}

/// Microseconds as µs, ms or s.
struct Micros(f64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        if !us.is_finite() || us < 0.0 {
            f.write_str("?")
        } else if us < 1_000.0 {
            write!(f, "{us:.0} µs")
        } else if us < 1_000_000.0 {
            write!(f, "{:.1} ms", us / 1_000.0)
        } else {
            write!(f, "{:.2} s", us / 1_000_000.0)
        }
    }
}

/// A byte count in B, KiB, MiB or GiB.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        write!(
            f,
            "{value:.1} {}",
            UNITS.get(unit).copied().unwrap_or("TiB")
        )
    }
}

/// A duration in milliseconds, roughly.
struct Ago(u64);

impl fmt::Display for Ago {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        match ms {
            0..1_000 => write!(f, "{ms} ms"),
            1_000..60_000 => write!(f, "{:.1} s", ms as f64 / 1_000.0),
            60_000..3_600_000 => write!(f, "{} min {} s", ms / 60_000, ms % 60_000 / 1_000),
            _ => write!(f, "{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
        }
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
struct Utc(u64);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        let secs = ms / 1_000;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
            rem / 3_600,
            rem % 3_600 / 60,
            rem % 60,
            ms % 1_000
        )
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::super::model::{PeerInfo, Rejected};
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(
            Esc("a\u{1b}[2J\u{202e}b\nc").to_string(),
            "a\\u{1b}[2J\\u{202e}b\nc"
        );
    }

    #[test]
    fn everything_is_escaped() {
        assert_eq!(
            Esc("<a href=\"x\">'&'</a>").to_string(),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(Esc("plain µs").to_string(), "plain µs");
        let mut s = Snapshot::default();
        s.process.name = "<script>alert(1)</script>".into();
        s.connections.push(ConnectionInfo {
            id: 7,
            role: "client".into(),
            state: "open".into(),
            transport: "unix\"><b>".into(),
            reason: "<img src=x onerror=alert(1)>".into(),
            rejected: vec![Rejected {
                transport: "tcp".into(),
                why: "a & b".into(),
            }],
            peer: PeerInfo {
                pid: Some(1),
                ..PeerInfo::default()
            },
            events: vec![Event {
                at_unix_ms: 0,
                kind: "connected".into(),
                detail: "</td>".into(),
            }],
            ..ConnectionInfo::default()
        });
        let page = render(&s);
        assert!(
            !page.contains("<script>") && !page.contains("<img") && !page.contains("</td></li>")
        );
        assert!(page.contains("&lt;script&gt;") && page.contains("a &amp; b"));
        assert!(page.contains("data-transport=\"unix&quot;&gt;&lt;b&gt;\""));
        assert_eq!(page.matches("<tr class=\"connection ").count(), 1);
        assert_eq!(page.matches("<tr class=\"connection-events\"").count(), 1);
    }

    #[test]
    fn channels_show_each_replica_escaped() {
        let mut s = Snapshot::default();
        s.channels.push(super::super::model::ChannelInfo {
            target: "inventory".into(),
            balance: "round_robin".into(),
            source: Some("DNS (<inventory>)".into()),
            replicas: vec![super::super::model::ReplicaInfo {
                key: "tcp://10.0.0.6:7000".into(),
                state: "ejected".into(),
                transport: Some("tcp".into()),
                ejections: 2,
                ejected_for_ms: Some(19_000),
                not_serving: vec!["Inventory".into()],
                last_error: Some("<b>refused</b>".into()),
                ..Default::default()
            }],
            changes: vec!["added tcp://10.0.0.6:7000".into()],
            retries: 3,
            ..Default::default()
        });
        let page = render(&s);
        assert!(page.contains("<section id=\"channels\">"), "{page}");
        assert_eq!(
            page.matches("<tr class=\"replica\" data-state=\"ejected\">")
                .count(),
            1
        );
        assert!(page.contains("2 (19000 ms left)") && page.contains("Inventory"));
        assert!(page.contains("DNS (&lt;inventory&gt;)") && !page.contains("<b>refused"));
        assert!(page.contains("<li>added tcp://10.0.0.6:7000</li>"));
    }

    #[test]
    fn dates_and_units() {
        assert_eq!(Utc(0).to_string(), "1970-01-01 00:00:00.000");
        assert_eq!(Utc(951_782_400_123).to_string(), "2000-02-29 00:00:00.123");
        assert_eq!(
            Utc(1_735_689_599_000).to_string(),
            "2024-12-31 23:59:59.000"
        );
        assert_eq!(Bytes(1023).to_string(), "1023 B");
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
        assert_eq!(Micros(12.0).to_string(), "12 µs");
        assert_eq!(Micros(2_500.0).to_string(), "2.5 ms");
        assert_eq!(Ago(61_000).to_string(), "1 min 1 s");
    }
}
