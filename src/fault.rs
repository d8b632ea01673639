//! kycq's own failures (Postgres, RabbitMQ) classified once, as data: transient (retried with
//! the one shared backoff), deterministic for one message (dead-lettered with a reason, never
//! retried), or misconfiguration (exit 2 at start naming the key; `/readyz` says why at run time).
//!
//! Postgres errors are classified by SQLSTATE (PostgreSQL manual, Appendix A "PostgreSQL Error
//! Codes", postgresql.org/docs/current/errcodes-appendix.html); RabbitMQ errors by the AMQP 0-9-1
//! reply codes (rabbitmq.com/amqp-0-9-1-reference.html#constants).

use std::time::Duration;

use crate::broker::BrokerError;
use crate::retry::Backoff;
use crate::store::StoreError;

/// What to do about one failure of kycq's own infrastructure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultClass {
    /// It may pass: retry with [`INFRA_BACKOFF`], holding the delivery.
    Transient,
    /// It fails the same way for this message every time: dead-letter the message with
    /// `reason` and acknowledge it.
    Deterministic {
        /// The dead-letter reason (`x-kycq-reason`).
        reason: &'static str,
    },
    /// The configuration is wrong: nothing works until an operator fixes `key`.
    Misconfigured {
        /// The configuration key to fix.
        key: &'static str,
    },
}

/// Dead-letter reason: Postgres refuses a value of this message.
pub const UNSTORABLE: &str = "unstorable";
/// Dead-letter reason: the stored result of this request cannot be read back.
pub const STORED_RESULT_UNREADABLE: &str = "stored_result_unreadable";

/// One SQLSTATE row: a five-character code, or a two-character class (the first match wins,
/// codes before classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqlStateRow {
    /// The SQLSTATE or its class.
    pub code: &'static str,
    /// What to do.
    pub class: FaultClass,
    /// What it means.
    pub meaning: &'static str,
}

const fn row(code: &'static str, class: FaultClass, meaning: &'static str) -> SqlStateRow {
    SqlStateRow {
        code,
        class,
        meaning,
    }
}

const T: FaultClass = FaultClass::Transient;
const REFUSED: FaultClass = FaultClass::Deterministic { reason: UNSTORABLE };
const DB_URL: FaultClass = FaultClass::Misconfigured {
    key: "database.url",
};

/// SQLSTATEs kycq can meet. Anything unlisted is transient.
#[rustfmt::skip]
pub const SQLSTATES: &[SqlStateRow] = &[
    // A concurrent insert of the same key: the retry finds the row.
    row("23505", T, "unique violation (a concurrent claim)"),
    row("22", REFUSED, "data exception: a value Postgres refuses (e.g. a NUL character, a bad encoding, a value too long)"),
    row("23", REFUSED, "integrity constraint violation"),
    row("54", REFUSED, "program limit exceeded (a value too large)"),
    row("08", T, "connection exception"),
    row("40", T, "transaction rollback (serialization failure, deadlock)"),
    row("53", T, "insufficient resources"),
    row("57", T, "operator intervention (shutdown, cancel)"),
    row("58", T, "system error"),
    row("28", DB_URL, "invalid authorization: the role or its password is refused"),
    row("3D", DB_URL, "invalid catalog name: the database does not exist"),
    row("42501", DB_URL, "insufficient privilege: the role may not do what kycq needs"),
    row("42", DB_URL, "syntax error or access rule violation: the schema is not the one kycq migrated"),
];

/// The row of a SQLSTATE: the exact code first, then its class.
pub fn sqlstate_row(code: &str) -> Option<&'static SqlStateRow> {
    SQLSTATES
        .iter()
        .find(|r| r.code.len() == 5 && r.code == code)
        .or_else(|| {
            SQLSTATES
                .iter()
                .find(|r| r.code.len() == 2 && code.starts_with(r.code))
        })
}

/// Classify a Postgres failure.
pub fn classify_store(e: &StoreError) -> FaultClass {
    match e {
        StoreError::Corrupt(..) => FaultClass::Deterministic {
            reason: STORED_RESULT_UNREADABLE,
        },
        StoreError::Migrate(_) => DB_URL,
        StoreError::Db(e) => classify_sqlx(e),
        // The worker is stopping: the delivery returns to the queue.
        StoreError::WriterGone => T,
        // As the batch's own failure (never a refusal of a value: that is never shared).
        StoreError::Batch(class, _) => *class,
    }
}

