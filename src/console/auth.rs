//! Sign-in, sessions and CSRF for the console.
//!
//! - **Sign-in**: the configured operator token (the operator types a name for the audit log), or
//!   an operator account (user name and password, checked against its argon2 PHC hash).
//! - **Sessions**: a cookie `kycq_session` holding the session id, the operator's name, the
//!   expiry and a mark of the credential it was opened with, signed with HMAC-SHA256
//!   (`console.session_key`, or a random key per start). `HttpOnly`, `SameSite=Strict`, `Secure`
//!   when `console.secure_cookies`. Every session is also a row of `console_sessions`: signing
//!   out ends it there, so a signed-out cookie stays dead across restarts and on every console
//!   sharing the key; a removed account or a rotated token ends its sessions at once (the mark
//!   no longer matches).
//! - **CSRF**: every POST carries a `csrf` form field, the HMAC of the session id (the sign-in
//!   form: of a signed pre-session nonce); a request whose `Origin` names another host is refused
//!   too. Both are checked for every POST in one place ([`guard`]), before any handler runs.
//! - **Throttling**: at most [`MAX_ATTEMPTS`] sign-in attempts per client address per minute and
//!   [`MAX_ATTEMPTS_ALL`] in all, counted before any password is checked, and at most
//!   [`ARGON2_AT_ONCE`] argon2 checks at a time (the rest are refused, not queued): a flood of
//!   sign-ins cannot take the host's memory or cores.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::{view, AppState};
use crate::configuration::ConsoleSettings;

/// The session cookie.
pub const SESSION_COOKIE: &str = "kycq_session";
/// The pre-session cookie of the sign-in form (its CSRF token is derived from it).
pub const LOGIN_COOKIE: &str = "kycq_login";
/// Sign-in attempts allowed per client address per minute.
pub const MAX_ATTEMPTS: u32 = 10;
/// Sign-in attempts allowed per minute from all addresses together.
pub const MAX_ATTEMPTS_ALL: u32 = 100;
/// argon2 checks run at once (each takes about 19 MiB and a core for tens of milliseconds).
pub const ARGON2_AT_ONCE: usize = 2;
/// Largest POST body the console reads (forms are small).
pub const MAX_FORM_BYTES: usize = 16 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// A signed-in operator.
#[derive(Clone, Debug)]
pub struct Session {
    /// The session id (random, 128 bits, hex).
    pub id: String,
    /// Who: the account's user name, or the name typed with the operator token.
    pub operator: String,
    /// Unix seconds it ends at.
    pub expires: i64,
    /// This session's CSRF token.
    pub csrf: String,
    /// A mark of the credential the session was opened with (see [`Auth::credential_mark`]).
    pub mark: String,
}

/// The console's authentication settings and state.
pub struct Auth {
    key: Vec<u8>,
    token: Option<SecretString>,
    users: HashMap<String, SecretString>,
    ttl: Duration,
    secure: bool,
    attempts: Mutex<Attempts>,
    argon2: tokio::sync::Semaphore,
}

/// Sign-in attempts in the current minute: per address, and in all.
#[derive(Default)]
struct Attempts {
    since: Option<Instant>,
    all: u32,
    by_address: HashMap<IpAddr, u32>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// What a sign-in form sent.
#[derive(serde::Deserialize)]
pub struct LoginForm {
    /// The CSRF token of the form.
    #[serde(default)]
    pub csrf: String,
    /// Operator token sign-in: the token.
    #[serde(default)]
    pub token: String,
    /// Token sign-in: the operator's name; account sign-in: the user name.
    #[serde(default)]
    pub name: String,
    /// Account sign-in: the password.
    #[serde(default)]
    pub password: String,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginForm { .. }")
    }
}

/// Why a sign-in failed (shown to the operator as one sentence; never says which part was wrong).
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong token, user or password.
    Refused,
    /// The token was right, but no name was given.
    NameMissing,
    /// Too many attempts from this address (or from all), or too many checks at once.
    Throttled,
}

