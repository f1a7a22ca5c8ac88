//! End-to-end tests of the generator on realistic study text.

use super::*;
use cloze::BLANK;
use rank::normalise;
use std::collections::BTreeSet;

/// The card types the module doc documents.
const KINDS: &[&str] = &[
    "definition",
    "list",
    "when",
    "who",
    "where",
    "cause",
    "effect",
    "cloze",
    "note",
];

#[test]
#[ignore = "prints the cards of $CARDS_FILE"]
fn dump_cards() {
    let path = std::env::var("CARDS_FILE").unwrap();
    let n: u32 = std::env::var("CARDS_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let text = std::fs::read_to_string(path).unwrap();
    for c in cards(&text, n) {
        println!("[{}] {}\n    -> {}", c.kind, c.question, c.answer);
    }
}

const MITOCHONDRIA: &str = "\
Mitochondria are membrane-bound organelles found in the cytoplasm of most eukaryotic cells. \
The mitochondrion is an organelle that generates most of the chemical energy needed to power \
the cell's biochemical reactions. This energy is stored in a molecule called adenosine \
triphosphate (ATP). Cellular respiration refers to the set of metabolic reactions that convert \
nutrients into ATP. Most ATP is produced by cellular respiration on the inner membrane of the \
mitochondria. The inner membrane is folded into cristae, which increase its surface area. \
Mitochondria contain their own DNA, which is inherited from the mother. It is thought that \
mitochondria were once free-living bacteria.";

const REVOLUTION: &str = "\
The French Revolution was a period of political and societal change in France that began \
with the Estates General of 1789. The Estates General was a general assembly representing the \
French estates of the realm. In 1789 the Third Estate formed the National Assembly. The storming \
of the Bastille took place on 14 July 1789. The Reign of Terror was a period of mass executions \
led by Robespierre. During the Reign of Terror, thousands of people were executed. Napoleon \
Bonaparte seized power in 1799.";

const PHOTOSYNTHESIS: &str = "\
Photosynthesis is the process by which green plants and some other organisms use sunlight to \
synthesize foods from carbon dioxide and water. Photosynthesis in plants generally involves the \
green pigment chlorophyll and generates oxygen as a byproduct. The light-dependent reactions take \
place in the thylakoid membranes of the chloroplast. During these reactions, light energy is \
converted into chemical energy in the form of ATP and NADPH. The Calvin cycle, also known as the \
light-independent reactions, takes place in the stroma. In the Calvin cycle, carbon dioxide is \
fixed into glucose. Chloroplasts are organelles that contain chlorophyll.";

fn request(content: &str, cards: u32) -> JobRequest {
    JobRequest {
        content: content.into(),
        subject: "Biology".into(),
        topic: "Cell organelles".into(),
        user_id: "user-1".into(),
        card_count: cards,
    }
}

fn cards(content: &str, n: u32) -> Vec<Flashcard> {
    generate(&request(content, n))
}

fn find<'a>(cards: &'a [Flashcard], question: &str) -> &'a Flashcard {
    cards
        .iter()
        .find(|c| c.question == question)
        .unwrap_or_else(|| panic!("no card {question:?} in {cards:#?}"))
}

#[test]
fn mitochondria_paragraph_gives_sensible_definitions() {
    let cards = cards(MITOCHONDRIA, 10);
    assert_eq!(cards.len(), 10, "{cards:#?}");

    let what = find(&cards, "What are mitochondria?");
    assert_eq!(what.kind, "definition");
    assert!(
        what.answer.starts_with("Membrane-bound organelles"),
        "{what:?}"
    );
    let one = find(&cards, "What is the mitochondrion?");
    assert!(one.answer.contains("organelle"), "{one:?}");
    assert!(!one.answer.ends_with('.'));
    let resp = find(&cards, "What does cellular respiration refer to?");
    assert!(resp.answer.contains("metabolic reactions"), "{resp:?}");
    assert_eq!(
        find(&cards, "What does ATP stand for?").answer,
        "Adenosine triphosphate"
    );

    // Pronoun-led sentences never become definitions.
    assert!(cards.iter().all(|c| !c.question.starts_with("What is it")));
    // The most informative cards come first: definitions before any cloze.
    assert_eq!(cards[0].kind, "definition");
    let kinds: BTreeSet<&str> = cards.iter().map(|c| c.kind.as_str()).collect();
    assert!(kinds.contains("cloze"), "{kinds:?}");
    for kind in kinds {
        assert!(KINDS.contains(&kind), "undocumented kind {kind}");
    }
}

