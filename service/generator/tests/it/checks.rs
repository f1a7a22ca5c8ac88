//! Objective checks of flashcards against the text they were made from. Written independently of
//! the generator (its own tokenising, date, quantity and definition detection), so a generator
//! bug does not hide itself.

use std::collections::{BTreeMap, BTreeSet};

use flashcard_core::job::Flashcard;

pub const BLANK: &str = "_____";
pub const CLOZE_PREFIX: &str = "Fill in the blank: ";
/// A cloze with several blanks; its answers are separated by "; " in order.
pub const CLOZE_PREFIX_SEVERAL: &str = "Fill in the blanks: ";

/// The sentence of a cloze card, without its prefix.
fn cloze_sentence(card: &Flashcard) -> Option<&str> {
    card.question
        .strip_prefix(CLOZE_PREFIX)
        .or_else(|| card.question.strip_prefix(CLOZE_PREFIX_SEVERAL))
}

/// The cloze sentence with its blanks filled in by the answer (or the answers, in order).
fn filled_cloze(card: &Flashcard) -> Option<String> {
    let sentence = cloze_sentence(card)?;
    let blanks = sentence.matches(BLANK).count();
    let answers: Vec<&str> = if blanks > 1 && card.question.starts_with(CLOZE_PREFIX_SEVERAL) {
        card.answer.split("; ").collect()
    } else {
        vec![card.answer.as_str(); blanks]
    };
    if answers.len() != blanks {
        return None;
    }
    let mut out = String::new();
    let mut rest = sentence;
    for answer in answers {
        let at = rest.find(BLANK)?;
        out.push_str(&rest[..at]);
        out.push_str(answer);
        rest = &rest[at + BLANK.len()..];
    }
    out.push_str(rest);
    Some(out)
}

/// Lower-cased words (letters, digits, inner `-` `.` `,` `'` kept), joined by single spaces.
pub fn normalise(text: &str) -> String {
    words(text)
        .iter()
        .map(|w| w.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The words of a text as written, without surrounding punctuation.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| {
        c.is_whitespace() || matches!(c, '/' | '(' | ')' | '"' | '“' | '”' | '+' | '>' | '—' | '–')
    })
    .map(|w| {
        if w.contains(BLANK) {
            return BLANK;
        }
        w.trim_matches(|c: char| !c.is_alphanumeric() && c != '%' && c != '°')
            .trim_end_matches("'s")
            .trim_end_matches("’s")
    })
    .filter(|w| !w.is_empty() && (w.chars().any(char::is_alphanumeric) || *w == BLANK))
    .map(str::to_owned)
    .collect()
}

/// The source text, read once for all checks.
pub struct Source {
    pub text: String,
    normalised: String,
    /// Words (lower-cased) the text writes capitalised after the first word of a sentence.
    capitalised_mid: BTreeSet<String>,
    /// Words (lower-cased) the text writes in lower case anywhere.
    lower_anywhere: BTreeSet<String>,
    /// Capitalised names the text always writes after "the" ("the French Revolution").
    the_names: Vec<String>,
}

impl Source {
    pub fn new(text: &str) -> Self {
        let mut capitalised_mid = BTreeSet::new();
        let mut lower_anywhere = BTreeSet::new();
        for sentence in sentences(text) {
            for (i, w) in words(&sentence).iter().enumerate() {
                let lower = w.to_lowercase();
                if w.starts_with(char::is_lowercase) {
                    lower_anywhere.insert(lower);
                } else if i > 0 && w.starts_with(char::is_uppercase) {
                    capitalised_mid.insert(lower);
                }
            }
        }
        Source {
            text: text.to_owned(),
            normalised: normalise(text),
            capitalised_mid,
            lower_anywhere,
            the_names: the_names(text),
        }
    }

    fn contains(&self, phrase: &str) -> bool {
        let phrase = normalise(phrase);
        !phrase.is_empty() && format!(" {} ", self.normalised).contains(&format!(" {phrase} "))
    }
}

