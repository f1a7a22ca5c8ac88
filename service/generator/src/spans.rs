//! Informative spans of a sentence: dates ("14 July 1789", "the 1830s", "between 1793 and
//! 1794"), quantities with units ("3.8 billion years", "40 °C", "98 percent"), bare numbers and
//! acronyms ("RuBisCO", "NADPH"). These are what a cloze blanks and a when-question asks for.

use super::text::{Sentence, has_inner_capital, is_acronym};
use super::verbs;
use super::words::{self, listed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpanKind {
    Date,
    Quantity,
    Acronym,
    Number,
}

/// A run of tokens `start..end`, and its bytes `from..to` in the sentence (a quantity's bytes can
/// reach past its last token: "25%").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub from: usize,
    pub to: usize,
    pub kind: SpanKind,
}

impl Span {
    fn tokens(s: &Sentence, start: usize, end: usize, kind: SpanKind) -> Self {
        Span {
            start,
            end,
            from: s.tokens[start].start,
            to: s.tokens[end - 1].end,
            kind,
        }
    }

    pub fn text<'a>(&self, s: &'a Sentence) -> &'a str {
        &s.text[self.from..self.to]
    }
}

/// Dates, quantities, acronyms and numbers of `s`, in text order, never overlapping (a date
/// wins over a number, a quantity over its number).
pub fn find(s: &Sentence) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut i = 0;
    while i < s.tokens.len() {
        let found = date_at(s, i)
            .or_else(|| quantity_at(s, i))
            .or_else(|| acronym_at(s, i));
        match found {
            Some(span) => {
                i = span.end;
                spans.push(span);
            }
            None => {
                if is_number(s.word(i)) {
                    spans.push(Span::tokens(s, i, i + 1, SpanKind::Number));
                }
                i += 1;
            }
        }
    }
    spans
}

fn is_number(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_digit())
        && word.ends_with(|c: char| c.is_ascii_digit())
        && word
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == '.')
}

fn is_year(word: &str) -> bool {
    word.len() == 4
        && word.bytes().all(|b| b.is_ascii_digit())
        && word
            .parse::<u32>()
            .is_ok_and(|y| (1000..=2100).contains(&y))
}

/// "1830s".
fn is_decade(word: &str) -> bool {
    word.strip_suffix('s')
        .is_some_and(|y| is_year(y) && y.ends_with('0'))
}

fn is_day(word: &str) -> bool {
    word.len() <= 2 && word.parse::<u32>().is_ok_and(|d| (1..=31).contains(&d))
}

/// A month name as the text writes it: capitalised ("may" is a verb, "May" a month).
fn is_month(s: &Sentence, i: usize) -> bool {
    i < s.tokens.len() && s.is_capitalised(i) && listed(words::MONTHS, s.lower(i))
}

