//! The domain of one check: what is asked (request), what may be asked (identity rules), and what
//! is answered (result, reason codes), with masking so personal data never leaves unmasked.

pub mod identity;
pub mod mask;
pub mod outcome;
pub mod reason;
pub mod regions;
pub mod request;
pub mod result;

pub use identity::{FieldError, IdNumber, Mobile, Name, Validity, ValidityEnd};
pub use outcome::{Classification, OutcomeClass, ProviderReply, Refusal};
pub use reason::{ReasonCode, Status, Verdict};
pub use request::{decode, CheckKind, CheckRequest, Decoded, Malformed, Rejection, Subject};
pub use result::{Billed, Carrier, CheckResult, MaskedSubject};
