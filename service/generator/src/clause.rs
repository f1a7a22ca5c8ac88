//! Clauses without a parser: a sentence is cut into clauses at semicolons, colons and ", and"
//! before a new subject; in each clause an optional introduction ("In 1789,", "When the air
//! cools,"), the subject and the finite verb are found by position and word lists. The question
//! forms built on them keep the text's own words and only move the verb: "X was stormed on D" ->
//! "When was X stormed?", "X seized power in D" -> "When did X seize power?".

use super::spans::{self, Span};
use super::text::{Document, Sentence, is_adverb};
use super::verbs::{self, Tense};
use super::words::{self, listed};

/// Tokens `start..end` of a sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clause {
    pub start: usize,
    pub end: usize,
}

/// How a clause opens before its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntroKind {
    /// "In 1789", "On 14 July 1789,": a date phrase.
    Date,
    /// "In the Calvin cycle,", "After the Terror,": a prepositional phrase.
    Phrase,
    /// "When the air cools,", "Because enzymes control it,": a subordinate clause.
    Subordinate,
    /// "However,", "For example,": a connective that carries no fact.
    Connective,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intro {
    pub start: usize,
    /// Token where the subject starts (after the comma, if any).
    pub end: usize,
    pub kind: IntroKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerbKind {
    /// A copula, auxiliary or modal: questions invert it ("was", "can", "has" + participle).
    Auxiliary,
    /// A lexical verb: questions need "do" and its base form.
    Lexical { base: String, tense: Tense },
}

/// A clause read as `[intro] subject [, appositive,] verb rest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub intro: Option<Intro>,
    pub subject_start: usize,
    /// Tokens of a parenthetical inside the subject ("The Calvin cycle, also known as ..., takes").
    pub appositive: Option<(usize, usize)>,
    /// End of the subject: the verb, or an adverb before it ("Hyperinflation usually results").
    pub subject_end: usize,
    /// Token of the finite verb.
    pub verb: usize,
    pub verb_kind: VerbKind,
    /// End of the clause (exclusive).
    pub end: usize,
}

impl Parsed {
    /// The subject's tokens, without the appositive.
    pub fn subject_ranges(&self) -> Vec<(usize, usize)> {
        match self.appositive {
            Some((a, b)) => [(self.subject_start, a), (b, self.subject_end)]
                .into_iter()
                .filter(|(x, y)| x < y)
                .collect(),
            None => vec![(self.subject_start, self.subject_end)],
        }
    }

    /// The verb is followed by "not" or "never": a negated fact makes a confusing question.
    pub fn negated(&self, s: &Sentence) -> bool {
        matches!(s.lower(self.verb + 1), "not" | "never" | "n't")
    }
}

const CONJUNCTIONS: &[&str] = &["and", "but", "whereas", "while", "yet"];
/// Relative words after a comma: the clause's own content ends there.
const RELATIVES: &[&str] = &["when", "where", "which", "who", "whom", "whose"];

/// The clauses of `s`, in order.
pub fn clauses(s: &Sentence) -> Vec<Clause> {
    let n = s.tokens.len();
    let mut out = Vec::new();
    let mut start = 0;
    let mut end_of_content: Option<usize> = None;
    for i in 1..n {
        let gap = s.gap(i);
        let hard = gap.contains([';', ':']);
        let conjunction =
            gap.contains(',') && CONJUNCTIONS.contains(&s.lower(i)) && starts_clause(s, i + 1, n);
        if hard || conjunction {
            out.push(Clause {
                start,
                end: end_of_content.unwrap_or(i),
            });
            start = if conjunction { i + 1 } else { i };
            end_of_content = None;
            continue;
        }
        if end_of_content.is_none() && gap.contains(',') && RELATIVES.contains(&s.lower(i)) {
            end_of_content = Some(i);
        }
    }
    if start < n {
        out.push(Clause {
            start,
            end: end_of_content.unwrap_or(n),
        });
    }
    out.retain(|c| c.start < c.end);
    out
}

/// Tokens from `at` read as a clause of their own: a subject, then a finite verb ("its price
/// rose"), not a second predicate ("and adopted the Declaration") or an item ("and water").
fn starts_clause(s: &Sentence, at: usize, end: usize) -> bool {
    if parse_from(s, at, end).is_some() {
        return true;
    }
    if at >= end || verb_at(s, at, end).is_some() || verbs::past_base(s.lower(at)).is_some() {
        return false;
    }
    for k in at + 1..end.min(at + 10) {
        if !s.gap(k).trim().is_empty() && !is_possessive(s.gap(k).trim()) {
            return false;
        }
        if verb_at(s, k, end).is_some()
            && agrees(s, at, k, &verb_at(s, k, end).unwrap_or(VerbKind::Auxiliary))
        {
            return true;
        }
    }
    false
}

