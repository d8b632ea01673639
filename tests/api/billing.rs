//! Billing figures (`ops::billing`, `kycq report billing`) against the real pipeline: checks run
//! through RabbitMQ, a worker and the sandbox; the report's billed counts per provider and API
//! equal what the sandbox (the vendors' truth) billed, once an operator has resolved the call
//! whose billing kycq could not know. Rows written straight into the journal pin the day
//! boundary at +08:00 in SQL, and the real binary prints the exact CSV.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};
use kycq::check::{Billed, ReasonCode};
use kycq::ops::billing::{self, Price, Prices, Report};
use kycq::ops::dlq::{self, Ctx, Operator};
use kycq::ops::enqueue::RequestMessage;
use kycq::providers::alibaba;
use kycq::sandbox::scenarios::{identity, Scenario, TestIdentity};
use kycq::store::Store;

use crate::helpers::{config_dir, mobile3, unique, Options, TestApp};

const T: Duration = Duration::from_secs(40);

/// `mobile3` goes to Tencent, `id2` and `id2_period` to Alibaba, both at the sandbox.
async fn app() -> TestApp {
    let mut app = TestApp::with(Options {
        env: [
            (
                "KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_ID",
                alibaba::SANDBOX_ACCESS_KEY_ID,
            ),
            (
                "KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_SECRET",
                alibaba::SANDBOX_ACCESS_KEY_SECRET,
            ),
            ("KYCQ__PROVIDERS__ALIBABA__TIMEOUT_MS", "2000"),
            ("KYCQ__PROVIDERS__ALIBABA__RATE_PER_SEC", "1000"),
            ("KYCQ__PROVIDERS__ALIBABA__BURST", "100"),
            ("KYCQ__ROUTES__MOBILE3", "tencent"),
            ("KYCQ__ROUTES__ID2", "alibaba"),
            ("KYCQ__ROUTES__ID2_PERIOD", "alibaba"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..Options::default()
    })
    .await;
    // The endpoint is the sandbox's, known only once it listens.
    app.env.insert(
        "KYCQ__PROVIDERS__ALIBABA__ENDPOINT".into(),
        format!("http://{}", app.sandbox.addr),
    );
    app.settings =
        kycq::configuration::Settings::load_with(&config_dir(), None, Some(app.env.clone()))
            .unwrap();
    app
}

fn alibaba_request(check: &str, who: &TestIdentity) -> RequestMessage {
    RequestMessage {
        request_id: format!("bill-{}", unique()),
        check: check.into(),
        name: who.name.clone(),
        id_number: who.id_number.clone(),
        validity_start: (check == "id2_period").then(|| "20201001".into()),
        validity_end: (check == "id2_period").then(|| "20301001".into()),
        ..Default::default()
    }
}

/// Billed calls per (provider, API) over every line of a report.
fn billed_by_api(r: &Report) -> BTreeMap<(String, String), u64> {
    let mut m = BTreeMap::new();
    for l in &r.lines {
        *m.entry((l.provider.clone(), l.api.clone())).or_default() += l.billed_calls;
    }
    m.retain(|_, n| *n > 0);
    m
}

#[tokio::test]
async fn the_report_bills_exactly_what_the_vendor_billed_once_the_unknown_call_is_resolved() {
    let mut app = app().await;
    app.start_worker().await;
    let cst = billing::parse_utc_offset("+08:00").unwrap();
    let mut requests = vec![
        // Tencent: a match and a mismatch are billed, an invalid ID number is not, a throttled
        // first call is not (its retry, a match, is), and the slow answer is billed by the
        // vendor but lost by kycq (timeout: billing unknown).
        mobile3(&identity(Scenario::Match, 1)),
        mobile3(&identity(Scenario::Match, 2)),
        mobile3(&identity(Scenario::NameMismatch, 1)),
        mobile3(&identity(Scenario::InvalidIdNumber, 1)),
        mobile3(&identity(Scenario::ThrottledOnce, 1)),
        mobile3(&identity(Scenario::Slow, 1)),
    ];
    let slow_id = requests.last().unwrap().request_id.clone();
    requests.extend([
        alibaba_request("id2", &identity(Scenario::Match, 3)),
        alibaba_request("id2", &identity(Scenario::IdNumberMismatch, 2)),
        alibaba_request("id2", &identity(Scenario::InvalidIdNumber, 2)),
        alibaba_request("id2_period", &identity(Scenario::Match, 4)),
    ]);
    for r in &requests {
        app.publish(r).await;
    }
    let ids: Vec<String> = requests.iter().map(|r| r.request_id.clone()).collect();
    let results = app.results_for(&ids, T).await;
    assert_eq!(
        results[&slow_id][0].reason_code,
        ReasonCode::BillingUnknown,
        "{:?}",
        results[&slow_id]
    );

    // The vendors' truth, per (provider, API).
    let ledger = app.sandbox.ledger.entries();
    let mut vendor_billed: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in ledger.iter().filter(|e| e.billed) {
        *vendor_billed
            .entry((e.provider.clone(), e.action.clone()))
            .or_default() += 1;
    }
    assert!(
        vendor_billed.contains_key(&("tencent".into(), "PhoneVerification".into()))
            && vendor_billed.contains_key(&("alibaba".into(), "Id2MetaVerifyIntl".into()))
            && vendor_billed.contains_key(&("alibaba".into(), "Id2MetaPeriodVerifyIntl".into())),
        "{vendor_billed:?}"
    );
    assert!(
        ledger.iter().any(|e| !e.billed),
        "some calls were not billed"
    );

    // Today's billing days (yesterday and tomorrow too: the test may straddle 16:00 UTC).
    let today = billing::today(cst);
    let (from, to) = (today - Days::new(1), today + Days::new(1));
    let mut prices = Prices::new();
    prices.set(
        "tencent",
        "PhoneVerification",
        Price::parse("0.35").unwrap(),
    );
    let pool = app.db().await.clone();

    // Before the operator looked: the slow call is billing-unknown, not billed.
    let before = billing::report(&pool, from, to, cst, &prices)
        .await
        .unwrap();
    let mut want = vendor_billed.clone();
    *want
        .get_mut(&("tencent".into(), "PhoneVerification".into()))
        .unwrap() -= 1;
    assert_eq!(billed_by_api(&before), want, "{before:#?}");
    assert_eq!(before.total.billing_unknown_calls, 1, "{before:#?}");
    assert_eq!(
        before.total.cost_cny, None,
        "Alibaba has no price: cost unknown"
    );
    assert!(
        before.unpriced.iter().all(|u| u.provider == "alibaba"),
        "{before:#?}"
    );
    let unresolved = billing::unresolved(&pool).await.unwrap();
    assert_eq!(unresolved.len(), 1, "{unresolved:?}");
    assert_eq!(
        (unresolved[0].provider.as_str(), unresolved[0].calls),
        ("tencent", 1)
    );

    // The operator finds the call in the vendor's bill: `kycq dlq resolve --billed yes`.
    app.wait_dead_letters(1, T).await;
    let store = Store::from_pool(pool.clone());
    let resolved = dlq::resolve(
        &Ctx {
            conn: &app.conn,
            names: &app.names,
            store: &store,
            publisher: &app.publisher,
        },
        &slow_id,
        Billed::Yes,
        &Operator {
            name: "finance".into(),
            note: Some("in the Tencent bill".into()),
        },
        false,
    )
    .await
    .unwrap();
    assert!(resolved.recorded, "{resolved:?}");

    let after = billing::report(&pool, from, to, cst, &prices)
        .await
        .unwrap();
    assert_eq!(billed_by_api(&after), vendor_billed, "{after:#?}");
    assert_eq!(after.total.billing_unknown_calls, 0);
    assert!(billing::unresolved(&pool).await.unwrap().is_empty());
    let tencent_calls = vendor_billed[&("tencent".into(), "PhoneVerification".into())];
    let tencent = after
        .providers
        .iter()
        .find(|p| p.provider == "tencent")
        .unwrap();
    assert_eq!(
        tencent.totals.cost_cny,
        Some(Price::parse("0.35").unwrap().cost(tencent_calls)),
    );
    // Nothing billed outside these days, and no line without billed or unknown calls.
    assert!(after
        .lines
        .iter()
        .all(|l| l.billed_calls + l.billing_unknown_calls > 0 && l.date >= from && l.date <= to));
    app.cleanup().await;
}

/// Run `kycq <args>` with this deployment's environment plus `extra`.
async fn kycq(app: &TestApp, extra: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_kycq"))
        .args(args)
        .env_clear()
        .env("KYCQ_CONFIG_DIR", config_dir())
        .env("KYCQ__LOG__LEVEL", "warn,lapin=off")
        .envs(&app.env)
        .envs(extra.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run kycq");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn days_end_at_16_00_utc_in_sql_and_the_cli_prints_the_exact_csv() {
    let app = TestApp::new().await;
    kycq::store::connect_and_migrate(&app.settings.database)
        .await
        .unwrap();
    let pool = app.db().await.clone();
    sqlx::query(
        "INSERT INTO checks (request_id, status, subject_masked) VALUES ('bill-edge', 'pending', '{}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    // (provider, action, sent_at, billed, billed_by_operator)
    let rows: [(&str, &str, &str, &str, Option<&str>); 11] = [
        (
            "tencent",
            "PhoneVerification",
            "2025-06-30T15:59:59Z",
            "yes",
            None,
        ), // 06-30
        (
            "tencent",
            "PhoneVerification",
            "2025-06-30T16:00:00Z",
            "yes",
            None,
        ), // 07-01
        (
            "tencent",
            "PhoneVerification",
            "2025-06-30T16:00:01Z",
            "unknown",
            Some("yes"),
        ), // 07-01
        (
            "tencent",
            "PhoneVerification",
            "2025-07-01T16:30:00Z",
            "unknown",
            None,
        ), // 07-02: out
        (
            "tencent",
            "PhoneVerification",
            "2025-07-01T02:00:00Z",
            "unknown",
            None,
        ), // 07-01 unknown
        (
            "tencent",
            "PhoneVerification",
            "2025-07-01T03:00:00Z",
            "no",
            None,
        ),
        (
            "tencent",
            "PhoneVerification",
            "2025-07-01T04:00:00Z",
            "unknown",
            Some("no"),
        ),
        (
            "alimarket",
            "mobile3/check",
            "2025-06-29T16:00:00Z",
            "yes",
            None,
        ), // 06-30
        (
            "alimarket",
            "mobile3/check",
            "2025-06-29T15:59:59.999Z",
            "yes",
            None,
        ), // 06-29: out
        (
            "alimarket",
            "mobile3/check",
            "2025-07-01T16:00:00Z",
            "yes",
            None,
        ), // 07-02: out
        (
            "alibaba",
            "Id2MetaVerifyIntl",
            "2025-07-01T15:59:59.999Z",
            "yes",
            None,
        ), // 07-01
    ];
    for (attempt, (provider, action, sent_at, billed, by_operator)) in rows.iter().enumerate() {
        sqlx::query(
            "INSERT INTO provider_calls (request_id, provider, action, attempt, worker, sent_at, \
             billed, billed_by_operator) VALUES ('bill-edge', $1, $2, $3, 'test', $4, $5, $6)",
        )
        .bind(provider)
        .bind(action)
        .bind(attempt as i32 + 1)
        .bind(sent_at.parse::<DateTime<Utc>>().unwrap())
        .bind(billed)
        .bind(by_operator)
        .execute(&pool)
        .await
        .unwrap();
    }
    let d = |s: &str| s.parse::<NaiveDate>().unwrap();
    let cst = billing::parse_utc_offset("+08:00").unwrap();
    let mut prices = Prices::new();
    prices.set(
        "tencent",
        "PhoneVerification",
        Price::parse("0.35").unwrap(),
    );
    prices.set("alimarket", "mobile3/check", Price::parse("0.17").unwrap());
    let r = billing::report(&pool, d("2025-06-30"), d("2025-07-01"), cst, &prices)
        .await
        .unwrap();
    let want = "date,provider,api,billed_calls,unit_price_cny,cost_cny,billing_unknown_calls\n\
                2025-06-30,alimarket,mobile3/check,1,0.1700,0.17,0\n\
                2025-06-30,tencent,PhoneVerification,1,0.3500,0.35,0\n\
                2025-07-01,alibaba,Id2MetaVerifyIntl,1,,,0\n\
                2025-07-01,tencent,PhoneVerification,2,0.3500,0.70,1\n";
    assert_eq!(r.to_csv(), want);
    // At UTC the same calls fall on other days.
    let utc = billing::parse_utc_offset("+00:00").unwrap();
    let r = billing::report(&pool, d("2025-06-30"), d("2025-06-30"), utc, &prices)
        .await
        .unwrap();
    let days: Vec<(String, u64, u64)> = r
        .lines
        .iter()
        .map(|l| (l.provider.clone(), l.billed_calls, l.billing_unknown_calls))
        .collect();
    assert_eq!(
        days,
        [("tencent".to_owned(), 3, 0)],
        "2025-06-30 at UTC: 15:59:59, 16:00:00 and 16:00:01 (operator: yes)"
    );
    // The range is served by the billing index (index-only when the visibility map allows).
    sqlx::query("VACUUM ANALYZE provider_calls")
        .execute(&pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT provider, action, billed, billed_by_operator FROM provider_calls \
         WHERE sent_at >= '2025-06-29T16:00:00Z' AND sent_at < '2025-07-01T16:00:00Z' \
           AND COALESCE(billed_by_operator, billed) IN ('yes', 'unknown')",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert!(
        plan.iter()
            .any(|l| l.contains("Index Only Scan using provider_calls_billing_idx")),
        "{plan:#?}"
    );

    // The real binary: the same CSV, with the prices from the configuration (alimarket's
    // default list price, Tencent's from the environment).
    let price = [("KYCQ__BILLING__PRICES__TENCENT__PHONEVERIFICATION", "0.35")];
    let (code, out, err) = kycq(
        &app,
        &price,
        &[
            "report",
            "billing",
            "--from",
            "2025-06-30",
            "--to",
            "2025-07-01",
            "--csv",
        ],
    )
    .await;
    assert_eq!((code, out.as_str()), (0, want), "{err}");
    let (code, out, err) = kycq(
        &app,
        &price,
        &[
            "report",
            "billing",
            "--from",
            "2025-06-30",
            "--to",
            "2025-07-01",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("no price for alibaba Id2MetaVerifyIntl (1 billed calls"),
        "{out}"
    );
    assert!(out.contains("billing unknown: 1 calls"), "{out}");
    assert!(
        out.contains("awaiting an operator's billing finding, any date: tencent 2"),
        "{out}"
    );
    let (code, out, err) = kycq(
        &app,
        &price,
        &["report", "billing", "--json", "--to", "2025-07-01"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["from"], "2025-07-01",
        "--from defaults to the first day of --to's month"
    );
    assert_eq!(v["total"]["billed_calls"], 3);
    assert_eq!(v["awaiting_resolution"][0]["calls"], 2);
    // Bad ranges and dates are refused, naming the flag.
    let (code, _, err) = kycq(
        &app,
        &[],
        &[
            "report",
            "billing",
            "--from",
            "2025-07-02",
            "--to",
            "2025-07-01",
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--from 2025-07-02 is after --to 2025-07-01"),
        "{err}"
    );
    let (code, _, err) = kycq(&app, &[], &["report", "billing", "--from", "2025-7-1"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--from") && err.contains("YYYY-MM-DD"),
        "{err}"
    );
    // A bad price names its key (exit 2), and a database that does not exist is not created.
    let (code, _, err) = kycq(
        &app,
        &[(
            "KYCQ__BILLING__PRICES__TENCENT__PHONEVERIFICATION",
            "0.12345",
        )],
        &["report", "billing"],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("billing.prices.tencent.phoneverification"),
        "{err}"
    );
    let missing = format!("kycq_t_{}_missing", app.id);
    let url = format!("postgres://postgres@127.0.0.1:5432/{missing}");
    let (code, _, err) = kycq(
        &app,
        &[("KYCQ__DATABASE__URL", url.as_str())],
        &["report", "billing"],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not exist"), "{err}");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&missing)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!exists, "kycq report created the database");
    app.cleanup().await;
}
