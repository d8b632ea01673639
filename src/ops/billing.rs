//! `kycq report billing`: the billed calls per billing day, provider and vendor API, priced, in
//! the shape finance compares line by line with a vendor's bill (date, API, count).
//!
//! The figures come from the call journal (`provider_calls`), one row per outbound call. A call
//! counts as billed when the operator's finding says so, else when kycq observed it
//! (`COALESCE(billed_by_operator, billed) = 'yes'`); a call whose billing is still `unknown` (its
//! answer was lost and no operator has looked it up yet, or it is in flight right now) is counted
//! apart, never as billed and never as free.
//!
//! A billing day is a calendar day at a fixed UTC offset (`billing.utc_offset`, default `+08:00`:
//! the vendors bill by China Standard Time days, e.g. Alibaba Cloud's billing cycles "are based on
//! UTC+8", <https://www.alibabacloud.com/help/en/ekyc/latest/billing>). Money is exact: unit
//! prices are integers of 1/10000 CNY, a line's cost is `calls × price` rounded half up to the fen
//! (0.01 CNY), and totals are sums of the lines' costs as shown, so the CSV's `cost_cny` column
//! adds up to the total.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveTime, Utc};
use serde::{Serialize, Serializer};
use sqlx::{PgPool, Row};

use crate::configuration::{invalid, BillingSettings, ConfigError};
use crate::providers::registry;

/// Parses a fixed UTC offset written `+HH:MM` or `-HH:MM` (hours 00-23, minutes 00-59), e.g.
/// `+08:00`. The error says what is wrong, without the value.
pub fn parse_utc_offset(text: &str) -> Result<FixedOffset, String> {
    const FORMAT: &str = "must be a UTC offset written +HH:MM or -HH:MM (e.g. +08:00)";
    let b = text.as_bytes();
    if b.len() != 6 || !matches!(b[0], b'+' | b'-') || b[3] != b':' {
        return Err(FORMAT.into());
    }
    let two = |i: usize| -> Option<i32> {
        let (h, l) = (b[i], b[i + 1]);
        (h.is_ascii_digit() && l.is_ascii_digit())
            .then(|| i32::from(h - b'0') * 10 + i32::from(l - b'0'))
    };
    let (Some(hours), Some(minutes)) = (two(1), two(4)) else {
        return Err(FORMAT.into());
    };
    if hours > 23 || minutes > 59 {
        return Err(format!("{FORMAT}; hours 00-23, minutes 00-59"));
    }
    let secs = (hours * 3600 + minutes * 60) * if b[0] == b'-' { -1 } else { 1 };
    FixedOffset::east_opt(secs).ok_or_else(|| FORMAT.into())
}

/// The billing offset and unit prices of `[billing]`, validated; errors name the key
/// (`billing.utc_offset`, `billing.prices.<provider>.<API>`). What a caller of [`report`] needs
/// from the settings.
pub fn configured(b: &BillingSettings) -> Result<(FixedOffset, Prices), ConfigError> {
    let offset =
        parse_utc_offset(&b.utc_offset).map_err(|reason| invalid("billing.utc_offset", reason))?;
    Ok((offset, Prices::from_settings(b)?))
}

/// An offset as `+HH:MM` (what [`parse_utc_offset`] reads).
pub fn offset_text(offset: FixedOffset) -> String {
    let secs = offset.local_minus_utc();
    let sign = if secs < 0 { '-' } else { '+' };
    let m = secs.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", m / 60, m % 60)
}

/// The billing day of an instant at `offset`.
pub fn billing_day(at: DateTime<Utc>, offset: FixedOffset) -> NaiveDate {
    at.with_timezone(&offset).date_naive()
}

/// Today at `offset`.
pub fn today(offset: FixedOffset) -> NaiveDate {
    billing_day(Utc::now(), offset)
}

/// The first day of the month of `day`.
pub fn month_start(day: NaiveDate) -> NaiveDate {
    day.with_day(1).expect("every month has a first day")
}

