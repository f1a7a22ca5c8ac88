//! When, who and where cards: a clause with a date phrase, a person as its subject, or a
//! place phrase becomes a question about that part ("When did Napoleon Bonaparte seize power?",
//! "Who discovered penicillin in 1928?", "Where do the light-dependent reactions take place?").

use super::analysis::Analysis;
use super::candidate::{Candidate, Kind};
use super::clause::{self, IntroKind, Parsed, VerbKind};
use super::names::NameClass;
use super::text::{Sentence, clean_fragment, is_adverb};
use super::verbs;
use super::words::{self, listed};

/// Longest place phrase, in words.
const MAX_PLACE_WORDS: usize = 8;

pub fn extract(a: &Analysis) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (si, s) in a.fact_sentences() {
        for (_, parsed) in &a.clauses[si] {
            let Some(p) = parsed else { continue };
            out.extend(when(a, si, s, p));
            out.extend(who(a, si, s, p));
            out.extend(where_(a, si, s, p));
        }
    }
    out
}

/// After an auxiliary, a second verb in another tense cannot follow the inverted subject ("When
/// was the dam completed and controls the flooding?"): the question ends before it.
fn coordinated_end(s: &Sentence, p: &Parsed, end: usize) -> usize {
    if !matches!(p.verb_kind, VerbKind::Auxiliary) {
        return end;
    }
    (p.verb + 2..end)
        .find(|&k| s.lower(k - 1) == "and" && verbs::present_base(s.lower(k)).is_some())
        .map_or(end, |k| k - 1)
}

/// The intro moved to the end of a question ("In 1897 X discovered Y" -> "Who discovered Y in
/// 1897?"), or `None` if the clause opens with a subordinate clause that cannot move.
fn trailing_intro(s: &Sentence, p: &Parsed) -> Option<String> {
    match p.intro {
        None => Some(String::new()),
        Some(intro) => match intro.kind {
            IntroKind::Subordinate => None,
            IntroKind::Connective => Some(String::new()),
            IntroKind::Date | IntroKind::Phrase => {
                let text = clause::tidy(s.slice(intro.start, intro.end));
                let mut chars = text.chars();
                let lowered: String = match chars.next() {
                    Some(c) if s.word(intro.start).chars().skip(1).all(char::is_lowercase) => {
                        c.to_lowercase().chain(chars).collect()
                    }
                    _ => text.clone(),
                };
                Some(format!(" {lowered}"))
            }
        },
    }
}

fn when(a: &Analysis, si: usize, s: &Sentence, p: &Parsed) -> Option<Candidate> {
    if matches!(p.intro, Some(i) if i.kind == IntroKind::Subordinate) {
        return None;
    }
    // "X was a period of Y between D1 and D2" defines X; "When was X a period of Y?" is no
    // question a student asks. The definition and the cloze carry its date.
    let copula = matches!(s.lower(p.verb), "is" | "are" | "was" | "were");
    if copula && matches!(s.lower(p.verb + 1), "a" | "an" | "the") {
        return None;
    }
    let (answer_from, span, remove) = match p.intro {
        Some(intro) if intro.kind == IntroKind::Date => {
            let (answer_from, span) = clause::date_phrase_parts(s, intro.start)?;
            (answer_from, span, None)
        }
        _ => {
            // A date phrase after the verb, in the clause's own stretch: before any "which",
            // "that" or comma ("Macbeth is a tragedy, probably first performed in 1606").
            let stretch_end = (p.verb + 1..p.end)
                .find(|&k| s.gap(k).contains(','))
                .unwrap_or(p.end);
            let (at, answer_from, span) = (p.verb + 1..stretch_end).find_map(|k| {
                if listed(words::CLAUSE_OPENERS, s.lower(k)) || s.lower(k) == "that" {
                    return Some(None);
                }
                clause::date_phrase_parts(s, k).map(|(from, span)| Some((k, from, span)))
            })??;
            (answer_from, span, Some((at, span.end)))
        }
    };
    if span.end > p.end {
        return None;
    }
    let remove: Vec<(usize, usize)> = remove.into_iter().collect();
    // The question keeps the clause up to its first comma: what follows is an aside
    // (", including its support for ...").
    let rest_end = (p.verb + 1..p.end)
        .find(|&k| s.gap(k).contains(',') && !remove.iter().any(|&(a, b)| k > a && k <= b))
        .unwrap_or(p.end);
    // A second date left in the question ("from ... until 2006") makes it a riddle; the cloze
    // of the sentence asks for both.
    let other_date = a.dates(si).any(|d| {
        d.start > p.verb
            && d.end <= rest_end
            && !remove.iter().any(|&(x, y)| d.start >= x && d.end <= y)
    });
    if other_date {
        return None;
    }
    let rest_end = coordinated_end(s, p, rest_end);
    let rest = clause::predicate_rest(s, p, p.verb + 1, rest_end, &remove);
    // The intro, when it is not the date itself, stays with the question.
    let tail = match p.intro {
        Some(i) if i.kind == IntroKind::Date => String::new(),
        _ => trailing_intro(s, p)?,
    };
    let question = clause::inverted(&a.doc, s, p, "When", &format!("{rest}{tail}"))?;
    let answer = clean_fragment(&s.text[s.tokens[answer_from].start..span.to]);
    let fact = span.text(s).to_lowercase();
    // A day and month make the date a sharper fact than a year alone.
    let precision = 1.0 + 0.1 * (span.end - span.start).saturating_sub(1).min(2) as f64;
    Some(
        Candidate::new(Kind::When, question, answer, si)
            .with_facts([fact])
            .with_weight(precision),
    )
}

