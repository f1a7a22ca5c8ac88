//! Definition cards: sentences of the form "X is a Y", "X refers to Y", "X is defined as Y",
//! "X means Y", "X consists of Y", "X, also known as Y, ..." and "X is called Y" become
//! "What is X?"-style questions ("Who was X?" for a person) whose answer is the cleaned-up Y. A
//! Y that is an enumeration makes the card a list card.

use super::analysis::Analysis;
use super::candidate::{Candidate, Kind};
use super::lists;
use super::text::{Document, Origin, Sentence, clean_fragment, is_acronym, word_count};
use super::verbs;
use super::words::{self, is_stopword, listed};

/// A definition found in the text.
#[derive(Debug, Clone)]
pub struct Definition {
    /// Lower-cased subject, to avoid asking about the same thing twice.
    pub key: String,
    pub question: String,
    pub answer: String,
    /// Index of the sentence it came from.
    pub sentence: usize,
}

#[derive(Debug, Clone, Copy)]
enum Form {
    /// "X is/are/was/were (a|an|the) Y"; the verb is kept for the question.
    Be,
    DefinedAs,
    RefersTo,
    Means,
    ConsistsOf,
    /// "X is called Y" / "X is known as Y": the question asks for the name.
    Called,
    /// "X, also known as Y, ...".
    AlsoKnownAs,
}

/// Connectors, longest first so "is defined as" wins over "is" at the same position.
const CONNECTORS: &[(&[&str], Form)] = &[
    (&["also", "known", "as"], Form::AlsoKnownAs),
    (&["is", "defined", "as"], Form::DefinedAs),
    (&["are", "defined", "as"], Form::DefinedAs),
    (&["is", "known", "as"], Form::Called),
    (&["are", "known", "as"], Form::Called),
    (&["is", "called"], Form::Called),
    (&["are", "called"], Form::Called),
    (&["refers", "to"], Form::RefersTo),
    (&["refer", "to"], Form::RefersTo),
    (&["consists", "of"], Form::ConsistsOf),
    (&["consist", "of"], Form::ConsistsOf),
    (&["means"], Form::Means),
    (&["is"], Form::Be),
    (&["are"], Form::Be),
    (&["was"], Form::Be),
    (&["were"], Form::Be),
];

/// Words that start a clause rather than name a thing: "It is", "There are", "In 1789 the...".
fn bad_subject_start(word: &str) -> bool {
    words::CLAUSE_STARTERS.binary_search(&word).is_ok()
}

/// "X are Y" without an article is a definition ("Mitochondria are membrane-bound organelles")
/// unless Y starts like a description or a verb phrase ("are able to", "are found in").
fn bad_bare_predicate_start(word: &str) -> bool {
    word.ends_with("ly")
        || word.ends_with("ed")
        || is_stopword(word)
        || listed(words::DESCRIPTIVE, word)
        || listed(words::IRREGULAR_PARTICIPLES, word)
        || verbs::present_base(word).is_some()
}

/// Definition (and definition-shaped list) cards of the analysed text.
pub fn extract(a: &Analysis) -> Vec<Candidate> {
    definitions(&a.doc)
        .into_iter()
        .map(|d| {
            let kind = if lists::is_enumeration(&d.answer) {
                Kind::List
            } else {
                Kind::Definition
            };
            let question = if is_person(&d) {
                d.question.replacen("What ", "Who ", 1)
            } else {
                d.question
            };
            let mut facts = vec![d.key.clone()];
            // "The mitochondrion" defines the term "mitochondrion".
            if let Some(head) = d.key.strip_prefix("the ").or(d.key.strip_prefix("a ")) {
                facts.push(head.to_owned());
            }
            Candidate::new(kind, question, d.answer, d.sentence).with_facts(facts)
        })
        .collect()
}