/// The instants that bound the billing days `from..=to` at `offset`: `[from 00:00, to+1 00:00)`
/// local time, in UTC (a range on `sent_at` an index can serve).
pub fn utc_bounds(
    from: NaiveDate,
    to: NaiveDate,
    offset: FixedOffset,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = |d: NaiveDate| {
        let local = d.and_time(NaiveTime::MIN);
        DateTime::<Utc>::from_naive_utc_and_offset(
            local - Duration::seconds(i64::from(offset.local_minus_utc())),
            Utc,
        )
    };
    (start(from), start(to.succ_opt().unwrap_or(NaiveDate::MAX)))
}

/// A unit price: an exact number of 1/10000 CNY per billed call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(u64);

impl Price {
    /// Units per CNY (prices have at most 4 decimals).
    pub const SCALE: u64 = 10_000;
    /// The largest price accepted: 1 000 000 CNY per call (far above any vendor's).
    pub const MAX: Price = Price(1_000_000 * Self::SCALE);

    /// A price of `n` ten-thousandths of a CNY.
    pub const fn from_ten_thousandths(n: u64) -> Price {
        Price(n)
    }

    /// The price in ten-thousandths of a CNY.
    pub const fn ten_thousandths(self) -> u64 {
        self.0
    }

    /// Reads a decimal text: digits, optionally a point and 1 to 4 more digits (`0.25`, `1`,
    /// `0.0035`). Refuses a sign, an exponent, more than 4 decimals, and more than
    /// [`Price::MAX`]. The error says what is wrong, without the value.
    pub fn parse(text: &str) -> Result<Price, String> {
        let t = text.trim();
        if t.starts_with('-') {
            return Err("must not be negative".into());
        }
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        if int.is_empty()
            || !int.bytes().all(|c| c.is_ascii_digit())
            || !frac.bytes().all(|c| c.is_ascii_digit())
            || (t.contains('.') && frac.is_empty())
        {
            return Err(
                "must be a decimal number of CNY written as text, e.g. \"0.25\" (digits, a point, \
                 at most 4 decimals)"
                    .into(),
            );
        }
        if frac.len() > 4 {
            return Err("has more than 4 decimals (prices are exact to 0.0001 CNY)".into());
        }
        let too_large = || format!("must be at most {}", Price::MAX);
        let int: u64 = int.parse().map_err(|_| too_large())?;
        let frac_units: u64 = format!("{frac:0<4}").parse().expect("4 digits");
        let units = int
            .checked_mul(Self::SCALE)
            .and_then(|u| u.checked_add(frac_units))
            .filter(|u| *u <= Price::MAX.0)
            .ok_or_else(too_large)?;
        Ok(Price(units))
    }

    /// The cost of `calls` billed calls at this price, rounded half up to the fen.
    pub fn cost(self, calls: u64) -> Fen {
        let units = u128::from(self.0) * u128::from(calls);
        Fen((units + 50) / 100)
    }
}

impl FromStr for Price {
    type Err = String;
    fn from_str(s: &str) -> Result<Price, String> {
        Price::parse(s)
    }
}

/// `0.2500`: exactly 4 decimals.
impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format!("{}.{:04}", self.0 / Self::SCALE, self.0 % Self::SCALE);
        f.pad(&s)
    }
}

/// In JSON, the text of [`Display`](fmt::Display) (never a float).
impl Serialize for Price {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An amount of money in fen (0.01 CNY), exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fen(pub u128);

impl std::ops::Add for Fen {
    type Output = Fen;
    fn add(self, o: Fen) -> Fen {
        Fen(self.0 + o.0)
    }
}

impl std::iter::Sum for Fen {
    fn sum<I: Iterator<Item = Fen>>(it: I) -> Fen {
        it.fold(Fen(0), |a, b| a + b)
    }
}

/// `12.35`: CNY with exactly 2 decimals.
impl fmt::Display for Fen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format!("{}.{:02}", self.0 / 100, self.0 % 100);
        f.pad(&s)
    }
}