/// Sentences: split after `.`, `!`, `?` followed by a space and a capital, and at line breaks
/// that end a paragraph or heading.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let block = block.trim().trim_start_matches('#').trim();
        let mut current = String::new();
        let chars: Vec<char> = block.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            current.push(if c == '\n' { ' ' } else { c });
            let ends = matches!(c, '.' | '!' | '?')
                && chars.get(i + 1) == Some(&' ')
                && chars.get(i + 2).is_some_and(|n| n.is_uppercase())
                && !ends_with_initial(&current);
            if ends {
                out.push(current.trim().to_owned());
                current.clear();
            }
        }
        if !current.trim().is_empty() {
            out.push(current.trim().to_owned());
        }
    }
    out
}

/// "J. J. Thomson": a single capital before the full stop is an initial.
fn ends_with_initial(text: &str) -> bool {
    let last = text.trim_end_matches('.').rsplit(' ').next().unwrap_or("");
    last.chars().count() == 1 && last.chars().all(char::is_uppercase)
}

/// Words that open a question or a clause and carry a capital only for that.
const FUNCTION_WORDS: &[&str] = &[
    "a", "about", "after", "an", "and", "are", "at", "before", "by", "did", "do", "does", "during",
    "for", "from", "how", "in", "is", "of", "on", "the", "to", "was", "were", "what", "when",
    "where", "which", "who", "why", "with",
];

