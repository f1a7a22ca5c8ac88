//! Text handling for the local provider: paragraphs, bullets and headings to sentences, sentences to
//! word tokens (with byte spans, so cards can quote and blank the original text), stopwords and
//! the small string clean-ups the cards need.

use std::collections::BTreeSet;

use unicode_segmentation::UnicodeSegmentation;

/// Sentences longer than this are cut at clause boundaries, so every card stays readable and
/// the output size has a bound.
pub const MAX_SENTENCE_CHARS: usize = 400;

/// A word: a run of letters/digits, with inner hyphens and apostrophes (`light-dependent`,
/// `cell's`). `start..end` are byte offsets into the sentence text.
#[derive(Debug, Clone)]
pub struct Token {
    pub start: usize,
    pub end: usize,
    pub lower: String,
}

#[derive(Debug, Clone)]
pub struct Sentence {
    pub text: String,
    pub tokens: Vec<Token>,
}

impl Sentence {
    fn new(text: String) -> Self {
        let tokens = tokenize(&text);
        Sentence { text, tokens }
    }

    pub fn word(&self, i: usize) -> &str {
        &self.text[self.tokens[i].start..self.tokens[i].end]
    }

    /// Only whitespace between tokens `i` and `i + 1` (no comma, bracket, dash...).
    pub fn adjacent(&self, i: usize) -> bool {
        self.text[self.tokens[i].end..self.tokens[i + 1].start]
            .chars()
            .all(char::is_whitespace)
    }
}

/// The submitted text, split into sentences.
#[derive(Debug)]
pub struct Document {
    pub sentences: Vec<Sentence>,
    /// Words seen in lower case somewhere other than at the start of a sentence: a capitalised
    /// sentence-initial word in this set is a common noun and can be lower-cased in a question.
    pub lower_words: BTreeSet<String>,
}

impl Document {
    pub fn parse(content: &str) -> Self {
        let sentences: Vec<Sentence> = segments(content)
            .iter()
            .flat_map(|segment| split_sentences(segment))
            .flat_map(|s| split_long(&s))
            .map(Sentence::new)
            .filter(|s| !s.tokens.is_empty())
            .collect();
        let mut lower_words = BTreeSet::new();
        for s in &sentences {
            for (i, t) in s.tokens.iter().enumerate().skip(1) {
                if s.word(i).chars().next().is_some_and(char::is_lowercase) {
                    lower_words.insert(t.lower.clone());
                }
            }
        }
        Document {
            sentences,
            lower_words,
        }
    }

    /// `word` as it would appear mid-sentence: lower-cased when the text itself writes it so,
    /// otherwise unchanged (names, acronyms).
    pub fn mid_sentence_form(&self, word: &str) -> String {
        let lower = word.to_lowercase();
        let singular = lower
            .strip_suffix("es")
            .into_iter()
            .chain(lower.strip_suffix('s'));
        let seen_lower = std::iter::once(lower.as_str())
            .chain(singular)
            .any(|w| self.lower_words.contains(w));
        if word != lower && seen_lower && !is_acronym(word) {
            lower
        } else {
            word.to_owned()
        }
    }
}

/// Paragraphs, headings and list items, each with its whitespace collapsed. Line breaks inside a
/// paragraph are just wrapping, but a blank line, a heading or a bullet always ends a sentence.
fn segments(content: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let flush = |current: &mut String, out: &mut Vec<String>| {
        let collapsed = current.split_whitespace().collect::<Vec<_>>().join(" ");
        if !collapsed.is_empty() {
            out.push(collapsed);
        }
        current.clear();
    };
    for line in content.lines() {
        let line: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let trimmed = line.trim();
        if trimmed.is_empty() {
            flush(&mut current, &mut out);
            continue;
        }
        if let Some(heading) = trimmed.strip_prefix('#') {
            flush(&mut current, &mut out);
            current.push_str(heading.trim_start_matches('#'));
            flush(&mut current, &mut out);
            continue;
        }
        if let Some(item) = strip_bullet(trimmed) {
            flush(&mut current, &mut out);
            current.push_str(item);
            continue;
        }
        current.push(' ');
        current.push_str(trimmed);
    }
    flush(&mut current, &mut out);
    out
}

