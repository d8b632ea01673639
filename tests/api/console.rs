//! The operators' console (`kycq console`) against the real services and the sandbox: sign-in,
//! CSRF and security headers over plain HTTP; then the whole operator journey in a real headless
//! Chromium (Debian's `chromium` + `chromium-driver`): sign in, the overview's live numbers, a
//! dead letter retried and its new result, a `billing_unknown` resolved, a person's checks found
//! by name and ID number, and the billing CSV downloaded and compared with the sandbox ledger.
//!
//! `KYCQ_SCREENSHOTS=docs/src/screenshots cargo test --test api console_in_a_browser` also saves a
//! screenshot of every page at desktop and phone width (the ones in the README and the book's console page).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kycq::console::{self, RunningConsole};
use kycq::sandbox::scenarios::{identity, Scenario};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use secrecy::SecretString;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::helpers::{mobile3, TestApp};
use crate::webdriver::Browser;

const TOKEN: &str = "console-test-operator-token";
const SESSION_KEY: &str = "console-test-session-key-of-32-bytes!";
const T: Duration = Duration::from_secs(30);

async fn start_console(app: &TestApp) -> (RunningConsole, CancellationToken, String) {
    let mut settings = app.settings.clone();
    settings.console.listen = "127.0.0.1:0".into();
    settings.console.operator_token = Some(SecretString::from(TOKEN));
    settings.console.session_key = Some(SecretString::from(SESSION_KEY));
    let stop = CancellationToken::new();
    let c = console::start(settings, stop.clone())
        .await
        .expect("console");
    let base = format!("http://{}", c.addr);
    (c, stop, base)
}

