//! Names: runs of capitalised words ("Maximilien Robespierre", "Committee of Public Safety",
//! "Louis XVI"), and whether the text treats each as a person, a place or something else. The
//! evidence is the text's own: titles and occupations before a name, verbs people do, "he"/"she"
//! after it, prepositions of place before it.

use std::collections::BTreeMap;

use super::spans::is_roman_numeral;
use super::text::{Document, Sentence, is_acronym};
use super::verbs;
use super::words::{self, listed};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameClass {
    Person,
    Place,
    Other,
}

/// A name in one sentence: tokens `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name {
    pub start: usize,
    pub end: usize,
}

impl Name {
    pub fn key(&self, s: &Sentence) -> String {
        s.slice(self.start, self.end).to_lowercase()
    }
}

/// The names of a document, per sentence, and their classes.
#[derive(Debug, Default)]
pub struct Names {
    pub by_sentence: Vec<Vec<Name>>,
    classes: BTreeMap<String, NameClass>,
}

#[derive(Debug, Default)]
struct Evidence {
    person: u32,
    place: u32,
    never_person: bool,
}

impl Names {
    pub fn scan(doc: &Document) -> Self {
        let by_sentence: Vec<Vec<Name>> =
            doc.sentences.iter().map(|s| in_sentence(doc, s)).collect();
        let mut evidence: BTreeMap<String, Evidence> = BTreeMap::new();
        for (si, (s, names)) in doc.sentences.iter().zip(&by_sentence).enumerate() {
            let next = doc.sentences.get(si + 1);
            for name in names {
                let e = evidence.entry(name.key(s)).or_default();
                collect(s, *name, next, e);
            }
        }
        let mut classes: BTreeMap<String, NameClass> = evidence
            .iter()
            .map(|(key, e)| {
                let class = if e.person > 0 && !e.never_person && e.person >= e.place {
                    NameClass::Person
                } else if e.place > 0 {
                    NameClass::Place
                } else {
                    NameClass::Other
                };
                (key.clone(), class)
            })
            .collect();
        // "Robespierre" after "Maximilien Robespierre": the surname alone is the same person.
        let surnames: Vec<String> = classes
            .iter()
            .filter(|(key, class)| **class == NameClass::Person && key.contains(' '))
            .filter_map(|(key, _)| key.rsplit(' ').next().map(str::to_owned))
            .collect();
        for surname in surnames {
            if let Some(class) = classes.get_mut(&surname)
                && *class == NameClass::Other
            {
                *class = NameClass::Person;
            }
        }
        // "Melvin Calvin" after "Calvin received": the full name is that person too.
        let persons: Vec<String> = classes
            .iter()
            .filter(|(_, class)| **class == NameClass::Person)
            .map(|(key, _)| key.clone())
            .collect();
        for (key, class) in classes.iter_mut() {
            let surname_is_person = key
                .rsplit_once(' ')
                .is_some_and(|(_, last)| persons.iter().any(|p| p == last));
            let blocked = evidence.get(key).is_some_and(|e| e.never_person);
            if *class == NameClass::Other && surname_is_person && !blocked {
                *class = NameClass::Person;
            }
        }
        Names {
            by_sentence,
            classes,
        }
    }

    pub fn class(&self, s: &Sentence, name: &Name) -> NameClass {
        self.classes
            .get(&name.key(s))
            .copied()
            .unwrap_or(NameClass::Other)
    }

    /// The name starting exactly at token `start` of sentence `si`.
    pub fn starting_at(&self, si: usize, start: usize) -> Option<Name> {
        self.by_sentence
            .get(si)?
            .iter()
            .find(|n| n.start == start)
            .copied()
    }
}

