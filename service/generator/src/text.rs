//! Text handling for the local provider: paragraphs, bullets and headings to sentences, sentences to
//! word tokens (with byte spans, so cards can quote and blank the original text), stopwords and
//! the small string clean-ups the cards need.

use std::collections::BTreeSet;

use unicode_segmentation::UnicodeSegmentation;

use super::words;

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

/// Where a sentence came from: only prose and list items carry facts; a heading only names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Prose,
    Heading,
    Bullet,
}

#[derive(Debug, Clone)]
pub struct Sentence {
    pub text: String,
    pub tokens: Vec<Token>,
    pub origin: Origin,
}

impl Sentence {
    fn new(text: String, origin: Origin) -> Self {
        let tokens = tokenize(&text);
        Sentence {
            text,
            tokens,
            origin,
        }
    }

    pub fn word(&self, i: usize) -> &str {
        &self.text[self.tokens[i].start..self.tokens[i].end]
    }

    /// Lower-cased word `i`, or "" past the end (saves bounds checks in pattern matching).
    pub fn lower(&self, i: usize) -> &str {
        self.tokens.get(i).map_or("", |t| t.lower.as_str())
    }

    /// The original text from token `from` to the end of token `to - 1`; empty if `from >= to`.
    pub fn slice(&self, from: usize, to: usize) -> &str {
        let to = to.min(self.tokens.len());
        if from >= to {
            return "";
        }
        &self.text[self.tokens[from].start..self.tokens[to - 1].end]
    }

    /// The text between token `i - 1` and token `i` (before the first token for `i == 0`, after
    /// the last one for `i == tokens.len()`).
    pub fn gap(&self, i: usize) -> &str {
        let start = match i.checked_sub(1) {
            Some(prev) => self.tokens.get(prev).map_or(self.text.len(), |t| t.end),
            None => 0,
        };
        let end = self.tokens.get(i).map_or(self.text.len(), |t| t.start);
        self.text.get(start..end).unwrap_or("")
    }

    /// A capital letter starts word `i`.
    pub fn is_capitalised(&self, i: usize) -> bool {
        self.tokens
            .get(i)
            .is_some_and(|t| self.text[t.start..t.end].starts_with(char::is_uppercase))
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
    /// Words (lower-cased) seen capitalised somewhere other than at the start of a sentence:
    /// names, or parts of names.
    pub capitalised_words: BTreeSet<String>,
}

impl Document {
    pub fn parse(content: &str) -> Self {
        let sentences: Vec<Sentence> = segments(content)
            .into_iter()
            .flat_map(|(segment, origin)| {
                split_sentences(&segment)
                    .into_iter()
                    .flat_map(|s| split_long(&s))
                    .map(move |s| Sentence::new(s, origin))
            })
            .filter(|s| !s.tokens.is_empty())
            .collect();
        let mut lower_words = BTreeSet::new();
        let mut capitalised_words = BTreeSet::new();
        for s in &sentences {
            for (i, t) in s.tokens.iter().enumerate().skip(1) {
                let first = s.word(i).chars().next();
                if first.is_some_and(char::is_lowercase) {
                    lower_words.insert(t.lower.clone());
                } else if first.is_some_and(char::is_uppercase) {
                    capitalised_words.insert(t.lower.clone());
                }
            }
        }
        Document {
            sentences,
            lower_words,
            capitalised_words,
        }
    }

    /// `word` as it would appear mid-sentence: unchanged when the text capitalises it mid-sentence
    /// somewhere (names) or it is an acronym, lower-cased when the text writes it so elsewhere.
    /// A word the text only ever writes at the start of a sentence is lower-cased when it is
    /// shaped like a common noun ("Photosynthesis") or modifies a lower-case noun ("Poor
    /// harvests"); otherwise it may be a name ("Robespierre was ...") and keeps its capital.
    fn re_cased(&self, word: &str, modifies_next: bool) -> String {
        let lower = word.to_lowercase();
        // "T cells", "X-rays": a lone capital letter is a name.
        let single_letter = word.chars().next().is_some_and(char::is_uppercase)
            && word.chars().nth(1).is_none_or(|c| !c.is_alphabetic());
        if word == lower || has_inner_capital(word) || single_letter {
            return word.to_owned();
        }
        let singular = lower
            .strip_suffix("es")
            .into_iter()
            .chain(lower.strip_suffix('s'));
        let forms = || std::iter::once(lower.as_str()).chain(singular.clone());
        let seen_lower = forms().any(|w| self.lower_words.contains(w));
        let seen_capitalised = forms().any(|w| self.capitalised_words.contains(w));
        let common_shape = words::COMMON_NOUN_SUFFIXES
            .iter()
            .any(|suffix| lower.len() > suffix.len() + 2 && lower.ends_with(suffix));
        if seen_lower || (!seen_capitalised && (common_shape || modifies_next)) {
            lower
        } else {
            word.to_owned()
        }
    }