fn strip_bullet(line: &str) -> Option<&str> {
    for marker in ["- ", "* ", "• ", "– ", "— ", "+ "] {
        if let Some(rest) = line.strip_prefix(marker) {
            return Some(rest);
        }
    }
    // `1. `, `12) `, `a) `
    let end = line.find(['.', ')'])?;
    let label = &line[..end];
    let is_label =
        (!label.is_empty() && label.len() <= 3 && label.bytes().all(|b| b.is_ascii_digit()))
            || (label.len() == 1
                && label.bytes().all(|b| b.is_ascii_lowercase())
                && line[end..].starts_with(')'));
    let rest = line[end + 1..].strip_prefix(' ')?;
    is_label.then_some(rest)
}

/// Sentences of one segment, re-joining the splits Unicode's rules make after abbreviations
/// (`Dr. Smith`, `Louis XVI. He`, `J. Watson`).
fn split_sentences(segment: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in segment.unicode_sentences() {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(prev) if ends_with_abbreviation(prev) => {
                prev.push(' ');
                prev.push_str(piece);
            }
            _ => out.push(piece.to_owned()),
        }
    }
    out
}

fn ends_with_abbreviation(sentence: &str) -> bool {
    let Some(stem) = sentence.strip_suffix('.') else {
        return false;
    };
    let last = stem.rsplit(' ').next().unwrap_or(stem);
    let single_initial = last.chars().count() == 1 && last.chars().all(char::is_uppercase);
    single_initial
        || matches!(
            last.to_lowercase().as_str(),
            "dr" | "mr"
                | "mrs"
                | "ms"
                | "prof"
                | "st"
                | "sr"
                | "jr"
                | "vs"
                | "etc"
                | "e.g"
                | "i.e"
                | "fig"
                | "no"
                | "approx"
                | "ca"
                | "cf"
                | "al"
                | "mt"
                | "gen"
                | "col"
                | "lt"
        )
}