/// Runs of capitalised words ("of" inside allowed) in `ws`, as (start, end) and the word before.
fn capitalised_runs(ws: &[String]) -> Vec<(usize, usize)> {
    let capital = |w: &String| w.starts_with(char::is_uppercase);
    let mut runs = Vec::new();
    let mut i = 0;
    while i < ws.len() {
        // A capital on a function word is the sentence's, not a name's.
        if !capital(&ws[i]) || FUNCTION_WORDS.contains(&ws[i].to_lowercase().as_str()) {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        while end < ws.len()
            && ((capital(&ws[end]) && !FUNCTION_WORDS.contains(&ws[end].to_lowercase().as_str()))
                || (ws[end] == "of" && ws.get(end + 1).is_some_and(capital)))
        {
            end += 1;
        }
        runs.push((i, end));
        i = end;
    }
    runs
}

/// Capitalised names of which every occurrence in the text follows "the" ("the Bastille").
fn the_names(text: &str) -> Vec<String> {
    let mut seen: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for sentence in sentences(text) {
        let ws = words(&sentence);
        for (start, end) in capitalised_runs(&ws) {
            let entry = seen.entry(ws[start..end].join(" ")).or_default();
            entry.0 += 1;
            if start > 0 && ws[start - 1].eq_ignore_ascii_case("the") {
                entry.1 += 1;
            }
        }
    }
    seen.into_iter()
        .filter(|(_, (all, after_the))| all == after_the)
        .map(|(name, _)| name)
        .collect()
}

fn is_cloze(card: &Flashcard) -> bool {
    cloze_sentence(card).is_some()
}

/// The answer comes from the text: it occurs in it, or (a list) each of its items does, or (a
/// cloze) the filled-in sentence does.
pub fn answer_in_text(card: &Flashcard, source: &Source) -> Result<(), String> {
    if card.answer.trim().is_empty() {
        return Err("empty answer".into());
    }
    if let Some(sentence) = cloze_sentence(card) {
        if !sentence.contains(BLANK) {
            return Err("cloze without a blank".into());
        }
        let Some(filled) = filled_cloze(card) else {
            return Err("answers do not match the blanks".into());
        };
        if !source.contains(&filled) {
            return Err(format!("filled-in cloze is not in the text: {filled:?}"));
        }
        return Ok(());
    }
    if source.contains(&card.answer) {
        return Ok(());
    }
    let items: Vec<&str> = card
        .answer
        .split(", ")
        .flat_map(|part| part.split(" and "))
        .flat_map(|part| part.split(" or "))
        .map(|item| item.trim_start_matches("and ").trim_start_matches("or "))
        .filter(|item| !item.trim().is_empty())
        .collect();
    if items.len() >= 2 && items.iter().all(|item| source.contains(item)) {
        return Ok(());
    }
    Err(format!("answer not in the text: {:?}", card.answer))
}

/// Phrases that make a card about the notes rather than about their subject.
const META_PHRASES: &[&str] = &[
    "these notes",
    "the notes",
    "this text",
    "the text",
    "this passage",
    "the passage",
    "the document",
    "this document",
    "topic",
    "important to know",
    "the author",
    "this lesson",
];

/// The card asks about the subject, not about the notes.
pub fn not_meta(card: &Flashcard, source: &Source) -> Result<(), String> {
    let question = card.question.to_lowercase();
    let source_text = source.text.to_lowercase();
    match META_PHRASES
        .iter()
        .find(|p| question.contains(*p) && !source_text.contains(*p))
    {
        Some(phrase) => Err(format!("meta card ({phrase:?})")),
        None => Ok(()),
    }
}

/// Question form: capital first letter, a question mark (or a cloze with a blank), no doubled
/// words, no space before punctuation, balanced brackets.
pub fn well_formed(card: &Flashcard) -> Result<(), String> {
    let q = card.question.as_str();
    if !q.starts_with(char::is_uppercase) {
        return Err("question does not start with a capital".into());
    }
    if is_cloze(card) {
        if q.matches(BLANK).count() == 0 {
            return Err("cloze without a blank".into());
        }
    } else if !q.ends_with('?') {
        return Err("question does not end with '?'".into());
    }
    if q.contains("  ") || q.contains(" ?") || q.contains(" ,") || q.contains(" .") {
        return Err("stray space".into());
    }
    if q.matches('(').count() != q.matches(')').count() {
        return Err("unbalanced brackets".into());
    }
    let ws = words(q);
    if let Some(pair) = ws.windows(2).find(|w| {
        w[0].eq_ignore_ascii_case(&w[1])
            && w[0].chars().count() > 1
            && w[0].chars().all(char::is_alphabetic)
    }) {
        return Err(format!("doubled word {:?}", pair[0]));
    }
    Ok(())
}

/// "a" before a consonant sound, "an" before a vowel sound, and "the" kept before names the text
/// always writes with it.
pub fn articles(card: &Flashcard, source: &Source) -> Result<(), String> {
    let ws = words(&card.question);
    for pair in ws.windows(2) {
        let (article, next) = (pair[0].to_lowercase(), pair[1].as_str());
        if !next.starts_with(char::is_lowercase) {
            continue;
        }
        let vowel = next.starts_with(['a', 'e', 'i', 'o', 'u']);
        let consonant_sound_vowel = ["uni", "use", "usu", "eu", "one", "once", "ur"]
            .iter()
            .any(|p| next.starts_with(p));
        let silent_h = ["hour", "honest", "honour", "honor", "heir"]
            .iter()
            .any(|p| next.starts_with(p));
        if article == "a" && vowel && !consonant_sound_vowel {
            return Err(format!("\"a {next}\""));
        }
        if article == "an" && !vowel && !silent_h {
            return Err(format!("\"an {next}\""));
        }
    }
    // "In French Revolution, ...": the article dropped before a name that always has it.
    let ws = words(&card.question);
    for (start, end) in capitalised_runs(&ws) {
        let name = ws[start..end].join(" ");
        if !source.the_names.contains(&name) || start == 0 {
            continue;
        }
        let before = ws[start - 1].to_lowercase();
        let determiner = matches!(
            before.as_str(),
            "the" | "this" | "that" | "its" | "their" | "his" | "her" | "a" | "an"
        );
        if !determiner {
            return Err(format!("article dropped before {name:?}"));
        }
    }
    Ok(())
}

/// Capitals only where the text has them: a word inside a question must not be capitalised if
/// the text writes it in lower case and never capitalises it mid-sentence ("What is
/// Chlorophyll?"), nor lower-cased if the text only ever capitalises it ("the bastille"). A word
/// the text only writes at the start of sentences cannot be judged from the text and passes.
pub fn capitalisation(card: &Flashcard, source: &Source) -> Result<(), String> {
    let body = cloze_sentence(card).unwrap_or(&card.question);
    for sentence in sentences(body) {
        // The first word of the question and of a quoted sentence may carry a sentence capital.
        for (i, w) in words(&sentence).iter().enumerate() {
            let lower = w.to_lowercase();
            let acronym = w.chars().skip(1).any(char::is_uppercase) || w == "I";
            if i == 0 || acronym || w.contains(BLANK) {
                continue;
            }
            let common =
                source.lower_anywhere.contains(&lower) && !source.capitalised_mid.contains(&lower);
            if w.starts_with(char::is_uppercase) && common {
                return Err(format!(
                    "{w:?} is capitalised but the text writes it as a common word"
                ));
            }
            if w.starts_with(char::is_lowercase)
                && source.capitalised_mid.contains(&lower)
                && !source.lower_anywhere.contains(&lower)
            {
                return Err(format!("{w:?} is a name the text capitalises"));
            }
        }
    }
    Ok(())
}

/// Every check of one card; the first failure.
pub fn check_card(card: &Flashcard, source: &Source) -> Result<(), String> {
    answer_in_text(card, source)?;
    not_meta(card, source)?;
    well_formed(card)?;
    articles(card, source)?;
    capitalisation(card, source)
}

/// Indexes of cards that repeat an earlier card's question, or quote the same sentence as an
/// earlier cloze card.
pub fn repeated(cards: &[Flashcard]) -> BTreeMap<usize, String> {
    let mut out = BTreeMap::new();
    let mut questions = BTreeSet::new();
    let mut cloze_sentences = BTreeSet::new();
    for (i, card) in cards.iter().enumerate() {
        if !questions.insert(normalise(&card.question)) {
            out.insert(i, "repeats a question".to_owned());
        }
        if let Some(sentence) = filled_cloze(card)
            && !cloze_sentences.insert(normalise(&sentence))
        {
            out.insert(i, "a second cloze of the same sentence".to_owned());
        }
    }
    out
}

const MONTHS: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Units a number can carry (compared in lower case).
const UNITS: &[&str] = &[
    "%",
    "percent",
    "°c",
    "°f",
    "degrees",
    "km",
    "kilometres",
    "kilometers",
    "metres",
    "meters",
    "centimetres",
    "millimetres",
    "micrometres",
    "nanometres",
    "miles",
    "kilograms",
    "kilogram",
    "grams",
    "tonnes",
    "newtons",
    "litres",
    "seconds",
    "minutes",
    "hours",
    "days",
    "years",
    "times",
    "bits",
];

const SCALES: &[&str] = &["thousand", "million", "billion"];

/// Facts of a text that some card must test: dates (with their day and month when given, or a
/// decade or century), numbers with units, and defined terms.
#[derive(Debug, Default, PartialEq)]
pub struct Facts {
    pub dates: Vec<String>,
    pub quantities: Vec<String>,
    pub terms: Vec<String>,
}

pub fn facts(text: &str) -> Facts {
    let mut f = Facts::default();
    for sentence in sentences(text) {
        let ws = words(&sentence);
        let lower: Vec<String> = ws.iter().map(|w| w.to_lowercase()).collect();
        let at = |i: usize| lower.get(i).map_or("", String::as_str);
        for (i, w) in ws.iter().enumerate() {
            let year = w.len() == 4 && w.parse::<u32>().is_ok_and(|y| (1000..=2100).contains(&y));
            let decade = w.len() == 5 && w.ends_with("0s") && w[..4].parse::<u32>().is_ok();
            let unit_follows = UNITS.contains(&at(i + 1)) || SCALES.contains(&at(i + 1));
            if (year || decade) && !unit_follows {
                let month_before = i >= 1 && MONTHS.contains(&ws[i - 1].as_str());
                let day_before = i >= 2
                    && ws[i - 2]
                        .parse::<u32>()
                        .is_ok_and(|d| (1..=31).contains(&d));
                let start = match (month_before, day_before) {
                    (true, true) => i - 2,
                    (true, false) => i - 1,
                    _ => i,
                };
                f.dates.push(ws[start..=i].join(" "));
            }
            if (w.ends_with("th") || w.ends_with("st")) && at(i + 1) == "century" {
                f.dates.push(format!("{w} century"));
            }
            let number = w.starts_with(|c: char| c.is_ascii_digit())
                && w.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | ',' | '%'));
            if number && !year {
                if w.ends_with('%') {
                    f.quantities.push(w.clone());
                    continue;
                }
                let scaled = SCALES.contains(&at(i + 1));
                let unit_at = if scaled { i + 2 } else { i + 1 };
                if UNITS.contains(&at(unit_at)) {
                    f.quantities.push(ws[i..=unit_at].join(" "));
                }
            }
        }
        if let Some(term) = defined_term(&sentence) {
            f.terms.push(term);
        }
    }
    for list in [&mut f.dates, &mut f.quantities, &mut f.terms] {
        let mut seen = BTreeSet::new();
        list.retain(|x| seen.insert(normalise(x)));
    }
    f
}