/// In JSON, the text of [`Display`](fmt::Display) (never a float).
impl Serialize for Fen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Unit prices per (provider, vendor API). API names match case-insensitively (environment
/// variables arrive lower-cased).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prices(BTreeMap<(String, String), Price>);

impl Prices {
    /// No prices.
    pub fn new() -> Prices {
        Prices::default()
    }

    /// Sets the price of one API.
    pub fn set(&mut self, provider: &str, action: &str, price: Price) {
        self.0
            .insert((provider.to_owned(), action.to_ascii_lowercase()), price);
    }

    /// The price of one API, if configured.
    pub fn get(&self, provider: &str, action: &str) -> Option<Price> {
        self.0
            .get(&(provider.to_owned(), action.to_ascii_lowercase()))
            .copied()
    }

    /// Whether no price is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads `[billing.prices.<provider>]`. Every provider must be one kycq knows and every API
    /// one that provider's calls use; every price must parse ([`Price::parse`]). An entry from
    /// the environment (lower-cased) wins over the files' spelling of the same API. Errors name
    /// the key, e.g. `billing.prices.tencent.PhoneVerification`.
    pub fn from_settings(b: &BillingSettings) -> Result<Prices, ConfigError> {
        let mut prices = Prices::new();
        for (provider, table) in &b.prices {
            let section = format!("billing.prices.{provider}");
            let Some(vendor) = registry::vendor(provider) else {
                return Err(invalid(
                    &section,
                    format!(
                        "unknown provider `{provider}` (known: {})",
                        registry::vendor_names().join(", ")
                    ),
                ));
            };
            // The files' spellings first, then the environment's all-lower-case ones.
            let mut entries: Vec<(&String, &String)> = table.iter().collect();
            entries.sort_by_key(|(a, _)| **a == a.to_ascii_lowercase());
            for (action, text) in entries {
                let key = format!("{section}.{action}");
                if !vendor
                    .apis
                    .iter()
                    .any(|(_, a)| a.eq_ignore_ascii_case(action))
                {
                    let known: Vec<&str> = vendor.apis.iter().map(|(_, a)| *a).collect();
                    return Err(invalid(
                        &key,
                        format!(
                            "`{provider}` has no API of this name (kycq calls: {})",
                            known.join(", ")
                        ),
                    ));
                }
                let price = Price::parse(text).map_err(|reason| invalid(&key, reason))?;
                prices.set(provider, action, price);
            }
        }
        Ok(prices)
    }
}

/// One (billing day, provider, API) as counted in the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayCount {
    /// The billing day.
    pub date: NaiveDate,
    /// The provider.
    pub provider: String,
    /// The vendor API (`provider_calls.action`).
    pub api: String,
    /// Calls billed (by kycq's observation or an operator's finding).
    pub billed_calls: u64,
    /// Calls whose billing is unknown and not yet established by an operator.
    pub billing_unknown_calls: u64,
}

/// One line of the report: a billing day, a provider, an API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    /// The billing day (`YYYY-MM-DD` at the report's offset).
    pub date: NaiveDate,
    /// The provider.
    pub provider: String,
    /// The vendor API.
    pub api: String,
    /// Billed calls.
    pub billed_calls: u64,
    /// The unit price, when configured.
    pub unit_price_cny: Option<Price>,
    /// `billed_calls × unit_price_cny`, rounded half up to the fen; `None` when billed calls have
    /// no price (cost unknown, never 0).
    pub cost_cny: Option<Fen>,
    /// Calls whose billing awaits an operator's finding (or their answer, while in flight).
    pub billing_unknown_calls: u64,
}

/// Sums over some lines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Billed calls.
    pub billed_calls: u64,
    /// Calls whose billing is unknown.
    pub billing_unknown_calls: u64,
    /// The sum of the lines' costs, `None` when some billed calls have no price.
    pub cost_cny: Option<Fen>,
    /// The sum of the priced lines' costs (equal to `cost_cny` when every billed call is priced).
    pub priced_cost_cny: Fen,
    /// Billed calls without a price (their cost is unknown).
    pub unpriced_billed_calls: u64,
}

impl Totals {
    fn add(&mut self, l: &Line) {
        self.billed_calls += l.billed_calls;
        self.billing_unknown_calls += l.billing_unknown_calls;
        match l.cost_cny {
            Some(c) => self.priced_cost_cny = self.priced_cost_cny + c,
            None => self.unpriced_billed_calls += l.billed_calls,
        }
        self.cost_cny = (self.unpriced_billed_calls == 0).then_some(self.priced_cost_cny);
    }
}