/// "18th" or "eighteenth".
fn is_ordinal(word: &str) -> bool {
    let numeric = ["st", "nd", "rd", "th"].iter().any(|suffix| {
        word.strip_suffix(suffix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    numeric || listed(words::ORDINAL_WORDS, word)
}

/// Only whitespace between tokens `i - 1` and `i`.
fn joined(s: &Sentence, i: usize) -> bool {
    i > 0 && i < s.tokens.len() && s.adjacent(i - 1)
}

/// The date starting at token `i`, if one does.
pub fn date_at(s: &Sentence, i: usize) -> Option<Span> {
    let single = single_date_at(s, i)?;
    // "between 1793 and 1794", "from 1930 until 2006": one span.
    let opens_range = i > 0 && matches!(s.lower(i - 1), "between" | "from");
    let link = s.lower(single.end);
    if opens_range
        && matches!(link, "and" | "to" | "until" | "till")
        && let Some(second) = single_date_at(s, single.end + 1)
    {
        return Some(Span::tokens(s, i, second.end, SpanKind::Date));
    }
    Some(single)
}

fn single_date_at(s: &Sentence, i: usize) -> Option<Span> {
    let n = s.tokens.len();
    if i >= n {
        return None;
    }
    let w = s.word(i);
    let date = |end: usize| Some(Span::tokens(s, i, end, SpanKind::Date));
    let year_at = |k: usize| k < n && is_year(s.word(k)) && joined(s, k);
    // "14 July 1789", "14 July"
    if is_day(w) && is_month(s, i + 1) && joined(s, i + 1) {
        return if year_at(i + 2) {
            date(i + 3)
        } else {
            date(i + 2)
        };
    }
    if is_month(s, i) {
        // "July 14, 1789", "July 1789"
        if i + 1 < n && is_day(s.word(i + 1)) && joined(s, i + 1) {
            let comma_year = i + 2 < n && is_year(s.word(i + 2)) && s.gap(i + 2).trim() == ",";
            return if comma_year || year_at(i + 2) {
                date(i + 3)
            } else {
                date(i + 2)
            };
        }
        if year_at(i + 1) {
            return date(i + 2);
        }
        return None;
    }
    // "1793-1794"
    if let Some((a, b)) = w.split_once('-')
        && is_year(a)
        && b.len() >= 2
        && b.len() <= 4
        && b.bytes().all(|c| c.is_ascii_digit())
    {
        return date(i + 1);
    }
    if is_decade(w) {
        return date(i + 1);
    }
    if is_ordinal(&s.tokens[i].lower)
        && matches!(s.lower(i + 1), "century" | "centuries")
        && joined(s, i + 1)
    {
        return date(i + 2);
    }
    if is_year(w) && year_in_context(s, i) {
        let era = matches!(s.lower(i + 1), "bc" | "bce" | "ad" | "ce") && joined(s, i + 1);
        return date(if era { i + 2 } else { i + 1 });
    }
    None
}

/// A four-digit number is a year after a preposition or a season, before an era or at the end
/// of a clause; "1500 workers" is a count.
fn year_in_context(s: &Sentence, i: usize) -> bool {
    const CUES: &[&str] = &[
        "about", "after", "and", "around", "autumn", "before", "between", "by", "c", "circa",
        "during", "early", "from", "in", "late", "mid", "of", "on", "since", "spring", "summer",
        "the", "till", "to", "until", "winter", "year",
    ];
    let prev = i.checked_sub(1).map(|p| s.lower(p));
    let cue = prev.is_some_and(|p| CUES.contains(&p));
    let next = s.lower(i + 1);
    let initial = next.chars().count() == 1 && s.gap(i + 2).trim() == ".";
    let next_is_unit = (listed(words::UNITS, next) && !initial) || listed(words::SCALE_WORDS, next);
    // "1500 workers": a count of a noun. A verb, a function word or a name may follow a year.
    let next_is_noun = joined(s, i + 1)
        && !s.is_capitalised(i + 1)
        && !words::is_stopword(next)
        && !listed(words::AUXILIARIES, next)
        && verbs::past_base(next).is_none()
        && verbs::present_base(next).is_none();
    let clause_end = i + 1 >= s.tokens.len()
        || s.gap(i + 1)
            .trim()
            .starts_with([',', ';', ':', '.', ')', '!', '?']);
    (cue || clause_end) && !(next_is_unit && joined(s, i + 1)) && !next_is_noun
}

fn quantity_at(s: &Sentence, i: usize) -> Option<Span> {
    let n = s.tokens.len();
    let w = s.word(i);
    // "128-bit", "50-kilogram"
    if let Some((number, unit)) = w.split_once('-')
        && is_number(number)
        && listed(words::UNITS, &unit.to_lowercase())
    {
        return Some(Span::tokens(s, i, i + 1, SpanKind::Quantity));
    }
    if !is_number(w) {
        return None;
    }
    let mut j = i + 1;
    // "12 to 14 hours", "1 and 10 micrometres"
    if matches!(s.lower(j), "to" | "and")
        && j + 1 < n
        && is_number(s.word(j + 1))
        && joined(s, j)
        && joined(s, j + 1)
    {
        j += 2;
    }
    let mut scaled = false;
    if j < n && joined(s, j) && listed(words::SCALE_WORDS, s.lower(j)) {
        j += 1;
        scaled = true;
    }
    let last_end = s.tokens[j - 1].end;
    let after = &s.text[last_end..];
    if after.starts_with('%') {
        let mut span = Span::tokens(s, i, j, SpanKind::Quantity);
        span.to = last_end + '%'.len_utf8();
        return Some(span);
    }
    // "40 °C": the degree sign is not a word character.
    if j < n && s.gap(j).trim() == "°" && matches!(s.word(j), "C" | "F") {
        return Some(Span::tokens(s, i, j + 1, SpanKind::Quantity));
    }
    if let Some(end) = unit_end(s, j) {
        return Some(Span::tokens(s, i, end, SpanKind::Quantity));
    }
    scaled.then(|| Span::tokens(s, i, j, SpanKind::Quantity))
}

/// The end of a unit phrase starting at token `j` ("metres per second squared", "per cent",
/// "square kilometres"), if one starts there.
fn unit_end(s: &Sentence, j: usize) -> Option<usize> {
    let n = s.tokens.len();
    if j >= n || !joined(s, j) {
        return None;
    }
    // A one-letter unit followed by a full stop and more text is an initial ("In 1897 J. J.
    // Thomson"), not joules.
    let initial =
        |k: usize| s.lower(k).chars().count() == 1 && s.gap(k + 1).trim() == "." && k + 1 < n;
    let unit = |k: usize| k < n && joined(s, k) && listed(words::UNITS, s.lower(k)) && !initial(k);
    let mut end = if s.lower(j) == "per" && s.lower(j + 1) == "cent" && joined(s, j + 1) {
        j + 2
    } else if matches!(s.lower(j), "square" | "cubic") {
        if !unit(j + 1) {
            return None;
        }
        j + 2
    } else if unit(j) {
        j + 1
    } else {
        return None;
    };
    if s.lower(end) == "per" && unit(end + 1) && joined(s, end) {
        end += 2;
        if matches!(s.lower(end), "squared" | "cubed") && joined(s, end) {
            end += 1;
        }
    }
    Some(end)
}

fn acronym_at(s: &Sentence, i: usize) -> Option<Span> {
    let is_code = |k: usize| {
        let w = s.word(k);
        let letters = w.chars().filter(|c| c.is_alphabetic()).count();
        letters >= 2
            && (is_acronym(w)
                || (has_inner_capital(w) && w.chars().filter(|c| c.is_uppercase()).count() >= 2))
    };
    if !is_code(i) || is_roman_numeral(s.word(i)) {
        return None;
    }
    // "TCP/IP": one span.
    let mut end = i + 1;
    while end < s.tokens.len() && s.gap(end) == "/" && is_code(end) {
        end += 1;
    }
    Some(Span::tokens(s, i, end, SpanKind::Acronym))
}

/// "XVI", "II": part of a name, not an acronym.
pub fn is_roman_numeral(word: &str) -> bool {
    !word.is_empty() && word.len() <= 5 && word.chars().all(|c| matches!(c, 'I' | 'V' | 'X'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::Document;

    fn spans(text: &str) -> Vec<(String, SpanKind)> {
        let doc = Document::parse(text);
        let s = &doc.sentences[0];
        find(s)
            .into_iter()
            .map(|sp| (sp.text(s).to_owned(), sp.kind))
            .collect()
    }

    fn kinds(text: &str, kind: SpanKind) -> Vec<String> {
        spans(text)
            .into_iter()
            .filter(|(_, k)| *k == kind)
            .map(|(t, _)| t)
            .collect()
    }

    #[test]
    fn dates() {
        assert_eq!(
            kinds(
                "The Bastille fell on 14 July 1789 and the king died in January 1793.",
                SpanKind::Date
            ),
            ["14 July 1789", "January 1793"]
        );
        assert_eq!(
            kinds(
                "It lasted between 1793 and 1794, from the 1830s to the 18th century.",
                SpanKind::Date
            ),
            ["1793 and 1794", "1830s", "18th century"]
        );
        assert_eq!(
            kinds("On July 4, 1776 they met. In 1897 he left.", SpanKind::Date),
            ["July 4, 1776"]
        );
        assert!(kinds("A city of 1500 workers may grow.", SpanKind::Date).is_empty());
        assert_eq!(kinds("Napoleon won in 1799.", SpanKind::Date), ["1799"]);
    }

    #[test]
    fn quantities() {
        assert_eq!(
            kinds(
                "It formed 4.6 billion years ago, holds 99.8 percent of the mass, 25% of it at 465 °C.",
                SpanKind::Quantity
            ),
            ["4.6 billion years", "99.8 percent", "25%", "465 °C"]
        );
        assert_eq!(
            kinds(
                "An acceleration of 5 metres per second squared for 12 to 14 hours over 9,600 kilometres with 128-bit keys.",
                SpanKind::Quantity
            ),
            [
                "5 metres per second squared",
                "12 to 14 hours",
                "9,600 kilometres",
                "128-bit"
            ]
        );
        assert_eq!(kinds("Carbon has 6 protons.", SpanKind::Number), ["6"]);
    }

    #[test]
    fn acronyms() {
        assert_eq!(
            kinds(
                "RuBisCO uses ATP and NADPH over TCP/IP, says Louis XVI.",
                SpanKind::Acronym
            ),
            ["RuBisCO", "ATP", "NADPH", "TCP/IP"]
        );
    }
}