fn who(a: &Analysis, si: usize, s: &Sentence, p: &Parsed) -> Option<Candidate> {
    if p.negated(s) {
        return None;
    }
    let tail = trailing_intro(s, p)?;
    if let Some(card) = who_by(a, si, s, p, &tail) {
        return Some(card);
    }
    // "Maximilien Robespierre was a leader" is a definition; "was the most influential" is not.
    let copula = matches!(s.lower(p.verb), "is" | "are" | "was" | "were");
    if copula && matches!(s.lower(p.verb + 1), "a" | "an") {
        return None;
    }
    let people = people_in(a, si, s, p.subject_start, p.subject_end)?;
    let rest_end = (p.verb + 1..p.end)
        .find(|&k| s.gap(k).contains(','))
        .unwrap_or(p.end);
    let rest = clause::text_without(s, p.verb, rest_end, &[]);
    let question = format!("Who {}?", clause::tidy(&format!("{rest}{tail}")));
    let facts = [people.to_lowercase()];
    Some(Candidate::new(Kind::Who, question, clean_fragment(&people), si).with_facts(facts))
}

/// The subject `from..to` as one person or "A and B", optionally after "the physician" and the
/// like; the names' text.
fn people_in(a: &Analysis, si: usize, s: &Sentence, from: usize, to: usize) -> Option<String> {
    let mut i = from;
    // "The physician John Snow", "the English physicist Isaac Newton"
    if matches!(s.lower(i), "the" | "a" | "an") {
        i += 1;
        while i < to && a.names.starting_at(si, i).is_none() {
            i += 1;
        }
    }
    let start = i;
    let mut last_end = None;
    while i < to {
        let name = a.names.starting_at(si, i)?;
        if a.names.class(s, &name) != NameClass::Person {
            return None;
        }
        last_end = Some(name.end);
        i = name.end;
        if i < to && s.lower(i) == "and" {
            i += 1;
        } else {
            break;
        }
    }
    let end = last_end?;
    (end == to).then(|| s.slice(start, end).to_owned())
}

/// "The cycle was worked out by Melvin Calvin ..." -> "Who was the cycle worked out by?"
fn who_by(a: &Analysis, si: usize, s: &Sentence, p: &Parsed, tail: &str) -> Option<Candidate> {
    if !matches!(p.verb_kind, VerbKind::Auxiliary)
        || !matches!(s.lower(p.verb), "is" | "are" | "was" | "were")
    {
        return None;
    }
    let participle = s.lower(p.verb + 1);
    let is_participle =
        verbs::past_base(participle).is_some() || listed(words::IRREGULAR_PARTICIPLES, participle);
    if !is_participle {
        return None;
    }
    let mut by = p.verb + 2;
    if matches!(s.lower(by), "out" | "up" | "down" | "off" | "over") {
        by += 1;
    }
    if s.lower(by) != "by" {
        return None;
    }
    let name = a.names.starting_at(si, by + 1)?;
    if a.names.class(s, &name) != NameClass::Person || name.end > p.end {
        return None;
    }
    let between = clause::text_without(s, p.verb + 1, by, &[]);
    let question = clause::inverted(&a.doc, s, p, "Who", &format!("{between} by{tail}"))?;
    let person = s.slice(name.start, name.end);
    Some(
        Candidate::new(Kind::Who, question, clean_fragment(person), si)
            .with_facts([person.to_lowercase()]),
    )
}

fn where_(a: &Analysis, si: usize, s: &Sentence, p: &Parsed) -> Option<Candidate> {
    let tail = trailing_intro(s, p)?;
    // "X was a fortress in Paris" describes X; only "X was executed in Paris" or "X is in Y"
    // says where.
    if matches!(s.lower(p.verb), "is" | "are" | "was" | "were") {
        let mut k = p.verb + 1;
        while k < p.end && is_adverb(s.word(k)) {
            k += 1;
        }
        let next = s.lower(k);
        let participle = verbs::past_base(next).is_some()
            || listed(words::IRREGULAR_PARTICIPLES, next)
            || next == "born";
        if !participle && !matches!(next, "in" | "at" | "inside" | "within" | "on" | "near") {
            return None;
        }
    }
    let (at, end) = (p.verb + 1..p.end).find_map(|k| {
        if listed(words::CLAUSE_OPENERS, s.lower(k)) || s.lower(k) == "that" {
            return Some(None);
        }
        if !matches!(
            s.lower(k),
            "in" | "at" | "inside" | "within" | "on" | "near"
        ) {
            return None;
        }
        place_phrase(a, si, s, p, k).map(|end| Some((k, end)))
    })??;
    // What follows the place after a comma ("in two carrier molecules, ATP and NADPH") belongs
    // to the place.
    let rest_end = (end..p.end)
        .find(|&k| s.gap(k).contains(','))
        .unwrap_or(p.end);
    let rest_end = coordinated_end(s, p, rest_end);
    let rest = clause::predicate_rest(s, p, p.verb + 1, rest_end, &[(at, end)]);
    let question = clause::inverted(&a.doc, s, p, "Where", &format!("{rest}{tail}"))?;
    let answer = clean_fragment(s.slice(at, end));
    let facts = [s.slice(at + 1, end).to_lowercase()];
    Some(Candidate::new(Kind::Where, question, answer, si).with_facts(facts))
}

