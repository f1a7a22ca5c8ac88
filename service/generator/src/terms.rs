//! Key terms: single words and 2-3 word phrases scored by frequency, specificity, capitalisation
//! and position, with plural forms merged and overlapping phrases resolved, in a deterministic
//! order (ordered maps, ties broken by first position and then alphabetically).

use std::collections::{BTreeMap, BTreeSet};

use super::text::{Document, Sentence, is_acronym};
use super::words::{self, is_stopword};

/// Longest term in characters (a run of unspaced script is not a "term").
const MAX_TERM_CHARS: usize = 40;

#[derive(Debug, Clone)]
pub struct Term {
    /// Lower-cased words joined by spaces (singular form when both occur).
    pub key: String,
    /// Every lower-cased form that counts as this term (`cell`, `cells`).
    pub variants: BTreeSet<String>,
    pub score: f64,
    /// Sentences that contain it, in text order.
    pub sentences: Vec<usize>,
    /// A number (a year, a quantity): good for cloze cards, not as a topic to explain.
    pub numeric: bool,
}

#[derive(Debug, Default)]
struct Stats {
    count: u32,
    first: (usize, usize),
    /// Occurrences whose capitalisation says something (not a lone sentence-initial word), and
    /// how many of those were written as a name.
    case_seen: u32,
    case_name: u32,
    /// Occurrences after a determiner or preposition ("the cytoplasm", "of ATP"): a noun phrase.
    after_determiner: u32,
    /// Occurrences after "to", a relative pronoun or a modal ("which increase"): a verb.
    after_verb_cue: u32,
    /// Occurrences right after "the".
    after_the: u32,
    /// Surface forms seen mid-sentence (or anywhere, as a fallback) with their counts.
    forms: BTreeMap<String, u32>,
    sentences: BTreeSet<usize>,
    variants: BTreeSet<String>,
    words: usize,
    numeric: bool,
}

/// The `limit` best terms, best first.
pub fn rank(doc: &Document, topic: &str, limit: usize) -> Vec<Term> {
    let mut stats: BTreeMap<String, Stats> = BTreeMap::new();
    for (si, s) in doc.sentences.iter().enumerate() {
        // Each word is judged once; the windows over it only combine the verdicts.
        let content: Vec<bool> = (0..s.tokens.len()).map(|i| content_word(s, i)).collect();
        for i in 0..s.tokens.len() {
            for len in 1..=3 {
                if let Some(key) = candidate(s, &content, i, len) {
                    record(&mut stats, key, s, si, i, len);
                }
            }
        }
    }
    merge_plurals(&mut stats);

    let topic = topic.to_lowercase();
    let mut terms: Vec<(Term, (usize, usize))> = stats
        .into_iter()
        .filter_map(|(key, st)| score(&key, &st, &topic).map(|sc| (term(key, st, sc.0), sc.1)))
        .collect();
    terms.sort_by(|(a, pa), (b, pb)| {
        b.score
            .total_cmp(&a.score)
            .then(pa.cmp(pb))
            .then_with(|| a.key.cmp(&b.key))
    });

    let mut chosen: Vec<Term> = Vec::new();
    for (t, _) in terms {
        if chosen.len() >= limit {
            break;
        }
        // "Calvin cycle" and "Calvin" are one idea; keep whichever scored higher.
        let overlaps = chosen.iter().any(|c| {
            c.variants.iter().any(|a| {
                t.variants
                    .iter()
                    .any(|b| contains_words(a, b) || contains_words(b, a))
            })
        });
        if !overlaps {
            chosen.push(t);
        }
    }
    chosen
}

/// A word that can be (part of) a term: no function word, no number, three letters or an
/// acronym.
fn content_word(s: &Sentence, i: usize) -> bool {
    let t = &s.tokens[i];
    let w = s.word(i);
    !is_stopword(&t.lower)
        && !w.bytes().all(|b| b.is_ascii_digit())
        && (t.lower.chars().count() >= 3 || is_acronym(w))
}

