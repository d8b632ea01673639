//! Provider-agnostic sandbox scenarios, chosen from an ID number's sequence code, and the documented test identities.
//!
//! The scenario is the 3-digit sequence code of the ID number (characters 15–17, `id[14..17]`);
//! any code not in the table means [`Scenario::Match`]. Each vendor module renders a scenario in
//! its own wire format.

use chrono::{Days, NaiveDate};
use serde::Serialize;

use crate::check::identity::id_check_char;

/// What the sandbox answers for an identity, whatever the vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Every element consistent (any unlisted code; documented identities use `001`).
    Match,
    /// 901: mobile and ID number belong together, the name does not.
    NameMismatch,
    /// 902: mobile and name belong together, the ID number does not.
    IdNumberMismatch,
    /// 903: the mobile belongs to someone else.
    MobileOwnerMismatch,
    /// 904: inconsistent, no detail given.
    MismatchUnspecified,
    /// 905: name and ID number do not belong together.
    NameIdNumberMismatch,
    /// 906: the vendor says the mobile is invalid.
    InvalidMobile,
    /// 907: the vendor says the ID number is invalid.
    InvalidIdNumber,
    /// 908: the vendor says the name is invalid.
    InvalidName,
    /// 909: the authority has no record.
    NoRecord,
    /// 911: the vendor is busy, always.
    Busy,
    /// 912: the vendor refuses more checks of this identity today.
    IdentityDailyLimit,
    /// 913: the number range cannot be verified.
    UnsupportedNumberRange,
    /// 914: busy on the first call for this identity, then match.
    BusyOnce,
    /// 921: throttled, always.
    Throttled,
    /// 922: throttled on the first call for this identity, then match.
    ThrottledOnce,
    /// 931: the vendor's internal-error code, always.
    InternalError,
    /// 932: HTTP 500, always.
    Http500,
    /// 933: HTTP 500 on the first call for this identity, then match.
    Http500Once,
    /// 934: HTTP 502 whose body is cut off: the connection closes before `Content-Length`
    /// bytes arrived (see [`super::http_fault`]).
    Http502CutOff,
    /// 935: a bare HTTP 429 (no vendor JSON, no gateway headers) on the first call for this
    /// identity, then match.
    Http429Once,
    /// 936: HTTP 400 with a backend's own JSON, not the vendor's envelope (and, for the
    /// Marketplace, no gateway error headers).
    Http400Backend,
    /// 937: HTTP 504 whose body is cut off, like 934.
    Http504CutOff,
    /// 941: match, answered after the configured slow delay.
    Slow,
    /// 951: the vendor answers a code not in its documented table.
    UnknownCode,
    /// 961: a provider-wide refusal (account in arrears).
    ProviderWide,
}

impl Scenario {
    /// Every scenario, `Match` first, in code order.
    pub const ALL: [Scenario; 26] = [
        Scenario::Match,
        Scenario::NameMismatch,
        Scenario::IdNumberMismatch,
        Scenario::MobileOwnerMismatch,
        Scenario::MismatchUnspecified,
        Scenario::NameIdNumberMismatch,
        Scenario::InvalidMobile,
        Scenario::InvalidIdNumber,
        Scenario::InvalidName,
        Scenario::NoRecord,
        Scenario::Busy,
        Scenario::IdentityDailyLimit,
        Scenario::UnsupportedNumberRange,
        Scenario::BusyOnce,
        Scenario::Throttled,
        Scenario::ThrottledOnce,
        Scenario::InternalError,
        Scenario::Http500,
        Scenario::Http500Once,
        Scenario::Http502CutOff,
        Scenario::Http429Once,
        Scenario::Http400Backend,
        Scenario::Http504CutOff,
        Scenario::Slow,
        Scenario::UnknownCode,
        Scenario::ProviderWide,
    ];

    /// The scenario an ID number selects: its sequence code `id[14..17]`, `Match` when unlisted.
    pub fn from_id_number(id: &str) -> Scenario {
        id.get(14..17)
            .and_then(|code| Scenario::ALL.into_iter().find(|s| s.code() == code))
            .unwrap_or(Scenario::Match)
    }

