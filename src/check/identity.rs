//! Validation of request fields into normalised, self-masking PII types (ID number, mobile, name) and validity periods.

use std::fmt;

use chrono::{Datelike, NaiveDate};

use crate::check::mask::{mask_id_number, mask_mobile, mask_name};
use crate::check::reason::ReasonCode;
use crate::check::regions;
use unicode_normalization::UnicodeNormalization;

/// Why a field was refused. Messages never contain the submitted value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A required field is absent; holds the field name.
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("id_number: {0}")]
    IdNumber(&'static str),
    #[error("mobile: {0}")]
    Mobile(&'static str),
    #[error("name: {0}")]
    Name(&'static str),
    #[error("{field}: {reason}")]
    Date {
        field: &'static str,
        reason: &'static str,
    },
}

impl FieldError {
    /// The reason code a `rejected` result carries for this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            FieldError::Missing("name") => ReasonCode::InvalidName,
            FieldError::Missing("id_number") => ReasonCode::InvalidIdNumber,
            FieldError::Missing("mobile") => ReasonCode::InvalidMobile,
            FieldError::Missing("validity_start" | "validity_end") => ReasonCode::InvalidDate,
            FieldError::Missing(_) => ReasonCode::InvalidRequest,
            FieldError::IdNumber(_) => ReasonCode::InvalidIdNumber,
            FieldError::Mobile(_) => ReasonCode::InvalidMobile,
            FieldError::Name(_) => ReasonCode::InvalidName,
            FieldError::Date { .. } => ReasonCode::InvalidDate,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ID number
// ---------------------------------------------------------------------------------------------

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK_CHARS: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// The ISO 7064 MOD 11-2 check character for 17 ASCII digits; None if the input is not exactly that.
pub fn id_check_char(first17: &str) -> Option<char> {
    let bytes = first17.as_bytes();
    if bytes.len() != 17 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = bytes
        .iter()
        .zip(ID_WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    Some(ID_CHECK_CHARS[(sum % 11) as usize])
}

/// Codes accepted beyond the GB/T 2260 table: the residence permits for residents of Hong Kong,
/// Macao and Taiwan (港澳台居民居住证, issued since 2018-09-01 under the State Council's
/// 《港澳台居民居住证申领发放办法》) open with 810000, 820000 or 830000, whatever the holder's
/// birth year. 830000 is not an administrative division code at all.
const RESIDENCE_PERMIT_CODES: [u32; 3] = [810_000, 820_000, 830_000];

/// A number may carry a code for a year after the one it was abolished in: registration
/// offices change over in the months after a merger.
const ABOLISHED_GRACE_YEARS: i32 = 1;

/// Whether the six-digit administrative division code `code` can open the number of someone born
/// in `birth_year`: it is in the GB/T 2260 table ([`regions::PERIODS`]) and was not abolished
/// before that year (with [`ABOLISHED_GRACE_YEARS`]). A number is assigned at household
/// registration — at birth, or at the first ID card for people born before cards were issued
/// (1984) — with the code in use *then* (GB 11643-1999 §5.2), so a code introduced after the
/// birth year is possible; one abolished before the birth year is not. The table knows changes
/// up to [`regions::DATA_YEAR`]: for someone born after it, a code of a known province that the
/// table does not know may be a newer one, and is accepted.
fn region_in_use(code: u32, birth_year: i32) -> Result<(), &'static str> {
    if RESIDENCE_PERMIT_CODES.contains(&code) {
        return Ok(());
    }
    let first = regions::PERIODS.partition_point(|&(c, _, _)| c < code);
    let periods = regions::PERIODS[first..]
        .iter()
        .take_while(|&&(c, _, _)| c == code);
    let mut known = false;
    for &(_, _, last_year) in periods {
        known = true;
        if last_year == regions::OPEN_END
            || i32::from(last_year) + ABOLISHED_GRACE_YEARS >= birth_year
        {
            return Ok(());
        }
    }
    if known {
        return Err("region code was abolished before the birth year");
    }
    let province = code / 10_000;
    let province_known = regions::PERIODS
        .get(regions::PERIODS.partition_point(|&(c, _, _)| c < province * 10_000))
        .is_some_and(|&(c, _, _)| c / 10_000 == province);
    if province_known && birth_year > i32::from(regions::DATA_YEAR) {
        return Ok(());
    }
    Err("unknown region code")
}

/// The full-width forms of ASCII (U+FF01–U+FF5E: what Chinese input methods type, e.g. `１３８`
/// or `Ｘ`) read as their ASCII characters in numbers and dates; anything else is left as is.
fn fullwidth_to_ascii(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        _ => c,
    }
}

/// Parse `YYYYMMDD` from exactly 8 ASCII digits; None if not digits or not a real date.
fn parse_yyyymmdd(s: &str) -> Option<NaiveDate> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = s[0..4].parse().ok()?;
    let month: u32 = s[4..6].parse().ok()?;
    let day: u32 = s[6..8].parse().ok()?;
    NaiveDate::from_ymd_opt(year, month, day)
}

/// A validated 18-character resident ID number (check character upper-case).
/// `Debug` and `Display` show only the masked form.
#[derive(Clone, PartialEq, Eq)]
pub struct IdNumber {
    value: String,
    birth_date: NaiveDate,
}

impl IdNumber {
    /// Validate length, characters (full-width forms read as ASCII), birth date (1900-01-01 ..=
    /// `today`), region code (in use for that birth year) and check character.
    pub fn parse(raw: &str, today: NaiveDate) -> Result<IdNumber, FieldError> {
        if has_control(raw) {
            return Err(FieldError::IdNumber("must not contain control characters"));
        }
        let s: String = raw.trim().chars().map(fullwidth_to_ascii).collect();
        if s.is_empty() {
            return Err(FieldError::IdNumber("must not be empty"));
        }
        if s.chars().count() != 18 {
            return Err(FieldError::IdNumber("must be 18 characters"));
        }
        // 18 chars; all ASCII after this check, so byte slicing below is safe.
        let bytes = s.as_bytes();
        let last = bytes[bytes.len() - 1];
        if bytes.len() != 18
            || !bytes[..17].iter().all(u8::is_ascii_digit)
            || !(last.is_ascii_digit() || last == b'X' || last == b'x')
        {
            return Err(FieldError::IdNumber(
                "must be 17 digits followed by a digit or X",
            ));
        }
        let value = s.to_ascii_uppercase();
        let birth_date = parse_yyyymmdd(&value[6..14])
            .ok_or(FieldError::IdNumber("birth date is not a real date"))?;
        if birth_date < NaiveDate::from_ymd_opt(1900, 1, 1).expect("valid date") {
            return Err(FieldError::IdNumber("birth date is before 1900"));
        }
        if birth_date > today {
            return Err(FieldError::IdNumber("birth date is in the future"));
        }
        let region: u32 = value[0..6].parse().unwrap_or(0);
        region_in_use(region, birth_date.year()).map_err(FieldError::IdNumber)?;
        let expected = id_check_char(&value[..17]);
        if expected != value.chars().last() {
            return Err(FieldError::IdNumber("check character does not match"));
        }
        Ok(IdNumber { value, birth_date })
    }

    /// The plaintext (normalised) ID number. The one way to read it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The masked form: first 3, eleven `*`, last 4.
    pub fn masked(&self) -> String {
        mask_id_number(&self.value)
    }

    /// The birth date encoded in digits 7–14.
    pub fn birth_date(&self) -> NaiveDate {
        self.birth_date
    }
}

impl fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdNumber").field(&self.masked()).finish()
    }
}

