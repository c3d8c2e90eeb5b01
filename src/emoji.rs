//! What a reaction may be: exactly one emoji.
//!
//! One extended grapheme cluster (UAX #29) that is built the way emoji are:
//! - a flag: two regional indicators (`🇫🇷`);
//! - a keycap: `0`-`9`, `#` or `*`, an optional VS16, then U+20E3 (`1️⃣`);
//! - a tag sequence: a black flag, tag characters, the cancel tag (`🏴󠁧󠁢󠁳󠁣󠁴󠁿`);
//! - otherwise one or more emoji joined by ZWJ (`👩‍💻`, `🏳️‍🌈`), each optionally followed by
//!   a variation selector (VS16 or VS15) and/or a skin-tone modifier (`👍🏽`).
//!
//! "An emoji" is a code point in the pictographic blocks (all of them, so emoji added to
//! those blocks after this was written pass too) or one of the older symbols that have
//! emoji forms (`❤`, `☀`, `©`, `↔`...). Whether a sequence is one the Unicode Consortium
//! recommends is not checked: a valid-looking but unknown ZWJ sequence renders as its
//! parts, which is harmless. Reactions are compared as sent: `❤` and `❤️` are two.

use unicode_segmentation::UnicodeSegmentation;

/// The longest reaction, in bytes (the longest recommended sequences take about 35).
pub const MAX_EMOJI_BYTES: usize = 64;

const ZWJ: char = '\u{200D}';
const VS15: char = '\u{FE0E}';
const VS16: char = '\u{FE0F}';
const KEYCAP: char = '\u{20E3}';
const BLACK_FLAG: char = '\u{1F3F4}';
const CANCEL_TAG: char = '\u{E007F}';

/// Whether `text` is exactly one emoji.
pub fn is_emoji(text: &str) -> bool {
    if text.is_empty() || text.len() > MAX_EMOJI_BYTES {
        return false;
    }
    let mut graphemes = text.graphemes(true);
    if graphemes.next().is_none() || graphemes.next().is_some() {
        return false;
    }
    let chars: Vec<char> = text.chars().collect();
    is_flag(&chars) || is_keycap(&chars) || is_tag_sequence(&chars) || is_zwj_sequence(&chars)
}

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

fn is_skin_tone(c: char) -> bool {
    ('\u{1F3FB}'..='\u{1F3FF}').contains(&c)
}

fn is_flag(chars: &[char]) -> bool {
    matches!(chars, [a, b] if is_regional_indicator(*a) && is_regional_indicator(*b))
}

fn is_keycap(chars: &[char]) -> bool {
    let base = |c: &char| c.is_ascii_digit() || matches!(c, '#' | '*');
    match chars {
        [b, k] => base(b) && *k == KEYCAP,
        [b, v, k] => base(b) && *v == VS16 && *k == KEYCAP,
        _ => false,
    }
}

fn is_tag_sequence(chars: &[char]) -> bool {
    match chars {
        [first, tags @ .., last] if *first == BLACK_FLAG && *last == CANCEL_TAG => {
            !tags.is_empty() && tags.iter().all(|c| ('\u{E0020}'..='\u{E007E}').contains(c))
        }
        _ => false,
    }
}

/// `element (ZWJ element)*` where `element = emoji [VS15 | VS16] [skin tone]`.
fn is_zwj_sequence(chars: &[char]) -> bool {
    chars.split(|c| *c == ZWJ).all(is_element)
}

fn is_element(element: &[char]) -> bool {
    let Some((&base, rest)) = element.split_first() else {
        return false; // an empty element: a leading, trailing or doubled ZWJ
    };
    if !is_emoji_char(base) {
        return false;
    }
    let rest = match rest {
        [v, rest @ ..] if *v == VS16 || *v == VS15 => rest,
        _ => rest,
    };
    match rest {
        [] => true,
        [tone] => is_skin_tone(*tone),
        _ => false,
    }
}

/// Code points with emoji forms, other than the keycap bases and regional indicators (which
/// are emoji only in their sequences).
fn is_emoji_char(c: char) -> bool {
    matches!(c,
        // The pictographic blocks, whole: symbols and pictographs, emoticons, transport,
        // geometric shapes extended, supplemental symbols, symbols extended-A.
        '\u{1F300}'..='\u{1F5FF}'
        | '\u{1F600}'..='\u{1F64F}'
        | '\u{1F680}'..='\u{1F6FF}'
        | '\u{1F7E0}'..='\u{1F7FF}'
        | '\u{1F900}'..='\u{1F9FF}'
        | '\u{1FA70}'..='\u{1FAFF}'
        // Miscellaneous symbols and dingbats.
        | '\u{2600}'..='\u{27BF}'
        // Older symbols with emoji forms.
        | '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2194}'..='\u{2199}' | '\u{21A9}' | '\u{21AA}' | '\u{231A}' | '\u{231B}'
        | '\u{2328}' | '\u{23CF}' | '\u{23E9}'..='\u{23F3}' | '\u{23F8}'..='\u{23FA}'
        | '\u{24C2}' | '\u{25AA}' | '\u{25AB}' | '\u{25B6}' | '\u{25C0}'
        | '\u{25FB}'..='\u{25FE}' | '\u{2934}' | '\u{2935}' | '\u{2B05}'..='\u{2B07}'
        | '\u{2B1B}' | '\u{2B1C}' | '\u{2B50}' | '\u{2B55}' | '\u{3030}' | '\u{303D}'
        | '\u{3297}' | '\u{3299}'
        // Mahjong, playing card, enclosed alphanumerics and ideographs with emoji forms.
        | '\u{1F004}' | '\u{1F0CF}' | '\u{1F170}' | '\u{1F171}' | '\u{1F17E}' | '\u{1F17F}'
        | '\u{1F18E}' | '\u{1F191}'..='\u{1F19A}' | '\u{1F201}' | '\u{1F202}' | '\u{1F21A}'
        | '\u{1F22F}' | '\u{1F232}'..='\u{1F23A}' | '\u{1F250}' | '\u{1F251}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_emoji_of_every_shape_pass() {
        for emoji in [
            "👍",
            "😀",
            "❤",
            "❤️",
            "☀️",
            "✅",
            "©️",
            "👍🏽",
            "🧑🏿",
            "👩‍💻",
            "👨‍👩‍👧‍👦",
            "🏳️‍🌈",
            "🏴‍☠️",
            "👁️‍🗨️",
            "🧑🏽‍🤝‍🧑🏻",
            "❤️‍🔥",
            "🇫🇷",
            "🇺🇦",
            "1️⃣",
            "#⃣",
            "*️⃣",
            "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
            "🫠",
            "🟢",
        ] {
            assert!(is_emoji(emoji), "{emoji:?} should pass");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        let long = "👍".repeat(75);
        for text in [
            "",
            "a",
            "1",
            "#",
            "ab",
            "👍👍",
            "👍 ",
            " 👍",
            "🇫",
            "🇫🇷🇫🇷",
            "\u{200D}",
            "👍\u{200D}",
            "\u{200D}👍",
            "\u{FE0F}",
            "é",
            "中",
            "a\u{20E3}",
            "👍\u{0301}",
            "🏴\u{E007F}",
            long.as_str(),
            ":thumbsup:",
            "<b>",
        ] {
            assert!(!is_emoji(text), "{text:?} should be refused");
        }
    }
}
