//! What the card-type stages propose and the ranking stage chooses from: a question, its answer,
//! the sentence it came from and the facts it tests.

/// The card types of the local provider (the `type` field of a flashcard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Definition,
    List,
    When,
    Who,
    Where,
    Cause,
    Effect,
    Cloze,
    /// Only when the text gives nothing else: its topic, or the note itself.
    Note,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Definition => "definition",
            Kind::List => "list",
            Kind::When => "when",
            Kind::Who => "who",
            Kind::Where => "where",
            Kind::Cause => "cause",
            Kind::Effect => "effect",
            Kind::Cloze => "cloze",
            Kind::Note => "note",
        }
    }

    /// How much a card of this type is worth to a student, other things equal: a definition or
    /// a date asked for directly teaches more than a blank in a sentence.
    pub fn weight(self) -> f64 {
        match self {
            Kind::Definition => 1.0,
            Kind::List | Kind::When => 0.95,
            Kind::Who | Kind::Cause => 0.9,
            Kind::Where => 0.85,
            Kind::Effect => 0.8,
            Kind::Cloze => 0.7,
            Kind::Note => 0.1,
        }
    }
}

/// A proposed card.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub kind: Kind,
    pub question: String,
    pub answer: String,
    /// Index of the source sentence.
    pub sentence: usize,
    /// Lower-cased facts the card tests (a date, a quantity, a defined term, a name), so the
    /// ranking can prefer cards that test something no chosen card tests yet.
    pub facts: Vec<String>,
    /// The stage's own confidence and informativeness, about 0..1.
    pub weight: f64,
}

impl Candidate {
    pub fn new(kind: Kind, question: String, answer: String, sentence: usize) -> Self {
        Candidate {
            kind,
            question,
            answer,
            sentence,
            facts: Vec::new(),
            weight: 1.0,
        }
    }

    pub fn with_facts(mut self, facts: impl IntoIterator<Item = String>) -> Self {
        self.facts.extend(facts);
        self
    }

    pub fn with_weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }
}