/// One provider's totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProviderTotals {
    /// The provider.
    pub provider: String,
    /// Its totals.
    #[serde(flatten)]
    pub totals: Totals,
}

/// An API with billed calls and no configured price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unpriced {
    /// The provider.
    pub provider: String,
    /// The vendor API.
    pub api: String,
    /// Its billed calls in the report's range.
    pub billed_calls: u64,
}

/// Billed and billing-unknown calls per billing day, provider and API over a range of days.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// First billing day (inclusive).
    pub from: NaiveDate,
    /// Last billing day (inclusive).
    pub to: NaiveDate,
    /// The offset that defines the billing days, `+HH:MM`.
    pub utc_offset: String,
    /// One line per day, provider and API with billed or billing-unknown calls, ordered by
    /// date, provider, API.
    pub lines: Vec<Line>,
    /// Totals per provider, by provider name.
    pub providers: Vec<ProviderTotals>,
    /// Totals over every line.
    pub total: Totals,
    /// APIs with billed calls and no price (a warning: their cost is unknown).
    pub unpriced: Vec<Unpriced>,
}

/// The CSV header of [`Report::to_csv`].
pub const CSV_HEADER: [&str; 7] = [
    "date",
    "provider",
    "api",
    "billed_calls",
    "unit_price_cny",
    "cost_cny",
    "billing_unknown_calls",
];

impl Report {
    /// Prices counted calls. Rows without billed or billing-unknown calls are left out; rows are
    /// ordered by date, provider, API (rows for the same key are added up).
    pub fn build(
        from: NaiveDate,
        to: NaiveDate,
        offset: FixedOffset,
        counts: impl IntoIterator<Item = DayCount>,
        prices: &Prices,
    ) -> Report {
        let mut merged: BTreeMap<(NaiveDate, String, String), (u64, u64)> = BTreeMap::new();
        for c in counts {
            let e = merged.entry((c.date, c.provider, c.api)).or_default();
            e.0 += c.billed_calls;
            e.1 += c.billing_unknown_calls;
        }
        let mut lines = Vec::new();
        let mut per_provider: BTreeMap<String, Totals> = BTreeMap::new();
        let mut unpriced: BTreeMap<(String, String), u64> = BTreeMap::new();
        let mut total = Totals {
            cost_cny: Some(Fen(0)),
            ..Totals::default()
        };
        for ((date, provider, api), (billed, unknown)) in merged {
            if billed == 0 && unknown == 0 {
                continue;
            }
            let unit_price = prices.get(&provider, &api);
            let cost = match unit_price {
                Some(p) => Some(p.cost(billed)),
                None if billed == 0 => Some(Fen(0)),
                None => None,
            };
            if cost.is_none() {
                *unpriced.entry((provider.clone(), api.clone())).or_default() += billed;
            }
            let line = Line {
                date,
                provider,
                api,
                billed_calls: billed,
                unit_price_cny: unit_price,
                cost_cny: cost,
                billing_unknown_calls: unknown,
            };
            total.add(&line);
            per_provider
                .entry(line.provider.clone())
                .or_insert_with(|| Totals {
                    cost_cny: Some(Fen(0)),
                    ..Totals::default()
                })
                .add(&line);
            lines.push(line);
        }
        Report {
            from,
            to,
            utc_offset: offset_text(offset),
            lines,
            providers: per_provider
                .into_iter()
                .map(|(provider, totals)| ProviderTotals { provider, totals })
                .collect(),
            total,
            unpriced: unpriced
                .into_iter()
                .map(|((provider, api), billed_calls)| Unpriced {
                    provider,
                    api,
                    billed_calls,
                })
                .collect(),
        }
    }

