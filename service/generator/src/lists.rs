//! List cards from enumerations: "X includes A, B and C" -> "What does X include?", "gases such
//! as A, B and C" -> "What are three examples of gases?", "X had several advantages: A, B, C" ->
//! "Which advantages did X have?". The answer is the enumeration as the text writes it.

use super::analysis::Analysis;
use super::candidate::{Candidate, Kind};
use super::clause::{self, Clause, Parsed, VerbKind};
use super::text::{Sentence, clean_fragment};
use super::verbs;
use super::words::{self, count_word, listed};

/// Longest item of an enumeration, in words (the last may run a little longer).
const MAX_ITEM_WORDS: usize = 7;

pub fn extract(a: &Analysis) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (si, s) in a.fact_sentences() {
        let clauses = &a.clauses[si];
        for (k, (c, parsed)) in clauses.iter().enumerate() {
            if let Some(p) = parsed {
                out.extend(verb_list(a, si, s, p));
            }
            out.extend(such_as(a, si, s, *c));
            out.extend(appositive_list(a, si, s, *c));
            if let Some((next, _)) = clauses.get(k + 1)
                && s.gap(next.start).contains(':')
            {
                out.extend(colon_list(a, si, s, *c, parsed.as_ref(), *next));
            }
        }
    }
    out
}

/// Items of an enumeration covering tokens `from..to` exactly: comma-separated, the last joined
/// by "and"/"or". `None` if the stretch is not one.
pub fn items(s: &Sentence, from: usize, to: usize) -> Option<Vec<(usize, usize)>> {
    if from >= to {
        return None;
    }
    let mut chunks = Vec::new();
    let mut start = from;
    for k in from + 1..to {
        let gap = s.gap(k).trim();
        if gap == "," {
            chunks.push((start, k));
            start = k;
        } else if !gap.is_empty() && !matches!(gap, "'s" | "’s" | "-") {
            return None;
        }
    }
    chunks.push((start, to));
    let (last_start, last_end) = chunks.pop()?;
    let joiner = |k: usize| matches!(s.lower(k), "and" | "or");
    if joiner(last_start) {
        chunks.push((last_start + 1, last_end));
    } else {
        let split = (last_start + 1..last_end).find(|&k| joiner(k))?;
        chunks.push((last_start, split));
        chunks.push((split + 1, last_end));
    }
    let count = chunks.len();
    let ok = chunks.iter().enumerate().all(|(n, &(a, b))| {
        let limit = if n + 1 == count {
            MAX_ITEM_WORDS + 2
        } else {
            MAX_ITEM_WORDS
        };
        a < b
            && b - a <= limit
            && (a..b).all(|i| {
                let w = s.lower(i);
                !listed(words::AUXILIARIES, w) && !listed(words::CLAUSE_OPENERS, w) && w != "that"
            })
    });
    ok.then_some(chunks)
}

/// Whether a whole phrase is an enumeration of three or more short items ("The clergy, the
/// nobility and the commoners"), not a description that contains one ("The network of cells,
/// tissues and organs that ...").
pub fn is_enumeration(text: &str) -> bool {
    let parts: Vec<&str> = text.split(", ").collect();
    let Some((last, first)) = parts.split_last() else {
        return false;
    };
    let opens_last = last.starts_with("and ") || last.starts_with("or ");
    let tail_joined = opens_last || last.contains(" and ") || last.contains(" or ");
    let items = parts.len() + usize::from(!opens_last);
    let short = |p: &&str| p.split_whitespace().count() <= 4;
    let last_item = last.rsplit([' ']).count();
    parts.len() >= 2
        && tail_joined
        && items >= 3
        && first.iter().all(short)
        && last_item <= MAX_ITEM_WORDS + 2
        && !text.contains(" that ")
        && !text.contains(" which ")
}

fn facts(s: &Sentence, items: &[(usize, usize)]) -> Vec<String> {
    items
        .iter()
        .map(|&(a, b)| s.slice(a, b).to_lowercase())
        .collect()
}

