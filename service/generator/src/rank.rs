//! Ranking and de-duplication: from all proposed cards, the requested number that together test
//! the most important facts. Greedy: each step takes the best remaining card, scored by its type,
//! its own weight and its sentence's importance, and discounted when its sentence, its answer or
//! its facts are already used, so the chosen set spreads over the text and its facts.

use std::collections::{BTreeMap, BTreeSet};

use super::candidate::{Candidate, Kind};

/// A card whose facts are all tested already is worth this share.
const REPEATED_FACTS: f64 = 0.5;
/// Each card already taken from the same sentence multiplies by this.
const SAME_SENTENCE: f64 = 0.4;
/// A card whose answer another card already has.
const REPEATED_ANSWER: f64 = 0.35;
/// Each chosen card of the same type multiplies by this, so a short deck mixes types.
const SAME_KIND: f64 = 0.93;

/// Lower-cased words of a text, for comparing questions and answers.
pub fn normalise(text: &str) -> String {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Number of card types ([`Kind`] variants).
const KINDS: usize = Kind::Note as usize + 1;

/// A candidate with what the selection compares, computed once: its normalised question,
/// answer and facts as small integers, so each step of the greedy loop is cheap.
struct Entry {
    score: f64,
    question: usize,
    answer: usize,
    facts: Vec<usize>,
    card: Candidate,
}

/// Gives each distinct string a number, in order of first sight.
#[derive(Default)]
struct Interner(BTreeMap<String, usize>);

impl Interner {
    fn id(&mut self, text: String) -> usize {
        let next = self.0.len();
        *self.0.entry(text).or_insert(next)
    }
}

/// The best `wanted` candidates, best first. At most one card of each type per sentence; no two
/// cards with the same question.
pub fn select(candidates: Vec<Candidate>, importance: &[f64], wanted: usize) -> Vec<Candidate> {
    let mut strings = Interner::default();
    let mut pool: Vec<Entry> = candidates
        .into_iter()
        .filter(|c| !c.question.is_empty() && !c.answer.is_empty())
        .map(|c| Entry {
            score: base_score(&c, importance),
            question: strings.id(normalise(&c.question)),
            answer: strings.id(normalise(&c.answer)),
            facts: c.facts.iter().map(|f| strings.id(f.clone())).collect(),
            card: c,
        })
        .collect();
    let ids = strings.0.len();
    let mut chosen: Vec<Candidate> = Vec::new();
    let mut used_questions = vec![false; ids];
    let mut used_answers = vec![false; ids];
    let mut tested_facts = vec![false; ids];
    let mut sentence_kinds: BTreeSet<(usize, Kind)> = BTreeSet::new();
    let mut sentence_answers: BTreeSet<(usize, usize)> = BTreeSet::new();
    let sentences = pool.iter().map(|e| e.card.sentence + 1).max().unwrap_or(0);
    let mut per_sentence = vec![0_i32; sentences];
    let mut per_kind = [0_i32; KINDS];

    while chosen.len() < wanted {
        pool.retain(|e| {
            !used_questions[e.question]
                && !sentence_kinds.contains(&(e.card.sentence, e.card.kind))
                && !sentence_answers.contains(&(e.card.sentence, e.answer))
        });
        let mut best: Option<(f64, usize)> = None;
        for (index, e) in pool.iter().enumerate() {
            let c = &e.card;
            let mut adjusted = e.score;
            adjusted *= SAME_SENTENCE.powi(per_sentence[c.sentence]);
            adjusted *= SAME_KIND.powi(per_kind[c.kind as usize]);
            if used_answers[e.answer] {
                adjusted *= REPEATED_ANSWER;
            }
            let new_facts = e.facts.iter().filter(|&&f| !tested_facts[f]).count();
            if !e.facts.is_empty() {
                adjusted *= if new_facts == 0 {
                    REPEATED_FACTS
                } else {
                    1.0 + 0.1 * new_facts.min(3) as f64
                };
            }
            // Ties go to the earlier candidate: stages propose in text order.
            if best.is_none_or(|(b, _)| adjusted > b) {
                best = Some((adjusted, index));
            }
        }
        let Some((_, index)) = best else { break };
        // `remove`, not `swap_remove`: the pool's order breaks ties.
        let entry = pool.remove(index);
        used_questions[entry.question] = true;
        used_answers[entry.answer] = true;
        for &f in &entry.facts {
            tested_facts[f] = true;
        }
        sentence_kinds.insert((entry.card.sentence, entry.card.kind));
        sentence_answers.insert((entry.card.sentence, entry.answer));
        per_sentence[entry.card.sentence] += 1;
        per_kind[entry.card.kind as usize] += 1;
        chosen.push(entry.card);
    }
    chosen
}

fn base_score(c: &Candidate, importance: &[f64]) -> f64 {
    let importance = importance.get(c.sentence).copied().unwrap_or(0.0);
    // Early sentences usually introduce the main ideas.
    let position = 1.0 + 0.15 / (1.0 + c.sentence as f64 / 4.0);
    c.kind.weight() * c.weight * (0.55 + 0.45 * importance) * position
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(kind: Kind, q: &str, a: &str, sentence: usize) -> Candidate {
        Candidate::new(kind, q.into(), a.into(), sentence).with_facts([a.to_lowercase()])
    }

    #[test]
    fn one_card_per_type_and_sentence_and_unique_questions() {
        let chosen = select(
            vec![
                card(Kind::Cloze, "Fill in the blank: _____ b c", "a", 0),
                card(Kind::Cloze, "Fill in the blank: a _____ c", "b", 0),
                card(Kind::When, "When was it?", "1789", 0),
                card(Kind::When, "When was it?", "1790", 1),
            ],
            &[1.0, 1.0],
            10,
        );
        let kinds: Vec<_> = chosen.iter().map(|c| (c.sentence, c.kind)).collect();
        assert_eq!(kinds.len(), 2, "{chosen:#?}");
        assert!(kinds.contains(&(0, Kind::When)) && kinds.contains(&(0, Kind::Cloze)));
    }

    #[test]
    fn spreads_over_sentences_and_facts() {
        let chosen = select(
            vec![
                card(Kind::Definition, "What is a?", "x", 0),
                card(Kind::When, "When was a?", "1789", 0),
                card(Kind::Cloze, "Fill in the blank: _____ was late", "1789", 1),
                card(Kind::Cloze, "Fill in the blank: _____ is here", "y", 2),
            ],
            &[1.0, 1.0, 1.0],
            3,
        );
        let questions: Vec<_> = chosen.iter().map(|c| c.question.as_str()).collect();
        assert_eq!(
            questions,
            [
                "What is a?",
                "Fill in the blank: _____ was late",
                "Fill in the blank: _____ is here"
            ]
        );
    }
}