async fn stop_console(c: RunningConsole, stop: CancellationToken) {
    stop.cancel();
    let _ = tokio::time::timeout(T, c.task).await;
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// `name=value` of a `Set-Cookie` header named `name`.
fn set_cookie(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
        .find(|kv| kv.starts_with(&format!("{name}=")) && kv.len() > name.len() + 1)
}

/// The value of the hidden `csrf` field in a page.
fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

/// Sign in over HTTP; the session cookie and the session's CSRF token.
async fn sign_in(base: &str) -> (String, String) {
    let c = client();
    let page = c.get(format!("{base}/login")).send().await.unwrap();
    let login_cookie = set_cookie(&page, "kycq_login").expect("login cookie");
    let csrf = csrf_in(&page.text().await.unwrap());
    let res = c
        .post(format!("{base}/login"))
        .header("cookie", &login_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", TOKEN),
            ("name", "Tester"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&res, "kycq_session").expect("session cookie");
    let home = c
        .get(format!("{base}/story"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    let csrf = csrf_in(&home.text().await.unwrap());
    (session, csrf)
}

#[tokio::test]
async fn the_console_refuses_strangers_and_forged_forms() {
    let app = TestApp::new().await;
    let (c, stop, base) = start_console(&app).await;
    let http = client();

    // Not signed in: pages send to the sign-in page, actions are refused.
    let res = http.get(format!("{base}/billing")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/login");
    let res = http
        .post(format!("{base}/dead-letters/req-1/purge"))
        .form(&[("note", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // The sign-in form itself needs its token; a wrong operator token is refused.
    let res = http
        .post(format!("{base}/login"))
        .form(&[("token", TOKEN), ("name", "Mallory")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let page = http.get(format!("{base}/login")).send().await.unwrap();
    let login_cookie = set_cookie(&page, "kycq_login").unwrap();
    let csrf = csrf_in(&page.text().await.unwrap());
    let res = http
        .post(format!("{base}/login"))
        .header("cookie", &login_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", "wrong-token-123456"),
            ("name", "Mallory"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/login?failed=refused");
    assert!(set_cookie(&res, "kycq_session").is_none());

    // Signed in: a form without the token, with another session's token, or from another
    // origin is refused; nothing is done.
    let (session, csrf) = sign_in(&base).await;
    let (_, other_csrf) = sign_in(&base).await;
    for (form_csrf, origin) in [
        ("", None),
        (other_csrf.as_str(), None),
        (csrf.as_str(), Some("http://evil.example")),
    ] {
        let mut req = http
            .post(format!("{base}/dead-letters/req-1/purge"))
            .header("cookie", &session)
            .form(&[("csrf", form_csrf), ("note", "forged")]);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let res = req.send().await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "csrf {form_csrf:?} origin {origin:?}"
        );
    }
    // A tampered cookie is no session.
    let tampered = session.replacen('|', "0|", 1);
    let res = http
        .get(format!("{base}/"))
        .header("cookie", &tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // Security headers on every page; nothing cached.
    let res = http
        .get(format!("{base}/story"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    let h = res.headers();
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "same-origin");
    assert_eq!(h["cache-control"], "no-store");

    // Signing out ends the session, also on a second console sharing the key (or after a
    // restart); a session still open works there.
    let (c2, stop2, base2) = start_console(&app).await;
    let (other_session, _) = sign_in(&base).await;
    let res = http
        .post(format!("{base}/logout"))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = http
        .get(format!("{base}/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    for (cookie, want) in [
        (&session, StatusCode::SEE_OTHER),
        (&other_session, StatusCode::OK),
    ] {
        let res = http
            .get(format!("{base2}/story"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), want);
    }
    stop_console(c2, stop2).await;

    // Every sign-in, refused or not, is in the audit log.
    let audit: Vec<(String, String, String)> =
        sqlx::query("SELECT operator, action, outcome FROM console_audit ORDER BY id")
            .fetch_all(app.db().await)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("operator"), r.get("action"), r.get("outcome")))
            .collect();
    let has = |op: &str, action: &str, outcome: &str| {
        audit
            .iter()
            .any(|a| a == &(op.to_owned(), action.to_owned(), outcome.to_owned()))
    };
    // A name that is not an account is not recorded (it may be a token typed in the wrong field).
    assert!(has("-", "login", "refused"), "{audit:?}");
    assert!(!audit.iter().any(|a| a.0 == "Mallory"), "{audit:?}");
    assert!(has("Tester (token)", "login", "ok"), "{audit:?}");
    assert!(has("Tester (token)", "logout", "ok"), "{audit:?}");

    stop_console(c, stop).await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_console_on_a_public_address_needs_sign_in_configured() {
    let app = TestApp::new().await;
    let mut settings = app.settings.clone();
    settings.console.listen = "0.0.0.0:0".into();
    let err = match console::start(settings.clone(), CancellationToken::new()).await {
        Ok(_) => panic!("a public console without sign-in started"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("console.listen"), "{err}");
    assert!(err.contains("console.operator_token"), "{err}");
    // On loopback with nothing configured: a one-time token, which signs in.
    settings.console.listen = "127.0.0.1:0".into();
    let stop = CancellationToken::new();
    let c = console::start(settings, stop.clone()).await.unwrap();
    assert!(c.generated_token.is_some());
    stop_console(c, stop).await;
    app.cleanup().await;
}

/// Billed calls per (provider, API) in a billing CSV.
fn csv_counts(csv: &str) -> BTreeMap<(String, String), u64> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let (p, a, b) = (col("provider"), col("api"), col("billed_calls"));
    let mut out = BTreeMap::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        *out.entry((f[p].to_owned(), f[a].to_owned())).or_default() += f[b].parse::<u64>().unwrap();
    }
    out.retain(|_, n| *n > 0);
    out
}

/// Saves a screenshot at desktop and phone width when `KYCQ_SCREENSHOTS` names a folder.
async fn shoot(b: &Browser, name: &str) {
    let Some(dir) = std::env::var_os("KYCQ_SCREENSHOTS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    b.resize(1280, 900).await;
    b.screenshot(&dir.join(format!("{name}-desktop.png"))).await;
    b.resize(390, 844).await;
    b.screenshot(&dir.join(format!("{name}-phone.png"))).await;
    b.resize(1280, 900).await;
}

/// Reload `url` until the text of `css` contains `want`.
async fn wait_for_text(b: &Browser, url: &str, css: &str, want: &str) -> String {
    let deadline = Instant::now() + T;
    loop {
        b.goto(url).await;
        let t = b.try_text(css).await.unwrap_or_default();
        if t.contains(want) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{css} on {url} never showed {want:?}; it shows {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn console_in_a_browser() {
    // Transient failures end at once (one call per request, Tencent only): a dead letter can
    // be made on purpose.
    let mut app = crate::dlq::app().await;
    // A batch: matches, a mismatch, an ID number rejected before any call, a transient
    // failure (dead letter, retryable: the sandbox answers its next call), and a lost answer
    // (billing unknown).
    let matches: Vec<_> = (0..3)
        .map(|i| mobile3(&identity(Scenario::Match, 90 + i)))
        .collect();
    let mismatch = mobile3(&identity(Scenario::NameMismatch, 93));
    let mut rejected = mobile3(&identity(Scenario::Match, 94));
    rejected.id_number.replace_range(17.., "0");
    if rejected.id_number == identity(Scenario::Match, 94).id_number {
        rejected.id_number.replace_range(17.., "1");
    }
    let busy_who = identity(Scenario::BusyOnce, 95);
    let busy = mobile3(&busy_who);
    let lost = mobile3(&identity(Scenario::Http504CutOff, 96));
    let all: Vec<_> = matches
        .iter()
        .chain([&mismatch, &rejected, &busy, &lost])
        .cloned()
        .collect();
    for m in &all {
        app.publish(m).await;
    }
    let ids: Vec<String> = all.iter().map(|m| m.request_id.clone()).collect();
    let results = app.results_for(&ids, T).await;
    assert!(results.values().all(|r| !r.is_empty()), "{results:?}");
    assert_eq!(app.wait_dead_letters(2, T).await.len(), 2);

    let (c, stop, base) = start_console(&app).await;
    let b = Browser::start().await;

    // Not signed in: the sign-in page.
    b.goto(&format!("{base}/")).await;
    assert!(b.url().await.ends_with("/login"), "{}", b.url().await);
    shoot(&b, "login").await;
    b.type_into("input[name=token]", TOKEN).await;
    b.type_into("input[name=name]", "Browser Tester").await;
    b.click_css("form button[type=submit]").await;
    b.wait_for("h1", "Overview").await;
    assert_eq!(b.url().await, format!("{base}/"));

    // The overview: today's billed Tencent calls are the sandbox's.
    let billed = app
        .sandbox
        .ledger
        .entries()
        .iter()
        .filter(|e| e.provider == "tencent" && e.billed)
        .count();
    let shown = wait_for_text(
        &b,
        &format!("{base}/"),
        "[data-provider=tencent] .billed-today",
        &billed.to_string(),
    )
    .await;
    assert_eq!(shown.trim(), billed.to_string());
    assert!(b.text("main").await.contains("mobile3"));
    // The worker reports itself (heartbeats every second here).
    wait_for_text(&b, &format!("{base}/"), "main", "consuming").await;
    shoot(&b, "overview").await;

    // Dead letters: both are listed, with masked subjects only.
    b.goto(&format!("{base}/dead-letters")).await;
    let list = b.text("main").await;
    assert!(
        list.contains(&busy.request_id) && list.contains(&lost.request_id),
        "{list}"
    );
    assert!(!list.contains(&busy_who.id_number) && !list.contains(&busy_who.name));
    shoot(&b, "dead-letters").await;

    // Open the retryable one, retry it, see its new result.
    b.click(&b.link(&busy.request_id).await).await;
    b.wait_for("main", "retries_exhausted").await;
    shoot(&b, "dead-letter").await;
    b.click(&b.link("Retry…").await).await;
    b.type_into("textarea[name=note]", "Tencent busy spell over")
        .await;
    let mut form: Vec<(String, String)> = Vec::new();
    for f in ["csrf", "keys", "note"] {
        let v = b
            .run(&format!(
                "return document.querySelector('form.action [name={f}]').value;"
            ))
            .await;
        form.push((f.to_owned(), v.as_str().unwrap().to_owned()));
    }
    b.click_css("form.action button[type=submit]").await;
    b.wait_for(".flash", "retried 1").await;
    // The same form sent again finds the dead letter handled: nothing is done.
    let again = client()
        .post(format!("{base}/dead-letters/{}/retry", busy.request_id))
        .header("cookie", b.cookie("kycq_session").await)
        .form(&form)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(again.contains("no longer in the queue"), "{again}");
    let story = format!("{base}/story/{}", busy.request_id);
    wait_for_text(&b, &story, ".verdict", "match").await;
    assert!(b.text("main").await.contains("Browser Tester (token)"));
    shoot(&b, "story").await;

    // Resolve the billing-unknown one: not billed.
    b.goto(&format!("{base}/dead-letters/{}/resolve", lost.request_id))
        .await;
    b.click_css("input[name=billed][value=no]").await;
    b.type_into("textarea[name=note]", "not in the Tencent bill")
        .await;
    b.click_css("form.action button[type=submit]").await;
    b.wait_for(".flash", "billed no recorded").await;
    let resolved: Option<String> =
        sqlx::query_scalar("SELECT billed_by_operator FROM provider_calls WHERE request_id = $1")
            .bind(&lost.request_id)
            .fetch_one(app.db().await)
            .await
            .unwrap();
    assert_eq!(resolved.as_deref(), Some("no"));

    // A person's checks, by name and ID number (sent by POST, never in the URL).
    let who = identity(Scenario::Match, 90);
    b.goto(&format!("{base}/story")).await;
    b.type_into("input[name=name]", &who.name).await;
    b.type_into("input[name=id_number]", &who.id_number).await;
    b.click_css("main form[method=post] button[type=submit]")
        .await;
    let found = b.wait_for("main", "Checks of").await;
    assert!(found.contains(&matches[0].request_id), "{found}");
    assert!(!found.contains(&matches[1].request_id));
    assert!(!b.url().await.contains(&who.id_number));
    assert!(
        !found.contains(&who.id_number),
        "unmasked ID number on the page"
    );
    shoot(&b, "person").await;

    // Billing: the CSV's billed calls per API are the sandbox ledger's.
    b.goto(&format!("{base}/billing")).await;
    shoot(&b, "billing").await;
    b.click(&b.link("Download CSV").await).await;
    let csv = b.downloaded_with_suffix(".csv").await;
    let mut ledger: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in app.sandbox.ledger.entries().iter().filter(|e| e.billed) {
        *ledger
            .entry((e.provider.clone(), e.action.clone()))
            .or_default() += 1;
    }
    assert!(!ledger.is_empty());
    assert_eq!(csv_counts(&csv), ledger, "{csv}");

    // In the browser too: a form posted without its token is refused, and nothing is done.
    b.goto(&format!("{base}/dead-letters/{}/purge", lost.request_id))
        .await;
    b.run("document.querySelector('main input[name=csrf]').remove();")
        .await;
    b.type_into("textarea[name=note]", "forged").await;
    b.click_css("form.action button[type=submit]").await;
    b.wait_for("body", "missing or stale form token").await;
    assert_eq!(
        app.dead_letters().await.len(),
        1,
        "the forged purge removed a dead letter"
    );
    // The genuine purge (a note is required) removes it, recorded.
    b.goto(&format!("{base}/dead-letters/{}/purge", lost.request_id))
        .await;
    b.type_into("textarea[name=note]", "sent again as a new request")
        .await;
    b.click_css("form.action button[type=submit]").await;
    b.wait_for(".flash", "purged 1").await;
    assert!(app.dead_letters().await.is_empty());

    // Every action is in the audit log, with who did it.
    let audit: Vec<(String, String)> = sqlx::query(
        "SELECT action, outcome FROM console_audit WHERE operator = 'Browser Tester (token)' ORDER BY id",
    )
    .fetch_all(app.db().await)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("action"), r.get("outcome")))
    .collect();
    for action in [
        "login",
        "retry",
        "resolve",
        "purge",
        "person_search",
        "billing_csv",
    ] {
        assert!(
            audit.iter().any(|(a, o)| a == action && o == "ok"),
            "{action} not audited: {audit:?}"
        );
    }
    let decided: Vec<String> =
        sqlx::query_scalar("SELECT operator FROM operator_decisions WHERE request_id = ANY($1)")
            .bind(vec![busy.request_id.clone(), lost.request_id.clone()])
            .fetch_all(app.db().await)
            .await
            .unwrap();
    assert_eq!(decided.len(), 3, "retry, resolve, purge");
    assert!(decided.iter().all(|o| o == "Browser Tester (token)"));
    // Nothing personal in any log line the console wrote.
    let logs = crate::helpers::captured_logs();
    assert!(!logs.contains(&who.id_number) && !logs.contains(&who.name));

    b.quit().await;
    stop_console(c, stop).await;
    app.cleanup().await;
}
