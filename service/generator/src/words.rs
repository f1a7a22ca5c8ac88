//! Word lists for the local provider, sorted so lookups are binary searches (a test checks).
//! They hold general English (function words, auxiliaries, irregular verbs, units, titles), never
//! words of any particular text.

/// Function words and words too general to study on their own.
#[rustfmt::skip]
pub const STOPWORDS: &[&str] = &[
    "a", "able", "about", "above", "across", "after", "again", "against", "all", "almost", "along",
    "also", "although", "always", "am", "among", "amount", "an", "and", "another", "any", "are",
    "area", "around", "as", "at", "be", "became", "because", "become", "becomes", "been", "before",
    "behind", "being", "below", "beneath", "beside", "besides", "between", "beyond", "both", "but",
    "by", "called", "can", "cannot", "case", "certain", "consists", "could", "defined", "despite",
    "did", "different", "do", "does", "doing", "done", "down", "during", "each", "either", "else",
    "enough", "etc", "even", "ever", "every", "example", "fact", "far", "few", "first", "for",
    "form", "forms", "from", "further", "get", "gets", "given", "got", "group", "had", "has",
    "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how",
    "however", "hundreds", "i", "if", "important", "in", "include", "includes", "including",
    "inside", "into", "is", "it", "its", "itself", "just", "kind", "known", "largely", "later",
    "least", "less", "level", "like", "lot", "lots", "made", "main", "mainly", "make", "makes",
    "many", "may", "me", "means", "might", "millions", "more", "most", "mostly", "much", "must",
    "my", "near", "need", "never", "new", "next", "no", "nor", "not", "now", "number", "of", "off",
    "often", "on", "once", "one", "only", "onto", "or", "order", "other", "others", "our", "out",
    "outside", "over", "own", "part", "people", "per", "perhaps", "person", "place", "point",
    "probably", "quite", "rather", "really", "refer", "refers", "result", "roughly", "said",
    "same", "says", "second", "set", "several", "shall", "she", "should", "side", "since", "so",
    "some", "specific", "such", "take", "takes", "term", "than", "that", "the", "their", "them",
    "themselves", "then", "there", "therefore", "these", "they", "thing", "things", "this",
    "those", "though", "thousands", "through", "thus", "time", "times", "to", "together", "too",
    "toward", "towards", "type", "types", "under", "until", "up", "upon", "us", "use", "used",
    "uses", "using", "usually", "various", "very", "via", "was", "way", "ways", "we", "well",
    "were", "what", "when", "where", "whereas", "whether", "which", "while", "who", "whole",
    "whom", "whose", "why", "will", "with", "within", "without", "would", "year", "years", "yet",
    "you", "your",
];

/// Words that start a clause rather than name a thing: "It is", "There are", "In 1789 the...".
#[rustfmt::skip]
pub const CLAUSE_STARTERS: &[&str] = &[
    "after", "all", "also", "although", "and", "another", "as", "at", "because", "before", "both",
    "but", "by", "during", "each", "for", "from", "he", "her", "here", "his", "how", "however",
    "i", "if", "in", "it", "its", "many", "more", "most", "much", "my", "not", "of", "on", "one",
    "only", "or", "other", "our", "she", "so", "some", "such", "that", "their", "then", "there",
    "these", "they", "this", "those", "though", "thus", "to", "we", "what", "when", "where",
    "which", "while", "who", "why", "with", "you", "your",
];

/// After a bare "are", words that describe rather than define ("are responsible for").
#[rustfmt::skip]
pub const DESCRIPTIVE: &[&str] = &[
    "available", "common", "ed", "essential", "found", "large", "likely", "ly", "necessary",
    "present", "rare", "responsible", "similar", "small", "unable",
];

/// Words after which a noun phrase starts.
#[rustfmt::skip]
pub const DETERMINERS: &[&str] = &[
    "a", "about", "an", "and", "between", "by", "each", "every", "for", "from", "her", "his", "in",
    "into", "its", "many", "most", "no", "of", "on", "our", "own", "some", "the", "their", "these",
    "this", "those", "with", "within",
];

/// Words after which a verb usually follows ("to increase", "which contain").
#[rustfmt::skip]
pub const VERB_CUES: &[&str] = &[
    "also", "can", "cannot", "could", "did", "do", "does", "it", "may", "might", "must", "not",
    "should", "that", "they", "to", "we", "which", "who", "will", "would", "you",
];

