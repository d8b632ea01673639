//! The one row shape of every vendor's code tables (`<vendor>/codes.rs`): the vendor's code,
//! how it is matched, what it pairs with, its class and billing (a [`Classification`]), what it
//! means and where that is documented — and the one lookup over such a table.

use super::Classification;

/// How a row's `code` matches what the vendor sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matching {
    /// The whole code.
    Exact,
    /// The code, or the code followed by `.` and anything (`Throttling` covers `Throttling.Api`).
    Family,
    /// The start of the text (a message with a variable tail).
    Prefix,
    /// Anywhere in the text.
    Contains,
}

/// One row of a vendor's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeRow {
    /// The vendor's code or text.
    pub code: &'static str,
    /// How it matches.
    pub matching: Matching,
    /// For a code that only means this together with another (a SubCode with its BizCode or
    /// `Passed` value): that other code.
    pub pairs_with: Option<&'static str>,
    /// The HTTP status the vendor documents it with, when that is part of what it says.
    pub status: Option<u16>,
    /// Class, billing and the shared reason code.
    pub classification: Classification,
    /// What the vendor says it means.
    pub meaning: &'static str,
    /// Where the row comes from.
    pub source: &'static str,
}

impl CodeRow {
    /// A row matched exactly.
    pub const fn exact(
        code: &'static str,
        classification: Classification,
        meaning: &'static str,
        source: &'static str,
    ) -> CodeRow {
        CodeRow {
            code,
            matching: Matching::Exact,
            pairs_with: None,
            status: None,
            classification,
            meaning,
            source,
        }
    }

    /// A row matched as the code or any `code.<more>`.
    pub const fn family(
        code: &'static str,
        classification: Classification,
        meaning: &'static str,
        source: &'static str,
    ) -> CodeRow {
        CodeRow {
            matching: Matching::Family,
            ..CodeRow::exact(code, classification, meaning, source)
        }
    }

    /// The same row, matched another way.
    pub const fn matched(self, matching: Matching) -> CodeRow {
        CodeRow { matching, ..self }
    }

    /// The same row, documented with HTTP `status`.
    pub const fn with_status(self, status: u16) -> CodeRow {
        CodeRow {
            status: Some(status),
            ..self
        }
    }

    /// The same row, meaning this only together with `other`.
    pub const fn paired(self, other: &'static str) -> CodeRow {
        CodeRow {
            pairs_with: Some(other),
            ..self
        }
    }

    /// Whether `text` (trimmed) is this row's code.
    pub fn matches(&self, text: &str) -> bool {
        let text = text.trim();
        match self.matching {
            Matching::Exact => text == self.code,
            Matching::Family => {
                text == self.code
                    || text
                        .strip_prefix(self.code)
                        .is_some_and(|rest| rest.starts_with('.'))
            }
            Matching::Prefix => text.starts_with(self.code),
            Matching::Contains => text.contains(self.code),
        }
    }
}

/// The row of `table` for `text`: an exact row first, else the matching row with the longest
/// code (`RequestLimitExceeded.UinLimitExceeded` → `RequestLimitExceeded`).
pub fn find<'a>(table: &'a [CodeRow], text: &str) -> Option<&'a CodeRow> {
    table
        .iter()
        .find(|r| r.matching == Matching::Exact && r.matches(text))
        .or_else(|| {
            table
                .iter()
                .filter(|r| r.matching != Matching::Exact && r.matches(text))
                .max_by_key(|r| r.code.len())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Classification = Classification::TRANSIENT;
    const P: Classification = Classification::PROVIDER_WIDE;

    #[test]
    fn exact_rows_first_then_the_longest_match() {
        let table = [
            CodeRow::family("Throttling", T, "", "s"),
            CodeRow::family("Throttling.User", P, "", "s"),
            CodeRow::exact("Throttling.Api", P, "", "s"),
            CodeRow::exact("Invalid AppCode", P, "", "s").matched(Matching::Prefix),
            CodeRow::exact("Throttled by ", T, "", "s").matched(Matching::Contains),
        ];
        let code = |t: &str| find(&table, t).map(|r| r.code);
        assert_eq!(code("Throttling"), Some("Throttling"));
        assert_eq!(code("Throttling.Other"), Some("Throttling"));
        assert_eq!(code("Throttling.User.X"), Some("Throttling.User"));
        assert_eq!(code("Throttling.Api"), Some("Throttling.Api"));
        assert_eq!(code("ThrottlingX"), None);
        assert_eq!(code(" Invalid AppCode `x` "), Some("Invalid AppCode"));
        assert_eq!(
            code("TThrottled by GROUP Flow Control"),
            Some("Throttled by ")
        );
        assert_eq!(code(""), None);
        assert_eq!(
            CodeRow::exact("203", T, "", "s").paired("2").pairs_with,
            Some("2")
        );
    }

    #[test]
    fn every_vendor_table_is_well_formed() {
        let tables: Vec<(String, &[CodeRow])> = crate::providers::registry::VENDORS
            .iter()
            .flat_map(|v| {
                v.code_tables
                    .iter()
                    .map(move |(name, t)| (format!("{} {name}", v.name), *t))
            })
            .collect();
        assert!(tables.len() >= 11, "every vendor lists its tables");
        for (name, table) in &tables {
            assert!(!table.is_empty(), "{name}");
            for (i, r) in table.iter().enumerate() {
                assert!(
                    !r.code.is_empty() && !r.meaning.is_empty() && !r.source.is_empty(),
                    "{name}: {r:?}"
                );
                assert!(
                    table[..i]
                        .iter()
                        .all(|o| (o.code, o.pairs_with) != (r.code, r.pairs_with)),
                    "{name}: {} twice",
                    r.code
                );
                // Each row is what the lookup finds for its own code (no row is shadowed).
                if r.pairs_with.is_none() && r.matching == Matching::Exact {
                    assert_eq!(find(table, r.code), Some(r), "{name}: {}", r.code);
                }
            }
        }
    }
}