impl fmt::Display for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

// ---------------------------------------------------------------------------------------------
// Mobile
// ---------------------------------------------------------------------------------------------

/// A validated mainland mobile number, stored as the bare 11 digits.
/// `Debug` and `Display` show only the masked form.
#[derive(Clone, PartialEq, Eq)]
pub struct Mobile {
    value: String,
}

fn is_11_digits(s: &str) -> bool {
    s.len() == 11 && s.bytes().all(|b| b.is_ascii_digit())
}

fn valid_mobile_prefix(digits: &[u8]) -> bool {
    matches!(
        (digits[0], digits[1], digits[2]),
        (b'1', b'3', b'0'..=b'9')
            | (b'1', b'4', b'5'..=b'9')
            | (b'1', b'5', b'0'..=b'3' | b'5'..=b'9')
            | (b'1', b'6', b'2' | b'5' | b'6' | b'7')
            | (b'1', b'7', b'0'..=b'8')
            | (b'1', b'8', b'0'..=b'9')
            | (b'1', b'9', b'0'..=b'3' | b'5'..=b'9')
    )
}

impl Mobile {
    /// Normalise (full-width forms read as ASCII, drop spaces and `-`, one leading `+86`/`0086`/`86` before 11 digits) and validate.
    pub fn parse(raw: &str) -> Result<Mobile, FieldError> {
        if has_control(raw) {
            return Err(FieldError::Mobile("must not contain control characters"));
        }
        let compact: String = raw
            .trim()
            .chars()
            .map(fullwidth_to_ascii)
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        if compact.is_empty() {
            return Err(FieldError::Mobile("must not be empty"));
        }
        let mut digits = compact.as_str();
        for prefix in ["+86", "0086", "86"] {
            if let Some(rest) = digits.strip_prefix(prefix) {
                if is_11_digits(rest) {
                    digits = rest;
                    break;
                }
            }
        }
        if !is_11_digits(digits) {
            return Err(FieldError::Mobile("must be 11 digits"));
        }
        if !valid_mobile_prefix(digits.as_bytes()) {
            return Err(FieldError::Mobile("not a mainland mobile number prefix"));
        }
        Ok(Mobile {
            value: digits.to_owned(),
        })
    }

    /// The plaintext 11 digits. The one way to read them.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The masked form: first 3, `****`, last 4.
    pub fn masked(&self) -> String {
        mask_mobile(&self.value)
    }
}

impl fmt::Debug for Mobile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Mobile").field(&self.masked()).finish()
    }
}

impl fmt::Display for Mobile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

// ---------------------------------------------------------------------------------------------
// Name
// ---------------------------------------------------------------------------------------------

/// A validated personal name (Chinese or Latin script), whitespace-normalised.
/// `Debug` and `Display` show only the masked form.
#[derive(Clone, PartialEq, Eq)]
pub struct Name {
    value: String,
}