/// Words a question-worthy subject never starts with: pronouns and clause openers whose referent
/// lies outside the sentence ("It takes place...", "This promise is...").
#[rustfmt::skip]
pub const VAGUE_SUBJECT_STARTS: &[&str] = &[
    "after", "also", "although", "and", "another", "as", "because", "before", "but", "during",
    "either", "he", "her", "here", "his", "how", "however", "i", "if", "in", "it", "its", "my",
    "neither", "nor", "once", "one", "or", "our", "she", "since", "so", "such", "that", "their",
    "them", "then", "there", "these", "they", "this", "those", "though", "thus", "to", "unless",
    "until", "we", "what", "when", "where", "whereas", "which", "while", "who", "why", "yet",
    "you", "your",
];

/// Auxiliaries and copulas: a question inverts them ("X was stormed" -> "When was X stormed?").
#[rustfmt::skip]
pub const AUXILIARIES: &[&str] = &[
    "are", "can", "could", "did", "do", "does", "had", "has", "have", "is", "may", "might", "must",
    "shall", "should", "was", "were", "will", "would",
];

/// Words that open a subordinate or relative clause: a clause's own facts end before them.
#[rustfmt::skip]
pub const CLAUSE_OPENERS: &[&str] = &[
    "although", "because", "though", "unless", "until", "when", "whereas", "which", "while", "who",
    "whom", "whose",
];

/// Subordinators that can open a sentence before its main clause ("When they arrived, ...").
#[rustfmt::skip]
pub const SUBORDINATORS: &[&str] = &[
    "after", "although", "as", "because", "before", "if", "once", "since", "though", "unless",
    "until", "when", "whenever", "where", "whereas", "while",
];

/// Irregular past tenses and their base forms, sorted by the past form. Forms equal to their
/// base ("put", "set", "spread") are missing on purpose: their tense cannot be told.
#[rustfmt::skip]
pub const IRREGULAR_PAST: &[(&str, &str)] = &[
    ("arose", "arise"), ("ate", "eat"), ("awoke", "awake"), ("became", "become"),
    ("began", "begin"), ("bent", "bend"), ("bit", "bite"), ("blew", "blow"), ("bore", "bear"),
    ("bought", "buy"), ("bound", "bind"), ("broke", "break"), ("brought", "bring"),
    ("built", "build"), ("burnt", "burn"), ("came", "come"), ("caught", "catch"),
    ("chose", "choose"), ("clung", "cling"), ("crept", "creep"), ("dealt", "deal"),
    ("drank", "drink"), ("drew", "draw"), ("drove", "drive"), ("dug", "dig"), ("dwelt", "dwell"),
    ("fed", "feed"), ("fell", "fall"), ("felt", "feel"), ("fled", "flee"), ("flew", "fly"),
    ("forbade", "forbid"), ("foresaw", "foresee"), ("forgave", "forgive"), ("forgot", "forget"),
    ("fought", "fight"), ("found", "find"), ("froze", "freeze"), ("gave", "give"), ("got", "get"),
    ("grew", "grow"), ("heard", "hear"), ("held", "hold"), ("hid", "hide"), ("hung", "hang"),
    ("kept", "keep"), ("knew", "know"), ("laid", "lay"), ("lay", "lie"), ("led", "lead"),
    ("left", "leave"), ("lent", "lend"), ("lost", "lose"), ("made", "make"), ("meant", "mean"),
    ("met", "meet"), ("overcame", "overcome"), ("overthrew", "overthrow"), ("paid", "pay"),
    ("ran", "run"), ("rang", "ring"), ("rode", "ride"), ("rose", "rise"), ("said", "say"),
    ("sang", "sing"), ("sank", "sink"), ("sat", "sit"), ("saw", "see"), ("sent", "send"),
    ("shone", "shine"), ("shook", "shake"), ("shot", "shoot"), ("slept", "sleep"),
    ("slid", "slide"), ("sold", "sell"), ("sought", "seek"), ("spent", "spend"),
    ("spoke", "speak"), ("sprang", "spring"), ("spun", "spin"), ("stole", "steal"),
    ("stood", "stand"), ("strove", "strive"), ("struck", "strike"), ("stuck", "stick"),
    ("swam", "swim"), ("swept", "sweep"), ("swore", "swear"), ("swung", "swing"),
    ("taught", "teach"), ("thought", "think"), ("threw", "throw"), ("told", "tell"),
    ("took", "take"), ("tore", "tear"), ("understood", "understand"), ("undertook", "undertake"),
    ("upheld", "uphold"), ("withdrew", "withdraw"), ("woke", "wake"), ("won", "win"),
    ("wore", "wear"), ("wove", "weave"), ("wrote", "write"),
];

