//! Crash points for the crash-safety tests: with `KYCQ_FAILPOINT=<name>` in its environment,
//! the worker SIGKILLs itself the first time it reaches the point of that name — exactly as a
//! machine failure would stop it there, with nothing flushed or closed. Without the variable
//! (always, in production) a point costs one load of a cached value.
//!
//! | name | where |
//! |---|---|
//! | `journal_committed` | a batch holding journal rows of calls has committed; none of those calls is sent yet |
//! | `answer_received` | a provider answered; its outcome is not journaled yet |

use std::sync::OnceLock;

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// Stop the process here if `KYCQ_FAILPOINT` names this point.
pub fn hit(name: &str) {
    let armed = ARMED.get_or_init(|| std::env::var("KYCQ_FAILPOINT").ok());
    if armed.as_deref() != Some(name) {
        return;
    }
    eprintln!("KYCQ_FAILPOINT={name}: killing this process");
    // No unsafe code in kycq: the signal comes from kill(1), as it would from an operator.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &std::process::id().to_string()])
        .status();
    // kill(1) returned before the signal landed: never go on past the point; without kill(1)
    // on the PATH, abort.
    std::thread::sleep(std::time::Duration::from_secs(5));
    std::process::abort();
}