    /// The lines as CSV ([`CSV_HEADER`], one row per line, `\n` line ends): dates `YYYY-MM-DD`,
    /// unit prices with 4 decimals, costs with 2; an unknown price or cost is an empty field.
    pub fn to_csv(&self) -> String {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        w.write_record(CSV_HEADER).expect("writing to memory");
        for l in &self.lines {
            w.write_record([
                l.date.format("%Y-%m-%d").to_string(),
                l.provider.clone(),
                l.api.clone(),
                l.billed_calls.to_string(),
                l.unit_price_cny.map(|p| p.to_string()).unwrap_or_default(),
                l.cost_cny.map(|c| c.to_string()).unwrap_or_default(),
                l.billing_unknown_calls.to_string(),
            ])
            .expect("writing to memory");
        }
        let bytes = w.into_inner().expect("writing to memory");
        String::from_utf8(bytes).expect("every field is UTF-8")
    }

    /// The report for people: an aligned table, totals per provider and overall, and a line
    /// each for unpriced APIs and billing-unknown calls.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Billed provider calls {} to {} (billing days at UTC{}), CNY",
            self.from, self.to, self.utc_offset
        );
        if self.lines.is_empty() {
            let _ = writeln!(out, "No billed or billing-unknown calls in this range.");
            return out;
        }
        let head = [
            "date",
            "provider",
            "api",
            "billed",
            "unit price",
            "cost",
            "billing unknown",
        ];
        let mut rows: Vec<[String; 7]> = self
            .lines
            .iter()
            .map(|l| {
                [
                    l.date.to_string(),
                    l.provider.clone(),
                    l.api.clone(),
                    l.billed_calls.to_string(),
                    l.unit_price_cny
                        .map_or("no price".into(), |p| p.to_string()),
                    l.cost_cny.map_or("unknown".into(), |c| c.to_string()),
                    l.billing_unknown_calls.to_string(),
                ]
            })
            .collect();
        let total_row = |label: &str, t: &Totals| -> [String; 7] {
            [
                "total".into(),
                label.into(),
                String::new(),
                t.billed_calls.to_string(),
                String::new(),
                match t.cost_cny {
                    Some(c) => c.to_string(),
                    None => format!("≥ {}", t.priced_cost_cny),
                },
                t.billing_unknown_calls.to_string(),
            ]
        };
        let first_total = rows.len();
        for p in &self.providers {
            rows.push(total_row(&p.provider, &p.totals));
        }
        rows.push(total_row("all providers", &self.total));
        let mut width = head.map(|h| h.chars().count());
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        // Numbers right-aligned, text left-aligned.
        let numeric = [false, false, false, true, true, true, true];
        let line = |cells: &[String]| -> String {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = width[i] - c.chars().count();
                if i > 0 {
                    s.push_str("  ");
                }
                if numeric[i] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad));
                }
            }
            s.trim_end().to_owned()
        };
        let _ = writeln!(out, "{}", line(head.map(String::from).as_slice()));
        for (i, r) in rows.iter().enumerate() {
            if i == first_total {
                let total_width: usize = width.iter().sum::<usize>() + 2 * (width.len() - 1);
                let _ = writeln!(out, "{}", "-".repeat(total_width));
            }
            let _ = writeln!(out, "{}", line(r.as_slice()));
        }
        for u in &self.unpriced {
            // A TOML bare key, or the quoted one (`"mobile3/check"`).
            let key = if u
                .api
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            {
                u.api.clone()
            } else {
                format!("\"{}\"", u.api)
            };
            let _ = writeln!(
                out,
                "warning: no price for {} {} ({} billed calls, cost unknown): set \
                 billing.prices.{}.{key}",
                u.provider, u.api, u.billed_calls, u.provider
            );
        }
        if self.total.billing_unknown_calls > 0 {
            let _ = writeln!(
                out,
                "billing unknown: {} calls in this range may or may not have been billed; look \
                 them up in the vendor's console and record the finding with `kycq dlq resolve` \
                 (calls still in flight count here too)",
                self.total.billing_unknown_calls
            );
        }
        out
    }
}

const REPORT_SQL: &str = r#"
SELECT ((sent_at AT TIME ZONE 'UTC') + $3::int * interval '1 second')::date AS day,
       provider,
       action,
       count(*) FILTER (WHERE COALESCE(billed_by_operator, billed) = 'yes') AS billed,
       count(*) FILTER (WHERE COALESCE(billed_by_operator, billed) = 'unknown') AS unknown
  FROM provider_calls
 WHERE sent_at >= $1 AND sent_at < $2
   AND COALESCE(billed_by_operator, billed) IN ('yes', 'unknown')
 GROUP BY 1, 2, 3
 ORDER BY 1, 2, 3"#;