/// Reads `clause` of `s` as intro, subject and verb.
pub fn parse(s: &Sentence, clause: Clause) -> Option<Parsed> {
    parse_from(s, clause.start, clause.end)
}

fn parse_from(s: &Sentence, start: usize, end: usize) -> Option<Parsed> {
    if start >= end {
        return None;
    }
    let intro = intro(s, start, end);
    let subject_start = intro.map_or(start, |i| i.end);
    if subject_start >= end || listed(words::VAGUE_SUBJECT_STARTS, s.lower(subject_start)) {
        return None;
    }
    let mut appositive = None;
    let mut i = subject_start + 1;
    while i < end && i <= subject_start + 14 {
        let gap = s.gap(i).trim();
        if !gap.is_empty() && !is_possessive(gap) {
            if appositive.is_some() || !(gap == "," || gap == "(") {
                return None;
            }
            let close = if gap == "," { ',' } else { ')' };
            let closing = (i + 1..end.min(i + 12)).find(|&k| s.gap(k).contains(close))?;
            appositive = Some((i, closing));
            i = closing;
            if close == ')' && s.gap(closing).trim() != ")" {
                return None;
            }
        }
        let w = s.lower(i);
        if listed(words::CLAUSE_OPENERS, w) || w == "that" {
            return None;
        }
        if let Some(verb_kind) = verb_at(s, i, end)
            && agrees(s, subject_start, i, &verb_kind)
        {
            let mut subject_end = i;
            while subject_end > subject_start + 1 && is_adverb(s.word(subject_end - 1)) {
                subject_end -= 1;
            }
            let parsed = Parsed {
                intro,
                subject_start,
                appositive,
                subject_end,
                verb: i,
                verb_kind,
                end,
            };
            let subject_len: usize = parsed.subject_ranges().iter().map(|(a, b)| b - a).sum();
            return (1..=10).contains(&subject_len).then_some(parsed);
        }
        i += 1;
    }
    None
}

/// The introduction of a clause starting at `start`, if it has one.
fn intro(s: &Sentence, start: usize, end: usize) -> Option<Intro> {
    let first = s.lower(start);
    let comma_within =
        |limit: usize| (start + 1..end.min(start + limit)).find(|&k| s.gap(k).contains(','));
    if let Some(date_end) = date_phrase_at(s, start) {
        // "In 1789 the Third Estate ...", "On 14 July 1789, crowds ...".
        let only_date =
            date_end < end && (s.gap(date_end).trim().is_empty() || s.gap(date_end).trim() == ",");
        if only_date {
            return Some(Intro {
                start,
                end: date_end,
                kind: IntroKind::Date,
            });
        }
    }
    const CONNECTIVES: &[&str] = &[
        "also",
        "besides",
        "consequently",
        "finally",
        "first",
        "furthermore",
        "however",
        "instead",
        "later",
        "meanwhile",
        "moreover",
        "nevertheless",
        "next",
        "now",
        "second",
        "still",
        "then",
        "therefore",
        "thus",
        "together",
        "today",
    ];
    if CONNECTIVES.contains(&first) && s.gap(start + 1).contains(',') {
        return Some(Intro {
            start,
            end: start + 1,
            kind: IntroKind::Connective,
        });
    }
    let subordinator = listed(words::SUBORDINATORS, first);
    if !subordinator && !PREPOSITIONS.contains(&first) {
        return None;
    }
    let k = comma_within(if subordinator { 25 } else { 12 })?;
    // "After the Terror," is a phrase; "After the king fled," a clause.
    let has_verb = (start + 1..k).any(|i| verb_at(s, i, k).is_some());
    let phrase = s.slice(start, k).to_lowercase();
    let kind = if subordinator && (has_verb || !PREPOSITIONS.contains(&first)) {
        IntroKind::Subordinate
    } else if CONNECTIVE_PHRASES.contains(&phrase.as_str()) {
        IntroKind::Connective
    } else {
        IntroKind::Phrase
    };
    Some(Intro {
        start,
        end: k,
        kind,
    })
}