impl Auth {
    /// From the settings; `generated_token` is the token generated for an unconfigured loopback
    /// console.
    pub fn new(s: &ConsoleSettings, generated_token: Option<SecretString>) -> Auth {
        let key = match &s.session_key {
            Some(k) => k.expose_secret().as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        Auth {
            key,
            token: s.operator_token.clone().or(generated_token),
            users: s.users.clone().into_iter().collect(),
            ttl: Duration::from_secs(s.session_ttl_secs),
            secure: s.secure_cookies,
            attempts: Mutex::default(),
            argon2: tokio::sync::Semaphore::new(ARGON2_AT_ONCE),
        }
    }

    /// Whether token sign-in is offered.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether account sign-in is offered.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    fn mac(&self, parts: &[&str]) -> String {
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.key).expect("any key length");
        for p in parts {
            m.update(p.as_bytes());
            m.update(b"\x1f");
        }
        hex::encode(m.finalize().into_bytes())
    }

    /// Constant-time comparison of two tokens (by comparing their MACs).
    fn same(&self, a: &str, b: &str) -> bool {
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(b"compare\x1f");
        m.update(a.as_bytes());
        let expected = {
            let mut n = <HmacSha256 as Mac>::new_from_slice(&self.key).expect("any key length");
            n.update(b"compare\x1f");
            n.update(b.as_bytes());
            n.finalize().into_bytes()
        };
        m.verify_slice(&expected).is_ok()
    }

    /// The CSRF token of a session id (or of a sign-in form's nonce).
    pub fn csrf_of(&self, sid: &str) -> String {
        self.mac(&["csrf", sid])
    }

    /// The mark of the credential `operator` signs in with now: a keyed hash of the operator
    /// token (for `<name> (token)`) or of the account's stored hash. None when that credential
    /// no longer exists (the account was removed, the token unset).
    pub fn credential_mark(&self, operator: &str) -> Option<String> {
        let material = if operator.ends_with(" (token)") {
            self.token.as_ref()?.expose_secret().to_owned()
        } else {
            format!(
                "{operator}\x1f{}",
                self.users.get(operator)?.expose_secret()
            )
        };
        Some(self.mac(&["credential", &material])[..32].to_owned())
    }

    /// A new session for `operator` (who has just signed in), and its cookie. The caller records
    /// it in `console_sessions`.
    pub fn issue(&self, operator: &str) -> (Session, String) {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let expires = Utc::now().timestamp() + self.ttl.as_secs() as i64;
        let mark = self.credential_mark(operator).unwrap_or_default();
        let payload = format!("{id}|{expires}|{}|{mark}", hex::encode(operator.as_bytes()));
        let cookie = format!("{payload}|{}", self.mac(&["session", &payload]));
        let s = Session {
            csrf: self.csrf_of(&id),
            id,
            operator: operator.to_owned(),
            expires,
            mark,
        };
        (s, self.cookie(SESSION_COOKIE, &cookie, self.ttl.as_secs()))
    }

    /// A `Set-Cookie` value.
    pub fn cookie(&self, name: &str, value: &str, max_age: u64) -> String {
        format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The session a cookie value holds, if it is genuine, current, and its credential still
    /// exists unchanged. Whether it was ended is in `console_sessions` (the caller asks).
    pub fn verify(&self, value: &str) -> Option<Session> {
        let (payload, mac) = value.rsplit_once('|')?;
        if !self.same(mac, &self.mac(&["session", payload])) {
            return None;
        }
        let mut it = payload.split('|');
        let (id, expires, op, mark) = (it.next()?, it.next()?, it.next()?, it.next()?);
        let expires: i64 = expires.parse().ok()?;
        if expires <= Utc::now().timestamp() {
            return None;
        }
        let operator = String::from_utf8(hex::decode(op).ok()?).ok()?;
        if !self.same(mark, &self.credential_mark(&operator)?) {
            return None;
        }
        Some(Session {
            csrf: self.csrf_of(id),
            id: id.to_owned(),
            operator,
            expires,
            mark: mark.to_owned(),
        })
    }

    /// A new sign-in nonce: its signed cookie value and its CSRF token.
    pub fn login_nonce(&self) -> (String, String) {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let value = format!("{nonce}|{}", self.mac(&["login", &nonce]));
        (value, self.csrf_of(&format!("login:{nonce}")))
    }

    /// The CSRF token of a genuine sign-in nonce cookie `value` (reused, so that two sign-in
    /// pages open at once, or a stray request that lands on the sign-in page, do not invalidate
    /// each other's forms).
    pub fn login_csrf_of(&self, value: &str) -> Option<String> {
        let (nonce, mac) = value.split_once('|')?;
        self.same(mac, &self.mac(&["login", nonce]))
            .then(|| self.csrf_of(&format!("login:{nonce}")))
    }

    /// Whether `csrf` belongs to the sign-in nonce cookie `value`.
    pub fn login_csrf_ok(&self, value: &str, csrf: &str) -> bool {
        let Some((nonce, mac)) = value.split_once('|') else {
            return false;
        };
        self.same(mac, &self.mac(&["login", nonce]))
            && self.same(csrf, &self.csrf_of(&format!("login:{nonce}")))
    }

    /// Whether `name` is a configured account (a refused sign-in records only those names:
    /// anything else typed there may be a token or a password).
    pub fn is_account(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    /// Check a sign-in (argon2 runs off the async threads). Returns the operator's name.
    pub async fn login(&self, from: IpAddr, f: &LoginForm) -> Result<String, LoginError> {
        // Counted before any work: a flood is refused before it costs anything.
        if !self.attempt(from) {
            return Err(LoginError::Throttled);
        }
        let name = f.name.trim().to_owned();
        if !f.token.is_empty() {
            return match &self.token {
                Some(t) if self.same(&f.token, t.expose_secret()) => {
                    if name.is_empty() || name.chars().count() > 64 {
                        Err(LoginError::NameMissing)
                    } else {
                        // Named `name (token)`: the audit log tells the two kinds apart.
                        Ok(format!("{name} (token)"))
                    }
                }
                _ => Err(LoginError::Refused),
            };
        }
        if self.users.is_empty() {
            return Err(LoginError::Refused);
        }
        let Ok(_permit) = self.argon2.try_acquire() else {
            return Err(LoginError::Throttled);
        };
        // The same work for an unknown user as for a known one: no user-name oracle by timing.
        let hash = match self.users.get(&name) {
            Some(h) => h.expose_secret().to_owned(),
            None => dummy_hash().to_owned(),
        };
        let known = self.users.contains_key(&name);
        let pw = f.password.clone();
        let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &pw))
            .await
            .unwrap_or(false);
        if ok && known {
            Ok(name)
        } else {
            Err(LoginError::Refused)
        }
    }

    /// Count one sign-in attempt; false when over a limit.
    fn attempt(&self, from: IpAddr) -> bool {
        let mut a = lock(&self.attempts);
        if a.since
            .is_none_or(|s| s.elapsed() >= Duration::from_secs(60))
        {
            *a = Attempts {
                since: Some(Instant::now()),
                ..Default::default()
            };
        }
        a.all += 1;
        let n = a.by_address.entry(from).or_insert(0);
        *n += 1;
        *n <= MAX_ATTEMPTS && a.all <= MAX_ATTEMPTS_ALL
    }
}