/// Cuts an over-long sentence at `;`, then `,`, then between words.
fn split_long(sentence: &str) -> Vec<String> {
    if sentence.chars().count() <= MAX_SENTENCE_CHARS {
        return vec![sentence.to_owned()];
    }
    let mut out = Vec::new();
    let mut current = String::new();
    for word in sentence.split(' ') {
        let fits = current.chars().count() + word.chars().count() < MAX_SENTENCE_CHARS;
        let clause_end =
            current.ends_with([';', ',']) && current.chars().count() > MAX_SENTENCE_CHARS / 2;
        if !current.is_empty() && (!fits || clause_end) {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        // A single "word" longer than the limit (no spaces at all) is cut by characters.
        let mut word = word;
        while word.chars().count() >= MAX_SENTENCE_CHARS {
            let cut = word
                .char_indices()
                .nth(MAX_SENTENCE_CHARS - 1)
                .map_or(word.len(), |(i, _)| i);
            out.push(word[..cut].to_owned());
            word = &word[cut..];
        }
        current.push_str(word);
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out.into_iter()
        .map(|s| s.trim().trim_end_matches([',', ';']).to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = raw_tokens(text);
    // A possessive belongs to its noun: `cell's` is the word `cell`.
    for t in &mut tokens {
        for suffix in ["'s", "’s"] {
            if t.lower.ends_with(suffix) && t.lower.len() > suffix.len() {
                t.end -= suffix.len();
                t.lower.truncate(t.lower.len() - suffix.len());
            }
        }
    }
    tokens
}

fn raw_tokens(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut start: Option<usize> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next_alnum = chars.peek().is_some_and(|&(_, n)| n.is_alphanumeric());
        let joiner = matches!(c, '-' | '\'' | '’') && start.is_some() && next_alnum;
        if c.is_alphanumeric() || joiner {
            start.get_or_insert(i);
        } else if let Some(s) = start.take() {
            tokens.push(Token {
                start: s,
                end: i,
                lower: text[s..i].to_lowercase(),
            });
        }
    }
    if let Some(s) = start {
        tokens.push(Token {
            start: s,
            end: text.len(),
            lower: text[s..].to_lowercase(),
        });
    }
    tokens
}

/// `ATP`, `DNA`, `NADPH`: kept as written.
pub fn is_acronym(word: &str) -> bool {
    word.chars().filter(|c| c.is_alphabetic()).count() >= 2
        && word.chars().all(|c| !c.is_lowercase())
        && word.chars().any(char::is_uppercase)
}

pub fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

pub fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A phrase cut out of a sentence, made to stand alone as an answer: no dangling punctuation or
/// unmatched closing bracket, first letter capitalised.
pub fn clean_fragment(text: &str) -> String {
    let mut s = text
        .trim()
        .trim_start_matches([',', ';', ':', '-', '–', '—', ' '])
        .trim_end_matches(['.', ',', ';', ':', '!', '?', ' ', '-', '–', '—'])
        .to_owned();
    for (open, close) in [('(', ')'), ('[', ']'), ('"', '"'), ('“', '”')] {
        let opens = s.matches(open).count();
        let closes = s.matches(close).count();
        let unbalanced = if open == close {
            opens % 2 == 1
        } else {
            opens != closes
        };
        if unbalanced && (s.ends_with(close) || s.ends_with(open)) {
            s.pop();
        }
        if unbalanced && (s.starts_with(open) || s.starts_with(close)) {
            s.remove(0);
        }
    }
    capitalise(s.trim())
}

/// At most `max_chars` characters, cut on a character boundary.
pub fn clip(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => text[..cut].trim_end(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_respect_paragraphs_bullets_and_headings() {
        let doc = Document::parse(
            "# Cell parts\nThe nucleus holds DNA\nand controls the cell.\n\n- Ribosomes make proteins\n2) Vacuoles store water",
        );
        let texts: Vec<_> = doc.sentences.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Cell parts",
                "The nucleus holds DNA and controls the cell.",
                "Ribosomes make proteins",
                "Vacuoles store water"
            ]
        );
    }

    #[test]
    fn abbreviations_do_not_end_sentences() {
        let doc = Document::parse("Dr. Smith met J. Watson in 1953. They talked.");
        assert_eq!(doc.sentences.len(), 2, "{:?}", doc.sentences);
        assert_eq!(doc.sentences[0].text, "Dr. Smith met J. Watson in 1953.");
    }

    #[test]
    fn tokens_keep_inner_hyphens_and_unicode() {
        let s = Sentence::new("Light-dependent reactions (in Schrödinger's café) — ok".into());
        let words: Vec<_> = (0..s.tokens.len()).map(|i| s.word(i)).collect();
        assert_eq!(
            words,
            [
                "Light-dependent",
                "reactions",
                "in",
                "Schrödinger",
                "café",
                "ok"
            ]
        );
        assert!(s.adjacent(0));
        assert!(!s.adjacent(1), "bracket between");
    }

    #[test]
    fn long_sentences_are_cut() {
        let long = "word ".repeat(300) + &"x".repeat(900);
        let doc = Document::parse(&long);
        assert!(doc.sentences.len() > 3);
        assert!(
            doc.sentences
                .iter()
                .all(|s| s.text.chars().count() <= MAX_SENTENCE_CHARS)
        );
    }

    #[test]
    fn fragments_are_cleaned() {
        assert_eq!(
            clean_fragment(" an organelle (the powerhouse)."),
            "An organelle (the powerhouse)"
        );
        assert_eq!(
            clean_fragment("a membrane, which folds)"),
            "A membrane, which folds"
        );
        assert_eq!(clean_fragment("élan vital;"), "Élan vital");
        assert_eq!(clip("héllo", 2), "hé");
    }
}