/// The billing report for the billing days `from..=to` (inclusive) at `offset`: billed and
/// billing-unknown calls per day, provider and API, priced with `prices`. A call belongs to the
/// day of its `sent_at` at `offset`. Reads only (the range on `sent_at` is served by
/// `provider_calls_billing_idx`). `from > to` gives an empty report.
pub async fn report(
    db: impl sqlx::PgExecutor<'_>,
    from: NaiveDate,
    to: NaiveDate,
    offset: FixedOffset,
    prices: &Prices,
) -> Result<Report, sqlx::Error> {
    let mut counts = Vec::new();
    if from <= to {
        let (start, end) = utc_bounds(from, to, offset);
        let rows = sqlx::query(REPORT_SQL)
            .bind(start)
            .bind(end)
            .bind(offset.local_minus_utc())
            .fetch_all(db)
            .await?;
        for r in rows {
            counts.push(DayCount {
                date: r.try_get("day")?,
                provider: r.try_get("provider")?,
                api: r.try_get("action")?,
                billed_calls: count(r.try_get("billed")?),
                billing_unknown_calls: count(r.try_get("unknown")?),
            });
        }
    }
    Ok(Report::build(from, to, offset, counts, prices))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// One provider's calls whose billing is unknown and that no operator has resolved yet (over
/// the whole journal, any date).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unresolved {
    /// The provider.
    pub provider: String,
    /// Calls with `billed = 'unknown'` and no `billed_by_operator` (calls in flight included:
    /// their answer is not back yet).
    pub calls: u64,
    /// When the oldest of them was sent.
    pub oldest_sent_at: DateTime<Utc>,
}

