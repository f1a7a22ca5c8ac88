//! Verb forms without a dictionary: the base form of a past tense or a third-person present
//! ("seized" -> "seize", "carries" -> "carry"), which a question with "did"/"does" needs
//! ("Napoleon seized power" -> "When did Napoleon seize power?").

use super::words::{self, listed};

/// A finite verb's tense, as far as its form tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tense {
    Past,
    /// Third person singular present ("takes").
    PresentSingular,
    /// Present with a plural subject ("take").
    PresentPlural,
}

impl Tense {
    /// The form of "do" a question with this verb takes.
    pub fn do_form(self) -> &'static str {
        match self {
            Tense::Past => "did",
            Tense::PresentSingular => "does",
            Tense::PresentPlural => "do",
        }
    }
}

/// `word` as a past tense: its base form, or `None` if it does not look like one.
pub fn past_base(word: &str) -> Option<String> {
    if let Some(base) = words::irregular_past_base(word) {
        return Some(base.to_owned());
    }
    regular_past_base(word)
}

/// Base form of a regular "-ed" past. The spelling rules cover most verbs; the exceptions are
/// the common ones where a silent "e" cannot be told from the letters.
fn regular_past_base(word: &str) -> Option<String> {
    const NOT_PAST: &[&str] = &[
        "beloved", "crooked", "hundred", "indeed", "kindred", "naked", "ragged", "rugged",
        "sacred", "wicked",
    ];
    const EE_PAST: &[&str] = &["agreed", "decreed", "freed", "guaranteed"];
    const SHORT_PAST: &[&str] = &["died", "lied", "owed", "tied", "used"];
    let long_enough = word.len() >= 5 || SHORT_PAST.contains(&word);
    if !word.is_ascii() || !long_enough || NOT_PAST.contains(&word) {
        return None;
    }
    let stem = word.strip_suffix("ed")?;
    if stem.ends_with('e') {
        // "agreed" -> "agree"; otherwise "-eed" words are bases ("succeed", "speed").
        return EE_PAST
            .contains(&word)
            .then(|| word[..word.len() - 1].to_owned());
    }
    if let Some(y_stem) = stem.strip_suffix('i') {
        // "carried" -> "carry", but "died" -> "die".
        return Some(if y_stem.len() <= 1 {
            format!("{stem}e")
        } else {
            format!("{y_stem}y")
        });
    }
    let bytes = stem.as_bytes();
    let last = *bytes.last()?;
    let before = bytes.len().checked_sub(2).map(|i| bytes[i]);
    // "stopped" -> "stop", but "called", "passed", "added" keep both letters.
    if before == Some(last) && !b"lsfzd".contains(&last) && !is_vowel(last) {
        return Some(stem[..stem.len() - 1].to_owned());
    }
    Some(if needs_silent_e(stem) {
        format!("{stem}e")
    } else {
        stem.to_owned()
    })
}

fn is_vowel(b: u8) -> bool {
    matches!(b, b'a' | b'e' | b'i' | b'o' | b'u')
}

/// Whether the stem of a regular past ends in a silent "e" ("seiz" -> "seize", "creat" ->
/// "create", but "form", "visit", "enter" stay).
fn needs_silent_e(stem: &str) -> bool {
    const KEEP_AS_IS: &[&str] = &[
        "abandon",
        "benefit",
        "budget",
        "color",
        "colour",
        "develop",
        "envelop",
        "favor",
        "focus",
        "gallop",
        "harbor",
        "honor",
        "interpret",
        "labor",
        "market",
        "pilot",
        "rocket",
        "summon",
        "target",
    ];
    const NEED_E: &[&str] = &[
        "cit", "creat", "excit", "ignit", "incit", "invit", "recit", "unit", "writ",
    ];
    if KEEP_AS_IS.contains(&stem) {
        return false;
    }
    if NEED_E.contains(&stem) {
        return true;
    }
    let bytes = stem.as_bytes();
    let n = bytes.len();
    let Some(&last) = bytes.last() else {
        return false;
    };
    let prev = n.checked_sub(2).map(|i| bytes[i]);
    let before_prev = n.checked_sub(3).map(|i| bytes[i]);
    // One vowel (not a pair) before the final consonant: "declar-", "stor-", "defin-".
    let single_vowel = prev.is_some_and(is_vowel) && !before_prev.is_some_and(is_vowel);
    match last {
        b'u' | b'v' | b'z' | b'c' => true,
        b's' => prev != Some(b's'),
        b'g' => {
            ["ang", "eng", "ung", "rg", "dg"]
                .iter()
                .any(|end| stem.ends_with(end))
                || single_vowel
        }
        // "settl-", "handl-", "rul-", "compil-", but "travel", "fail", "curl".
        b'l' => {
            prev.is_some_and(|p| !is_vowel(p) && p != b'l' && p != b'r')
                || (single_vowel && prev != Some(b'e'))
        }
        b'r' | b'm' | b'k' | b'p' | b'b' | b'd' => single_vowel && prev != Some(b'e'),
        b'n' => single_vowel && matches!(prev, Some(b'i' | b'a' | b'u')),
        // "locat-", "vot-", "complet-", but "visit", "limit", "interpret".
        b't' => single_vowel && prev != Some(b'i') && (prev != Some(b'e') || n <= 7),
        _ => false,
    }
}