const MIDDLE_DOT: char = '\u{00B7}';

/// A Han character of a Chinese name: the CJK Unified Ideographs and Extension A, the
/// compatibility ideographs, the Supplementary and Tertiary Ideographic Planes (Extensions B–J,
/// planes 2 and 3 are set aside for them), and `〇` (U+3007, the ideographic zero used in names).
fn is_cjk_ideograph(c: char) -> bool {
    matches!(
        c,
        '\u{3007}'
            | '\u{3400}'..='\u{4DBF}'
            | '\u{4E00}'..='\u{9FFF}'
            | '\u{F900}'..='\u{FAFF}'
            | '\u{20000}'..='\u{2FFFD}'
            | '\u{30000}'..='\u{3FFFD}'
    )
}

/// The dot characters accepted between the parts of a Chinese name, all stored as U+00B7
/// MIDDLE DOT (the one the Ministry of Public Security's household registers use): the middle
/// dot's look-alikes that input methods and fonts produce — GREEK ANO TELEIA (U+0387, which NFC
/// also turns into U+00B7), BULLET, HYPHENATION POINT, BULLET OPERATOR, DOT OPERATOR, WORD
/// SEPARATOR MIDDLE DOT, LATIN LETTER SINOLOGICAL DOT, KATAKANA and HALFWIDTH KATAKANA MIDDLE
/// DOT — and the full stops `.` and `．`.
fn is_name_dot(c: char) -> bool {
    matches!(
        c,
        '\u{00B7}'
            | '\u{0387}'
            | '\u{2022}'
            | '\u{2027}'
            | '\u{2219}'
            | '\u{22C5}'
            | '\u{2E31}'
            | '\u{A78F}'
            | '\u{30FB}'
            | '\u{FF65}'
            | '\u{FF0E}'
            | '.'
    )
}

/// ASCII letters and the letters of Latin-1 Supplement, Latin Extended-A/B and Latin Extended Additional.
fn is_latin_letter(c: char) -> bool {
    c.is_ascii_alphabetic()
        || (matches!(
            c,
            '\u{00C0}'..='\u{024F}' | '\u{1E00}'..='\u{1EFF}'
        ) && c.is_alphabetic())
}

fn is_latin_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '\'' | '.')
}

fn parse_chinese_name(s: &str) -> Result<String, FieldError> {
    if s.contains(' ') {
        return Err(FieldError::Name("a Chinese name must not contain spaces"));
    }
    let mut out = String::with_capacity(s.len());
    let mut prev_dot = true; // treats the start like a dot: no leading dot
    for c in s.chars() {
        if is_cjk_ideograph(c) {
            out.push(c);
            prev_dot = false;
        } else if is_name_dot(c) {
            if out.is_empty() {
                return Err(FieldError::Name("must not start with a dot"));
            }
            if prev_dot {
                return Err(FieldError::Name("must not contain two dots in a row"));
            }
            out.push(MIDDLE_DOT);
            prev_dot = true;
        } else if is_latin_letter(c) {
            return Err(FieldError::Name(
                "must not mix Chinese and Latin characters",
            ));
        } else if c.is_numeric() {
            return Err(FieldError::Name("must not contain digits"));
        } else {
            return Err(FieldError::Name("contains a character that is not allowed"));
        }
    }
    if prev_dot {
        return Err(FieldError::Name("must not end with a dot"));
    }
    let n = out.chars().count();
    if n < 2 {
        return Err(FieldError::Name("must be at least 2 characters"));
    }
    if n > 30 {
        return Err(FieldError::Name(
            "a Chinese name must be at most 30 characters",
        ));
    }
    Ok(out)
}

fn parse_latin_name(s: &str) -> Result<String, FieldError> {
    let mut prev: Option<char> = None;
    for c in s.chars() {
        if is_latin_letter(c) {
            // fine anywhere
        } else if is_latin_separator(c) {
            match prev {
                None => return Err(FieldError::Name("must start with a letter")),
                Some(p) if is_latin_letter(p) => {}
                // "J. R. Smith": a space may follow an abbreviating dot.
                Some('.') if c == ' ' => {}
                Some(_) => {
                    return Err(FieldError::Name("must not contain two separators in a row"))
                }
            }
        } else if c.is_numeric() {
            return Err(FieldError::Name("must not contain digits"));
        } else {
            return Err(FieldError::Name("contains a character that is not allowed"));
        }
        prev = Some(c);
    }
    // A trailing abbreviating dot ("Jr.") is allowed; a trailing space, `-` or `'` is not.
    if matches!(prev, Some(' ' | '-' | '\'')) {
        return Err(FieldError::Name("must end with a letter"));
    }
    let n = s.chars().count();
    if n < 2 {
        return Err(FieldError::Name("must be at least 2 characters"));
    }
    if n > 64 {
        return Err(FieldError::Name(
            "a Latin-script name must be at most 64 characters",
        ));
    }
    Ok(s.to_owned())
}