/// Irregular past participles: after "has"/"had" they make a perfect tense, not possession.
#[rustfmt::skip]
pub const IRREGULAR_PARTICIPLES: &[&str] = &[
    "arisen", "become", "been", "begun", "bent", "borne", "bought", "broken", "brought", "built",
    "burst", "cast", "caught", "chosen", "come", "cut", "dealt", "done", "drawn", "driven",
    "eaten", "fallen", "felt", "flown", "forgotten", "fought", "found", "frozen", "given", "gone",
    "got", "gotten", "grown", "heard", "held", "hidden", "hit", "kept", "known", "laid", "led",
    "left", "let", "lost", "made", "meant", "met", "paid", "put", "read", "ridden", "risen", "run",
    "said", "seen", "sent", "set", "shown", "shut", "spent", "split", "spoken", "spread", "stolen",
    "stood", "struck", "sworn", "taken", "taught", "thought", "thrown", "told", "understood",
    "woken", "won", "worn", "written",
];

/// Common verbs in their base form: with these, a present-tense word after a subject is read as
/// the clause's verb ("the rate falls", "plants take in").
#[rustfmt::skip]
pub const COMMON_VERBS: &[&str] = &[
    "absorb", "accelerate", "act", "add", "affect", "allow", "appear", "arise", "attach", "attack",
    "become", "begin", "bind", "block", "break", "bring", "build", "burn", "carry", "cause",
    "change", "check", "circle", "close", "collide", "combine", "come", "connect", "consist",
    "contain", "control", "convert", "cool", "cover", "create", "cross", "decay", "decrease",
    "defend", "depend", "describe", "destroy", "determine", "develop", "die", "differ", "digest",
    "divide", "drive", "eat", "emit", "enable", "encrypt", "end", "engulf", "enter", "exchange",
    "exert", "expand", "explain", "fall", "feed", "fight", "fill", "find", "fit", "fix", "flow",
    "fly", "follow", "form", "forward", "gain", "generate", "get", "give", "go", "govern", "grow",
    "happen", "heat", "help", "hold", "include", "increase", "keep", "kill", "lack", "lead",
    "leave", "let", "lie", "link", "live", "lose", "make", "mature", "mean", "measure", "meet",
    "melt", "move", "multiply", "need", "occur", "oppose", "orbit", "pass", "pay", "produce",
    "protect", "provide", "pull", "pump", "push", "raise", "reach", "react", "receive", "reduce",
    "reflect", "release", "rely", "remain", "remove", "repair", "replace", "reproduce", "require",
    "resist", "respond", "rest", "result", "return", "rise", "run", "send", "serve", "show",
    "shrink", "sink", "sit", "slide", "slow", "spin", "split", "spread", "stand", "start", "stay",
    "stop", "store", "supply", "support", "surround", "survive", "take", "tend", "track", "trap",
    "travel", "trigger", "turn", "use", "vary", "warm", "work",
];

/// Verbs that say where something happens: with them, "in the stroma" is a place, not a manner.
#[rustfmt::skip]
pub const LOCATION_VERBS: &[&str] = &[
    "be", "build", "bury", "develop", "die", "form", "found", "grow", "happen", "hide", "hold",
    "house", "keep", "lie", "live", "locate", "make", "mature", "meet", "occur", "produce",
    "reside", "settle", "sit", "situate", "store", "take",
];

/// Nouns after "in" that make a manner or a state, not a place ("in the form of", "in power").
#[rustfmt::skip]
pub const NON_PLACE_NOUNS: &[&str] = &[
    "absence", "action", "addition", "advance", "battle", "case", "charge", "combat", "common",
    "contrast", "coup", "danger", "debt", "detail", "direction", "effect", "end", "fact", "favor",
    "favour", "form", "full", "general", "half", "halves", "harmony", "history", "line", "love",
    "manner", "meantime", "mind", "need", "order", "pairs", "part", "particular", "place",
    "position", "power", "practice", "presence", "private", "process", "public", "question",
    "response", "return", "same", "secret", "shape", "short", "size", "step", "terms", "theory",
    "time", "total", "touch", "trouble", "tune", "turn", "use", "vain", "war", "way", "ways",
];