    /// The 3-digit sequence code, `"000"` for `Match`.
    pub fn code(self) -> &'static str {
        match self {
            Scenario::Match => "000",
            Scenario::NameMismatch => "901",
            Scenario::IdNumberMismatch => "902",
            Scenario::MobileOwnerMismatch => "903",
            Scenario::MismatchUnspecified => "904",
            Scenario::NameIdNumberMismatch => "905",
            Scenario::InvalidMobile => "906",
            Scenario::InvalidIdNumber => "907",
            Scenario::InvalidName => "908",
            Scenario::NoRecord => "909",
            Scenario::Busy => "911",
            Scenario::IdentityDailyLimit => "912",
            Scenario::UnsupportedNumberRange => "913",
            Scenario::BusyOnce => "914",
            Scenario::Throttled => "921",
            Scenario::ThrottledOnce => "922",
            Scenario::InternalError => "931",
            Scenario::Http500 => "932",
            Scenario::Http500Once => "933",
            Scenario::Http502CutOff => "934",
            Scenario::Http429Once => "935",
            Scenario::Http400Backend => "936",
            Scenario::Http504CutOff => "937",
            Scenario::Slow => "941",
            Scenario::UnknownCode => "951",
            Scenario::ProviderWide => "961",
        }
    }

    /// One line for people (demo output, the book's test identities, `/_sandbox/identities`).
    pub fn description(self) -> &'static str {
        match self {
            Scenario::Match => "every element consistent",
            Scenario::NameMismatch => "mobile and ID number match, the name does not",
            Scenario::IdNumberMismatch => "mobile and name match, the ID number does not",
            Scenario::MobileOwnerMismatch => "the mobile belongs to someone else",
            Scenario::MismatchUnspecified => "inconsistent, no detail given",
            Scenario::NameIdNumberMismatch => "name and ID number do not belong together",
            Scenario::InvalidMobile => "the provider says the mobile is invalid",
            Scenario::InvalidIdNumber => "the provider says the ID number is invalid",
            Scenario::InvalidName => "the provider says the name is invalid",
            Scenario::NoRecord => "the authority has no record",
            Scenario::Busy => "the provider is busy (always)",
            Scenario::IdentityDailyLimit => {
                "the provider's daily limit for this identity is reached"
            }
            Scenario::UnsupportedNumberRange => "the number range is not supported",
            Scenario::BusyOnce => "busy on the first call for this identity, then match",
            Scenario::Throttled => "throttled (always)",
            Scenario::ThrottledOnce => "throttled on the first call for this identity, then match",
            Scenario::InternalError => "the provider's internal error (always)",
            Scenario::Http500 => "HTTP 500 (always)",
            Scenario::Http500Once => "HTTP 500 on the first call for this identity, then match",
            Scenario::Http502CutOff => "HTTP 502, the connection cut off in the middle of the body",
            Scenario::Http429Once => {
                "a bare HTTP 429 on the first call for this identity, then match"
            }
            Scenario::Http400Backend => {
                "HTTP 400 with a backend's own JSON, not the provider's (always)"
            }
            Scenario::Http504CutOff => "HTTP 504, the connection cut off in the middle of the body",
            Scenario::Slow => "match, answered after the configured slow delay",
            Scenario::UnknownCode => "a result code not in the provider's documented table",
            Scenario::ProviderWide => "the provider account is in arrears (provider-wide)",
        }
    }

    /// True for the scenarios that misbehave only on the first call for an identity.
    pub fn is_once(self) -> bool {
        matches!(
            self,
            Scenario::BusyOnce
                | Scenario::ThrottledOnce
                | Scenario::Http500Once
                | Scenario::Http429Once
        )
    }
}

/// A documented test identity: plaintext on purpose (it is fictitious), never logged by kycq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestIdentity {
    /// A valid Chinese name.
    pub name: String,
    /// A valid 18-character ID number whose sequence code selects `scenario`.
    pub id_number: String,
    /// A valid China Mobile number.
    pub mobile: String,
    /// What the sandbox answers for it.
    pub scenario: Scenario,
}