/// "X includes / contains / consists of / is made up of A, B and C".
fn verb_list(a: &Analysis, si: usize, s: &Sentence, p: &Parsed) -> Option<Candidate> {
    let v = p.verb;
    let (from, rest) = match &p.verb_kind {
        VerbKind::Lexical { base, .. }
            if matches!(base.as_str(), "include" | "contain" | "comprise") =>
        {
            (v + 1, String::new())
        }
        VerbKind::Lexical { base, .. } if base == "consist" && s.lower(v + 1) == "of" => {
            (v + 2, "of".to_owned())
        }
        VerbKind::Lexical { base, .. } if base == "depend" && s.lower(v + 1) == "on" => {
            (v + 2, "on".to_owned())
        }
        VerbKind::Auxiliary if matches!(s.lower(v), "is" | "are" | "was" | "were") => {
            match (s.lower(v + 1), s.lower(v + 2), s.lower(v + 3)) {
                ("made" | "composed", "up", "of") => (v + 4, format!("{} up of", s.lower(v + 1))),
                ("made" | "composed", "of", _) => (v + 3, format!("{} of", s.lower(v + 1))),
                _ => return None,
            }
        }
        _ => return None,
    };
    let found = items(s, from, p.end)?;
    if found.len() < 3 {
        return None;
    }
    let question = clause::inverted(&a.doc, s, p, "What", &rest)?;
    let answer = clean_fragment(s.slice(from, p.end));
    Some(Candidate::new(Kind::List, question, answer, si).with_facts(facts(s, &found)))
}

/// "The noble gases, such as helium, neon and argon, ..." -> "What are three examples of noble
/// gases?"
fn such_as(a: &Analysis, si: usize, s: &Sentence, c: Clause) -> Option<Candidate> {
    let at = (c.start + 1..c.end).find(|&k| s.lower(k) == "such" && s.lower(k + 1) == "as")?;
    // The noun phrase before: content words back to a determiner, preposition or verb; only a
    // comma may stand between it and "such as".
    let is_verb = |w: &str| verbs::present_base(w).is_some() || verbs::past_base(w).is_some();
    let mut np_start = at;
    while np_start > c.start && at - np_start < 4 {
        let w = s.lower(np_start - 1);
        let gap = s.gap(np_start).trim();
        let gap_ok = gap.is_empty() || (np_start == at && gap == ",");
        if words::is_stopword(w) || listed(words::AUXILIARIES, w) || is_verb(w) || !gap_ok {
            break;
        }
        np_start -= 1;
    }
    // "a microorganism that causes disease, such as a bacterium": the examples are of the
    // microorganism, not of the disease; only a phrase after an article or preposition is sure.
    let opens = np_start == c.start || {
        let before = s.lower(np_start - 1);
        words::is_stopword(before)
            && !is_verb(before)
            && !listed(words::CLAUSE_OPENERS, before)
            && before != "that"
    };
    if np_start == at || !opens {
        return None;
    }
    let np_end = at;
    let from = at + 2;
    let joiner = (from + 1..c.end).find(|&k| matches!(s.lower(k), "and" | "or"))?;
    let end = (joiner + 1..c.end)
        .find(|&k| !s.gap(k).trim().is_empty())
        .unwrap_or(c.end);
    let found = items(s, from, end)?;
    if found.len() < 2 {
        return None;
    }
    let noun_phrase = clause::tidy(s.slice(np_start, np_end));
    let noun_phrase = if np_start == 0 {
        a.doc.mid_sentence_phrase(&noun_phrase)
    } else {
        noun_phrase
    };
    let question = format!(
        "What are {} examples of {noun_phrase}?",
        count_word(found.len())
    );
    let answer = clean_fragment(s.slice(from, end));
    Some(
        Candidate::new(Kind::List, question, answer, si)
            .with_facts(facts(s, &found))
            .with_weight(0.9),
    )
}