fn classify_sqlx(e: &sqlx::Error) -> FaultClass {
    use sqlx::Error as E;
    match e {
        E::Database(db) => db
            .code()
            .and_then(|c| sqlstate_row(&c))
            .map_or(T, |r| r.class),
        E::Configuration(_) => DB_URL,
        // The schema is not the one kycq migrated: every message would fail the same way.
        E::ColumnDecode { .. } | E::TypeNotFound { .. } | E::ColumnNotFound(_) => DB_URL,
        // A value of this message that cannot be encoded or decoded.
        E::Encode(_) | E::Decode(_) => REFUSED,
        // Connections, TLS handshakes, pool timeouts: they pass when Postgres is back.
        _ => T,
    }
}

/// Classify a RabbitMQ failure.
pub fn classify_broker(e: &BrokerError) -> FaultClass {
    use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
    const AMQP_URL: FaultClass = FaultClass::Misconfigured { key: "amqp.url" };
    match e {
        BrokerError::Inequivalent { .. } => FaultClass::Misconfigured { key: "topology" },
        BrokerError::NotConfirmed(..) | BrokerError::Timeout(_) => T,
        BrokerError::Amqp(e) => match e.kind() {
            lapin::ErrorKind::ProtocolError(p) => match p.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => AMQP_URL,
                _ => T,
            },
            _ => T,
        },
    }
}

/// The shared backoff of every retry of kycq's own infrastructure (reconnecting to RabbitMQ,
/// connecting to Postgres, retrying a delivery whose processing failed): 200 ms doubling to
/// 10 s, jittered, without end — each use is bounded by the worker's stop signal.
pub const INFRA_BACKOFF: Backoff =
    Backoff::doubling(Duration::from_millis(200), Duration::from_secs(10));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_by_code_then_class() {
        let table: &[(&str, FaultClass)] = &[
            // NUL in text (invalid byte sequence) and in jsonb (unsupported escape).
            ("22021", REFUSED),
            ("58030", T),
            ("22P05", REFUSED),
            ("22001", REFUSED),
            ("23502", REFUSED),
            ("23505", T),
            ("54000", REFUSED),
            ("08006", T),
            ("40001", T),
            ("40P01", T),
            ("53300", T),
            ("57P01", T),
            ("28P01", DB_URL),
            ("28000", DB_URL),
            ("3D000", DB_URL),
            ("42501", DB_URL),
            ("42P01", DB_URL),
        ];
        for (code, want) in table {
            assert_eq!(sqlstate_row(code).map(|r| r.class), Some(*want), "{code}");
        }
        assert_eq!(sqlstate_row("XX000"), None);
        // Every row is reached by some code above.
        for r in SQLSTATES {
            assert!(
                table.iter().any(|(c, _)| sqlstate_row(c) == Some(r)),
                "{} untested",
                r.code
            );
        }
    }

    #[test]
    fn store_errors() {
        assert_eq!(
            classify_store(&StoreError::Corrupt("r".into(), "x".into())),
            FaultClass::Deterministic {
                reason: STORED_RESULT_UNREADABLE
            }
        );
        assert_eq!(
            classify_store(&StoreError::Db(sqlx::Error::PoolTimedOut)),
            T
        );
        assert_eq!(classify_store(&StoreError::Db(sqlx::Error::PoolClosed)), T);
        assert_eq!(
            classify_store(&StoreError::Db(sqlx::Error::Io(std::io::Error::other(
                "reset"
            )))),
            T
        );
        assert_eq!(
            classify_store(&StoreError::Db(sqlx::Error::Decode("bad".into()))),
            REFUSED
        );
        assert_eq!(
            classify_store(&StoreError::Db(sqlx::Error::ColumnNotFound(
                "outcome".into()
            ))),
            DB_URL
        );
        assert_eq!(
            classify_store(&StoreError::Db(sqlx::Error::Tls("handshake reset".into()))),
            T
        );
    }

    #[test]
    fn broker_errors() {
        assert_eq!(
            classify_broker(&BrokerError::NotConfirmed("x".into(), "nack".into())),
            T
        );
        assert_eq!(
            classify_broker(&BrokerError::Amqp(
                lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "basic.ack")
                    .into()
            )),
            T
        );
        assert_eq!(
            classify_broker(&BrokerError::Inequivalent {
                kind: "queue",
                name: "q".into(),
                broker: "x".into()
            }),
            FaultClass::Misconfigured { key: "topology" }
        );
    }

    #[test]
    fn the_shared_backoff_doubles_within_its_bounds_and_never_ends() {
        let d: Vec<Duration> = INFRA_BACKOFF.delays(Some(3)).take(12).collect();
        assert_eq!(d.len(), 12);
        assert!(
            d[0] >= INFRA_BACKOFF.min && d[0] <= 2 * INFRA_BACKOFF.min,
            "{d:?}"
        );
        assert!(d.iter().all(|x| *x <= INFRA_BACKOFF.max), "{d:?}");
        assert!(d[11] >= INFRA_BACKOFF.max / 2, "{d:?}");
    }
}