/// "Robespierre was a leader of the Jacobins": asked with "Who" when a name is defined as a
/// person ("a lawyer", "the most influential member", "Macbeth's wife"). The answer decides, not
/// the name: "Macbeth is a tragedy" is asked with "What" even where Macbeth is also a man.
fn is_person(d: &Definition) -> bool {
    if !d.question.starts_with("What was ") && !d.question.starts_with("What is ") {
        return false;
    }
    let person_noun = d.answer.split_whitespace().take(5).any(|w| {
        let w = w
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase();
        listed(words::ROLE_NOUNS, &w) || listed(words::PERSON_NOUNS, &w)
    });
    // "What was Robespierre?" names someone; "What was the leader?" does not.
    let shown_as_name = d
        .question
        .split_whitespace()
        .nth(2)
        .is_some_and(|w| w.starts_with(char::is_uppercase));
    person_noun && shown_as_name
}

fn definitions(doc: &Document) -> Vec<Definition> {
    let mut out: Vec<Definition> = Vec::new();
    for (index, sentence) in doc.sentences.iter().enumerate() {
        if sentence.origin == Origin::Heading {
            continue;
        }
        let found = from_sentence(doc, sentence, index)
            .into_iter()
            .chain(acronyms(sentence, index));
        for def in found {
            if !out.iter().any(|d| d.key == def.key) {
                out.push(def);
            }
        }
    }
    out
}

fn from_sentence(doc: &Document, s: &Sentence, index: usize) -> Option<Definition> {
    let (at, len, form) = find_connector(s)?;
    let verb = s.tokens[at].lower.as_str();
    let raw_subject = &s.text[..s.tokens[at].start];
    let rest = &s.text[s.tokens[at + len - 1].end..];

    let max_subject_words = if matches!(form, Form::Called) { 12 } else { 5 };
    let subject = subject_phrase(raw_subject, max_subject_words)?;
    let plural = matches!(verb, "are" | "were" | "refer" | "consist");
    let shown = doc.mid_sentence_subject(&subject, plural);

    let (question, answer) = match form {
        Form::Be => {
            let next = s.tokens.get(at + 1)?.lower.as_str();
            let with_article = matches!(next, "a" | "an" | "the");
            if !with_article && (!plural || bad_bare_predicate_start(next)) {
                return None;
            }
            if with_article && matches!(s.tokens.get(at + 2)?.lower.as_str(), "same" | "case") {
                return None;
            }
            (format!("What {verb} {shown}?"), predicate(rest, 2)?)
        }
        Form::DefinedAs => (format!("How {verb} {shown} defined?"), predicate(rest, 2)?),
        Form::RefersTo => (
            format!(
                "What {} {shown} refer to?",
                if plural { "do" } else { "does" }
            ),
            predicate(rest, 1)?,
        ),
        Form::Means => (format!("What does {shown} mean?"), predicate(rest, 1)?),
        Form::ConsistsOf => (
            format!(
                "What {} {shown} consist of?",
                if plural { "do" } else { "does" }
            ),
            predicate(rest, 1)?,
        ),
        Form::Called => {
            let how = if s.tokens[at + 1].lower == "known" {
                "known as"
            } else {
                "called"
            };
            (format!("What {verb} {shown} {how}?"), name_phrase(rest)?)
        }
        Form::AlsoKnownAs => {
            // Only "X, also known as Y": the comma marks X as the whole preceding noun phrase.
            if !raw_subject.trim_end().ends_with(',') {
                return None;
            }
            let verb = if subject_looks_plural(&subject) {
                "are"
            } else {
                "is"
            };
            (
                format!("What {verb} {shown} also known as?"),
                name_phrase(rest)?,
            )
        }
    };
    Some(Definition {
        key: subject.to_lowercase(),
        question,
        answer,
        sentence: index,
    })
}

