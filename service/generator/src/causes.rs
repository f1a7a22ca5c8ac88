//! Cause and effect cards. "X leads to / results in / causes / gives rise to Y" gives a cause
//! card ("What leads to Y?" -> X) and an effect card ("What does X lead to?" -> Y); "Y is caused
//! by X" and "Y results from X" the same pair the other way round; "Y because X" and "Because X,
//! Y" a why-question ("Why did Y?" -> "Because X").

use super::analysis::Analysis;
use super::candidate::{Candidate, Kind};
use super::clause::{self, IntroKind, Parsed, VerbKind};
use super::text::{Sentence, clean_fragment, word_count};
use super::verbs::{self, Tense};
use super::words::{self, listed};

/// Longest cause or effect, in words; longer ones are whole arguments, not answers.
const MAX_PART_WORDS: usize = 25;

/// Causal verbs (base form) and the words that complete them.
const CAUSAL: &[(&str, &[&str])] = &[
    ("bring", &["about"]),
    ("cause", &[]),
    ("contribute", &["to"]),
    ("give", &["rise", "to"]),
    ("lead", &["to"]),
    ("result", &["in"]),
    ("spark", &[]),
    ("trigger", &[]),
];

pub fn extract(a: &Analysis) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (si, s) in a.fact_sentences() {
        for (_, parsed) in &a.clauses[si] {
            let Some(p) = parsed else { continue };
            if p.negated(s) {
                continue;
            }
            out.extend(active(a, si, s, p));
            out.extend(passive(a, si, s, p));
            out.extend(because(a, si, s, p));
        }
    }
    out
}

/// Where a cause or effect starting at `from` ends: at a comma (", because ...", ", which ...")
/// or before a second verb ("a rise in costs and led to ...").
fn part_end(s: &Sentence, from: usize, end: usize) -> usize {
    (from + 1..end)
        .find(|&k| {
            s.gap(k).contains(',')
                || (s.lower(k) == "and"
                    && (verbs::past_base(s.lower(k + 1)).is_some_and(|_| {
                        s.lower(k + 1).ends_with("ed")
                            || super::words::irregular_past_base(s.lower(k + 1)).is_some()
                    }) || listed(words::AUXILIARIES, s.lower(k + 1))))
        })
        .unwrap_or(end)
}

fn part_ok(text: &str) -> bool {
    let words = word_count(text);
    let first = text.split_whitespace().next().unwrap_or("").to_lowercase();
    (1..=MAX_PART_WORDS).contains(&words) && !listed(words::VAGUE_SUBJECT_STARTS, &first)
}

