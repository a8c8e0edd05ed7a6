//! The console's HTML: one layout, escaping, and small components. No script anywhere: every
//! page works without JavaScript; forms post to the server, long jobs refresh themselves.

use std::fmt::Write;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `s` safe inside HTML text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The stylesheet, served at `/ui/style.css` (no external fonts: the system's).
pub(crate) const STYLE: &str = r#"
:root { color-scheme: light dark; --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg: #fff;
  --accent: #0b5cad; --bad: #b42318; --ok: #1a7f37; --warn: #9a6700; --code: #f6f8fa; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9da7b3; --line: #30363d;
  --bg: #0d1117; --accent: #58a6ff; --bad: #ff7b72; --ok: #3fb950; --warn: #d29922; --code: #161b22; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
a { color: var(--accent); }
a:focus, button:focus, input:focus, select:focus, textarea:focus { outline: 3px solid var(--accent); outline-offset: 1px; }
.skip { position: absolute; left: -999px; } .skip:focus { left: 8px; top: 8px; background: var(--bg); padding: 4px 8px; }
header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1.2rem; border-bottom: 1px solid var(--line); flex-wrap: wrap; }
header .brand { font-weight: 700; }
header nav ul { display: flex; gap: 1rem; list-style: none; margin: 0; padding: 0; flex-wrap: wrap; }
header nav a[aria-current="page"] { font-weight: 700; text-decoration: none; }
header .who { margin-left: auto; color: var(--muted); display: flex; gap: .6rem; align-items: center; }
main { padding: 1rem 1.2rem 3rem; max-width: 1200px; }
h1 { font-size: 1.4rem; margin: .4rem 0 1rem; } h2 { font-size: 1.1rem; margin: 1.6rem 0 .6rem; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 1rem; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: var(--code); padding: .8rem; overflow: auto; border-radius: 6px; border: 1px solid var(--line); }
form.inline { display: inline; }
form.filters { display: flex; gap: .8rem; flex-wrap: wrap; align-items: flex-end; margin-bottom: 1rem; }
label { display: flex; flex-direction: column; gap: .2rem; font-size: .9rem; color: var(--muted); }
input, select, textarea, button { font: inherit; padding: .35rem .5rem; border: 1px solid var(--line); border-radius: 6px; background: var(--bg); color: var(--fg); }
button { cursor: pointer; background: var(--accent); color: #fff; border-color: var(--accent); }
button.secondary { background: var(--bg); color: var(--accent); }
button.danger { background: var(--bad); border-color: var(--bad); }
.status { font-weight: 600; } .status.pending { color: var(--warn); } .status.replayed { color: var(--ok); } .status.discarded { color: var(--muted); }
.notice { padding: .6rem .8rem; border-radius: 6px; border: 1px solid var(--line); margin: .6rem 0 1rem; }
.notice.bad { border-color: var(--bad); color: var(--bad); } .notice.ok { border-color: var(--ok); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: .8rem; margin-bottom: 1rem; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: .7rem .9rem; }
.card .n { font-size: 1.6rem; font-weight: 700; font-variant-numeric: tabular-nums; }
.muted { color: var(--muted); }
svg text { fill: var(--fg); font: 12px system-ui, sans-serif; }
svg .edge { stroke: var(--muted); fill: none; } svg .node rect { fill: var(--code); stroke: var(--line); }
svg .bar { fill: var(--accent); }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; } dl.kv dt { color: var(--muted); } dl.kv dd { margin: 0; }
"#;

/// Where the pages link to, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Overview,
    DeadLetters,
    Audit,
    Routes,
    None,
}

/// A whole page: `who` (name and role) is shown with a sign-out button when signed in.
pub(crate) fn layout(
    title: &str,
    section: Section,
    who: Option<(&str, &str)>,
    body: &str,
) -> String {
    let mut nav = String::new();
    if who.is_some() {
        nav.push_str("<nav aria-label=\"Sections\"><ul>");
        for (s, href, label) in [
            (Section::Overview, "/ui", "Overview"),
            (Section::DeadLetters, "/ui/dead-letters", "Dead letters"),
            (Section::Audit, "/ui/audit", "Audit trail"),
            (Section::Routes, "/ui/routes", "Routes and lineage"),
        ] {
            let current = if s == section {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(nav, "<li><a href=\"{href}\"{current}>{label}</a></li>");
        }
        nav.push_str("</ul></nav>");
    }
    let who = match who {
        Some((name, role)) => format!(
            "<div class=\"who\"><span>{} ({})</span><form class=\"inline\" method=\"post\" action=\"/ui/logout\"><button class=\"secondary\" type=\"submit\">Sign out</button></form></div>",
            esc(name),
            esc(role)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · switchyard</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to content</a><header><span class=\"brand\">switchyard</span>{nav}{who}</header>\
         <main id=\"main\">{body}</main></body></html>",
        esc(title)
    )
}

/// An HTML answer with the console's security headers (no script, no framing, no outside
/// resources, no caching of pages that may hold payloads).
pub(crate) fn html(status: StatusCode, page: String) -> Response {
    let mut r = (status, page).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // `same-origin`, not `no-referrer`: with the latter browsers post forms with `Origin: null`.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A `<select>` of `options` with `selected` chosen (`""`: any).
pub(crate) fn select(name: &str, label: &str, options: &[&str], selected: &str) -> String {
    let mut s = format!(
        "<label>{}<select name=\"{name}\"><option value=\"\">any</option>",
        esc(label)
    );
    for o in options {
        let sel = if *o == selected { " selected" } else { "" };
        let _ = write!(s, "<option{sel}>{}</option>", esc(o));
    }
    s.push_str("</select></label>");
    s
}

/// A text `<input>`.
pub(crate) fn input(name: &str, label: &str, value: &str) -> String {
    format!(
        "<label>{}<input name=\"{name}\" value=\"{}\"></label>",
        esc(label),
        esc(value)
    )
}

/// A hidden form field.
pub(crate) fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
        esc(value)
    )
}

/// A notice paragraph (`kind`: `ok` or `bad`), announced to screen readers.
pub(crate) fn notice(kind: &str, text: &str) -> String {
    format!(
        "<p class=\"notice {kind}\" role=\"status\">{}</p>",
        esc(text)
    )
}

/// A status word, styled.
pub(crate) fn status(s: &str) -> String {
    format!("<span class=\"status {0}\">{0}</span>", esc(s))
}