    /// A noun phrase taken from the text, as it reads inside a question: its first word in its
    /// mid-sentence form ("The Bastille" -> "the Bastille", "Chloroplasts" -> "chloroplasts").
    pub fn mid_sentence_phrase(&self, phrase: &str) -> String {
        self.mid_sentence_subject(phrase, false)
    }

    /// [`Self::mid_sentence_phrase`] for the subject of a verb. A lone plural-shaped word before
    /// a plural verb is a common noun ("Routers are ..."); a name takes a singular verb ("Mars
    /// is ...").
    pub fn mid_sentence_subject(&self, phrase: &str, plural_verb: bool) -> String {
        let (first, rest) = match phrase.find(char::is_whitespace) {
            Some(at) => phrase.split_at(at),
            None => (phrase, ""),
        };
        // "Napoleon Bonaparte": a capitalised word before another is part of a name.
        let next = rest.trim_start();
        let starts_name =
            next.starts_with(char::is_uppercase) && !words::is_stopword(&first.to_lowercase());
        let lower = first.to_lowercase();
        let plural_shape = lower.ends_with('s')
            && !lower.ends_with("ss")
            && !lower.ends_with("us")
            && !lower.ends_with("is");
        let modifies_next = next.starts_with(char::is_lowercase)
            || (next.is_empty() && plural_verb && plural_shape);
        let first = match first {
            "The" | "A" | "An" => first.to_lowercase(),
            _ if starts_name => first.to_owned(),
            _ => self.re_cased(first, modifies_next),
        };
        format!("{first}{rest}")
    }
}

/// Paragraphs, headings and list items, each with its whitespace collapsed. Line breaks inside a
/// paragraph are just wrapping, but a blank line, a heading or a bullet always ends a sentence.
fn segments(content: &str) -> Vec<(String, Origin)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut origin = Origin::Prose;
    let flush = |current: &mut String, origin: &mut Origin, out: &mut Vec<(String, Origin)>| {
        let collapsed = current.split_whitespace().collect::<Vec<_>>().join(" ");
        if !collapsed.is_empty() {
            out.push((collapsed, *origin));
        }
        current.clear();
        *origin = Origin::Prose;
    };
    for line in content.lines() {
        let line: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let line = strip_markup(&line);
        let trimmed = line.trim();
        if trimmed.is_empty() {
            flush(&mut current, &mut origin, &mut out);
            continue;
        }
        if let Some(heading) = trimmed.strip_prefix('#') {
            flush(&mut current, &mut origin, &mut out);
            current.push_str(heading.trim_start_matches('#'));
            origin = Origin::Heading;
            flush(&mut current, &mut origin, &mut out);
            continue;
        }
        if let Some(item) = strip_bullet(trimmed) {
            flush(&mut current, &mut origin, &mut out);
            current.push_str(item);
            origin = Origin::Bullet;
            continue;
        }
        current.push(' ');
        current.push_str(trimmed);
    }
    flush(&mut current, &mut origin, &mut out);
    out
}

/// Markdown emphasis and code marks ("**Osmosis**", "*partially*", "`H2O`") are formatting, not
/// text; a leading "* " stays, it is a bullet.
fn strip_markup(line: &str) -> String {
    let (bullet, rest) = match line.trim_start().strip_prefix("* ") {
        Some(rest) => ("* ", rest),
        None => ("", line),
    };
    let cleaned: String = rest
        .replace("**", "")
        .replace("__", "")
        .chars()
        .filter(|&c| c != '`' && c != '*')
        .collect();
    format!("{bullet}{cleaned}")
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
        let next = chars.peek().map(|&(_, n)| n);
        let next_alnum = next.is_some_and(char::is_alphanumeric);
        let word_joiner = matches!(c, '-' | '\'' | '’') && start.is_some() && next_alnum;
        // "3.8", "1,836": one number, not two words.
        let number_joiner = matches!(c, '.' | ',')
            && next.is_some_and(|n| n.is_ascii_digit())
            && start.is_some_and(|s| {
                text[s..i]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b',' || b == b'.')
            });
        let joiner = word_joiner || number_joiner;
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

/// A capital after the first letter: `RuBisCO`, `mRNA`, `NADPH`, `CO2`; never re-cased.
pub fn has_inner_capital(word: &str) -> bool {
    word.chars().skip(1).any(char::is_uppercase)
}

/// An adverb by its shape ("sharply", "mainly"), not one of the nouns that end like one.
pub fn is_adverb(word: &str) -> bool {
    const LY_NOUNS: &[&str] = &[
        "ally",
        "anomaly",
        "assembly",
        "belly",
        "bully",
        "butterfly",
        "family",
        "fly",
        "holy",
        "jelly",
        "lily",
        "monopoly",
        "rally",
        "reply",
        "supply",
    ];
    word.len() >= 5
        && word.ends_with("ly")
        && word.starts_with(char::is_lowercase)
        && !LY_NOUNS.contains(&word)
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
        let s = Sentence::new(
            "Light-dependent reactions (in Schrödinger's café) — ok".into(),
            Origin::Prose,
        );
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