/// The causal verb of the clause: at the verb itself, or after a modal ("can lead to").
fn causal_at(s: &Sentence, p: &Parsed) -> Option<(usize, &'static str, &'static [&'static str])> {
    let (at, base) = match &p.verb_kind {
        VerbKind::Lexical { base, .. } => (p.verb, base.clone()),
        VerbKind::Auxiliary
            if matches!(
                s.lower(p.verb),
                "can" | "could" | "may" | "might" | "will" | "would"
            ) =>
        {
            (p.verb + 1, s.lower(p.verb + 1).to_owned())
        }
        VerbKind::Auxiliary => return None,
    };
    let (verb, particles) = CAUSAL.iter().find(|(v, _)| *v == base)?;
    let matches = particles
        .iter()
        .enumerate()
        .all(|(k, w)| s.lower(at + 1 + k) == *w);
    // "caused by" is the passive, handled there.
    (matches && s.lower(at + 1) != "by").then_some((at, *verb, *particles))
}

fn active(a: &Analysis, si: usize, s: &Sentence, p: &Parsed) -> Vec<Candidate> {
    let Some((at, base, particles)) = causal_at(s, p) else {
        return Vec::new();
    };
    if matches!(p.intro, Some(i) if i.kind == IntroKind::Subordinate) {
        return Vec::new();
    }
    let effect_from = at + 1 + particles.len();
    let effect = clause::text_without(s, effect_from, part_end(s, effect_from, p.end), &[]);
    let cause = clause::subject_text(&a.doc, s, p);
    if !part_ok(&effect) || !part_ok(&cause) {
        return Vec::new();
    }
    let mut out = Vec::new();
    // "What led to the Reign of Terror?": the verb as the text writes it, but singular after
    // "What" ("Wars lead to" -> "What leads to").
    let verb_phrase = match &p.verb_kind {
        VerbKind::Lexical {
            base,
            tense: Tense::PresentPlural,
        } => format!("{} {}", verbs::third_person(base), particles.join(" ")),
        _ => clause::text_without(s, p.verb, effect_from, &[]),
    };
    out.push(
        Candidate::new(
            Kind::Cause,
            format!("What {verb_phrase} {effect}?"),
            clean_fragment(&cause),
            si,
        )
        .with_facts([cause.to_lowercase()]),
    );
    // "What did foreign wars and revolts lead to?"
    let rest = if at == p.verb {
        particles.join(" ")
    } else {
        format!("{base} {}", particles.join(" "))
    };
    if let Some(question) = clause::inverted(&a.doc, s, p, "What", &rest) {
        out.push(
            Candidate::new(Kind::Effect, question, clean_fragment(&effect), si)
                .with_facts([effect.to_lowercase()])
                .with_weight(0.9),
        );
    }
    out
}

/// "Y is caused by X", "Y results from X", "Y is due to X".
fn passive(a: &Analysis, si: usize, s: &Sentence, p: &Parsed) -> Vec<Candidate> {
    let v = p.verb;
    let (cause_from, question_rest) = match (&p.verb_kind, s.lower(v + 1), s.lower(v + 2)) {
        (VerbKind::Auxiliary, "caused", "by") => (v + 3, "caused by"),
        (VerbKind::Auxiliary, "due", "to") => (v + 3, "due to"),
        (VerbKind::Lexical { base, .. }, "from", _) if base == "result" => (v + 2, "from"),
        _ => return Vec::new(),
    };
    if matches!(p.verb_kind, VerbKind::Auxiliary)
        && !matches!(s.lower(v), "is" | "are" | "was" | "were")
    {
        return Vec::new();
    }
    if matches!(p.intro, Some(i) if i.kind == IntroKind::Subordinate) {
        return Vec::new();
    }
    let cause = clause::text_without(s, cause_from, part_end(s, cause_from, p.end), &[]);
    let effect = clause::subject_text(&a.doc, s, p);
    if !part_ok(&cause) || !part_ok(&effect) {
        return Vec::new();
    }
    let Some(question) = clause::inverted(&a.doc, s, p, "What", question_rest) else {
        return Vec::new();
    };
    let mut out = vec![
        Candidate::new(Kind::Cause, question, clean_fragment(&cause), si)
            .with_facts([cause.to_lowercase()]),
    ];
    // "Hyperinflation results from X" -> "What results from X?"
    if let VerbKind::Lexical { tense, .. } = &p.verb_kind {
        let verb = match tense {
            Tense::Past => "resulted",
            _ => "results",
        };
        out.push(
            Candidate::new(
                Kind::Effect,
                format!("What {verb} from {cause}?"),
                clean_fragment(&effect),
                si,
            )
            .with_facts([effect.to_lowercase()])
            .with_weight(0.9),
        );
    }
    out
}

/// "Y because X" and "Because X, Y" -> "Why Y?" / "Because X".
fn because(a: &Analysis, si: usize, s: &Sentence, p: &Parsed) -> Option<Candidate> {
    let (reason, effect_end) = match p.intro {
        Some(intro)
            if intro.kind == IntroKind::Subordinate && s.lower(intro.start) == "because" =>
        {
            (clause::text_without(s, intro.start, intro.end, &[]), p.end)
        }
        Some(intro) if intro.kind == IntroKind::Subordinate => return None,
        _ => {
            let at = (p.verb + 1..p.end).find(|&k| s.lower(k) == "because")?;
            // "X was crowded, and diseases spread because ...": which part the reason explains
            // is not clear.
            if (p.verb + 1..at)
                .any(|k| s.gap(k).contains(',') && matches!(s.lower(k), "and" | "but"))
            {
                return None;
            }
            // The reason runs to the end of the sentence's clause, past commas inside it.
            let end = (at + 1..s.tokens.len())
                .find(|&k| s.gap(k).contains([';', ':']))
                .unwrap_or(s.tokens.len());
            (clause::text_without(s, at, end, &[]), at)
        }
    };
    // "because of this": the reason is elsewhere.
    let reason_words: Vec<&str> = reason.split_whitespace().collect();
    let vague = reason_words.len() <= 3
        && reason_words.iter().any(|w| {
            matches!(
                w.to_lowercase()
                    .trim_matches(|c: char| !c.is_alphanumeric()),
                "this" | "that" | "these" | "those" | "it"
            )
        });
    if vague || word_count(&reason) > MAX_PART_WORDS + 1 || word_count(&reason) < 2 {
        return None;
    }
    // The question stops at its first comma (", for example").
    let effect_end = (p.verb + 1..effect_end)
        .find(|&k| s.gap(k).contains(','))
        .unwrap_or(effect_end);
    let rest = clause::predicate_rest(s, p, p.verb + 1, effect_end, &[]);
    let tail = match p.intro {
        Some(i) if i.kind == IntroKind::Date || i.kind == IntroKind::Phrase => {
            format!(" {}", lower_first(&clause::tidy(s.slice(i.start, i.end))))
        }
        _ => String::new(),
    };
    let question = clause::inverted(&a.doc, s, p, "Why", &format!("{rest}{tail}"))?;
    Some(Candidate::new(
        Kind::Cause,
        question,
        clean_fragment(&reason),
        si,
    ))
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) if chars.clone().next().is_some_and(char::is_lowercase) || text.len() == 1 => {
            c.to_lowercase().chain(chars).collect()
        }
        _ => text.to_owned(),
    }
}
