//! The offline provider: deterministic flashcards extracted from the submitted text, so the
//! service runs with no LLM (laptops, tests, air-gapped clusters) and costs nothing.
//!
//! Cards come in three kinds, in this order: `definition` ("What is X?" from "X is a Y"),
//! `term` (a key term and the sentence that says most about it) and `cloze` (a sentence with a
//! key term blanked out). Same input, same cards: no randomness, ordered maps only.

mod definitions;
mod terms;
mod text;
mod words;

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use super::{Generation, Provider, ProviderError, estimate_tokens};
use crate::job::{Flashcard, JobRequest, TokenUsage};
use text::{Document, clean_fragment, clip, word_count};

/// Tokens a prompt around the content would take; keeps usage comparable with an LLM's.
const PROMPT_OVERHEAD_TOKENS: u64 = 40;
/// Upper bound of one card's text in characters (questions and answers quote sentences of at most
/// `text::MAX_SENTENCE_CHARS`, plus short fixed wording and a clipped topic).
const MAX_CARD_CHARS: u64 = 1_000;
/// Subject and topic are client input; they are clipped before going into a question.
const MAX_LABEL_CHARS: usize = 100;
const BLANK: &str = "_____";
const MAX_CARDS_PER_SENTENCE: u32 = 2;
/// Inputs larger than this are processed on the blocking pool.
const BLOCKING_ABOVE_BYTES: usize = 8 * 1024;
/// Below this many cards from the text itself, its topic and the note as a whole become cards.
const FALLBACK_BELOW: usize = 3;

/// The offline, extractive provider.
#[derive(Debug, Clone, Default)]
pub struct LocalProvider;

impl LocalProvider {
    pub fn new() -> Self {
        LocalProvider
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    fn model(&self) -> &str {
        "local-extractive-v1"
    }

    async fn generate(&self, request: &JobRequest) -> Result<Generation, ProviderError> {
        let flashcards = if request.content.len() > BLOCKING_ABOVE_BYTES {
            // Tens of milliseconds of CPU on the largest inputs: keep it off the async workers
            // that also serve leases, heartbeats and SSE.
            let owned = request.clone();
            tokio::task::spawn_blocking(move || generate_cards(&owned))
                .await
                .map_err(|e| ProviderError::Unusable(format!("local generator failed: {e}")))?
        } else {
            generate_cards(request)
        };
        if flashcards.is_empty() && request.card_count > 0 {
            return Err(ProviderError::Unusable(
                "the content holds no words to make flashcards from".into(),
            ));
        }
        let output: String = flashcards
            .iter()
            .flat_map(|c| [c.question.as_str(), c.answer.as_str()])
            .collect();
        Ok(Generation {
            usage: TokenUsage {
                input_tokens: input_tokens(request),
                output_tokens: estimate_tokens(&output),
            },
            flashcards,
        })
    }

    fn token_bounds(&self) -> super::TokenBounds {
        // Usage is estimated at four characters per token, which never exceeds the bytes.
        super::TokenBounds {
            prompt_overhead_tokens: PROMPT_OVERHEAD_TOKENS,
            output_tokens_per_card: MAX_CARD_CHARS.div_ceil(4),
            output_overhead_tokens: 0,
        }
    }
}

fn input_tokens(request: &JobRequest) -> u64 {
    estimate_tokens(&request.content)
        + estimate_tokens(&request.subject)
        + estimate_tokens(&request.topic)
        + PROMPT_OVERHEAD_TOKENS
}

/// Cards chosen so far, with what they used, so no two share a question or an answer and each
/// sentence is quoted once where the text allows.
#[derive(Default)]
struct Picked {
    definitions: Vec<Flashcard>,
    terms: Vec<Flashcard>,
    clozes: Vec<Flashcard>,
    questions: BTreeSet<String>,
    answers: BTreeSet<String>,
    /// Cards quoting each sentence.
    uses: BTreeMap<usize, u32>,
    /// Term keys already asked about (by a definition or a term card).
    covered: BTreeSet<String>,
}

impl Picked {
    fn len(&self) -> usize {
        self.definitions.len() + self.terms.len() + self.clozes.len()
    }

    fn add(&mut self, kind: &str, question: String, answer: String) -> bool {
        let (q, a) = (normalise(&question), normalise(&answer));
        if question.is_empty()
            || answer.is_empty()
            || self.questions.contains(&q)
            || self.answers.contains(&a)
        {
            return false;
        }
        self.questions.insert(q);
        self.answers.insert(a);
        let card = Flashcard {
            question,
            answer,
            kind: kind.to_owned(),
        };
        match kind {
            "definition" => self.definitions.push(card),
            "term" => self.terms.push(card),
            _ => self.clozes.push(card),
        }
        true
    }

    fn used(&self, sentence: usize) -> u32 {
        self.uses.get(&sentence).copied().unwrap_or(0)
    }

    fn quote(&mut self, sentence: usize) {
        *self.uses.entry(sentence).or_default() += 1;
    }