const PREPOSITIONS: &[&str] = &[
    "about",
    "above",
    "according",
    "across",
    "after",
    "along",
    "among",
    "around",
    "as",
    "at",
    "before",
    "behind",
    "below",
    "beneath",
    "beside",
    "between",
    "beyond",
    "by",
    "despite",
    "during",
    "for",
    "from",
    "in",
    "inside",
    "into",
    "like",
    "near",
    "of",
    "on",
    "outside",
    "over",
    "since",
    "through",
    "throughout",
    "to",
    "towards",
    "under",
    "unlike",
    "until",
    "upon",
    "with",
    "within",
    "without",
];

/// Opening phrases that link to the previous sentence rather than state a circumstance.
const CONNECTIVE_PHRASES: &[&str] = &[
    "above all",
    "after all",
    "as a result",
    "at first",
    "at last",
    "by contrast",
    "by then",
    "for example",
    "for instance",
    "in addition",
    "in contrast",
    "in fact",
    "in general",
    "in other words",
    "in particular",
    "in practice",
    "in short",
    "in summary",
    "in turn",
    "of course",
    "on the other hand",
];

/// "'s" or "'" between a noun and the next word: part of the phrase.
fn is_possessive(gap: &str) -> bool {
    matches!(gap, "'s" | "’s" | "'" | "’")
}

/// A bare present-tense verb ("take") needs a plural-looking subject: "Energy flow" is a noun
/// phrase, "Plants take" a clause.
fn agrees(s: &Sentence, subject_start: usize, verb: usize, kind: &VerbKind) -> bool {
    let VerbKind::Lexical {
        tense: Tense::PresentPlural,
        ..
    } = kind
    else {
        return true;
    };
    const IRREGULAR_PLURALS: &[&str] = &[
        "bacteria",
        "cattle",
        "children",
        "data",
        "men",
        "mitochondria",
        "people",
        "police",
        "women",
    ];
    let last = s.lower(verb - 1);
    let plural = (last.ends_with('s') && !last.ends_with("ss") && !last.ends_with("us"))
        || IRREGULAR_PLURALS.contains(&last);
    let coordinated = (subject_start..verb).any(|i| s.lower(i) == "and");
    plural || coordinated || matches!(last, "we" | "they" | "you" | "i")
}

/// If a date phrase ("in 1789", "on 14 July 1789", "in the early 1990s", "between 1793 and
/// 1794") starts at token `at`, the token after it.
pub fn date_phrase_at(s: &Sentence, at: usize) -> Option<usize> {
    let (_, date) = date_phrase_parts(s, at)?;
    Some(date.end)
}

/// The date span of a date phrase starting with a preposition at `at`, and the token where the
/// phrase's answer starts (after the preposition, or at it for ranges: "Between 1793 and 1794").
pub fn date_phrase_parts(s: &Sentence, at: usize) -> Option<(usize, Span)> {
    if !listed(words::DATE_PREPOSITIONS, s.lower(at)) {
        return None;
    }
    let mut k = at + 1;
    while k < s.tokens.len() && k <= at + 5 {
        if let Some(span) = spans::date_at(s, k) {
            let keeps_preposition = matches!(
                s.lower(at),
                "between" | "from" | "until" | "since" | "by" | "around" | "circa"
            );
            let answer_start = if keeps_preposition { at } else { at + 1 };
            return Some((answer_start, span));
        }
        if !listed(words::DATE_FILLERS, s.lower(k)) || !s.gap(k).trim().is_empty() {
            return None;
        }
        k += 1;
    }
    None
}

/// Words that make the word after them a noun or adjective, never a finite verb.
fn is_determiner(word: &str) -> bool {
    matches!(
        word,
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
            | "my"
            | "your"
            | "each"
            | "every"
            | "no"
            | "some"
            | "any"
            | "of"
            | "in"
            | "on"
            | "at"
            | "by"
            | "for"
            | "from"
            | "with"
            | "into"
            | "to"
    )
}