#[test]
fn cloze_cards_blank_the_answer() {
    let cards = cards(MITOCHONDRIA, 12);
    let clozes: Vec<_> = cards.iter().filter(|c| c.kind == "cloze").collect();
    assert!(!clozes.is_empty());
    for c in clozes {
        let sentence = c
            .question
            .strip_prefix(cloze::PREFIX)
            .or_else(|| c.question.strip_prefix(cloze::PREFIX_SEVERAL))
            .expect("prefix");
        assert!(sentence.contains(BLANK), "{c:?}");
        assert!(
            !sentence.to_lowercase().contains(&c.answer.to_lowercase()),
            "answer still visible: {c:?}"
        );
        assert!(word_count(sentence) >= 3);
    }
}

#[test]
fn history_text_asks_when_and_who() {
    let cards = cards(REVOLUTION, 20);
    let fr = find(&cards, "What was the French Revolution?");
    assert!(
        fr.answer
            .starts_with("A period of political and societal change"),
        "{fr:?}"
    );
    find(&cards, "What was the Reign of Terror?");
    let estates = find(&cards, "What was the Estates General?");
    assert!(
        estates.answer.starts_with("A general assembly"),
        "{estates:?}"
    );
    let bastille = find(&cards, "When did the storming of the Bastille take place?");
    assert_eq!(
        (bastille.kind.as_str(), bastille.answer.as_str()),
        ("when", "14 July 1789")
    );
    let napoleon = find(&cards, "When did Napoleon Bonaparte seize power?");
    assert_eq!(napoleon.answer, "1799");
    let who = find(&cards, "Who seized power in 1799?");
    assert_eq!(
        (who.kind.as_str(), who.answer.as_str()),
        ("who", "Napoleon Bonaparte")
    );
    // Multi-word names are blanked whole, never as a fragment ("_____ General").
    assert!(cards.iter().all(|c| c.answer != "Estates"), "{cards:#?}");
    // Articles stay with their names.
    assert!(
        cards
            .iter()
            .all(|c| !c.question.contains("In French Revolution"))
    );
}

#[test]
fn photosynthesis_aliases_places_and_common_nouns() {
    let cards = cards(PHOTOSYNTHESIS, 12);
    assert_eq!(cards.len(), 12);
    let alias = find(&cards, "What is the Calvin cycle also known as?");
    assert_eq!(alias.answer, "The light-independent reactions");
    // "Chloroplasts" starts its sentence, but the text writes "chloroplast" in lower case.
    let chloro = find(&cards, "What are chloroplasts?");
    assert_eq!(chloro.answer, "Organelles that contain chlorophyll");
    // Only ever written at a sentence start, but shaped like a common noun.
    let photo = find(&cards, "What is photosynthesis?");
    assert!(
        photo
            .answer
            .starts_with("The process by which green plants")
    );
    let place = find(&cards, "Where does the Calvin cycle take place?");
    assert_eq!(
        (place.kind.as_str(), place.answer.as_str()),
        ("where", "In the stroma")
    );
    assert!(
        cards
            .iter()
            .any(|c| c.kind == "cloze" && c.answer == "ATP and NADPH"),
        "{cards:#?}"
    );
}

#[test]
fn cause_and_effect_cards() {
    let text = "Foreign wars and revolts inside France led to the Reign of Terror. \
                The overuse of antibiotics causes antibiotic resistance. \
                Most geologists rejected the theory because nobody could explain the force.";
    let cards = cards(text, 10);
    let cause = find(&cards, "What led to the Reign of Terror?");
    assert_eq!(
        (cause.kind.as_str(), cause.answer.as_str()),
        ("cause", "Foreign wars and revolts inside France")
    );
    let effect = find(&cards, "What does the overuse of antibiotics cause?");
    assert_eq!(
        (effect.kind.as_str(), effect.answer.as_str()),
        ("effect", "Antibiotic resistance")
    );
    let why = find(&cards, "Why did most geologists reject the theory?");
    assert_eq!(why.answer, "Because nobody could explain the force");
}

