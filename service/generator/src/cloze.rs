//! Cloze cards: a sentence with its most informative span blanked out. Dates and quantities
//! come first, then acronyms and names, then the text's key terms; a bare number or a common
//! word only when nothing better is there. Each sentence proposes its few best blanks and the
//! ranking keeps at most one of them.

use std::collections::BTreeMap;

use super::analysis::Analysis;
use super::candidate::{Candidate, Kind};
use super::names::NameClass;
use super::spans::SpanKind;
use super::terms;
use super::text::Sentence;
use super::verbs;
use super::words;

pub const BLANK: &str = "_____";
pub const PREFIX: &str = "Fill in the blank: ";
/// A sentence with several dates or quantities blanks them all; the answers are joined by
/// [`ANSWER_SEPARATOR`] in text order.
pub const PREFIX_SEVERAL: &str = "Fill in the blanks: ";
pub const ANSWER_SEPARATOR: &str = "; ";
/// Most blanks in one card.
const MAX_BLANKS: usize = 3;
/// Blanks a sentence proposes.
const OPTIONS_PER_SENTENCE: usize = 3;
/// Sentence lengths (in words) that make a readable cloze.
const MIN_WORDS: usize = 6;
const MAX_WORDS: usize = 70;
/// A key term blanked must score at least this share of the best term's score: below it, the
/// blank is a common word ("plant", "rate").
const MIN_TERM_SHARE: f64 = 0.2;
/// Words left visible, at least.
const MIN_CONTEXT_WORDS: usize = 5;

#[derive(Debug, Clone)]
struct Blank {
    start: usize,
    end: usize,
    from: usize,
    to: usize,
    weight: f64,
    /// A ranked key term (not a date, quantity or name).
    term: bool,
}

pub fn extract(a: &Analysis) -> Vec<Candidate> {
    let max_term_score = a.terms.iter().map(|t| t.score).fold(0.0_f64, f64::max);
    // A note of a sentence or two: shorter sentences are all there is.
    let short_note = a.doc.sentences.len() <= 3;
    let (min_words, min_context) = if short_note {
        (3, 2)
    } else {
        (MIN_WORDS, MIN_CONTEXT_WORDS)
    };
    let mut out = Vec::new();
    for (si, s) in a.fact_sentences() {
        let n = s.tokens.len();
        if !(min_words..=MAX_WORDS).contains(&n) || s.text.trim_end().ends_with(':') {
            continue;
        }
        let mut blanks = blanks(a, si, s, max_term_score);
        // Keep the best blank per answer text.
        let mut best: BTreeMap<String, Blank> = BTreeMap::new();
        for b in blanks.drain(..) {
            let key = s.text[b.from..b.to].to_lowercase();
            let tokens = b.end - b.start;
            if tokens * 5 > n * 2 || n - tokens < min_context {
                continue;
            }
            match best.get(&key) {
                Some(old) if old.weight >= b.weight => {}
                _ => {
                    best.insert(key, b);
                }
            }
        }
        let mut ranked: Vec<(String, Blank)> = best.into_iter().collect();
        ranked.sort_by(|(ka, a), (kb, b)| {
            b.weight
                .total_cmp(&a.weight)
                .then(a.start.cmp(&b.start))
                .then_with(|| ka.cmp(kb))
        });
        let pronoun_start = matches!(
            s.lower(0),
            "he" | "she"
                | "it"
                | "they"
                | "this"
                | "these"
                | "those"
                | "its"
                | "his"
                | "her"
                | "their"
        );
        if let Some(card) = several_facts(a, si, s) {
            let weight = if pronoun_start { 0.66 } else { 1.1 };
            out.push(card.with_weight(weight));
        }
        for (key, b) in ranked.into_iter().take(OPTIONS_PER_SENTENCE) {
            let question = format!("{PREFIX}{}", blanked(s, &b));
            let answer = s.text[b.from..b.to].to_owned();
            let weight = if pronoun_start {
                b.weight * 0.6
            } else {
                b.weight
            };
            out.push(
                Candidate::new(Kind::Cloze, question, answer, si)
                    .with_facts([key])
                    .with_weight(weight),
            );
        }
    }
    out
}