/// How many variants give distinct ID numbers: birth dates 1970-01-01 ..= 2019-12-31.
/// Larger variants wrap around (the birth date must stay plausible for kycq's validation).
pub const DISTINCT_VARIANTS: u32 = 18_262;

const SURNAMES: [char; 8] = ['张', '李', '王', '刘', '陈', '杨', '赵', '黄'];
const GIVEN: [char; 12] = [
    '伟', '芳', '娜', '敏', '静', '强', '磊', '洋', '艳', '勇', '军', '杰',
];

/// The documented identity number `variant` for a scenario: region `110105`, birth date
/// 1970-01-01 plus `variant` days (wrapping at [`DISTINCT_VARIANTS`]), the scenario's code
/// (`001` for `Match`), and the check character.
pub fn identity(scenario: Scenario, variant: u32) -> TestIdentity {
    let sequence = match scenario {
        Scenario::Match => "001",
        other => other.code(),
    };
    identity_with_code(sequence, variant)
}

/// A valid test identity whose ID number carries the 3-digit sequence `code` (the shared
/// scenario codes above, or a vendor module's own codes 800–899, which select one exact vendor
/// answer). `scenario` is what the shared table makes of the code.
pub fn identity_with_code(code: &str, variant: u32) -> TestIdentity {
    assert!(
        code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()),
        "a 3-digit code"
    );
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("1970-01-01 is a date");
    let birth = epoch
        .checked_add_days(Days::new(u64::from(variant % DISTINCT_VARIANTS)))
        .expect("within 1970..2020");
    let first17 = format!("110105{}{code}", birth.format("%Y%m%d"));
    let check = id_check_char(&first17).expect("17 ASCII digits");
    let name = if variant == 0 {
        "张三".to_owned()
    } else {
        let v = (variant - 1) as usize;
        let surname = SURNAMES[(v / GIVEN.len()) % SURNAMES.len()];
        format!("{surname}{}", GIVEN[v % GIVEN.len()])
    };
    let mobile = format!("138{:08}", (12_345_678 + u64::from(variant)) % 100_000_000);
    let id_number = format!("{first17}{check}");
    TestIdentity {
        name,
        scenario: Scenario::from_id_number(&id_number),
        id_number,
        mobile,
    }
}