#[test]
fn list_cards_from_enumerations() {
    let text = "The Estates-General was an assembly of the three estates of the realm: the \
                clergy, the nobility and the commoners. The noble gases, such as helium, neon \
                and argon, have full outer shells. Britain had several advantages: coal, iron \
                ore, a growing population and a stable government.";
    let cards = cards(text, 10);
    let estates = find(&cards, "What were the three estates of the realm?");
    assert_eq!(
        (estates.kind.as_str(), estates.answer.as_str()),
        ("list", "The clergy, the nobility and the commoners")
    );
    assert_eq!(
        find(&cards, "What are three examples of noble gases?").answer,
        "Helium, neon and argon"
    );
    assert_eq!(
        find(&cards, "Which advantages did Britain have?").answer,
        "Coal, iron ore, a growing population and a stable government"
    );
}

#[test]
fn one_card_of_a_type_per_sentence_and_no_meta_cards() {
    for text in [MITOCHONDRIA, REVOLUTION, PHOTOSYNTHESIS] {
        let request = request(text, 50);
        let analysis = Analysis::new(&request.content, &request.topic);
        let cards = cards(text, 50);
        assert!(cards.iter().all(|c| c.kind != "note"), "{cards:#?}");
        let mut seen = BTreeSet::new();
        for c in &cards {
            if c.kind != "cloze" {
                continue;
            }
            // The filled-in cloze is one sentence of the text; no sentence gives two.
            let filled = c
                .question
                .strip_prefix(cloze::PREFIX)
                .map(|s| s.replace(BLANK, &c.answer));
            if let Some(filled) = filled {
                let sentence = analysis
                    .doc
                    .sentences
                    .iter()
                    .position(|s| s.text == filled)
                    .unwrap_or_else(|| panic!("{filled:?} is not a sentence"));
                assert!(seen.insert(sentence), "two clozes of {filled:?}");
            }
        }
    }
}

#[test]
fn count_is_honoured_and_questions_are_unique() {
    for n in [1, 3, 5, 8] {
        let cards = cards(MITOCHONDRIA, n);
        assert_eq!(cards.len(), n as usize);
        let questions: BTreeSet<_> = cards.iter().map(|c| normalise(&c.question)).collect();
        assert_eq!(questions.len(), cards.len());
    }
    // Asking for more than the text holds gives fewer, never filler.
    let many = cards(MITOCHONDRIA, 50);
    assert!(many.len() < 50 && many.len() >= 10, "{}", many.len());
    assert!(
        many.iter()
            .all(|c| !c.question.is_empty() && !c.answer.is_empty())
    );
    // A smaller count keeps the best cards of a larger one.
    let few = cards(MITOCHONDRIA, 5);
    assert_eq!(few[..], many[..5]);
}

#[test]
fn output_is_deterministic() {
    let a = cards(MITOCHONDRIA, 10);
    for _ in 0..3 {
        assert_eq!(cards(MITOCHONDRIA, 10), a);
    }
    // Whitespace and wrapping do not change the result.
    let rewrapped = MITOCHONDRIA.replace(". ", ".\n   ");
    assert_eq!(cards(&rewrapped, 10), a);
}

#[test]
fn tiny_input_still_gives_a_sensible_card() {
    // Nothing to ask about in the text: only then a card about the notes themselves.
    let cards = cards("test", 3);
    assert!(!cards.is_empty());
    let topic = find(&cards, "Which Biology topic do these notes cover?");
    assert_eq!(
        (topic.kind.as_str(), topic.answer.as_str()),
        ("note", "Cell organelles")
    );
    assert!(cards.iter().all(|c| !c.answer.is_empty()));
}