impl Name {
    /// NFC-normalise (a decomposed `e` + U+0301 is `é`; a compatibility ideograph is its unified
    /// form), trim, collapse whitespace, and accept a Chinese name (with `·` between parts) or a
    /// Latin-script name.
    pub fn parse(raw: &str) -> Result<Name, FieldError> {
        if has_control(raw) {
            return Err(FieldError::Name("must not contain control characters"));
        }
        let composed: String = raw.nfc().collect();
        let collapsed = composed.split_whitespace().collect::<Vec<_>>().join(" ");
        if collapsed.is_empty() {
            return Err(FieldError::Name("must not be empty"));
        }
        let value = if collapsed.chars().any(is_cjk_ideograph) {
            parse_chinese_name(&collapsed)?
        } else {
            parse_latin_name(&collapsed)?
        };
        Ok(Name { value })
    }

    /// The plaintext (normalised) name. The one way to read it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The masked form: first character, one `*` per remaining character.
    pub fn masked(&self) -> String {
        mask_name(&self.value)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Name").field(&self.masked()).finish()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

// ---------------------------------------------------------------------------------------------
// Validity period
// ---------------------------------------------------------------------------------------------

/// The end of an ID card's validity period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidityEnd {
    Date(NaiveDate),
    LongTerm,
}

/// An ID card's validity period (not PII).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub start: NaiveDate,
    pub end: ValidityEnd,
}

/// Whether `s` holds a control character other than whitespace (a NUL, an escape): never a
/// part of a name, number or date, and refused before anything is stored or sent.
fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control() && !c.is_whitespace())
}

fn parse_date_field(field: &'static str, raw: &str) -> Result<NaiveDate, FieldError> {
    if has_control(raw) {
        return Err(FieldError::Date {
            field,
            reason: "must not contain control characters",
        });
    }
    let s: String = raw.trim().chars().map(fullwidth_to_ascii).collect();
    let s = s.as_str();
    if s.is_empty() {
        return Err(FieldError::Date {
            field,
            reason: "must not be empty",
        });
    }
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::Date {
            field,
            reason: "must be YYYYMMDD",
        });
    }
    parse_yyyymmdd(s).ok_or(FieldError::Date {
        field,
        reason: "is not a real date",
    })
}

fn is_long_term(s: &str) -> bool {
    s == "长期"
        || s.eq_ignore_ascii_case("long-term")
        || s.eq_ignore_ascii_case("longterm")
        || s.eq_ignore_ascii_case("long_term")
}

impl Validity {
    /// Parse `YYYYMMDD` dates; `end` may be `long-term` (`长期`, `longterm`, `long_term`); end after start.
    pub fn parse(start: &str, end: &str) -> Result<Validity, FieldError> {
        let start = parse_date_field("validity_start", start)?;
        let end_trimmed = end.trim();
        let end = if is_long_term(end_trimmed) {
            ValidityEnd::LongTerm
        } else {
            let end = parse_date_field("validity_end", end_trimmed)?;
            if end <= start {
                return Err(FieldError::Date {
                    field: "validity_end",
                    reason: "must be after validity_start",
                });
            }
            ValidityEnd::Date(end)
        };
        Ok(Validity { start, end })
    }
}