fn blanks(a: &Analysis, si: usize, s: &Sentence, max_term_score: f64) -> Vec<Blank> {
    let mut out: Vec<Blank> = Vec::new();
    let mut push = |start: usize, end: usize, from: usize, to: usize, weight: f64, term: bool| {
        out.push(Blank {
            start,
            end,
            from,
            to,
            weight,
            term,
        });
    };
    for span in &a.spans[si] {
        let weight = match span.kind {
            SpanKind::Date | SpanKind::Quantity => 1.0,
            SpanKind::Acronym => 0.85,
            SpanKind::Number => 0.55,
        };
        push(span.start, span.end, span.from, span.to, weight, false);
    }
    // A name or term inside a date or quantity ("September" of "September 1792") is not a blank
    // of its own.
    let facts: Vec<(usize, usize)> = a.spans[si]
        .iter()
        .filter(|sp| matches!(sp.kind, SpanKind::Date | SpanKind::Quantity))
        .map(|sp| (sp.start, sp.end))
        .collect();
    let inside_fact = |start: usize, end: usize| facts.iter().any(|&(a, b)| start < b && a < end);
    let names = &a.names.by_sentence[si];
    for name in names.iter().filter(|n| !inside_fact(n.start, n.end)) {
        // "Act 5", "Chapter 3": the word is a label of the number.
        let labels_number = name.end - name.start == 1
            && s.tokens
                .get(name.end)
                .is_some_and(|t| t.lower.starts_with(|c: char| c.is_ascii_digit()));
        if labels_number {
            continue;
        }
        let weight = match a.names.class(s, name) {
            NameClass::Person | NameClass::Place => 0.85,
            NameClass::Other if name.end - name.start > 1 => 0.8,
            NameClass::Other => 0.65,
        };
        let (from, to) = (s.tokens[name.start].start, s.tokens[name.end - 1].end);
        push(name.start, name.end, from, to, weight, false);
    }
    for term in &a.terms {
        if term.numeric || !term.sentences.contains(&si) {
            continue;
        }
        let relative = if max_term_score > 0.0 {
            term.score / max_term_score
        } else {
            0.0
        };
        if relative < MIN_TERM_SHARE {
            continue;
        }
        for (from, to) in terms::occurrences(s, term) {
            let start = s.tokens.iter().position(|t| t.start == from);
            let end = s.tokens.iter().position(|t| t.end == to);
            if let (Some(start), Some(end)) = (start, end)
                && !inside_fact(start, end + 1)
                && noun_like(s, start, end + 1)
            {
                push(start, end + 1, from, to, 0.3 + 0.5 * relative, true);
            }
        }
    }
    // "ATP and NADPH": two acronyms or names joined by "and" make one blank.
    let mut joined = Vec::new();
    for x in &out {
        for y in &out {
            // Same kind of blank on both sides, and the second one whole ("Internet" of
            // "Internet Protocol" is not).
            let pair = y.start == x.end + 1
                && s.lower(x.end) == "and"
                && !x.term
                && !y.term
                && x.weight >= 0.8
                && (x.weight - y.weight).abs() < f64::EPSILON
                && s.adjacent(x.end - 1)
                && s.adjacent(x.end)
                && !s.is_capitalised(y.end);
            if pair {
                joined.push(Blank {
                    start: x.start,
                    end: y.end,
                    from: x.from,
                    to: y.to,
                    weight: x.weight.max(y.weight) + 0.05,
                    term: false,
                });
            }
        }
    }
    out.extend(joined);
    // "Calvin" inside the term "Calvin cycle": the whole term is the better blank.
    let terms: Vec<(usize, usize)> = out
        .iter()
        .filter(|b| b.term)
        .map(|b| (b.start, b.end))
        .collect();
    out.retain(|b| {
        b.term
            || !terms.iter().any(|&(start, end)| {
                start <= b.start && b.end <= end && end - start > b.end - b.start
            })
    });
    out
}