/// `word` as a present tense of a common verb: its base form and number.
pub fn present_base(word: &str) -> Option<(String, Tense)> {
    if listed(words::COMMON_VERBS, word) {
        return Some((word.to_owned(), Tense::PresentPlural));
    }
    let candidates = [
        word.strip_suffix("ies").map(|s| format!("{s}y")),
        word.strip_suffix("es").map(str::to_owned),
        word.strip_suffix('s').map(str::to_owned),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|base| listed(words::COMMON_VERBS, base))
        .map(|base| (base, Tense::PresentSingular))
}

/// The third person singular of a base form: "lead" -> "leads", "carry" -> "carries".
pub fn third_person(base: &str) -> String {
    let consonant_y = base
        .strip_suffix('y')
        .filter(|stem| stem.ends_with(|c: char| !"aeiou".contains(c)));
    if let Some(stem) = consonant_y {
        return format!("{stem}ies");
    }
    if ["s", "sh", "ch", "x", "z", "o"]
        .iter()
        .any(|end| base.ends_with(end))
    {
        return format!("{base}es");
    }
    format!("{base}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_and_irregular_pasts() {
        for (past, base) in [
            ("seized", "seize"),
            ("formed", "form"),
            ("declared", "declare"),
            ("entered", "enter"),
            ("stopped", "stop"),
            ("called", "call"),
            ("added", "add"),
            ("carried", "carry"),
            ("died", "die"),
            ("created", "create"),
            ("treated", "treat"),
            ("located", "locate"),
            ("visited", "visit"),
            ("united", "unite"),
            ("defined", "define"),
            ("joined", "join"),
            ("opened", "open"),
            ("continued", "continue"),
            ("produced", "produce"),
            ("changed", "change"),
            ("settled", "settle"),
            ("ruled", "rule"),
            ("failed", "fail"),
            ("developed", "develop"),
            ("decided", "decide"),
            ("needed", "need"),
            ("described", "describe"),
            ("caused", "cause"),
            ("passed", "pass"),
            ("collapsed", "collapse"),
            ("voted", "vote"),
            ("completed", "complete"),
            ("abolished", "abolish"),
            ("published", "publish"),
            ("invented", "invent"),
            ("traced", "trace"),
            ("tested", "test"),
            ("occurred", "occur"),
            ("summoned", "summon"),
            ("noticed", "notice"),
            ("proposed", "propose"),
            ("arranged", "arrange"),
            ("banned", "ban"),
            ("named", "name"),
            ("agreed", "agree"),
            ("took", "take"),
            ("began", "begin"),
            ("led", "lead"),
        ] {
            assert_eq!(past_base(past).as_deref(), Some(base), "{past}");
        }
        for not_past in ["speed", "hundred", "red", "exceed"] {
            assert_eq!(past_base(not_past), None, "{not_past}");
        }
    }

    #[test]
    fn present_forms() {
        assert_eq!(
            present_base("takes"),
            Some(("take".to_owned(), Tense::PresentSingular))
        );
        assert_eq!(
            present_base("carries"),
            Some(("carry".to_owned(), Tense::PresentSingular))
        );
        assert_eq!(
            present_base("passes"),
            Some(("pass".to_owned(), Tense::PresentSingular))
        );
        assert_eq!(
            present_base("occur"),
            Some(("occur".to_owned(), Tense::PresentPlural))
        );
        assert_eq!(present_base("chlorophyll"), None);
        assert_eq!(Tense::Past.do_form(), "did");
        assert_eq!(
            ["lead", "carry", "pass", "go", "play"].map(third_person),
            ["leads", "carries", "passes", "goes", "plays"]
        );
    }
}