fn in_sentence(doc: &Document, s: &Sentence) -> Vec<Name> {
    let n = s.tokens.len();
    let capital = |i: usize| s.is_capitalised(i) && !listed(words::MONTHS, s.lower(i));
    let mut names = Vec::new();
    let mut i = 0;
    while i < n {
        if !capital(i) {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        loop {
            if end < n && capital(end) && s.adjacent(end - 1) {
                end += 1;
                continue;
            }
            // "of", "of the", "and of the" between capitalised words.
            let links = [
                &["and", "of", "the"][..],
                &["and", "of"],
                &["of", "the"],
                &["of"],
                &["de"],
                &["du"],
                &["da"],
                &["von"],
                &["van"],
                &["der"],
                &["la"],
                &["le"],
            ]
            .iter()
            .find(|link| {
                link.iter().enumerate().all(|(k, w)| {
                    s.lower(end + k) == *w && !s.is_capitalised(end + k) && s.adjacent(end + k - 1)
                })
            })
            .map(|link| link.len());
            match links {
                Some(len) if end + len < n && capital(end + len) && s.adjacent(end + len - 1) => {
                    end += len + 1;
                }
                _ => break,
            }
        }
        if let Some(name) = trim(doc, s, i, end) {
            names.push(name);
        }
        i = end;
    }
    names
}

/// A capitalised run without its sentence-initial function words ("The", "In", "When") and
/// months; a lone sentence-initial word only counts if the text capitalises it elsewhere too.
fn trim(doc: &Document, s: &Sentence, mut start: usize, end: usize) -> Option<Name> {
    if start == 0 {
        while start < end
            && (words::is_stopword(s.lower(start)) || listed(words::SUBORDINATORS, s.lower(start)))
            && !is_acronym(s.word(start))
        {
            start += 1;
        }
    }
    if start >= end {
        return None;
    }
    let lone_initial = start == 0 && end == 1;
    if lone_initial && !doc.capitalised_words.contains(s.lower(0)) && !is_acronym(s.word(0)) {
        return None;
    }
    if s.word(start) == "I" && end == start + 1 {
        return None;
    }
    Some(Name { start, end })
}

fn collect(s: &Sentence, name: Name, next: Option<&Sentence>, e: &mut Evidence) {
    let first = s.lower(name.start);
    let last = s.lower(name.end - 1);
    if listed(words::NON_PERSON_HEADS, last) {
        e.never_person = true;
    }
    if listed(words::TITLES, first) && name.end - name.start >= 2 {
        e.person += 2;
    }
    if name.start > 0 {
        let before = s.lower(name.start - 1);
        if listed(words::ROLE_NOUNS, before) || listed(words::TITLES, before) {
            e.person += 2;
        }
        // "in Paris", but not "the Nobel Prize in Chemistry".
        let after_name = name.start >= 2 && s.is_capitalised(name.start - 2);
        if listed(words::LOCATIVE_PREPOSITIONS, before) && !after_name {
            e.place += 1;
        }
    }
    if name.end - name.start >= 2 && is_roman_numeral(s.word(name.end - 1)) {
        e.person += 2;
    }
    // The subject of a verb people do: "Mendeleev published", "Jenner tested".
    let verb = s.lower(name.end);
    let base = verbs::past_base(verb).or_else(|| verbs::present_base(verb).map(|(b, _)| b));
    let born = verb == "was" && s.lower(name.end + 1) == "born";
    if base
        .as_ref()
        .is_some_and(|b| listed(words::PERSON_VERBS, b))
        || born
    {
        e.person += 1;
    }
    // "Napoleon Bonaparte seized ...": a bare two- or three-word name as a subject, with no
    // article, is usually a person's.
    let words = name.end - name.start;
    let plain = (name.start..name.end).all(|i| s.is_capitalised(i) && !is_acronym(s.word(i)));
    let article = name.start > 0 && matches!(s.lower(name.start - 1), "the" | "a" | "an");
    let finite = listed(words::AUXILIARIES, verb) || base.is_some();
    if (2..=3).contains(&words) && plain && !article && finite {
        e.person += 1;
    }
    if article {
        e.never_person = true;
    }
    // "... Mendeleev published ... . He arranged ..."
    if name.start <= 3
        && next.is_some_and(|n| matches!(n.lower(0), "he" | "she") && n.is_capitalised(0))
    {
        e.person += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(text: &str) -> Vec<(String, NameClass)> {
        let doc = Document::parse(text);
        let names = Names::scan(&doc);
        let mut out = Vec::new();
        for (s, found) in doc.sentences.iter().zip(&names.by_sentence) {
            for n in found {
                out.push((s.slice(n.start, n.end).to_owned(), names.class(s, n)));
            }
        }
        out
    }

    #[test]
    fn names_and_classes() {
        let found = classes(
            "In 1793 King Louis XVI was executed in Paris. The Committee of Public Safety ruled. \
             Maximilien Robespierre led it. He was arrested. Robespierre died in July 1794. \
             The physician John Snow traced the outbreak.",
        );
        let get = |name: &str| {
            found
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, c)| *c)
                .unwrap_or_else(|| panic!("{name} not in {found:?}"))
        };
        assert_eq!(get("King Louis XVI"), NameClass::Person);
        assert_eq!(get("Paris"), NameClass::Place);
        assert_eq!(get("Committee of Public Safety"), NameClass::Other);
        assert_eq!(get("Maximilien Robespierre"), NameClass::Person);
        assert_eq!(get("Robespierre"), NameClass::Person);
        assert_eq!(get("John Snow"), NameClass::Person);
        assert!(
            found
                .iter()
                .all(|(n, _)| n != "In" && n != "The" && n != "July")
        );
    }

    #[test]
    fn sentence_case_is_not_a_name() {
        assert!(classes("Photosynthesis makes sugar. Leaves are green.").is_empty());
    }
}