/// An argon2 hash of a random password nobody has, checked for unknown user names.
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password(&hex::encode(rand::random::<[u8; 16]>())))
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// An argon2id PHC hash of `password` (for `console.users.<name>`).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes encode");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The value of cookie `name` in the request's headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request's `Origin` (when it sends one) is this console's own: `public` (the
/// `console.public_origin` an operator's browser sees behind a proxy) when set, else the `Host`
/// the request was sent to. `Origin: null` (a sandboxed frame, some privacy settings) is refused.
fn same_origin(headers: &HeaderMap, public: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if let Some(p) = public {
        return origin == p.trim_end_matches('/');
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && origin_host == host
}

/// The `csrf` field of a URL-encoded form body.
fn form_csrf(body: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
}

/// Every request passes here. Pages need a live session (a request without one is sent to the
/// sign-in page; anything but a GET gets a 403 page that says why and links to it). Every POST
/// needs its CSRF token and, when the browser sends an `Origin`, this console's own. The sign-in
/// page and the style sheet are open.
pub async fn guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let open = path == "/login" || path == "/favicon.ico" || path.starts_with("/static/");
    // The open paths never need the session (the sign-in form's token comes from its own
    // cookie): no session lookup for them.
    let mut session = if open {
        None
    } else {
        cookie_value(req.headers(), SESSION_COOKIE).and_then(|v| app.auth.verify(v))
    };
    if let Some(s) = &session {
        match app.session_live(s).await {
            Ok(true) => {}
            Ok(false) => session = None,
            Err(e) => {
                return view::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("Sessions cannot be checked: Postgres: {e}. Try again in a moment."),
                )
            }
        }
    }
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    if !open && session.is_none() {
        return if get {
            Redirect::to("/login").into_response()
        } else {
            view::error(
                StatusCode::FORBIDDEN,
                "You are not signed in (signed out, the session expired, or the console was \
                 restarted without console.session_key): nothing was done. Sign in and try again.",
            )
        };
    }
    let mut req = req;
    if req.method() == Method::POST {
        if !same_origin(req.headers(), app.settings.console.public_origin.as_deref()) {
            return view::error(
                StatusCode::FORBIDDEN,
                "Refused: the form was sent from another site (its Origin is not this \
                 console's). Behind a proxy, set console.public_origin to the address operators \
                 open.",
            );
        }
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(b) => b,
            Err(_) => return view::error(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."),
        };
        let sent = form_csrf(&bytes).unwrap_or_default();
        let ok = match &session {
            Some(s) if path != "/login" => app.auth.same(&sent, &s.csrf),
            _ => cookie_value(&parts.headers, LOGIN_COOKIE)
                .is_some_and(|v| app.auth.login_csrf_ok(v, &sent)),
        };
        if sent.is_empty() || !ok {
            return view::error(
                StatusCode::FORBIDDEN,
                "Refused: missing or stale form token (the form was not sent by this console \
                 page, or your session changed). Nothing was done: reload the page and try again.",
            );
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    if let Some(s) = session {
        req.extensions_mut().insert(s);
    }
    next.run(req).await
}

/// The client address of a request (for throttling and the audit log).
pub fn client_ip(ci: &ConnectInfo<std::net::SocketAddr>) -> IpAddr {
    ci.0.ip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ConsoleSettings {
        ConsoleSettings {
            operator_token: Some(SecretString::from("a-test-operator-token")),
            users: [(
                "alice".to_owned(),
                SecretString::from(hash_password("pw-alice")),
            )]
            .into_iter()
            .collect(),
            session_key: Some(SecretString::from("k".repeat(32))),
            ..ConsoleSettings::default()
        }
    }

    fn auth() -> Auth {
        Auth::new(&settings(), None)
    }

    /// The settings of [`settings`], made once: argon2 hashes are salted, so each call makes
    /// another credential.
    fn shared() -> &'static ConsoleSettings {
        static S: std::sync::OnceLock<ConsoleSettings> = std::sync::OnceLock::new();
        S.get_or_init(settings)
    }

    fn value(cookie: &str) -> &str {
        cookie
            .strip_prefix("kycq_session=")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
    }

    #[test]
    fn sessions_verify_and_reject_tampering() {
        let a = Auth::new(shared(), None);
        let (s, cookie) = a.issue("alice");
        let back = a.verify(value(&cookie)).unwrap();
        assert_eq!(back.operator, "alice");
        assert_eq!(back.csrf, s.csrf);
        // Another operator's name under the same signature.
        let forged = value(&cookie).replacen(&hex::encode("alice"), &hex::encode("mallory"), 1);
        assert!(a.verify(&forged).is_none());
        // Another console's key.
        let mut other = shared().clone();
        other.session_key = Some(SecretString::from("o".repeat(32)));
        assert!(Auth::new(&other, None).verify(value(&cookie)).is_none());
        // The same key and credentials (a restart, or a second console) accept it.
        assert!(Auth::new(shared(), None).verify(value(&cookie)).is_some());
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    }

    #[test]
    fn a_removed_account_or_a_rotated_token_ends_its_sessions() {
        let a = Auth::new(shared(), None);
        let (_, alice) = a.issue("alice");
        let (_, token) = a.issue("Wang (token)");
        let mut changed = shared().clone();
        changed.users.clear();
        changed.operator_token = Some(SecretString::from("a-new-operator-token"));
        let b = Auth::new(&changed, None);
        assert!(b.verify(value(&alice)).is_none());
        assert!(b.verify(value(&token)).is_none());
        // A new password for alice ends her sessions too.
        let mut repass = shared().clone();
        repass
            .users
            .insert("alice".into(), SecretString::from(hash_password("pw-new")));
        assert!(Auth::new(&repass, None).verify(value(&alice)).is_none());
        assert!(Auth::new(&repass, None).verify(value(&token)).is_some());
    }

    #[test]
    fn csrf_tokens_are_per_session_and_per_nonce() {
        let a = auth();
        let (s1, _) = a.issue("alice");
        let (s2, _) = a.issue("alice");
        assert_ne!(s1.csrf, s2.csrf);
        let (cookie, csrf) = a.login_nonce();
        assert!(a.login_csrf_ok(&cookie, &csrf));
        assert_eq!(a.login_csrf_of(&cookie), Some(csrf.clone()));
        assert!(!a.login_csrf_ok(&cookie, &s1.csrf));
        let (other, _) = a.login_nonce();
        assert!(!a.login_csrf_ok(&other, &csrf));
        assert!(a.login_csrf_of("forged|00").is_none());
    }

    fn form(token: &str, name: &str, pw: &str) -> LoginForm {
        LoginForm {
            csrf: String::new(),
            token: token.into(),
            name: name.into(),
            password: pw.into(),
        }
    }

    #[tokio::test]
    async fn sign_in_by_token_or_account() {
        let a = auth();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            a.login(ip, &form("a-test-operator-token", "Wang", ""))
                .await,
            Ok("Wang (token)".into())
        );
        assert_eq!(
            a.login(ip, &form("a-test-operator-token", " ", "")).await,
            Err(LoginError::NameMissing)
        );
        assert_eq!(
            a.login(ip, &form("", "alice", "pw-alice")).await,
            Ok("alice".into())
        );
        assert_eq!(
            a.login(ip, &form("", "alice", "wrong")).await,
            Err(LoginError::Refused)
        );
        assert_eq!(
            a.login(ip, &form("", "nobody", "pw-alice")).await,
            Err(LoginError::Refused)
        );
        assert!(a.is_account("alice") && !a.is_account("a-test-operator-token"));
    }

    #[tokio::test]
    async fn attempts_are_limited_per_address_and_in_all() {
        let a = auth();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..MAX_ATTEMPTS {
            let _ = a.login(ip, &form("wrong-token", "x", "")).await;
        }
        // Even the right token is refused now: attempts are counted before they are checked.
        assert_eq!(
            a.login(ip, &form("a-test-operator-token", "Wang", ""))
                .await,
            Err(LoginError::Throttled)
        );
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(a.login(other, &form("", "alice", "pw-alice")).await.is_ok());
        // In all: many addresses together.
        let b = auth();
        for i in 0..MAX_ATTEMPTS_ALL {
            let ip = IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]);
            let _ = b.login(ip, &form("wrong-token", "x", "")).await;
        }
        assert_eq!(
            b.login(other, &form("a-test-operator-token", "Wang", ""))
                .await,
            Err(LoginError::Throttled)
        );
    }

    #[tokio::test]
    async fn argon2_checks_beyond_the_limit_are_refused_not_queued() {
        let a = std::sync::Arc::new(auth());
        let held: Vec<_> = (0..ARGON2_AT_ONCE)
            .map(|_| a.argon2.try_acquire().unwrap())
            .collect();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        assert_eq!(
            a.login(ip, &form("", "alice", "pw-alice")).await,
            Err(LoginError::Throttled)
        );
        drop(held);
        assert!(a.login(ip, &form("", "alice", "pw-alice")).await.is_ok());
    }

    #[test]
    fn origin_and_cookie_parsing() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:9470".parse().unwrap());
        assert!(same_origin(&h, None));
        h.insert(header::ORIGIN, "http://127.0.0.1:9470".parse().unwrap());
        assert!(same_origin(&h, None));
        assert!(!same_origin(&h, Some("https://kyc-console.example")));
        h.insert(
            header::ORIGIN,
            "https://kyc-console.example".parse().unwrap(),
        );
        assert!(same_origin(&h, Some("https://kyc-console.example")));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h, None));
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&h, None));
        h.insert(
            header::COOKIE,
            "a=1; kycq_session=abc|1; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h, SESSION_COOKIE), Some("abc|1"));
        assert_eq!(form_csrf(b"note=x&csrf=ab%20c"), Some("ab c".into()));
    }

    #[test]
    fn debug_hides_secrets() {
        let text = format!("{:?}", auth());
        assert!(!text.contains("a-test-operator-token"));
        assert!(text.contains("alice"));
        let f = format!("{:?}", form("a-test-operator-token", "alice", "pw-alice"));
        assert!(!f.contains("a-test-operator-token") && !f.contains("pw-alice"));
    }
}