/// The kind of finite verb at token `i`, if it is one.
fn verb_at(s: &Sentence, i: usize, end: usize) -> Option<VerbKind> {
    let w = s.lower(i);
    let prev = i.checked_sub(1).map_or("", |p| s.lower(p));
    let prev_adverb = i > 0 && is_adverb(s.word(i - 1));
    if is_determiner(prev) {
        return None;
    }
    if listed(words::AUXILIARIES, w) {
        if let Some(tense) = match w {
            "had" => Some(Tense::Past),
            "has" => Some(Tense::PresentSingular),
            "have" => Some(Tense::PresentPlural),
            _ => None,
        } {
            let next = s.lower(i + 1);
            let participle = listed(words::IRREGULAR_PARTICIPLES, next)
                || (next.ends_with("ed") && verbs::past_base(next).is_some());
            if !participle {
                // Possession: "Britain had advantages" -> "did Britain have".
                return Some(VerbKind::Lexical {
                    base: "have".into(),
                    tense,
                });
            }
        }
        return Some(VerbKind::Auxiliary);
    }
    if let Some(base) = verbs::past_base(w) {
        let regular = w.ends_with("ed");
        if regular && (prev_adverb || reduced_relative(s, i, end)) {
            return None;
        }
        return Some(VerbKind::Lexical {
            base,
            tense: Tense::Past,
        });
    }
    let (base, tense) = verbs::present_base(w)?;
    Some(VerbKind::Lexical { base, tense })
}

/// "sacs called thylakoids are ...": an "-ed" word followed, in the same stretch, by "is / are /
/// was / were" is a participle inside the subject, not its verb.
fn reduced_relative(s: &Sentence, i: usize, end: usize) -> bool {
    for k in i + 1..end.min(i + 8) {
        if s.gap(k).contains([',', ';', ':']) {
            return false;
        }
        if matches!(s.lower(k), "is" | "are" | "was" | "were") {
            return true;
        }
    }
    false
}

/// The subject as it reads inside a question: appositive removed, first word re-cased.
pub fn subject_text(doc: &Document, s: &Sentence, p: &Parsed) -> String {
    let text = p
        .subject_ranges()
        .iter()
        .map(|&(a, b)| s.slice(a, b))
        .collect::<Vec<_>>()
        .join(" ");
    let plural_verb = matches!(s.lower(p.verb), "are" | "were" | "have" | "do")
        || matches!(
            p.verb_kind,
            VerbKind::Lexical {
                tense: Tense::PresentPlural,
                ..
            }
        );
    if p.subject_start == 0 {
        doc.mid_sentence_subject(&text, plural_verb)
    } else {
        text
    }
}

/// The text of tokens `from..to` without the token ranges in `remove`, keeping the original
/// spacing and punctuation between kept neighbours.
pub fn text_without(s: &Sentence, from: usize, to: usize, remove: &[(usize, usize)]) -> String {
    text_without_mapped(s, from, to, remove, &|_| None)
}

/// [`text_without`], with some words replaced.
fn text_without_mapped(
    s: &Sentence,
    from: usize,
    to: usize,
    remove: &[(usize, usize)],
    replace: &dyn Fn(usize) -> Option<String>,
) -> String {
    let kept: Vec<usize> = (from..to.min(s.tokens.len()))
        .filter(|&i| !remove.iter().any(|&(a, b)| (a..b).contains(&i)))
        .collect();
    let mut out = String::new();
    for (n, &i) in kept.iter().enumerate() {
        if n > 0 {
            let contiguous = kept[n - 1] + 1 == i;
            if contiguous {
                out.push_str(s.gap(i));
            } else {
                out.push(' ');
            }
        }
        match replace(i) {
            Some(word) => out.push_str(&word),
            None => out.push_str(s.word(i)),
        }
    }
    tidy(&out)
}

/// The rest of a clause after its verb, for a question that puts "do" before the subject: verbs
/// coordinated with the first take its base form too ("abolished X and adopted Y" -> "abolish X
/// and adopt Y").
pub fn predicate_rest(
    s: &Sentence,
    p: &Parsed,
    from: usize,
    to: usize,
    remove: &[(usize, usize)],
) -> String {
    let VerbKind::Lexical { tense, .. } = &p.verb_kind else {
        return text_without(s, from, to, remove);
    };
    let mut out = text_without_mapped(s, from, to, remove, &|k| {
        if !matches!(s.lower(k.wrapping_sub(1)), "and" | "or") || k == 0 {
            return None;
        }
        let w = s.lower(k);
        match tense {
            Tense::Past => verbs::past_base(w)
                .filter(|_| w.ends_with("ed") || words::irregular_past_base(w).is_some()),
            Tense::PresentSingular => verbs::present_base(w)
                .filter(|(_, t)| *t == Tense::PresentSingular)
                .map(|(b, _)| b),
            Tense::PresentPlural => None,
        }
    });
    if out.is_empty() {
        out = text_without(s, from, to, remove);
    }
    out
}