/// Calls awaiting an operator's billing finding, per provider (providers without any are left
/// out), by provider name: what an "awaiting resolution" badge shows. Served by the partial
/// index `provider_calls_unresolved_idx`.
pub async fn unresolved(pool: &PgPool) -> Result<Vec<Unresolved>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT provider, count(*) AS calls, min(sent_at) AS oldest FROM provider_calls \
         WHERE billed = 'unknown' AND billed_by_operator IS NULL \
         GROUP BY provider ORDER BY provider",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| -> Result<Unresolved, sqlx::Error> {
            Ok(Unresolved {
                provider: r.try_get("provider")?,
                calls: count(r.try_get("calls")?),
                oldest_sent_at: r.try_get("oldest")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn cst() -> FixedOffset {
        parse_utc_offset("+08:00").unwrap()
    }

    #[test]
    fn prices_parse_exactly() {
        for (text, units) in [
            ("0.25", 2_500),
            ("1", 10_000),
            ("0.0001", 1),
            ("0.0035", 35),
            ("12.5", 125_000),
            ("0", 0),
            (" 0.30 ", 3_000),
            ("1000000", 10_000_000_000),
        ] {
            assert_eq!(Price::parse(text), Ok(Price(units)), "{text}");
        }
        assert_eq!(Price(2_500).to_string(), "0.2500");
        assert_eq!(Price(1).to_string(), "0.0001");
        assert_eq!(Price(123_456_789).to_string(), "12345.6789");
    }

    #[test]
    fn bad_prices_are_refused_with_a_reason() {
        assert!(Price::parse("-0.25").unwrap_err().contains("negative"));
        assert!(Price::parse("0.00001").unwrap_err().contains("4 decimals"));
        assert!(Price::parse("1000000.0001")
            .unwrap_err()
            .contains("at most"));
        assert!(Price::parse("99999999999999999999")
            .unwrap_err()
            .contains("at most"));
        for garbage in [
            "", "abc", "0.2x", "1e3", ".5", "1.", "+1", "0,25", "1.2.3", "NaN", "¥1",
        ] {
            let e = Price::parse(garbage).unwrap_err();
            assert!(e.contains("decimal number"), "{garbage}: {e}");
        }
    }

    #[test]
    fn cost_rounds_half_up_to_the_fen() {
        // 3 × 0.0035 = 0.0105 → 0.01; 1 × 0.0050 = 0.005 → 0.01 (half up); 0.0049 → 0.00.
        assert_eq!(Price(35).cost(3), Fen(1));
        assert_eq!(Price(50).cost(1), Fen(1));
        assert_eq!(Price(49).cost(1), Fen(0));
        assert_eq!(Price(2_500).cost(7), Fen(175));
        assert_eq!(Price(1_234).cost(1_000), Fen(12_340));
        assert_eq!(Price(1_235).cost(1), Fen(12)); // 0.1235 → 0.12
        assert_eq!(Price(1_250).cost(1), Fen(13)); // 0.125 → 0.13
        assert_eq!(
            Price::MAX.cost(u64::MAX).0,
            1_000_000 * 100 * u128::from(u64::MAX)
        );
        assert_eq!(Fen(175).to_string(), "1.75");
        assert_eq!(Fen(5).to_string(), "0.05");
        assert_eq!(Fen(0).to_string(), "0.00");
    }

    #[test]
    fn offsets_parse_and_print() {
        assert_eq!(cst().local_minus_utc(), 8 * 3600);
        assert_eq!(
            parse_utc_offset("-05:30").unwrap().local_minus_utc(),
            -(5 * 3600 + 1800)
        );
        assert_eq!(parse_utc_offset("+00:00").unwrap().local_minus_utc(), 0);
        for bad in [
            "+8",
            "08:00",
            "+08:60",
            "+24:00",
            "UTC+8",
            "+0800",
            "Asia/Shanghai",
            "",
        ] {
            assert!(parse_utc_offset(bad).is_err(), "{bad}");
        }
        assert_eq!(offset_text(cst()), "+08:00");
        assert_eq!(offset_text(parse_utc_offset("-05:30").unwrap()), "-05:30");
    }

    #[test]
    fn a_billing_day_at_plus_eight_starts_at_16_00_utc() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            billing_day(at("2026-12-01T15:59:59Z"), cst()),
            d("2026-12-01")
        );
        assert_eq!(
            billing_day(at("2026-12-01T16:00:00Z"), cst()),
            d("2026-12-02")
        );
        let (start, end) = utc_bounds(d("2026-12-01"), d("2026-12-02"), cst());
        assert_eq!(start, at("2026-11-30T16:00:00Z"));
        assert_eq!(end, at("2026-12-02T16:00:00Z"));
        let west = parse_utc_offset("-05:00").unwrap();
        assert_eq!(
            utc_bounds(d("2026-12-01"), d("2026-12-01"), west).0,
            at("2026-12-01T05:00:00Z")
        );
        assert_eq!(month_start(d("2026-12-17")), d("2026-12-01"));
    }

    fn sample() -> Report {
        let mut prices = Prices::new();
        prices.set(
            "tencent",
            "PhoneVerification",
            Price::parse("0.35").unwrap(),
        );
        prices.set(
            "alibaba",
            "Mobile3MetaVerifyIntl",
            Price::parse("0.0035").unwrap(),
        );
        let c = |date: &str, provider: &str, api: &str, billed, unknown| DayCount {
            date: d(date),
            provider: provider.into(),
            api: api.into(),
            billed_calls: billed,
            billing_unknown_calls: unknown,
        };
        Report::build(
            d("2026-12-01"),
            d("2026-12-02"),
            cst(),
            [
                c("2026-12-02", "tencent", "PhoneVerification", 3, 0),
                c("2026-12-01", "tencent", "PhoneVerification", 10, 1),
                c("2026-12-01", "alibaba", "Mobile3MetaVerifyIntl", 3, 0),
                c("2026-12-01", "alimarket", "mobile3/check", 2, 0),
                c("2026-12-02", "alimarket", "mobile3/check", 0, 1),
                c("2026-12-02", "alibaba", "Id2MetaVerifyIntl", 0, 0),
            ],
            &prices,
        )
    }

    #[test]
    fn csv_is_exact() {
        assert_eq!(
            sample().to_csv(),
            "date,provider,api,billed_calls,unit_price_cny,cost_cny,billing_unknown_calls\n\
             2026-12-01,alibaba,Mobile3MetaVerifyIntl,3,0.0035,0.01,0\n\
             2026-12-01,alimarket,mobile3/check,2,,,0\n\
             2026-12-01,tencent,PhoneVerification,10,0.3500,3.50,1\n\
             2026-12-02,alimarket,mobile3/check,0,,0.00,1\n\
             2026-12-02,tencent,PhoneVerification,3,0.3500,1.05,0\n"
        );
    }

    #[test]
    fn totals_never_count_an_unpriced_call_as_free() {
        let r = sample();
        assert_eq!(r.total.billed_calls, 18);
        assert_eq!(r.total.billing_unknown_calls, 2);
        assert_eq!(r.total.cost_cny, None);
        assert_eq!(r.total.priced_cost_cny, Fen(456));
        assert_eq!(r.total.unpriced_billed_calls, 2);
        let by: BTreeMap<&str, &Totals> = r
            .providers
            .iter()
            .map(|p| (p.provider.as_str(), &p.totals))
            .collect();
        assert_eq!(by["tencent"].cost_cny, Some(Fen(455)));
        assert_eq!(by["tencent"].billed_calls, 13);
        assert_eq!(by["alibaba"].cost_cny, Some(Fen(1)));
        assert_eq!(by["alimarket"].cost_cny, None);
        assert_eq!(
            r.unpriced,
            [Unpriced {
                provider: "alimarket".into(),
                api: "mobile3/check".into(),
                billed_calls: 2
            }]
        );
        let text = r.render();
        assert!(
            text.contains(
                "no price for alimarket mobile3/check (2 billed calls, cost unknown): set \
                 billing.prices.alimarket.\"mobile3/check\""
            ),
            "{text}"
        );
        assert!(text.contains("billing unknown: 2 calls"), "{text}");
        assert!(text.contains("≥ 4.56"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["total"]["priced_cost_cny"], "4.56");
        assert_eq!(json["lines"][0]["unit_price_cny"], "0.0035");
        assert_eq!(json["lines"][1]["cost_cny"], serde_json::Value::Null);
    }

    #[test]
    fn an_empty_report_says_so() {
        let r = Report::build(d("2026-12-01"), d("2026-12-01"), cst(), [], &Prices::new());
        assert_eq!(r.to_csv(), format!("{}\n", CSV_HEADER.join(",")));
        assert_eq!(r.total.cost_cny, Some(Fen(0)));
        assert!(r.render().contains("No billed"));
    }

    fn settings(prices: &[(&str, &[(&str, &str)])]) -> BillingSettings {
        BillingSettings {
            utc_offset: "+08:00".into(),
            prices: prices
                .iter()
                .map(|(p, t)| {
                    (
                        p.to_string(),
                        t.iter()
                            .map(|(a, v)| (a.to_string(), v.to_string()))
                            .collect(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn configured_prices_name_their_key_when_wrong() {
        let p = Prices::from_settings(&settings(&[(
            "tencent",
            &[("PhoneVerification", "0.35"), ("phoneverification", "0.30")],
        )]))
        .unwrap();
        // The environment's lower-cased key wins.
        assert_eq!(p.get("tencent", "PhoneVerification"), Some(Price(3_000)));
        let e = Prices::from_settings(&settings(&[("tencent", &[("PhoneVerification", "-1")])]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("billing.prices.tencent.PhoneVerification") && e.contains("negative"),
            "{e}"
        );
        let e = Prices::from_settings(&settings(&[("nosuch", &[("X", "1")])]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("billing.prices.nosuch") && e.contains("unknown provider"),
            "{e}"
        );
        let e = Prices::from_settings(&settings(&[("tencent", &[("PhoneVerificaton", "1")])]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("billing.prices.tencent.PhoneVerificaton"), "{e}");
        let e = Prices::from_settings(&settings(&[(
            "alibaba",
            &[("Id2MetaVerifyIntl", "0.12345")],
        )]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("4 decimals"), "{e}");
    }
}
