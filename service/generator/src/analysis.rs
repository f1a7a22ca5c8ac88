//! Everything the card stages read about a document, computed once: sentences, their clauses,
//! dates and quantities, names with their classes, and the ranked key terms.

use super::clause::{self, Clause, Parsed};
use super::names::Names;
use super::spans::{self, Span, SpanKind};
use super::terms::{self, Term};
use super::text::{Document, Origin, Sentence};

/// How many ranked terms the stages consider.
const TERM_LIMIT: usize = 60;

pub struct Analysis {
    pub doc: Document,
    pub names: Names,
    /// Per sentence: dates, quantities, acronyms and numbers.
    pub spans: Vec<Vec<Span>>,
    /// Per sentence: its clauses, and the parse of each where one was found.
    pub clauses: Vec<Vec<(Clause, Option<Parsed>)>>,
    pub terms: Vec<Term>,
    /// Per sentence: how much of the text's key content it holds, 0..1.
    pub importance: Vec<f64>,
}

impl Analysis {
    pub fn new(content: &str, topic: &str) -> Self {
        let doc = Document::parse(content);
        let names = Names::scan(&doc);
        let spans: Vec<Vec<Span>> = doc.sentences.iter().map(spans::find).collect();
        let clauses = doc
            .sentences
            .iter()
            .map(|s| {
                clause::clauses(s)
                    .into_iter()
                    .map(|c| (c, clause::parse(s, c)))
                    .collect()
            })
            .collect();
        let terms = terms::rank(&doc, topic, TERM_LIMIT);
        let importance = importance(&doc, &terms, &spans);
        Analysis {
            doc,
            names,
            spans,
            clauses,
            terms,
            importance,
        }
    }

    /// Sentences that can carry a fact: prose and list items, not headings, nor sentences with a
    /// web address (its parts are not words to learn).
    pub fn fact_sentences(&self) -> impl Iterator<Item = (usize, &Sentence)> {
        self.doc.sentences.iter().enumerate().filter(|(_, s)| {
            s.origin != Origin::Heading && !s.text.contains("://") && !s.text.contains("www.")
        })
    }

    pub fn dates(&self, si: usize) -> impl Iterator<Item = &Span> {
        self.spans[si].iter().filter(|s| s.kind == SpanKind::Date)
    }
}

/// A sentence's density of key terms (by score, per square root of its length, so a long
/// sentence does not win by length alone) and its dates and quantities.
fn importance(doc: &Document, terms: &[Term], spans: &[Vec<Span>]) -> Vec<f64> {
    let mut raw = vec![0.0_f64; doc.sentences.len()];
    for term in terms {
        for &si in &term.sentences {
            if let Some(r) = raw.get_mut(si) {
                *r += term.score;
            }
        }
    }
    for (r, s) in raw.iter_mut().zip(&doc.sentences) {
        *r /= (s.tokens.len().max(8) as f64).sqrt();
    }
    let max = raw.iter().copied().fold(0.0_f64, f64::max);
    raw.iter()
        .zip(spans)
        .map(|(r, sp)| {
            // "14 July 1789" is a sharper fact than "1789".
            let facts: usize = sp
                .iter()
                .filter(|s| matches!(s.kind, SpanKind::Date | SpanKind::Quantity))
                .map(|s| (s.end - s.start).min(3))
                .sum();
            let facts = facts as f64;
            let terms = if max > 0.0 { r / max } else { 0.0 };
            (terms + 0.15 * facts).min(1.0)
        })
        .collect()
}