/// Format a date as `YYYYMMDD`.
pub fn format_yyyymmdd(d: NaiveDate) -> String {
    format!("{:04}{:02}{:02}", d.year(), d.month(), d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn today() -> NaiveDate {
        d(2026, 11, 23)
    }

    fn id(s: &str) -> Result<IdNumber, FieldError> {
        IdNumber::parse(s, today())
    }

    /// Builds a well-formed ID number from its first 17 digits.
    fn with_check(first17: &str) -> String {
        format!("{first17}{}", id_check_char(first17).unwrap())
    }

    // --- ID number ------------------------------------------------------------------------

    #[test]
    fn id_vendor_doc_example_is_valid() {
        let v = id("11010519491231002X").unwrap();
        assert_eq!(v.expose(), "11010519491231002X");
        assert_eq!(v.birth_date(), d(1949, 12, 31));
        assert_eq!(v.masked(), "110***********002X");
    }

    #[test]
    fn id_lower_case_x_and_whitespace_normalised() {
        let v = id("  11010519491231002x\t").unwrap();
        assert_eq!(v.expose(), "11010519491231002X");
        assert_eq!(v, id("11010519491231002X").unwrap());
    }

    #[test]
    fn id_bad_check_char() {
        assert_eq!(
            id("110105194912310021"),
            Err(FieldError::IdNumber("check character does not match"))
        );
    }

    #[test]
    fn id_tencent_doc_example_1654_rejected() {
        assert_eq!(
            id("11204416541220243X"),
            Err(FieldError::IdNumber("birth date is before 1900"))
        );
        // Even with a correct check character.
        assert_eq!(with_check("11204416541220243"), "112044165412202434");
        assert!(id("112044165412202434").is_err());
    }

    #[test]
    fn id_future_birth_date_rejected() {
        let tomorrow = with_check("11010520261124001");
        assert_eq!(
            id(&tomorrow),
            Err(FieldError::IdNumber("birth date is in the future"))
        );
        let on_today = with_check("11010520261123001");
        assert_eq!(id(&on_today).unwrap().birth_date(), today());
        let earliest = with_check("11010519000101001");
        assert_eq!(id(&earliest).unwrap().birth_date(), d(1900, 1, 1));
        let too_early = with_check("11010518991231001");
        assert_eq!(
            id(&too_early),
            Err(FieldError::IdNumber("birth date is before 1900"))
        );
    }

    #[test]
    fn id_wrong_length_rejected() {
        let e = Err(FieldError::IdNumber("must be 18 characters"));
        assert_eq!(id("11010519491231002"), e);
        assert_eq!(id("11010519491231002X1"), e);
        assert_eq!(id("110105194912310021X"), e);
        assert_eq!(id(""), Err(FieldError::IdNumber("must not be empty")));
        assert_eq!(id("   "), Err(FieldError::IdNumber("must not be empty")));
    }

    #[test]
    fn id_bad_characters_rejected() {
        let e = Err(FieldError::IdNumber(
            "must be 17 digits followed by a digit or X",
        ));
        assert_eq!(id("1101051949123100XX"), e);
        assert_eq!(id("11010519491231002Y"), e);
        assert_eq!(id("\u{1D7CF}\u{1D7CF}010519491231002X"), e); // mathematical digits
        assert_eq!(id("11010519491231002😀"), e);
        assert_eq!(id("11010519491 31002X"), e);
    }

    #[test]
    fn id_unknown_region_rejected() {
        let unknown = Err(FieldError::IdNumber("unknown region code"));
        assert_eq!(id(&with_check("99010519491231002")), unknown);
        // Province prefixes that do not exist, and counties that do not exist in real provinces.
        for region in [
            "100105", "160105", "200105", "240105", "300105", "380105", "400105", "470105",
            "550105", "600105", "660105", "700105", "720105", "800105", "840105", "900105",
            "110199", "119900", "710101", "810101", "830101",
        ] {
            let s = with_check(&format!("{region}19491231002"));
            assert_eq!(id(&s), unknown, "{region}");
        }
        for region in [
            "110000", "110105", "150102", "210102", "230102", "310101", "370102", "410102",
            "460105", "500101", "540102", "610102", "650102", "710000", "810000", "820000",
            "830000",
        ] {
            let s = with_check(&format!("{region}19491231002"));
            assert!(id(&s).is_ok(), "{region}");
        }
    }

    #[test]
    fn id_region_code_must_not_be_abolished_before_the_birth_year() {
        // 110103 (Chongwen district, Beijing) was abolished in 2010; a year's grace.
        assert!(id(&with_check("11010320101231002")).is_ok());
        assert!(id(&with_check("11010320111231002")).is_ok());
        assert_eq!(
            id(&with_check("11010320120101002")),
            Err(FieldError::IdNumber(
                "region code was abolished before the birth year"
            ))
        );
        // 110111 (Fangshan district) was introduced in 1986: someone born earlier got it at
        // registration, so it is accepted (python-stdnum refuses it; documented difference).
        assert!(id(&with_check("11011119491231002")).is_ok());
        // A code reused with two periods: 120110 was Dongjiao district until 1991, Dongli since 1992.
        assert!(id(&with_check("12011019801231002")).is_ok());
        assert!(id(&with_check("12011020001231002")).is_ok());
        // The residence permits' codes whatever the birth year (810000 entered GB/T 2260 in 1997).
        assert!(id(&with_check("81000019491231002")).is_ok());
        assert!(id(&with_check("83000020001231002")).is_ok());
    }

    #[test]
    fn a_code_newer_than_the_table_is_accepted_after_its_data_year_only() {
        let year = i32::from(regions::DATA_YEAR);
        // 110199 does not exist (yet): refused for anyone born up to the table's year.
        assert_eq!(
            id(&with_check(&format!("110199{year}0101002"))),
            Err(FieldError::IdNumber("unknown region code"))
        );
        // Someone born after it may carry a code created since, in a known province.
        let later = format!("110199{}0101002", year + 1);
        let today = NaiveDate::from_ymd_opt(year + 2, 1, 1).unwrap();
        assert!(IdNumber::parse(&with_check(&later), today).is_ok());
        let nowhere = format!("990199{}0101002", year + 1);
        assert_eq!(
            IdNumber::parse(&with_check(&nowhere), today),
            Err(FieldError::IdNumber("unknown region code"))
        );
    }

    #[test]
    fn region_table_is_sorted_and_well_formed() {
        assert!(regions::PERIODS.len() > 6_000);
        for pair in regions::PERIODS.windows(2) {
            assert!(pair[0] < pair[1], "{:?} then {:?}", pair[0], pair[1]);
        }
        for &(code, first, last) in regions::PERIODS {
            assert!((110_000..=829_999).contains(&code), "{code}");
            assert!(first <= last, "{code}");
        }
    }

    #[test]
    fn full_width_numbers_and_dates_read_as_ascii() {
        assert_eq!(
            id("１１０１０５１９４９１２３１００２Ｘ").unwrap().expose(),
            "11010519491231002X"
        );
        assert_eq!(
            id("１１０１０５１９４９１２３１００２ｘ").unwrap().expose(),
            "11010519491231002X"
        );
        assert_eq!(
            Mobile::parse("＋８６ １３８－１２３４－５６７８")
                .unwrap()
                .expose(),
            "13812345678"
        );
        let v = Validity::parse("２０２０0101", "２０４０0101").unwrap();
        assert_eq!(v.start, d(2020, 1, 1));
        // Other digit forms (mathematical bold, Arabic-Indic) are refused, not guessed.
        assert_eq!(
            id("\u{1D7CF}1010519491231002X"),
            Err(FieldError::IdNumber(
                "must be 17 digits followed by a digit or X"
            ))
        );
        assert_eq!(
            Mobile::parse("١٣٨١٢٣٤٥٦٧٨"),
            Err(FieldError::Mobile("must be 11 digits"))
        );
    }

    #[test]
    fn id_feb_29_leap_and_non_leap() {
        let leap = with_check("31010120000229001");
        assert_eq!(leap, "310101200002290015");
        assert_eq!(id(&leap).unwrap().birth_date(), d(2000, 2, 29));
        let leap2024 = with_check("11010520240229888");
        assert_eq!(leap2024, "110105202402298881");
        assert!(id(&leap2024).is_ok());
        let non_leap = with_check("31010119000229001"); // 1900 is not a leap year
        assert_eq!(
            id(&non_leap),
            Err(FieldError::IdNumber("birth date is not a real date"))
        );
        let non_leap2 = with_check("31010120230229001");
        assert_eq!(
            id(&non_leap2),
            Err(FieldError::IdNumber("birth date is not a real date"))
        );
        let month13 = with_check("31010120231301001");
        assert!(id(&month13).is_err());
    }

    #[test]
    fn check_char_known_answers() {
        assert_eq!(id_check_char("11010519491231002"), Some('X'));
        assert_eq!(id_check_char("44030819990101123"), Some('4'));
        assert_eq!(id_check_char("51010719850714382"), Some('5'));
        assert_eq!(id_check_char("65010219700101555"), Some('6'));
        assert_eq!(id_check_char("81000019920815000"), Some('0'));
        assert_eq!(id_check_char("1101051949123100"), None);
        assert_eq!(id_check_char("110105194912310021"), None);
        assert_eq!(id_check_char("1101051949123100X"), None);
        assert_eq!(id_check_char("１1010519491231002"), None);
        assert!(id("440308199901011234").is_ok());
        assert!(id("510107198507143825").is_ok());
        assert!(id("650102197001015556").is_ok());
        assert!(id("810000199208150000").is_ok());
    }

    #[test]
    fn id_errors_do_not_echo_value() {
        for s in ["110105194912310021", "99010519491231002X", "123"] {
            let e = id(s).unwrap_err();
            assert!(!e.to_string().contains(s));
            assert_eq!(e.reason_code(), ReasonCode::InvalidIdNumber);
        }
    }

    // --- Mobile ---------------------------------------------------------------------------

    #[test]
    fn mobile_ok_and_normalised() {
        assert_eq!(
            Mobile::parse("13812345678").unwrap().expose(),
            "13812345678"
        );
        for raw in [
            "+86 138-1234-5678",
            "+8613812345678",
            "008613812345678",
            "8613812345678",
            " 138 1234 5678 ",
            "138-1234-5678",
        ] {
            assert_eq!(Mobile::parse(raw).unwrap().expose(), "13812345678", "{raw}");
        }
        assert_eq!(
            Mobile::parse("13812345678").unwrap().masked(),
            "138****5678"
        );
    }

    #[test]
    fn mobile_prefixes() {
        for ok in [
            "13012345678",
            "14512345678",
            "14912345678",
            "15012345678",
            "15312345678",
            "15512345678",
            "16212345678",
            "16512345678",
            "16712345678",
            "17012345678",
            "17812345678",
            "18012345678",
            "18912345678",
            "19012345678",
            "19312345678",
            "19512345678",
            "19912345678",
        ] {
            assert!(Mobile::parse(ok).is_ok(), "{ok}");
        }
        let bad_prefix = Err(FieldError::Mobile("not a mainland mobile number prefix"));
        for bad in [
            "14012345678",
            "14412345678",
            "15412345678",
            "16012345678",
            "16412345678",
            "16812345678",
            "17912345678",
            "19412345678",
            "12345678901",
            "10012345678",
            "23812345678",
        ] {
            assert_eq!(Mobile::parse(bad), bad_prefix, "{bad}");
        }
    }

    #[test]
    fn mobile_wrong_shape_rejected() {
        let e = Err(FieldError::Mobile("must be 11 digits"));
        assert_eq!(Mobile::parse("1381234567"), e);
        assert_eq!(Mobile::parse("138123456789"), e);
        assert_eq!(Mobile::parse("+86 1381234567"), e);
        assert_eq!(Mobile::parse("+1 13812345678"), e);
        assert_eq!(Mobile::parse("+86+8613812345678"), e);
        assert_eq!(Mobile::parse("1381234567a"), e);
        assert_eq!(Mobile::parse("\u{1D7CF}3812345678"), e);
        assert_eq!(
            Mobile::parse(""),
            Err(FieldError::Mobile("must not be empty"))
        );
        assert_eq!(
            Mobile::parse(" - "),
            Err(FieldError::Mobile("must not be empty"))
        );
        let err = Mobile::parse("1381234567").unwrap_err();
        assert!(!err.to_string().contains("1381234567"));
        assert_eq!(err.reason_code(), ReasonCode::InvalidMobile);
    }

    // --- Name -----------------------------------------------------------------------------

    #[test]
    fn chinese_names_ok() {
        for n in ["张三", "欧阳娜娜", "阿依古丽·买买提"] {
            assert_eq!(Name::parse(n).unwrap().expose(), n);
        }
        for raw in [
            "阿依古丽•买买提",
            "阿依古丽・买买提",
            "阿依古丽‧买买提",
            "阿依古丽．买买提",
            "阿依古丽.买买提",
            "阿依古丽\u{0387}买买提",
            "阿依古丽\u{2219}买买提",
            "阿依古丽\u{22C5}买买提",
            "阿依古丽\u{2E31}买买提",
            "阿依古丽\u{A78F}买买提",
            "阿依古丽\u{FF65}买买提",
        ] {
            assert_eq!(
                Name::parse(raw).unwrap().expose(),
                "阿依古丽·买买提",
                "{raw}"
            );
        }
        assert_eq!(Name::parse("  张三 ").unwrap().expose(), "张三");
        assert_eq!(Name::parse("𠀀三").unwrap().expose(), "𠀀三"); // extension B
        for n in ["李〇", "王\u{30000}", "陈\u{31350}", "张\u{2EBF0}"] {
            // 〇, extensions G, H and I
            assert_eq!(Name::parse(n).unwrap().expose(), n, "{n:?}");
        }
        // A compatibility ideograph is stored as its unified form (NFC): U+F900 is U+8C48.
        assert_eq!(Name::parse("\u{F900}三").unwrap().expose(), "\u{8C48}三");
        assert!(Name::parse(&"张".repeat(30)).is_ok());
        assert!(Name::parse(&"张".repeat(31)).is_err());
    }

    #[test]
    fn latin_names_ok() {
        for n in [
            "Zhang San",
            "Wei Xiaobao",
            "O'Neil",
            "Jean-Luc Picard",
            "José Müller",
            "Ñoño",
            "J. R. Smith",
            "Martin King Jr.",
        ] {
            assert_eq!(Name::parse(n).unwrap().expose(), n);
        }
        assert_eq!(
            Name::parse("  Zhang \t  San\n").unwrap().expose(),
            "Zhang San"
        );
        // Decomposed accents are composed (NFC): the same name, the same stored value.
        assert_eq!(
            Name::parse("Jose\u{301} Mu\u{308}ller").unwrap().expose(),
            "José Müller"
        );
        assert!(Name::parse(&"a".repeat(64)).is_ok());
        assert!(Name::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn names_rejected() {
        let cases = [
            ("张3", "must not contain digits"),
            ("·张三", "must not start with a dot"),
            ("张··三", "must not contain two dots in a row"),
            ("张三·", "must not end with a dot"),
            ("张.·三", "must not contain two dots in a row"),
            ("Zhang三", "must not mix Chinese and Latin characters"),
            ("张 三", "a Chinese name must not contain spaces"),
            ("张", "must be at least 2 characters"),
            ("X", "must be at least 2 characters"),
            ("😀😀", "contains a character that is not allowed"),
            ("张😀", "contains a character that is not allowed"),
            ("Zhang\u{0}San", "must not contain control characters"),
            ("\u{0}张三", "must not contain control characters"),
            ("张三\u{1b}", "must not contain control characters"),
            ("Zh4ng", "must not contain digits"),
            ("-Zhang", "must start with a letter"),
            ("Zhang-", "must end with a letter"),
            ("Zhang--San", "must not contain two separators in a row"),
            ("Zhang San'", "must end with a letter"),
            ("Ζήνων", "contains a character that is not allowed"), // Greek
            ("Иван", "contains a character that is not allowed"),  // Cyrillic
        ];
        for (raw, reason) in cases {
            let e = Name::parse(raw).unwrap_err();
            assert_eq!(e, FieldError::Name(reason), "{raw:?}");
            assert!(!e.to_string().contains(raw));
            assert_eq!(e.reason_code(), ReasonCode::InvalidName);
        }
        assert_eq!(
            Name::parse(" \t\n "),
            Err(FieldError::Name("must not be empty"))
        );
        assert_eq!(Name::parse(""), Err(FieldError::Name("must not be empty")));
    }

    // --- PII formatting -------------------------------------------------------------------

    #[test]
    fn debug_and_display_show_only_the_mask() {
        let i = id("11010519491231002X").unwrap();
        let m = Mobile::parse("13812345678").unwrap();
        let n = Name::parse("欧阳娜娜").unwrap();
        let l = Name::parse("Zhang San").unwrap();
        for (plain, dbg, disp, mask) in [
            (
                "11010519491231002X",
                format!("{i:?}"),
                i.to_string(),
                i.masked(),
            ),
            ("13812345678", format!("{m:?}"), m.to_string(), m.masked()),
            ("欧阳娜娜", format!("{n:?}"), n.to_string(), n.masked()),
            ("Zhang San", format!("{l:?}"), l.to_string(), l.masked()),
        ] {
            assert!(!dbg.contains(plain), "{dbg}");
            assert!(!disp.contains(plain), "{disp}");
            assert!(dbg.contains(&mask), "{dbg}");
            assert_eq!(disp, mask);
        }
        assert_eq!(format!("{i:?}"), "IdNumber(\"110***********002X\")");
        assert_eq!(m.to_string(), "138****5678");
        assert_eq!(n.to_string(), "欧***");
        assert!(!format!("{l:#?}").contains("Zhang"));
        // Inside containers too.
        let all = format!("{:?}", (Some(&i), vec![&m], [&n]));
        assert!(!all.contains("1949") && !all.contains("12345") && !all.contains("阳"));
    }

    // --- Validity -------------------------------------------------------------------------

    #[test]
    fn validity_ok() {
        let v = Validity::parse("20201001", "20301001").unwrap();
        assert_eq!(v.start, d(2020, 10, 1));
        assert_eq!(v.end, ValidityEnd::Date(d(2030, 10, 1)));
        for lt in [
            "long-term",
            "LONG-TERM",
            "长期",
            "longterm",
            "LongTerm",
            "long_term",
            " 长期 ",
        ] {
            let v = Validity::parse("20201001", lt).unwrap();
            assert_eq!(v.end, ValidityEnd::LongTerm, "{lt}");
        }
    }

    #[test]
    fn validity_rejected() {
        assert_eq!(
            Validity::parse("20301001", "20201001"),
            Err(FieldError::Date {
                field: "validity_end",
                reason: "must be after validity_start"
            })
        );
        assert_eq!(
            Validity::parse("20201001", "20201001")
                .unwrap_err()
                .to_string(),
            "validity_end: must be after validity_start"
        );
        assert_eq!(
            Validity::parse("20230230", "20330230"),
            Err(FieldError::Date {
                field: "validity_start",
                reason: "is not a real date"
            })
        );
        assert_eq!(
            Validity::parse("20230228", "20230230"),
            Err(FieldError::Date {
                field: "validity_end",
                reason: "is not a real date"
            })
        );
        assert_eq!(
            Validity::parse("2020-10-01", "20301001"),
            Err(FieldError::Date {
                field: "validity_start",
                reason: "must be YYYYMMDD"
            })
        );
        assert_eq!(
            Validity::parse("20201001", "long term forever"),
            Err(FieldError::Date {
                field: "validity_end",
                reason: "must be YYYYMMDD"
            })
        );
        assert_eq!(
            Validity::parse("", "长期"),
            Err(FieldError::Date {
                field: "validity_start",
                reason: "must not be empty"
            })
        );
        assert_eq!(
            Validity::parse("20201001", "\u{1D7D0}0301001")
                .unwrap_err()
                .reason_code(),
            ReasonCode::InvalidDate
        );
    }

    #[test]
    fn format_yyyymmdd_known() {
        assert_eq!(format_yyyymmdd(d(2020, 10, 1)), "20201001");
        assert_eq!(format_yyyymmdd(d(1949, 12, 31)), "19491231");
        assert_eq!(format_yyyymmdd(d(999, 1, 2)), "09990102");
    }

    // --- FieldError -----------------------------------------------------------------------

    #[test]
    fn field_error_reason_codes_and_messages() {
        use ReasonCode as R;
        let cases = [
            (
                FieldError::Missing("name"),
                R::InvalidName,
                "name is required",
            ),
            (
                FieldError::Missing("id_number"),
                R::InvalidIdNumber,
                "id_number is required",
            ),
            (
                FieldError::Missing("mobile"),
                R::InvalidMobile,
                "mobile is required",
            ),
            (
                FieldError::Missing("validity_start"),
                R::InvalidDate,
                "validity_start is required",
            ),
            (
                FieldError::Missing("validity_end"),
                R::InvalidDate,
                "validity_end is required",
            ),
            (
                FieldError::Missing("request_id"),
                R::InvalidRequest,
                "request_id is required",
            ),
            (
                FieldError::IdNumber("x"),
                R::InvalidIdNumber,
                "id_number: x",
            ),
            (FieldError::Mobile("x"), R::InvalidMobile, "mobile: x"),
            (FieldError::Name("x"), R::InvalidName, "name: x"),
            (
                FieldError::Date {
                    field: "validity_end",
                    reason: "x",
                },
                R::InvalidDate,
                "validity_end: x",
            ),
        ];
        for (e, code, msg) in cases {
            assert_eq!(e.reason_code(), code, "{e}");
            assert_eq!(e.to_string(), msg);
        }
    }

    #[test]
    fn parsers_never_panic_on_odd_input() {
        let mut odd: Vec<String> = [
            "",
            " ",
            "\u{0}",
            "😀",
            "👨‍👩‍👧‍👦",
            "e\u{301}",
            "\u{202e}13812345678",
            "𠀀𠀁𠀂𠀃𠀄𠀅𠀆𠀇𠀈𠀀𠀁𠀂𠀃𠀄𠀅𠀆𠀇𠀈",
            "+86",
            "0086",
            "86",
            "·",
            "..",
            "'",
            "长期",
            "1101051949123100２X",
            "2020100１",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        odd.push("ß".repeat(18));
        odd.push("😀".repeat(11));
        for s in &odd {
            let _ = IdNumber::parse(s, today());
            let _ = Mobile::parse(s);
            let _ = Name::parse(s);
            let _ = Validity::parse(s, s);
        }
    }
}