/// Titles that come before a person's name.
#[rustfmt::skip]
pub const TITLES: &[&str] = &[
    "admiral", "archduke", "bishop", "captain", "cardinal", "chancellor", "count", "countess",
    "dr", "duchess", "duke", "emperor", "empress", "general", "king", "lady", "lord", "madame",
    "marquis", "mr", "mrs", "ms", "pope", "president", "prince", "princess", "prof", "professor",
    "queen", "saint", "senator", "sir", "sultan", "tsar",
];

/// Occupations written before a name ("the physician John Snow").
#[rustfmt::skip]
pub const ROLE_NOUNS: &[&str] = &[
    "archaeologist", "architect", "artist", "astronomer", "author", "biologist", "botanist",
    "chemist", "composer", "economist", "emperor", "engineer", "explorer", "founder", "general",
    "geologist", "historian", "inventor", "king", "lawyer", "leader", "mathematician", "member",
    "minister", "monarch", "monk", "naturalist", "painter", "philosopher", "physician",
    "physicist", "poet", "politician", "president", "priest", "queen", "researcher", "ruler",
    "scientist", "soldier", "statesman", "surgeon", "writer",
];

/// Nouns for people that are not occupations ("Macbeth's wife", "a man").
#[rustfmt::skip]
pub const PERSON_NOUNS: &[&str] = &[
    "aunt", "boy", "brother", "child", "cousin", "daughter", "father", "friend", "girl",
    "grandfather", "grandmother", "heir", "hero", "heroine", "husband", "man", "mother", "nephew",
    "niece", "person", "sister", "son", "uncle", "widow", "wife", "woman",
];

/// Verbs whose subject is almost always a person (base forms).
#[rustfmt::skip]
pub const PERSON_VERBS: &[&str] = &[
    "argue", "believe", "build", "compose", "conclude", "demonstrate", "describe", "design", "die",
    "discover", "explain", "found", "invent", "marry", "notice", "observe", "paint", "predict",
    "propose", "prove", "publish", "realise", "realize", "receive", "say", "show", "study",
    "suggest", "test", "trace", "write",
];

/// Last words of names that are institutions, events, things or places, not people.
#[rustfmt::skip]
pub const NON_PERSON_HEADS: &[&str] = &[
    "act", "age", "army", "assembly", "association", "bank", "basin", "bay", "belt", "church",
    "city", "club", "committee", "company", "convention", "council", "court", "cycle",
    "declaration", "department", "desert", "directory", "empire", "estate", "estates", "fault",
    "forest", "gulf", "hemisphere", "island", "islands", "kingdom", "lake", "law", "league",
    "mountains", "movement", "oath", "ocean", "organisation", "organization", "party", "plate",
    "plateau", "prize", "protocol", "railway", "republic", "revolution", "ridge", "river", "sea",
    "society", "state", "states", "street", "system", "treaty", "union", "university", "valley",
    "war", "web",
];

/// Prepositions before a place ("in Paris", "at Cromford", "from Africa").
#[rustfmt::skip]
pub const LOCATIVE_PREPOSITIONS: &[&str] = &[
    "across", "at", "from", "in", "inside", "near", "on", "outside", "throughout", "within",
];

/// Prepositions that can open a date phrase a when-question replaces.
#[rustfmt::skip]
pub const DATE_PREPOSITIONS: &[&str] = &[
    "around", "at", "between", "by", "circa", "during", "from", "in", "on", "since", "until",
];

/// Words a date phrase may hold between its preposition and the date ("in the early 1990s").
#[rustfmt::skip]
pub const DATE_FILLERS: &[&str] = &[
    "early", "first", "half", "late", "mid", "middle", "of", "second", "the",
];

#[rustfmt::skip]
pub const MONTHS: &[&str] = &[
    "april", "august", "december", "february", "january", "july", "june", "march", "may",
    "november", "october", "september",
];

/// Ordinals that name centuries ("the eighteenth century").
#[rustfmt::skip]
pub const ORDINAL_WORDS: &[&str] = &[
    "eighteenth", "eighth", "eleventh", "fifteenth", "fifth", "first", "fourteenth", "fourth",
    "nineteenth", "ninth", "second", "seventeenth", "seventh", "sixteenth", "sixth", "tenth",
    "third", "thirteenth", "twelfth", "twentieth", "twenty-first",
];