/// "Britain had several advantages: A, B and C." / "There were three estates: A, B and C."
fn colon_list(
    a: &Analysis,
    si: usize,
    s: &Sentence,
    lead: Clause,
    parsed: Option<&Parsed>,
    list: Clause,
) -> Option<Candidate> {
    let found = items(s, list.start, list.end)?;
    if found.len() < 2 {
        return None;
    }
    let question =
        if s.lower(lead.start) == "there" && matches!(s.lower(lead.start + 1), "are" | "were") {
            let be = s.lower(lead.start + 1);
            let np = without_quantifier(s, lead.start + 2, lead.end);
            format!("What {be} the {np}")
        } else {
            let p = parsed?;
            match &p.verb_kind {
                VerbKind::Lexical { base, tense }
                    if matches!(
                        base.as_str(),
                        "have" | "include" | "contain" | "need" | "require"
                    ) =>
                {
                    // "three structures that animal cells lack" -> "Which three structures do plant
                    // cells have that animal cells lack?"
                    let relative = (p.verb + 1..lead.end)
                        .find(|&k| matches!(s.lower(k), "that" | "which" | "who"))
                        .unwrap_or(lead.end);
                    let object = without_quantifier(s, p.verb + 1, relative);
                    let qualifier = s.slice(relative, lead.end);
                    let subject = clause::subject_text(&a.doc, s, p);
                    format!(
                        "Which {object} {} {subject} {base} {qualifier}",
                        tense.do_form()
                    )
                }
                VerbKind::Auxiliary if matches!(s.lower(p.verb), "is" | "are" | "was" | "were") => {
                    // "an assembly of the three estates of the realm:" -> "the three estates of
                    // the realm"
                    let counted = (p.verb + 2..lead.end)
                        .rev()
                        .find(|&k| s.lower(k - 1) == "the" && is_count(s.lower(k)))?;
                    let be = if matches!(s.lower(p.verb), "was" | "were") {
                        "were"
                    } else {
                        "are"
                    };
                    format!("What {be} {}", s.slice(counted - 1, lead.end))
                }
                _ => return None,
            }
        };
    let answer = clean_fragment(s.slice(list.start, list.end));
    let question = format!("{}?", clause::tidy(&question));
    Some(Candidate::new(Kind::List, question, answer, si).with_facts(facts(s, &found)))
}

/// "The four inner planets, Mercury, Venus, Earth and Mars, are small rocky worlds." -> "What
/// are the four inner planets?"
fn appositive_list(a: &Analysis, si: usize, s: &Sentence, c: Clause) -> Option<Candidate> {
    let mut i = c.start;
    if matches!(s.lower(i), "the" | "its" | "their") {
        i += 1;
    }
    if !is_count(s.lower(i)) {
        return None;
    }
    let list_from = (i + 1..c.end.min(i + 6)).find(|&k| s.gap(k).trim() == ",")?;
    let close = (list_from + 1..c.end).find(|&k| {
        let w = s.lower(k);
        s.gap(k).trim() == ","
            && (listed(words::AUXILIARIES, w)
                || verbs::past_base(w).is_some()
                || verbs::present_base(w).is_some())
    })?;
    let found = items(s, list_from, close)?;
    if found.len() < 3 {
        return None;
    }
    let verb = s.lower(close);
    let be = if matches!(verb, "was" | "were")
        || (verb.ends_with("ed") || words::irregular_past_base(verb).is_some())
    {
        "were"
    } else {
        "are"
    };
    let noun_phrase = clause::tidy(s.slice(c.start, list_from));
    let noun_phrase = if c.start == 0 {
        a.doc.mid_sentence_phrase(&noun_phrase)
    } else {
        noun_phrase
    };
    let question = format!("What {be} {noun_phrase}?");
    let answer = clean_fragment(s.slice(list_from, close));
    Some(Candidate::new(Kind::List, question, answer, si).with_facts(facts(s, &found)))
}

fn is_count(word: &str) -> bool {
    (2..=12).any(|n| count_word(n) == word) || word.parse::<u32>().is_ok_and(|n| n >= 2)
}

/// The phrase `from..to` without a leading article or vague quantifier ("several advantages" ->
/// "advantages", "three main types" stays).
fn without_quantifier(s: &Sentence, mut from: usize, to: usize) -> String {
    while from < to
        && (matches!(s.lower(from), "a" | "an" | "the")
            || listed(words::VAGUE_QUANTIFIERS, s.lower(from)))
    {
        from += 1;
    }
    clause::tidy(s.slice(from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::Document;

    #[test]
    fn enumerations() {
        let doc = Document::parse(
            "large deposits of coal and iron ore, a growing population, money and a stable government",
        );
        let s = &doc.sentences[0];
        let found = items(s, 0, s.tokens.len()).unwrap();
        let texts: Vec<_> = found.iter().map(|&(a, b)| s.slice(a, b)).collect();
        assert_eq!(
            texts,
            [
                "large deposits of coal and iron ore",
                "a growing population",
                "money",
                "a stable government"
            ]
        );
        assert!(is_enumeration("The clergy, the nobility and the commoners"));
        assert!(is_enumeration("Helium, neon, and argon"));
        assert!(!is_enumeration("A period of change in France, which ended"));
    }
}