/// Collapses whitespace, drops dangling punctuation at the ends and closes an opened bracket.
pub fn tidy(text: &str) -> String {
    let mut out = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" ,", ",")
        .trim_matches(|c: char| matches!(c, ',' | ';' | ':' | ' ' | '-' | '–' | '—'))
        .to_owned();
    let opens = out.matches('(').count();
    let closes = out.matches(')').count();
    if opens > closes {
        out.push(')');
    }
    out
}

/// A question that moves the verb: "{wh} {aux} {subject} {rest}?" or "{wh} {do} {subject}
/// {base} {rest}?". `None` for a negated clause.
pub fn inverted(doc: &Document, s: &Sentence, p: &Parsed, wh: &str, rest: &str) -> Option<String> {
    if p.negated(s) {
        return None;
    }
    let subject = subject_text(doc, s, p);
    let question = match &p.verb_kind {
        VerbKind::Auxiliary => format!("{wh} {} {subject} {rest}", s.lower(p.verb)),
        VerbKind::Lexical { base, tense } => {
            format!("{wh} {} {subject} {base} {rest}", tense.do_form())
        }
    };
    Some(format!("{}?", tidy(&question)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_parse(text: &str) -> (Document, Parsed) {
        let doc = Document::parse(text);
        let s = &doc.sentences[0];
        let clause = clauses(s)[0];
        let p = parse(s, clause).unwrap_or_else(|| panic!("no parse of {text:?}"));
        (doc, p)
    }

    fn subject_and_verb(text: &str) -> (String, String) {
        let (doc, p) = first_parse(text);
        let s = &doc.sentences[0];
        (subject_text(&doc, s, &p), s.word(p.verb).to_owned())
    }

    #[test]
    fn subjects_and_verbs() {
        assert_eq!(
            subject_and_verb("Napoleon Bonaparte seized power in 1799."),
            ("Napoleon Bonaparte".into(), "seized".into())
        );
        assert_eq!(
            subject_and_verb("In 1789 the Third Estate formed the National Assembly."),
            ("the Third Estate".into(), "formed".into())
        );
        assert_eq!(
            subject_and_verb(
                "The Calvin cycle, also known as the light-independent reactions, takes place in the stroma."
            ),
            ("the Calvin cycle".into(), "takes".into())
        );
        assert_eq!(
            subject_and_verb(
                "Inside it, stacks of flattened sacs called thylakoids are surrounded by a fluid."
            ),
            (
                "stacks of flattened sacs called thylakoids".into(),
                "are".into()
            )
        );
        assert_eq!(
            subject_and_verb("Britain had several advantages."),
            ("Britain".into(), "had".into())
        );
    }

    #[test]
    fn vague_subjects_are_refused() {
        for text in [
            "It takes place in the leaves.",
            "This promise is known as the oath.",
            "They met on a tennis court.",
        ] {
            let doc = Document::parse(text);
            let s = &doc.sentences[0];
            assert!(parse(s, clauses(s)[0]).is_none(), "{text}");
        }
    }

    #[test]
    fn questions_move_the_verb() {
        let ask = |text: &str, wh: &str, drop_from: usize| {
            let (doc, p) = first_parse(text);
            let s = &doc.sentences[0];
            let rest = text_without(s, p.verb + 1, drop_from.min(p.end), &[]);
            inverted(&doc, s, &p, wh, &rest).unwrap_or_default()
        };
        assert_eq!(
            ask("Napoleon Bonaparte seized power in 1799.", "When", 4),
            "When did Napoleon Bonaparte seize power?"
        );
        assert_eq!(
            ask("The monarchy was abolished in 1792.", "When", 4),
            "When was the monarchy abolished?"
        );
        assert_eq!(
            ask(
                "The light-dependent reactions take place in the thylakoid membranes.",
                "Where",
                5
            ),
            "Where do the light-dependent reactions take place?"
        );
    }

    #[test]
    fn clauses_split_before_a_new_subject() {
        let doc = Document::parse(
            "The monarchy was abolished in 1792, and France became a republic; the king was tried.",
        );
        let s = &doc.sentences[0];
        let texts: Vec<_> = clauses(s).iter().map(|c| s.slice(c.start, c.end)).collect();
        assert_eq!(
            texts,
            [
                "The monarchy was abolished in 1792",
                "France became a republic",
                "the king was tried"
            ]
        );
        // An enumeration's ", and" is not a new clause.
        let doc = Document::parse("Plants need light, water, and carbon dioxide.");
        assert_eq!(clauses(&doc.sentences[0]).len(), 1);
    }
}