#[test]
fn unicode_and_odd_input_do_not_panic() {
    let texts = [
        "The Schrödinger equation is a linear partial differential equation that governs the \
         wave function of a quantum-mechanical system. Erwin Schrödinger postulated the \
         Schrödinger equation in 1925.",
        "光合作用是植物利用光能的过程。叶绿体是进行光合作用的细胞器。",
        "🙂🙂 — … «» \u{200b}\u{feff} ...",
        "İstanbul İS a city. ÅÄÖ are letters; ﬁ ligatures are odd.",
        "a-b-c - - ' ’s 's x's",
        "\n\n\t\r\n",
        &"word ".repeat(5_000),
        "In In In In 1789 1789 1789. On on 14 14 July July 1789 1789, by by 1780s.",
        "1,2,3,4,5,6,7,8,9,10 and 11 km km km per per second squared 5 % °C ° C.",
        "The The The is is is a a a. Are are are. Was was was the the the.",
        "Fill in the blank: _____ _____. Fill in the blanks: _____; _____.",
        "A, B, and C, such as D, E and F: G, H; I. such as such as, and, or.",
        &"apples, ".repeat(2_000),
        "X because because because Y. Because, because. It leads to to to. Caused by by.",
        "He said: \"It is.\" (She was.) [1] {2} <b>bold</b> https://x.y/z?q=1#f www.a.b",
        "123 456 789 1000000 3.14159 0.0001 1e10 -5 +7 ½ ² ³",
        "مرحبا بالعالم. नमस्ते दुनिया। ข้อความภาษาไทย",
        "Mr. Dr. Prof. St. J. J. A. B. C. e.g. i.e. etc. vs. No. 5.",
        "—— –– -- ... !!! ??? ;;; ::: ,,, '''' \"\"\"",
        "The King Louis XVI Louis XVI XVI X I V was executed executed in Paris Paris at at.",
        "Who was who? What is what? When was when? Where is where?",
    ];

    for text in texts {
        let request = request(text, 5);
        let flashcards = generate(&request);
        assert!(flashcards.len() <= 5);
        assert!(!flashcards.is_empty(), "{text:?}");
    }
    let schrodinger = cards(texts[0], 5);
    let q = find(&schrodinger, "What is the Schrödinger equation?");
    assert!(
        q.answer
            .starts_with("A linear partial differential equation")
    );
}

#[test]
fn shuffled_study_words_never_panic() {
    // Sentences of real study words in random order: every stage sees subjects, verbs, dates,
    // names and enumerations in places it does not expect them.
    let corpus = [
        include_str!("../tests/corpus/history_french_revolution.txt"),
        include_str!("../tests/corpus/biology_photosynthesis.txt"),
        include_str!("../tests/corpus/physics_motion.txt"),
    ]
    .join(" ");
    let vocabulary: Vec<&str> = corpus.split_whitespace().collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) as usize % n
    };
    for round in 0..120 {
        let words = 5 + next(300);
        let mut text = String::new();
        for _ in 0..words {
            text.push_str(vocabulary[next(vocabulary.len())]);
            text.push(if next(9) == 0 { '\n' } else { ' ' });
        }
        let n = 1 + (round % 50) as u32;
        let flashcards = generate(&request(&text, n));
        assert!(!flashcards.is_empty() && flashcards.len() <= n as usize);
        let questions: BTreeSet<_> = flashcards.iter().map(|c| normalise(&c.question)).collect();
        assert_eq!(questions.len(), flashcards.len(), "{text:?}");
    }
}

#[test]
fn arbitrary_text_never_panics() {
    // A fixed pseudo-random sequence over a palette of awkward characters: reproducible, no
    // dependency, and it covers brackets, apostrophes, combining marks and multi-byte letters.
    let palette: Vec<char> = "aZ é İ ß ﬁ 中 🙂 e\u{301} ' ’ - ( ) [ ] \" . , ; : ! ? \n\n # * 1 9 is are the (ATP) a an "
        .chars()
        .collect();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..300 {
        let len = 1 + round % 120;
        let text: String = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                palette[(seed >> 33) as usize % palette.len()]
            })
            .collect();
        let n = 1 + (round % 7) as u32;
        // The request's topic always yields a card, so every input must succeed.
        let flashcards = generate(&request(&text, n));
        assert!(!flashcards.is_empty() && flashcards.len() <= n as usize);
        for card in &flashcards {
            let chars = card.question.chars().count() + card.answer.chars().count();
            assert!(chars as u64 <= MAX_CARD_CHARS, "{text:?}");
        }
    }
}

#[test]
fn largest_accepted_input_is_handled() {
    let mut text = String::new();
    while text.chars().count() < 50_000 {
        text.push_str(MITOCHONDRIA);
        text.push_str("\n\n");
        text.push_str(PHOTOSYNTHESIS);
        text.push_str("\n\n");
        text.push_str(REVOLUTION);
        text.push_str("\n\n");
    }
    let started = std::time::Instant::now();
    let cards = cards(&text, 50);
    assert!(cards.len() >= 25, "{}", cards.len());
    // Generous even for an unoptimised build on a busy machine; catches quadratic blow-ups.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
