//! The offline flashcard generator: deterministic flashcards extracted from a text, so the
//! service runs with no LLM (laptops, tests, air-gapped clusters) and costs nothing. A plain,
//! synchronous library: [`generate`] turns a request into cards; `flashcard-provider` wraps it
//! as the `local` provider.
//!
//! The text goes through stages, each a module:
//!
//! 1. segmentation (`text`): paragraphs, headings and bullets to sentences, sentences to words;
//! 2. analysis (`analysis`): clauses with their subject and verb (`clause`, `verbs`), dates,
//!    quantities and acronyms (`spans`), names and whether each is a person or a place
//!    (`names`), key terms ranked by frequency and specificity (`terms`);
//! 3. candidate cards, one module per card type (`definitions`, `events`, `causes`,
//!    `lists`, `cloze`);
//! 4. ranking and de-duplication (`rank`): the requested number of cards that together test the
//!    most important facts, at most one card of a type per sentence, no repeated question.
//!
//! Card types (the flashcard's `type`):
//!
//! | type | from | example question |
//! | --- | --- | --- |
//! | `definition` | "X is a Y", "X refers to Y", "X is called Y", "X (ABC)" | What is a chloroplast? |
//! | `list` | "X includes A, B and C", "such as", "X has three parts: A, B, C" | What were the three estates of the realm? |
//! | `when` | a clause with a date phrase | When did Napoleon Bonaparte seize power? |
//! | `who` | a clause whose subject is a person, "X was written by P" | Who discovered penicillin in 1928? |
//! | `where` | a named place, or a place after "takes place", "is found" | Where does the Calvin cycle take place? |
//! | `cause` | "X leads to / causes / results in Y", "Y because X" | What led to the Reign of Terror? |
//! | `effect` | the same sentences, asked the other way | What does the overuse of antibiotics lead to? |
//! | `cloze` | any sentence: its date, quantity, name or key term blanked; all of them, answers joined by "; ", when it has two or three dates or quantities | Fill in the blank: ... _____ ... |
//! | `note` | only when the text gives nothing else: its topic or the note itself | Which topic do these notes cover? |
//!
//! Questions keep the text's own words and only re-order them ("X seized power in 1799" ->
//! "When did X seize power?"), so they stay grammatical: the first word of a subject is
//! lower-cased only when the text writes it so elsewhere (or it is shaped like a common noun),
//! articles stay with their nouns. Cards come best first, so a smaller count keeps the best of a
//! larger one. Same input, same cards: no randomness, ordered maps only.

mod analysis;
mod candidate;
mod causes;
mod clause;
mod cloze;
mod definitions;
mod events;
mod lists;
mod names;
mod rank;
mod spans;
mod terms;
mod text;
mod verbs;
mod words;

use analysis::Analysis;
use candidate::{Candidate, Kind};
use flashcard_core::job::{Flashcard, JobRequest};
use text::{clean_fragment, clip, word_count};

/// Tokens a prompt around the content would take; keeps usage comparable with an LLM's.
pub const PROMPT_OVERHEAD_TOKENS: u64 = 40;
/// Upper bound of one card's text in characters (questions and answers quote sentences of at most
/// `text::MAX_SENTENCE_CHARS`, plus short fixed wording and a clipped topic).
pub const MAX_CARD_CHARS: u64 = 1_000;
/// Subject and topic are client input; they are clipped before going into a question.
const MAX_LABEL_CHARS: usize = 100;
/// The cards for `request`, best first: at most `card_count` of them (none only when the
/// content holds no words).
pub fn generate(request: &JobRequest) -> Vec<Flashcard> {
    let wanted = usize::try_from(request.card_count).unwrap_or(usize::MAX);
    if wanted == 0 {
        return Vec::new();
    }
    let topic = clip(request.topic.trim(), MAX_LABEL_CHARS);
    let subject = clip(request.subject.trim(), MAX_LABEL_CHARS);
    let analysis = Analysis::new(&request.content, topic);

    let mut candidates: Vec<Candidate> = Vec::new();
    candidates.extend(definitions::extract(&analysis));
    candidates.extend(lists::extract(&analysis));
    candidates.extend(events::extract(&analysis));
    candidates.extend(causes::extract(&analysis));
    candidates.extend(cloze::extract(&analysis));
    candidates.retain(|c| {
        (c.question.chars().count() + c.answer.chars().count()) as u64 <= MAX_CARD_CHARS
    });

    let mut chosen = rank::select(candidates, &analysis.importance, wanted);
    if chosen.is_empty() {
        chosen = note_cards(request, subject, topic, wanted);
    }
    chosen
        .into_iter()
        .map(|c| Flashcard {
            question: c.question,
            answer: c.answer,
            kind: c.kind.as_str().to_owned(),
        })
        .collect()
}

/// When the text gives nothing to ask about (a word or two, a list of symbols): its topic, and
/// the note itself.
fn note_cards(request: &JobRequest, subject: &str, topic: &str, wanted: usize) -> Vec<Candidate> {
    let mut out = Vec::new();
    if !topic.is_empty() {
        let question = if subject.is_empty() || subject.eq_ignore_ascii_case(topic) {
            "Which topic do these notes cover?".to_owned()
        } else {
            format!("Which {subject} topic do these notes cover?")
        };
        out.push(Candidate::new(Kind::Note, question, topic.to_owned(), 0));
    }
    let content = request
        .content
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let has_words = content.chars().any(char::is_alphanumeric);
    if has_words && word_count(&content) <= 40 {
        let about = [topic, subject].into_iter().find(|l| !l.is_empty());
        let question = match about {
            Some(label) => format!("What do the notes on {label} say?"),
            None => "What do these notes say?".to_owned(),
        };
        out.push(Candidate::new(
            Kind::Note,
            question,
            clean_fragment(clip(&content, 300)),
            0,
        ));
    }
    out.retain(|c| !c.answer.is_empty());
    out.truncate(wanted);
    out
}

#[cfg(test)]
mod tests;