/// Units of measurement written as words or abbreviations (compared in lower case).
#[rustfmt::skip]
pub const UNITS: &[&str] = &[
    "acres", "amperes", "amps", "atm", "atmospheres", "au", "bar", "bit", "bits", "bytes",
    "calories", "celsius", "centimeters", "centimetres", "centuries", "cm", "cubic", "day", "days",
    "decades", "degree", "degrees", "fahrenheit", "feet", "ft", "g", "gb", "ghz", "gram", "grams",
    "hectares", "hertz", "hour", "hours", "hz", "inches", "j", "joule", "joules", "kb", "kcal",
    "kelvin", "kg", "khz", "kilobytes", "kilogram", "kilograms", "kilojoules", "kilometer",
    "kilometers", "kilometre", "kilometres", "kj", "km", "kpa", "kw", "l", "lb", "light-years",
    "liter", "liters", "litre", "litres", "m", "mb", "megabytes", "meter", "meters", "metre",
    "metres", "mg", "mhz", "micrometers", "micrometres", "microns", "mile", "miles", "millennia",
    "milligrams", "milliliters", "millilitres", "millimeters", "millimetres", "minute", "minutes",
    "ml", "mm", "mol", "mole", "moles", "month", "months", "mph", "newton", "newtons", "nm", "pa",
    "pascals", "per", "percent", "ppm", "second", "seconds", "square", "tb", "times", "tonne",
    "tonnes", "tons", "volt", "volts", "watt", "watts", "week", "weeks", "year", "years", "µg",
    "µm", "μg", "μm",
];

/// Words that scale a number ("4.6 billion").
#[rustfmt::skip]
pub const SCALE_WORDS: &[&str] = &["billion", "hundred", "million", "thousand", "trillion"];

/// Quantifiers dropped from a noun phrase a list question asks about ("several advantages").
#[rustfmt::skip]
pub const VAGUE_QUANTIFIERS: &[&str] = &["many", "numerous", "several", "some", "various"];

/// Endings of common nouns (not names): a word with one, that the text only writes capitalised at
/// the start of a sentence, is lower-cased in a question ("Photosynthesis" -> "photosynthesis").
/// Not sorted: matched as suffixes.
pub const COMMON_NOUN_SUFFIXES: &[&str] = &[
    "ance", "ase", "cyte", "ence", "ics", "ism", "ity", "ment", "ness", "ology", "phyll", "plast",
    "sion", "sis", "some", "tion",
];

pub fn is_stopword(word: &str) -> bool {
    STOPWORDS.binary_search(&word).is_ok()
}

/// Binary search in one of the sorted lists above.
pub fn listed(list: &[&str], word: &str) -> bool {
    list.binary_search(&word).is_ok()
}

/// Base form of an irregular past tense.
pub fn irregular_past_base(word: &str) -> Option<&'static str> {
    IRREGULAR_PAST
        .binary_search_by(|(past, _)| past.cmp(&word))
        .ok()
        .map(|i| IRREGULAR_PAST[i].1)
}

/// "three" for 3, up to twelve; digits beyond.
pub fn count_word(n: usize) -> String {
    const WORDS: [&str; 13] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve",
    ];
    WORDS
        .get(n)
        .map_or_else(|| n.to_string(), |w| (*w).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_lowercase_and_unique() {
        for list in [
            STOPWORDS,
            CLAUSE_STARTERS,
            DESCRIPTIVE,
            DETERMINERS,
            VERB_CUES,
            VAGUE_SUBJECT_STARTS,
            AUXILIARIES,
            CLAUSE_OPENERS,
            SUBORDINATORS,
            IRREGULAR_PARTICIPLES,
            COMMON_VERBS,
            LOCATION_VERBS,
            NON_PLACE_NOUNS,
            TITLES,
            ROLE_NOUNS,
            PERSON_NOUNS,
            PERSON_VERBS,
            NON_PERSON_HEADS,
            LOCATIVE_PREPOSITIONS,
            DATE_PREPOSITIONS,
            DATE_FILLERS,
            MONTHS,
            ORDINAL_WORDS,
            UNITS,
            SCALE_WORDS,
            VAGUE_QUANTIFIERS,
        ] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
            assert!(list.iter().all(|w| w.to_lowercase() == *w));
        }
        assert!(is_stopword("the") && is_stopword("which") && !is_stopword("mitochondria"));
        assert!(IRREGULAR_PAST.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(irregular_past_base("took"), Some("take"));
        assert_eq!(irregular_past_base("walked"), None);
        assert_eq!(
            (count_word(3).as_str(), count_word(20).as_str()),
            ("three", "20")
        );
    }
}