/// "adenosine triphosphate (ATP)" → "What does ATP stand for?". The expansion is the run of
/// content words before the bracket, starting at a word with the acronym's first letter.
fn acronyms(s: &Sentence, index: usize) -> Vec<Definition> {
    let mut out = Vec::new();
    for k in 1..s.tokens.len() {
        let acronym = s.word(k);
        let bracketed = s.text[s.tokens[k - 1].end..s.tokens[k].start].trim() == "("
            && s.text[s.tokens[k].end..].starts_with(')');
        let letters = acronym.chars().count();
        if !bracketed || !is_acronym(acronym) || letters > 8 {
            continue;
        }
        let mut first = k;
        while first > 0
            && k - first < letters.min(6)
            && !is_stopword(&s.tokens[first - 1].lower)
            && (first == k || s.adjacent(first - 1))
        {
            first -= 1;
        }
        let initial = acronym.chars().next().map(|c| c.to_lowercase().to_string());
        while first < k && s.tokens[first].lower.chars().next().map(|c| c.to_string()) != initial {
            first += 1;
        }
        if first == k {
            continue;
        }
        let expansion = clean_fragment(&s.text[s.tokens[first].start..s.tokens[k - 1].end]);
        out.push(Definition {
            key: acronym.to_lowercase(),
            question: format!("What does {acronym} stand for?"),
            answer: expansion,
            sentence: index,
        });
    }
    out
}

/// The leftmost connector (longest at a tie) with some subject before it.
fn find_connector(s: &Sentence) -> Option<(usize, usize, Form)> {
    for at in 1..s.tokens.len() {
        for (words, form) in CONNECTORS {
            let end = at + words.len();
            if end > s.tokens.len() {
                continue;
            }
            let matches = words
                .iter()
                .enumerate()
                .all(|(k, w)| s.tokens[at + k].lower == *w && (k == 0 || s.adjacent(at + k - 1)));
            if matches {
                return Some((at, words.len(), *form));
            }
        }
    }
    None
}

/// The noun phrase before the connector: an introductory clause ("In plants, ...") is dropped,
/// an appositive ("Mitochondria, the powerhouses of the cell, are ...") cut off, and clause-like
/// or over-long subjects rejected.
fn subject_phrase(raw: &str, max_words: usize) -> Option<String> {
    let raw = raw.trim();
    let phrase = if let Some(before) = raw.strip_suffix(',') {
        before.split(',').next().unwrap_or(before)
    } else {
        raw.rsplit(',').next().unwrap_or(raw)
    };
    let phrase = phrase
        .trim()
        .trim_matches(|c: char| !c.is_alphanumeric() && c != '(' && c != ')');
    let words: Vec<String> = phrase.split_whitespace().map(str::to_lowercase).collect();
    let first = words.first()?;
    let last = words.last()?;
    let clean_last = last.trim_matches(|c: char| !c.is_alphanumeric());
    if words.len() > max_words
        || phrase.chars().count() > 100
        || bad_subject_start(first.trim_matches(|c: char| !c.is_alphanumeric()))
        || (is_stopword(clean_last) && words.len() > 1)
        || bad_subject_start(clean_last)
        || !phrase.chars().any(char::is_alphabetic)
    {
        return None;
    }
    Some(phrase.to_owned())
}

fn subject_looks_plural(subject: &str) -> bool {
    let last = subject.rsplit(' ').next().unwrap_or(subject).to_lowercase();
    last.ends_with('s') && !last.ends_with("ss") && !last.ends_with("us") && !last.ends_with("is")
}

/// The defining part of the sentence: up to a `;`, a `:` or a new clause (", and it was ..."),
/// shortened at a comma if very long.
fn predicate(rest: &str, min_words: usize) -> Option<String> {
    let mut text = rest.split([';', ':']).next().unwrap_or(rest).trim();
    if !lists::is_enumeration(clean_fragment(text).as_str()) {
        for boundary in [
            ", and ",
            ", but ",
            ", while ",
            ", whereas ",
            ", so ",
            ", which is why",
            ", because ",
        ] {
            if let Some(at) = text.find(boundary) {
                text = &text[..at];
            }
        }
    }
    if word_count(text) > 30 {
        let mut cut = None;
        for (i, _) in text.match_indices(", ") {
            if word_count(&text[..i]) >= 5 {
                cut = Some(i);
                break;
            }
        }
        text = &text[..cut?];
        if word_count(text) > 30 {
            return None;
        }
    }
    let answer = clean_fragment(text);
    (word_count(&answer) >= min_words && answer.chars().any(char::is_alphabetic)).then_some(answer)
}