/// A key term's occurrence that names a thing: not a verb ("comes", "keeps moving"), not a count
/// ("two"), and for one word not half of a compound ("cell _____", "_____ shells").
fn noun_like(s: &Sentence, start: usize, end: usize) -> bool {
    let last = s.lower(end - 1);
    let after_determiner = start > 0
        && matches!(
            s.lower(start - 1),
            "a" | "an"
                | "the"
                | "this"
                | "that"
                | "these"
                | "those"
                | "its"
                | "their"
                | "his"
                | "her"
                | "our"
                | "each"
                | "every"
                | "no"
                | "some"
                | "any"
                | "many"
                | "most"
                | "of"
                | "in"
                | "on"
                | "for"
                | "from"
                | "with"
                | "by"
                | "into"
        );
    let verb = verbs::present_base(last).is_some()
        || (verbs::past_base(last).is_some() && !after_determiner);
    if (verb && !after_determiner) || (1..=12).any(|n| words::count_word(n) == last) {
        return false;
    }
    if end - start > 1 {
        return true;
    }
    let content = |i: usize| {
        i < s.tokens.len()
            && s.word(i).starts_with(char::is_lowercase)
            && !words::is_stopword(s.lower(i))
            && !words::listed(words::AUXILIARIES, s.lower(i))
            && verbs::present_base(s.lower(i)).is_none()
    };
    let modifier_before = start > 0 && s.adjacent(start - 1) && content(start - 1);
    let noun_after = end < s.tokens.len() && s.adjacent(end - 1) && content(end);
    // "Lady" of "Lady Macbeth": part of a name.
    let in_name =
        (start > 0 && s.adjacent(start - 1) && s.is_capitalised(start - 1) && start - 1 > 0)
            || (end < s.tokens.len() && s.adjacent(end - 1) && s.is_capitalised(end));
    !modifier_before && !noun_after && !in_name
}

/// "began in _____ and ended in _____" -> "1789; 1799": every date and quantity of a sentence
/// that has two or three of them.
fn several_facts(a: &Analysis, si: usize, s: &Sentence) -> Option<Candidate> {
    let facts: Vec<_> = a.spans[si]
        .iter()
        .filter(|sp| matches!(sp.kind, SpanKind::Date | SpanKind::Quantity))
        .collect();
    if !(2..=MAX_BLANKS).contains(&facts.len()) {
        return None;
    }
    let blanked_tokens: usize = facts.iter().map(|sp| sp.end - sp.start).sum();
    if s.tokens.len() < blanked_tokens + MIN_CONTEXT_WORDS {
        return None;
    }
    let mut text = s.text.clone();
    for sp in facts.iter().rev() {
        text.replace_range(sp.from..sp.to, BLANK);
    }
    let answers: Vec<&str> = facts.iter().map(|sp| sp.text(s)).collect();
    Some(
        Candidate::new(
            Kind::Cloze,
            format!("{PREFIX_SEVERAL}{text}"),
            answers.join(ANSWER_SEPARATOR),
            si,
        )
        .with_facts(answers.iter().map(|a| a.to_lowercase())),
    )
}

/// The sentence with the blank's span, and every other occurrence of the same words, replaced.
fn blanked(s: &Sentence, b: &Blank) -> String {
    let words: Vec<&str> = s.tokens[b.start..b.end]
        .iter()
        .map(|t| t.lower.as_str())
        .collect();
    let len = words.len();
    let mut ranges = vec![(b.from, b.to)];
    for i in 0..s.tokens.len().saturating_sub(len - 1) {
        if i == b.start {
            continue;
        }
        let same = s.tokens[i..i + len]
            .iter()
            .zip(&words)
            .all(|(t, w)| t.lower == *w);
        let inside = (i..i + len).any(|k| (b.start..b.end).contains(&k));
        // "Macbeth" inside "Lady Macbeth" is another name.
        let part_of_name = (i > 0 && s.is_capitalised(i - 1) && s.adjacent(i - 1))
            || (i + len < s.tokens.len() && s.is_capitalised(i + len) && s.adjacent(i + len - 1));
        if same && !inside && !part_of_name {
            ranges.push((s.tokens[i].start, s.tokens[i + len - 1].end));
        }
    }
    ranges.sort_unstable();
    // Repetitive text ("a a a") can make occurrences overlap; keep the first of each run.
    let mut disjoint: Vec<(usize, usize)> = Vec::new();
    for r in ranges {
        if disjoint.last().is_none_or(|&(_, end)| r.0 >= end) {
            disjoint.push(r);
        }
    }
    let ranges = disjoint;
    let mut text = s.text.clone();
    for &(from, to) in ranges.iter().rev() {
        text.replace_range(from..to, BLANK);
    }
    text
}