/// The term a sentence defines: "X is a/an/the ...", "X refers to ...", "X is called Y" (Y).
fn defined_term(sentence: &str) -> Option<String> {
    const VAGUE: &[&str] = &[
        "it", "this", "that", "these", "those", "there", "they", "he", "she", "its", "his", "her",
        "their", "each", "every", "most", "many", "some", "all", "when", "if", "because", "in",
        "on", "at", "by", "for", "after", "before", "during", "one", "another", "other", "such",
    ];
    let ws: Vec<&str> = sentence.split_whitespace().collect();
    let first = ws.first()?.to_lowercase();
    if VAGUE.contains(&first.as_str()) {
        return None;
    }
    for (i, w) in ws.iter().enumerate().skip(1).take(5) {
        let lw = w.to_lowercase();
        let next = ws.get(i + 1).map(|n| n.to_lowercase()).unwrap_or_default();
        let defining = (matches!(lw.as_str(), "is" | "are" | "was" | "were")
            && matches!(next.as_str(), "a" | "an" | "the"))
            || (lw == "refers" && next == "to");
        if !defining || ws[..i].iter().any(|w| w.ends_with(',')) {
            continue;
        }
        let subject: Vec<&str> = ws[..i]
            .iter()
            .copied()
            .skip_while(|w| matches!(w.to_lowercase().as_str(), "the" | "a" | "an"))
            .collect();
        if subject.is_empty() || subject.len() > 4 {
            return None;
        }
        return Some(normalise(&subject.join(" ")));
    }
    None
}

/// Facts no card tests: a fact counts as tested when it occurs in an answer, or in the question
/// of a card that is not a cloze (a cloze shows everything but its blank).
pub fn uncovered(facts: &Facts, cards: &[Flashcard]) -> Vec<String> {
    let tested: Vec<String> = cards
        .iter()
        .flat_map(|c| {
            let mut texts = vec![normalise(&c.answer)];
            if !is_cloze(c) {
                texts.push(normalise(&c.question));
            }
            texts
        })
        .map(|t| format!(" {t} "))
        .collect();
    let covered = |fact: &str| {
        let f = format!(" {} ", normalise(fact));
        tested.iter().any(|t| t.contains(&f))
    };
    facts
        .dates
        .iter()
        .chain(&facts.quantities)
        .chain(&facts.terms)
        .filter(|fact| !covered(fact))
        .cloned()
        .collect()
}