/// The key of the `len`-word candidate starting at token `i`, if it is one.
fn candidate(s: &Sentence, content: &[bool], i: usize, len: usize) -> Option<String> {
    let toks = s.tokens.get(i..i + len)?;
    if len == 1 {
        let w = s.word(i);
        let year = w.len() == 4 && w.bytes().all(|b| b.is_ascii_digit());
        return (content[i] || year).then(|| toks[0].lower.clone());
    }
    if !content[i] || !content[i + len - 1] || (0..len - 1).any(|k| !s.adjacent(i + k)) {
        return None;
    }
    // "Declaration of Independence", "Reign of Terror": `of` inside a capitalised name.
    let middle_ok = len == 2
        || content[i + 1]
        || (toks[1].lower == "of" && s.is_capitalised(i) && s.is_capitalised(i + 2));
    middle_ok.then(|| {
        toks.iter()
            .map(|t| t.lower.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

fn record(
    stats: &mut BTreeMap<String, Stats>,
    key: String,
    s: &Sentence,
    si: usize,
    i: usize,
    len: usize,
) {
    let surface = s.text[s.tokens[i].start..s.tokens[i + len - 1].end].to_owned();
    if surface.chars().count() > MAX_TERM_CHARS {
        return;
    }
    let st = stats.entry(key.clone()).or_insert_with(|| Stats {
        first: (si, i),
        words: len,
        numeric: surface.chars().all(|c| c.is_ascii_digit()),
        ..Stats::default()
    });
    st.count += 1;
    let words: Vec<&str> = (i..i + len).map(|k| s.word(k)).collect();
    let checked = if i > 0 { &words[..] } else { &words[1..] };
    if !checked.is_empty() {
        st.case_seen += 1;
        if checked.iter().all(|w| w.starts_with(char::is_uppercase)) {
            st.case_name += 1;
        }
    }
    if let Some(prev) = i.checked_sub(1).map(|p| s.tokens[p].lower.as_str()) {
        if is_determiner_or_preposition(prev) {
            st.after_determiner += 1;
        }
        let be = matches!(
            prev,
            "is" | "are" | "was" | "were" | "be" | "been" | "being"
        );
        let participle = len == 1 && (key.ends_with("ed") || key.ends_with("en"));
        if is_verb_cue(prev) || (be && participle) {
            st.after_verb_cue += 1;
        }
        if prev == "the" {
            st.after_the += 1;
        }
    }
    // Sentence-initial capitals say nothing about how the term is written; prefer other forms.
    let weight = if i > 0 { 1000 } else { 1 };
    *st.forms.entry(surface).or_default() += weight;
    st.sentences.insert(si);
    st.variants.insert(key);
}

/// Counts `cells` as `cell` (and `processes` as `process`) when the text has both.
fn merge_plurals(stats: &mut BTreeMap<String, Stats>) {
    let keys: Vec<String> = stats.keys().cloned().collect();
    for key in keys {
        let singular = ["es", "s"]
            .iter()
            .filter_map(|suffix| key.strip_suffix(suffix))
            .find(|stem| !stem.ends_with('s') && stats.contains_key(*stem))
            .map(str::to_owned);
        let Some(singular) = singular else { continue };
        let Some(plural) = stats.remove(&key) else {
            continue;
        };
        let Some(target) = stats.get_mut(&singular) else {
            continue;
        };
        target.count += plural.count;
        target.case_seen += plural.case_seen;
        target.case_name += plural.case_name;
        target.after_determiner += plural.after_determiner;
        target.after_verb_cue += plural.after_verb_cue;
        target.after_the += plural.after_the;
        target.first = target.first.min(plural.first);
        target.sentences.extend(plural.sentences);
        target.variants.extend(plural.variants);
        for (form, n) in plural.forms {
            *target.forms.entry(form).or_default() += n;
        }
    }
}

/// The term's score and first position, or `None` if it is not worth asking about.
fn score(key: &str, st: &Stats, topic: &str) -> Option<(f64, (usize, usize))> {
    let proper = st.case_seen > 0 && st.case_name * 2 > st.case_seen;
    let acronym = st.forms.keys().any(|f| is_acronym(f));
    if st.words > 1 && st.count < 2 && !proper {
        return None;
    }
    // Without a part-of-speech tagger, a word seen once must at least sit where nouns sit; a
    // word mostly used like a verb is never a term.
    if st.words == 1 && !proper && !acronym && !st.numeric {
        let verb_like = st.after_verb_cue * 2 >= st.count;
        if verb_like || (st.count == 1 && st.after_determiner == 0) {
            return None;
        }
    }
    let chars = key.chars().count() as f64;
    let mut score = (1.0 + 1.5 * f64::from(st.count).ln()) * (1.0 + chars.min(12.0) / 12.0);
    score *= match st.words {
        1 => 1.0,
        2 => 1.4,
        _ => 1.6,
    };
    if st.numeric {
        score *= 0.6;
    } else if acronym {
        score *= 1.5;
    } else if proper && st.words > 1 {
        // A multi-word name ("Estates General") outranks its parts.
        score *= 2.0;
    } else if proper {
        score *= 1.3;
    }
    if st.words == 1 {
        if key.ends_with("ly") {
            score *= 0.3;
        } else if key.len() > 5 && (key.ends_with("ing") || key.ends_with("ed")) {
            score *= 0.6;
        }
    }
    if !topic.is_empty() && topic.contains(key) {
        score *= 1.3;
    }
    // Earlier sentences usually introduce the main ideas.
    score *= 1.0 + 0.3 / (1.0 + st.first.0 as f64);
    Some((score, st.first))
}

fn term(key: String, st: Stats, score: f64) -> Term {
    Term {
        key,
        variants: st.variants,
        score,
        sentences: st.sentences.into_iter().collect(),
        numeric: st.numeric,
    }
}

fn is_determiner_or_preposition(word: &str) -> bool {
    words::DETERMINERS.binary_search(&word).is_ok()
}

fn is_verb_cue(word: &str) -> bool {
    words::VERB_CUES.binary_search(&word).is_ok()
}

/// `outer` contains all words of `inner` as a contiguous run.
fn contains_words(outer: &str, inner: &str) -> bool {
    outer == inner
        || outer.starts_with(&format!("{inner} "))
        || outer.ends_with(&format!(" {inner}"))
        || outer.contains(&format!(" {inner} "))
}

/// Byte spans of every occurrence of `term` in `s`.
pub fn occurrences(s: &Sentence, term: &Term) -> Vec<(usize, usize)> {
    let n = term.key.split(' ').count();
    let mut spans = Vec::new();
    let mut i = 0;
    while i + n <= s.tokens.len() {
        // Every variant spells the same words, so the key's first word is a cheap pre-check
        // before building the joined string (this runs for every term and sentence pair).
        let first = &s.tokens[i].lower;
        let may_match = term
            .variants
            .iter()
            .any(|v| v.split(' ').next() == Some(first.as_str()));
        let matches = may_match && (0..n - 1).all(|k| s.adjacent(i + k)) && {
            let key = s.tokens[i..i + n]
                .iter()
                .map(|t| t.lower.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            term.variants.contains(&key)
        };
        if matches {
            spans.push((s.tokens[i].start, s.tokens[i + n - 1].end));
            i += n;
        } else {
            i += 1;
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str, limit: usize) -> Vec<String> {
        rank(&Document::parse(text), "", limit)
            .into_iter()
            .map(|t| t.key)
            .collect()
    }

    #[test]
    fn frequent_specific_terms_rank_first() {
        let text = "Chlorophyll absorbs light. The chlorophyll in leaves is green. \
                    Leaves also contain water. Chlorophyll molecules sit in the thylakoid membrane.";
        let k = keys(text, 3);
        assert_eq!(k[0], "chlorophyll");
        assert!(!k.contains(&"the".to_owned()));
    }

    #[test]
    fn plurals_merge_and_phrases_beat_their_words() {
        let text = "The Calvin cycle fixes carbon. Cells run the Calvin cycle in the stroma. \
                    A cell needs carbon.";
        let doc = Document::parse(text);
        let terms = rank(&doc, "", 10);
        assert!(
            terms.iter().any(|t| t.key == "calvin cycle"),
            "phrase found"
        );
        assert!(!terms.iter().any(|t| t.key == "calvin" || t.key == "cycle"));
        let cell = terms.iter().find(|t| t.key == "cell").expect("cell");
        assert!(cell.variants.contains("cells"));
        assert_eq!(cell.sentences, [1, 2]);
        assert_eq!(occurrences(&doc.sentences[1], cell).len(), 1);
    }

    #[test]
    fn capitalised_names_with_of() {
        let k = keys(
            "The Reign of Terror followed. Many died during the Reign of Terror.",
            2,
        );
        assert_eq!(k[0], "reign of terror");
    }
}