    fn into_cards(self) -> Vec<Flashcard> {
        let mut cards = self.definitions;
        cards.extend(self.terms);
        cards.extend(self.clozes);
        cards
    }
}

fn normalise(text: &str) -> String {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn generate_cards(request: &JobRequest) -> Vec<Flashcard> {
    let wanted = usize::try_from(request.card_count).unwrap_or(usize::MAX);
    let doc = Document::parse(&request.content);
    let topic = clip(request.topic.trim(), MAX_LABEL_CHARS);
    let subject = clip(request.subject.trim(), MAX_LABEL_CHARS);
    let mut picked = Picked::default();

    for def in definitions::extract(&doc) {
        if picked.len() >= wanted {
            break;
        }
        if picked.add("definition", def.question, def.answer) {
            picked.quote(def.sentence);
            picked.covered.insert(def.key.clone());
            // "The mitochondrion" covers the term "mitochondrion".
            if let Some(head) = def.key.strip_prefix("the ").or(def.key.strip_prefix("a ")) {
                picked.covered.insert(head.to_owned());
            }
        }
    }

    let terms = terms::rank(&doc, topic, wanted.saturating_mul(3).saturating_add(5));
    // Share what is left between term and cloze cards; either takes up the other's shortfall.
    let remaining = wanted.saturating_sub(picked.len());
    let term_quota = picked.len() + remaining.div_ceil(2);
    add_term_cards(&mut picked, &doc, &terms, topic, term_quota);
    add_cloze_cards(&mut picked, &doc, &terms, wanted, 5);
    add_term_cards(&mut picked, &doc, &terms, topic, wanted);
    // Short texts: accept shorter sentences for cloze cards.
    add_cloze_cards(&mut picked, &doc, &terms, wanted, 3);
    add_fallback_cards(&mut picked, request, subject, topic, wanted);
    picked.into_cards()
}

fn add_term_cards(
    picked: &mut Picked,
    doc: &Document,
    terms: &[terms::Term],
    topic: &str,
    upto: usize,
) {
    for term in terms {
        if picked.len() >= upto {
            return;
        }
        if term.numeric || picked.covered.contains(&term.key) {
            continue;
        }
        let Some(si) = best_sentence(picked, doc, term, terms) else {
            continue;
        };
        let question = if topic.is_empty() || topic.to_lowercase().contains(&term.key) {
            format!("What is important to know about {}?", term.display)
        } else {
            format!(
                "In {topic}, what is important to know about {}?",
                term.display
            )
        };
        let answer = clean_fragment(&doc.sentences[si].text);
        if picked.add("term", question, answer) {
            picked.quote(si);
            picked.covered.insert(term.key.clone());
        }
    }
}

/// The unused sentence that says most about `term`: mentions other key terms, is of a readable
/// length, comes early.
fn best_sentence(
    picked: &Picked,
    doc: &Document,
    term: &terms::Term,
    all: &[terms::Term],
) -> Option<usize> {
    let mut best: Option<(f64, usize)> = None;
    for &si in &term.sentences {
        let s = &doc.sentences[si];
        let words = s.tokens.len();
        if picked.used(si) > 0 || !(6..=60).contains(&words) {
            continue;
        }
        let others = all
            .iter()
            .filter(|t| t.key != term.key && !terms::occurrences(s, t).is_empty())
            .count();
        // A sentence that starts with the term is usually about it.
        let leads = terms::occurrences(s, term)
            .first()
            .is_some_and(|&(start, _)| s.tokens.iter().take(3).any(|t| t.start == start));
        let score =
            others as f64 + if leads { 1.5 } else { 0.0 } - (words as f64 - 18.0).abs() / 36.0;
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, si));
        }
    }
    best.map(|(_, si)| si)
}

fn add_cloze_cards(
    picked: &mut Picked,
    doc: &Document,
    terms: &[terms::Term],
    upto: usize,
    min_words: usize,
) {
    for term in terms {
        if picked.len() >= upto {
            return;
        }
        // A fresh sentence if there is one, else one another card quotes; never a third card
        // from the same sentence.
        let mut candidates: Vec<usize> = term
            .sentences
            .iter()
            .copied()
            .filter(|&si| picked.used(si) < MAX_CARDS_PER_SENTENCE)
            .collect();
        candidates.sort_by_key(|&si| (picked.used(si), si));
        for si in candidates {
            let s = &doc.sentences[si];
            let spans = terms::occurrences(s, term);
            if s.tokens.len() < min_words
                || spans.is_empty()
                || s.tokens.len() == term.key.split(' ').count()
            {
                continue;
            }
            let answer = s.text[spans[0].0..spans[0].1].to_owned();
            let mut blanked = s.text.clone();
            for &(start, end) in spans.iter().rev() {
                blanked.replace_range(start..end, BLANK);
            }
            if picked.add("cloze", format!("Fill in the blank: {blanked}"), answer) {
                picked.quote(si);
                break;
            }
        }
    }
}

/// When the text is too short for anything else: its topic, and the note itself.
fn add_fallback_cards(
    picked: &mut Picked,
    request: &JobRequest,
    subject: &str,
    topic: &str,
    wanted: usize,
) {
    if picked.len() >= FALLBACK_BELOW {
        return;
    }
    if picked.len() < wanted && !topic.is_empty() {
        let question = if subject.is_empty() || subject.eq_ignore_ascii_case(topic) {
            "Which topic do these notes cover?".to_owned()
        } else {
            format!("Which {subject} topic do these notes cover?")
        };
        picked.add("term", question, topic.to_owned());
    }
    let content = request
        .content
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let has_words = content.chars().any(char::is_alphanumeric);
    if picked.len() < wanted && has_words && word_count(&content) <= 40 {
        let about = [topic, subject].into_iter().find(|l| !l.is_empty());
        let question = match about {
            Some(label) => format!("What do the notes on {label} say?"),
            None => "What do these notes say?".to_owned(),
        };
        picked.add("term", question, clean_fragment(clip(&content, 300)));
    }
}

#[cfg(test)]
mod tests;
