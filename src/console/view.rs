//! The page frame (navigation, the operator, sign-out), small formatting helpers, and the error
//! page. Templates are `maud` macros: checked at compile time, every value escaped.

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::auth::Session;

/// The style sheet, served as `/static/console.css`.
pub const CSS: &str = include_str!("console.css");

/// Which navigation entry is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/`.
    Overview,
    /// `/dead-letters`.
    DeadLetters,
    /// `/story`.
    Story,
    /// `/billing`.
    Billing,
    /// The sign-in page (no navigation).
    None,
}

/// A whole page: the frame around `body`.
pub fn page(title: &str, nav: Nav, session: Option<&Session>, body: Markup) -> Response {
    frame(title, nav, session, body, None)
}

/// A page that reloads itself every `secs` seconds (the overview's live numbers).
pub fn refreshing(title: &str, nav: Nav, session: &Session, body: Markup, secs: u32) -> Response {
    frame(title, nav, Some(session), body, Some(secs))
}

fn frame(
    title: &str,
    nav: Nav,
    session: Option<&Session>,
    body: Markup,
    refresh: Option<u32>,
) -> Response {
    let link = |n: Nav, href: &str, label: &str| {
        html! { a href=(href) class=[(nav == n).then_some("current")] { (label) } }
    };
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(secs) = refresh { meta http-equiv="refresh" content=(secs); }
                title { (title) " · kycq console" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                header {
                    span.brand { "kycq" }
                    @if let Some(s) = session {
                        nav {
                            (link(Nav::Overview, "/", "Overview"))
                            (link(Nav::DeadLetters, "/dead-letters", "Dead letters"))
                            (link(Nav::Story, "/story", "Requests"))
                            (link(Nav::Billing, "/billing", "Billing"))
                        }
                        form.signout method="post" action="/logout" {
                            (csrf_field(s))
                            span.who { (s.operator) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    };
    Html(doc.into_string()).into_response()
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A table that scrolls sideways on a narrow screen. A heading that starts with `#` heads a
/// column of numbers (aligned right, the `#` not shown).
pub fn table(head: &[&str], rows: Markup) -> Markup {
    html! {
        div.scroll {
            table {
                thead { tr { @for h in head {
                    @match h.strip_prefix('#') {
                        Some(n) => th.num { (n) },
                        None => th { (h) },
                    }
                } } }
                tbody { (rows) }
            }
        }
    }
}

/// A time as `2026-12-02 21:04:05` (UTC).
pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An age: `42 s`, `7 min`, `3 h`, `2 d`.
pub fn age(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// A share as a percentage with one decimal, or `–` when there is nothing to share.
pub fn percent(part: i64, whole: i64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// Milliseconds with one decimal, or `–`.
pub fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1} ms"))
}

/// A flash line above a page's content (after an action).
pub fn flash(text: Option<&str>, ok: bool) -> Markup {
    html! {
        @if let Some(t) = text {
            p class=(if ok { "flash ok" } else { "flash bad" }) role="status" { (t) }
        }
    }
}

/// JSON, pretty-printed and escaped.
pub fn json(v: &serde_json::Value) -> Markup {
    html! { pre.json { (serde_json::to_string_pretty(v).unwrap_or_default()) } }
}

/// An error page with `status` and one sentence saying what to do.
pub fn error(status: StatusCode, sentence: &str) -> Response {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let body = html! {
        p.flash.bad { (sentence) }
        p { a href="/" { "Overview" } " · " a href="/dead-letters" { "Dead letters" }
            " · " a href="/login" { "Sign in" } }
    };
    let mut res = frame(&title, Nav::None, None, body, None);
    *res.status_mut() = status;
    res
}

/// The style sheet response.
pub async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// A badge (`ok`, `warn`, `bad`).
pub fn badge(kind: &str, text: &str) -> Markup {
    html! { span class={"badge " (kind)} { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(age(-3), "0 s");
        assert_eq!(age(119), "119 s");
        assert_eq!(age(120), "2 min");
        assert_eq!(age(7200), "2 h");
        assert_eq!(age(200_000), "2 d");
        assert_eq!(percent(1, 3), "33.3%");
        assert_eq!(percent(0, 0), "–");
        assert_eq!(ms(Some(1.26)), "1.3 ms");
        assert_eq!(ms(None), "–");
    }

    #[test]
    fn pages_escape_what_they_show() {
        let html = json(&serde_json::json!({"note": "<script>alert(1)</script>"})).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }
}