/// If the preposition at `k` opens a place phrase, the token after it. A named place
/// ("in Paris") counts after any verb; a common noun ("in the stroma") only after a verb of
/// location ("takes place", "is found", "occurs").
fn place_phrase(a: &Analysis, si: usize, s: &Sentence, p: &Parsed, k: usize) -> Option<usize> {
    let mut end = k + 1;
    while end < p.end && end - k <= MAX_PLACE_WORDS {
        let w = s.lower(end);
        let stops = !s.gap(end).trim().is_empty()
            || listed(words::CLAUSE_OPENERS, w)
            || matches!(
                w,
                "that"
                    | "during"
                    | "by"
                    | "for"
                    | "with"
                    | "when"
                    | "after"
                    | "before"
                    | "until"
                    | "because"
                    | "to"
                    | "from"
                    | "as"
                    | "than"
                    | "in"
                    | "on"
                    | "at"
                    | "into"
                    | "over"
                    | "through"
                    | "across"
                    | "under"
                    | "near"
                    | "inside"
                    | "within"
                    | "per"
                    | "like"
                    | "about"
                    | "against"
                    | "among"
                    | "between"
                    | "since"
            )
            || (w == "and" && starts_verb(s, end + 1))
            || a.dates(si).any(|d| d.start == end);
        if stops && end > k + 1 {
            break;
        }
        if stops {
            return None;
        }
        end += 1;
    }
    if end - k > MAX_PLACE_WORDS || end <= k + 1 {
        return None;
    }
    let head = if matches!(s.lower(k + 1), "the" | "a" | "an") {
        k + 2
    } else {
        k + 1
    };
    let named_place = a
        .names
        .starting_at(si, head)
        .filter(|n| a.names.class(s, n) == NameClass::Place && n.end <= end);
    if let Some(place) = named_place
        && (head == k + 1 || s.lower(k + 1) == "the")
    {
        // "declared war on Serbia" is no place; "on" names one only after a verb of location.
        if s.lower(k) == "on" && !location_verb(s, p) {
            return None;
        }
        // The place is the name, and a second one that locates it ("at Cromford in
        // Derbyshire"), not what follows ("on Serbia a month later").
        let in_place = s.lower(place.end) == "in"
            && a.names
                .starting_at(si, place.end + 1)
                .is_some_and(|n| a.names.class(s, &n) == NameClass::Place && n.end <= end);
        return Some(if in_place {
            a.names
                .starting_at(si, place.end + 1)
                .map_or(place.end, |n| n.end)
        } else {
            place.end
        });
    }
    let counted = (1..=12).any(|n| words::count_word(n) == s.lower(head))
        || s.lower(head).starts_with(|c: char| c.is_ascii_digit());
    if head >= end
        || counted
        || listed(words::NON_PLACE_NOUNS, s.lower(head))
        || s.is_capitalised(head)
        || !s.lower(head).chars().all(|c| c.is_alphabetic() || c == '-')
    {
        return None;
    }
    location_verb(s, p).then_some(end)
}

fn starts_verb(s: &Sentence, i: usize) -> bool {
    let w = s.lower(i);
    listed(words::AUXILIARIES, w) || (w.ends_with("ed") && verbs::past_base(w).is_some())
}

/// The clause's verb says where something is or happens.
fn location_verb(s: &Sentence, p: &Parsed) -> bool {
    let base = match &p.verb_kind {
        VerbKind::Lexical { base, .. } => base.clone(),
        VerbKind::Auxiliary => {
            // "is found in", "are mainly located in", "can be found in"
            let mut k = p.verb + 1;
            while matches!(s.lower(k), "be" | "been" | "being") || is_adverb(s.word(k)) {
                k += 1;
            }
            let w = s.lower(k);
            if w == "born" {
                return true;
            }
            if k == p.verb + 1 && matches!(w, "in" | "at" | "inside" | "within") {
                return matches!(s.lower(p.verb), "is" | "are" | "was" | "were");
            }
            match verbs::past_base(w) {
                Some(base) => base,
                None => return false,
            }
        }
    };
    if base == "take" {
        return s.lower(p.verb + 1) == "place";
    }
    listed(words::LOCATION_VERBS, &base) || base == "find"
}
