//! Fixed-shape masking of names, ID numbers and mobile numbers, so PII never appears unmasked.

/// First character, then one `*` per remaining character; a one-character name is `*`.
pub fn mask_name(s: &str) -> String {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let rest = chars.count();
    if rest == 0 {
        return "*".to_owned();
    }
    let mut out = String::with_capacity(first.len_utf8() + rest);
    out.push(shown(first));
    out.extend(std::iter::repeat_n('*', rest));
    out
}

/// First 3 characters, exactly eleven `*`, last 4 for a 15–18 character input; anything else → `***`.
pub fn mask_id_number(s: &str) -> String {
    // Only a plausible length shows its ends: on a short or odd input the same 7 characters
    // would be most of the value.
    mask_ends(s, 11, 15..=18)
}

/// First 3 characters, `****`, last 4 for an 11-character input; anything else → `***`.
pub fn mask_mobile(s: &str) -> String {
    mask_ends(s, 4, 11..=11)
}

/// Keep the first 3 and last 4 characters around a fixed number of stars, so the length is hidden.
fn mask_ends(s: &str, stars: usize, shown_for: std::ops::RangeInclusive<usize>) -> String {
    let chars: Vec<char> = s.chars().collect();
    if !shown_for.contains(&chars.len()) {
        return "***".to_owned();
    }
    let mut out = String::with_capacity(7 * 4 + stars);
    out.extend(chars[..3].iter().copied().map(shown));
    out.extend(std::iter::repeat_n('*', stars));
    out.extend(chars[chars.len() - 4..].iter().copied().map(shown));
    out
}

/// A character a mask may show: a control character (which no store or log should hold) is
/// shown as `*`.
fn shown(c: char) -> char {
    if c.is_control() {
        '*'
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("欧阳娜娜"), "欧***");
        assert_eq!(mask_name("Zhang San"), "Z********");
        assert_eq!(mask_name("阿依古丽·买买提"), "阿*******");
        assert_eq!(mask_name("张"), "*");
        assert_eq!(mask_name("X"), "*");
        assert_eq!(mask_name(""), "");
        // A mask never shows a control character.
        assert_eq!(mask_name("\u{0}张三"), "***");
        assert_eq!(
            mask_id_number("\u{0}1010519491231002\u{7}"),
            "*10***********002*"
        );
    }

    #[test]
    fn id_numbers() {
        assert_eq!(mask_id_number("11010519491231002X"), "110***********002X");
        // Old 15-digit numbers still show their ends; other lengths show nothing (on a short
        // input the ends would be most of it).
        assert_eq!(mask_id_number("110105491231002"), "110***********1002");
        assert_eq!(mask_id_number("11010519491231"), "***");
        assert_eq!(mask_id_number("1101051949123100212"), "***");
        assert_eq!(mask_id_number("12345678"), "***");
        assert_eq!(mask_id_number("1234567"), "***");
        assert_eq!(mask_id_number(""), "***");
        assert_eq!(mask_id_number("11010519491231002X").chars().count(), 18);
    }

    #[test]
    fn mobiles() {
        assert_eq!(mask_mobile("13812345678"), "138****5678");
        assert_eq!(mask_mobile("12345678901"), "123****8901");
        assert_eq!(mask_mobile("+8613812345678"), "***");
        assert_eq!(mask_mobile("12345678"), "***");
        assert_eq!(mask_mobile("1381234"), "***");
        assert_eq!(mask_mobile(""), "***");
    }

    #[test]
    fn odd_unicode_never_panics() {
        let odd = [
            "😀",
            "😀😀",
            "👨‍👩‍👧‍👦👨‍👩‍👧‍👦",
            "e\u{301}e\u{301}e\u{301}e\u{301}",
            "\u{0}\u{1}\u{7f}",
            "𠀀𠀁𠀂𠀃𠀄𠀅𠀆𠀇𠀈",
            "\u{200b}\u{feff}\u{202e}abcdefgh",
            "ß",
        ];
        for s in odd {
            let _ = mask_name(s);
            let _ = mask_id_number(s);
            let _ = mask_mobile(s);
        }
        assert_eq!(mask_name("😀😀"), "😀*");
        assert_eq!(mask_id_number("𠀀𠀁𠀂𠀃𠀄𠀅𠀆𠀇𠀈"), "***");
        assert_eq!(
            mask_id_number("𠀀𠀁𠀂𠀃𠀄𠀅𠀆𠀇𠀈𠀀𠀁𠀂𠀃𠀄𠀅𠀆𠀇𠀈"),
            "𠀀𠀁𠀂***********𠀅𠀆𠀇𠀈"
        );
        assert_eq!(mask_mobile("ü123456789ä"), "ü12****789ä");
        assert_eq!(mask_mobile("😀😀😀😀😀😀😀"), "***");
    }
}