/// A name: the first clause after "called" / "known as", a few words at most.
fn name_phrase(rest: &str) -> Option<String> {
    let text = rest.split([',', ';', ':', '(', '.']).next().unwrap_or(rest);
    let answer = clean_fragment(text);
    let words = word_count(&answer);
    ((1..=6).contains(&words) && answer.chars().any(char::is_alphabetic)).then_some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(text: &str) -> Vec<(String, String)> {
        definitions(&Document::parse(text))
            .into_iter()
            .map(|d| (d.question, d.answer))
            .collect()
    }

    fn one(q: &str, a: &str) -> Vec<(String, String)> {
        vec![(q.to_owned(), a.to_owned())]
    }

    #[test]
    fn be_forms() {
        assert_eq!(
            defs("The mitochondrion is an organelle found in most eukaryotic cells."),
            one(
                "What is the mitochondrion?",
                "An organelle found in most eukaryotic cells"
            )
        );
        assert_eq!(
            defs("Mitochondria are membrane-bound organelles. Cells contain many mitochondria."),
            one("What are mitochondria?", "Membrane-bound organelles")
        );
        assert_eq!(
            defs("In France, the Estates-General was a legislative assembly of the three estates."),
            one(
                "What was the Estates-General?",
                "A legislative assembly of the three estates"
            )
        );
    }

    #[test]
    fn other_forms() {
        assert_eq!(
            defs("Osmosis refers to the movement of water across a membrane. Cells use osmosis."),
            one(
                "What does osmosis refer to?",
                "The movement of water across a membrane"
            )
        );
        assert_eq!(
            defs("Entropy is defined as a measure of disorder. Systems gain entropy."),
            one("How is entropy defined?", "A measure of disorder")
        );
        assert_eq!(
            defs("The cytoskeleton consists of microtubules and filaments."),
            one(
                "What does the cytoskeleton consist of?",
                "Microtubules and filaments"
            )
        );
        assert_eq!(
            defs("The process by which cells divide is called mitosis."),
            one(
                "What is the process by which cells divide called?",
                "Mitosis"
            )
        );
        assert_eq!(
            defs("Vitamin C, also known as ascorbic acid, is found in citrus fruit."),
            one("What is Vitamin C also known as?", "Ascorbic acid")
        );
    }

    #[test]
    fn rejects_pronouns_clauses_and_vague_predicates() {
        assert!(defs("It is a good idea to revise daily.").is_empty());
        assert!(defs("There are many organelles in a cell.").is_empty());
        assert!(defs("This is the reason cells divide.").is_empty());
        assert!(defs("Plants are able to make food from light.").is_empty());
        assert!(defs("Photosynthesis is important for life.").is_empty());
        assert!(
            defs("The result of the long and complicated experiment in the lab is a mess.")
                .is_empty()
        );
    }

    #[test]
    fn names_keep_their_capitals() {
        assert_eq!(
            defs("Robespierre was a leader of the Jacobins."),
            one("What was Robespierre?", "A leader of the Jacobins")
        );
    }

    #[test]
    fn acronyms_are_expanded() {
        assert_eq!(
            defs(
                "Energy is stored in adenosine triphosphate (ATP). Genes are made of deoxyribonucleic acid (DNA)."
            ),
            vec![
                (
                    "What does ATP stand for?".to_owned(),
                    "Adenosine triphosphate".to_owned()
                ),
                (
                    "What does DNA stand for?".to_owned(),
                    "Deoxyribonucleic acid".to_owned()
                ),
            ]
        );
        assert!(defs("Plants need water (H2O) and light (UV).").is_empty());
    }

    #[test]
    fn introductory_clause_is_dropped() {
        assert_eq!(
            defs("In plants, chlorophyll is the pigment that absorbs light."),
            one("What is chlorophyll?", "The pigment that absorbs light")
        );
    }
}