/// The 3-digit sequence code of an ID number (characters 15–17), if it has one.
pub fn sequence_code(id_number: &str) -> Option<&str> {
    id_number
        .get(14..17)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether an ID number is 18 characters ending in its right check character: the vendors' own
/// field check (the birth date and region are not checked).
pub fn well_formed_id_number(id: &str) -> bool {
    id.len() == 18
        && id.is_char_boundary(17)
        && id_check_char(&id[..17])
            .is_some_and(|c| id[17..].eq_ignore_ascii_case(c.encode_utf8(&mut [0; 4])))
}

/// Variant 0 of every scenario (used by `kycq demo` and the book's test identities).
pub fn documented() -> Vec<TestIdentity> {
    Scenario::ALL.iter().map(|&s| identity(s, 0)).collect()
}

pub use crate::check::Carrier;

/// The carrier of an 11-digit mainland mobile number, from its 3-digit prefix.
pub fn carrier_for(mobile: &str) -> Option<Carrier> {
    if mobile.len() != 11 || !mobile.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u16 = mobile[..3].parse().ok()?;
    match prefix {
        134..=139
        | 147
        | 150..=152
        | 157..=159
        | 172
        | 178
        | 182..=184
        | 187
        | 188
        | 195
        | 197
        | 198 => Some(Carrier::Cmcc),
        130..=132 | 145 | 155 | 156 | 166 | 171 | 175 | 176 | 185 | 186 | 196 => {
            Some(Carrier::Cucc)
        }
        133 | 149 | 153 | 173 | 174 | 177 | 180 | 181 | 189 | 190 | 191 | 193 | 199 => {
            Some(Carrier::Ctcc)
        }
        192 => Some(Carrier::Cbn),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_distinct_three_digit_strings() {
        let codes: HashSet<&str> = Scenario::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes.len(), Scenario::ALL.len());
        assert!(codes
            .iter()
            .all(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit())));
    }

    #[test]
    fn scenario_from_the_sequence_code() {
        assert_eq!(
            Scenario::from_id_number("11010519491231002X"),
            Scenario::Match
        );
        assert_eq!(
            Scenario::from_id_number("110105194912319013"),
            Scenario::NameMismatch
        );
        assert_eq!(
            Scenario::from_id_number("110105194912319611"),
            Scenario::ProviderWide
        );
        assert_eq!(
            Scenario::from_id_number("110105194912310001"),
            Scenario::Match
        );
        assert_eq!(Scenario::from_id_number("short"), Scenario::Match);
        assert_eq!(Scenario::from_id_number("张三张三张三"), Scenario::Match);
        assert_eq!(Scenario::from_id_number(""), Scenario::Match);
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_id_number(&identity(s, 3).id_number), s);
        }
    }

    #[test]
    fn identities_are_valid_and_carry_their_code() {
        for s in Scenario::ALL {
            for variant in [
                0,
                1,
                2,
                13,
                365,
                9_999,
                DISTINCT_VARIANTS - 1,
                DISTINCT_VARIANTS,
                u32::MAX,
            ] {
                let id = identity(s, variant);
                assert_eq!(id.scenario, s);
                assert_eq!(id.id_number.len(), 18);
                let (first17, check) = id.id_number.split_at(17);
                assert_eq!(
                    id_check_char(first17).map(String::from).as_deref(),
                    Some(check)
                );
                let expected = if s == Scenario::Match {
                    "001"
                } else {
                    s.code()
                };
                assert_eq!(&id.id_number[14..17], expected);
                assert_eq!(&id.id_number[..6], "110105");
                assert!(id.name.chars().count() >= 2);
                assert!(id
                    .name
                    .chars()
                    .all(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)));
                assert_eq!(carrier_for(&id.mobile), Some(Carrier::Cmcc));
            }
        }
    }

    #[test]
    fn variant_zero_is_the_design_example_and_birth_dates_advance() {
        let first = identity(Scenario::Match, 0);
        assert_eq!(first.name, "张三");
        assert_eq!(first.id_number, "110105197001010011");
        assert_eq!(first.mobile, "13812345678");
        assert_eq!(&identity(Scenario::Match, 1).id_number[6..14], "19700102");
        assert_eq!(&identity(Scenario::Match, 365).id_number[6..14], "19710101");
        assert_eq!(
            &identity(Scenario::Match, DISTINCT_VARIANTS - 1).id_number[6..14],
            "20191231"
        );
        let ids: HashSet<String> = (0..500)
            .map(|v| identity(Scenario::BusyOnce, v).id_number)
            .collect();
        assert_eq!(ids.len(), 500);
        assert_ne!(
            identity(Scenario::Match, 1).name,
            identity(Scenario::Match, 2).name
        );
    }

    #[test]
    fn documented_has_variant_zero_of_every_scenario() {
        let documented = documented();
        assert_eq!(documented.len(), Scenario::ALL.len());
        for (identity, s) in documented.iter().zip(Scenario::ALL) {
            assert_eq!(identity.scenario, s);
            assert_eq!(identity.name, "张三");
        }
    }

    #[test]
    fn carriers_by_prefix() {
        assert_eq!(carrier_for("13812345678"), Some(Carrier::Cmcc));
        assert_eq!(carrier_for("19812345678"), Some(Carrier::Cmcc));
        assert_eq!(carrier_for("13112345678"), Some(Carrier::Cucc));
        assert_eq!(carrier_for("16612345678"), Some(Carrier::Cucc));
        assert_eq!(carrier_for("13312345678"), Some(Carrier::Ctcc));
        assert_eq!(carrier_for("19912345678"), Some(Carrier::Ctcc));
        assert_eq!(carrier_for("19212345678"), Some(Carrier::Cbn));
        assert_eq!(carrier_for("12012345678"), None);
        assert_eq!(carrier_for("1381234567"), None);
        assert_eq!(carrier_for("1381234567a"), None);
    }
}
