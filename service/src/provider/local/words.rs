//! Word lists for the local provider, sorted so lookups are binary searches (a test checks).

/// Function words and words too general to study on their own.
#[rustfmt::skip]
pub const STOPWORDS: &[&str] = &[
    "a", "able", "about", "above", "across", "after", "again", "against", "all", "almost", "along",
    "also", "although", "always", "am", "among", "amount", "an", "and", "another", "any", "are",
    "area", "around", "as", "at", "be", "became", "because", "become", "becomes", "been", "before",
    "being", "below", "between", "both", "but", "by", "called", "can", "cannot", "case", "certain",
    "consists", "could", "defined", "did", "different", "do", "does", "doing", "done", "down",
    "during", "each", "either", "else", "enough", "etc", "even", "ever", "every", "example",
    "fact", "few", "first", "for", "form", "forms", "from", "further", "get", "gets", "given",
    "got", "group", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him",
    "himself", "his", "how", "however", "hundreds", "i", "if", "important", "in", "include",
    "includes", "including", "into", "is", "it", "its", "itself", "just", "kind", "known", "least",
    "less", "level", "like", "lot", "lots", "made", "main", "make", "makes", "many", "may", "me",
    "means", "might", "millions", "more", "most", "much", "must", "my", "near", "need", "never",
    "new", "no", "nor", "not", "now", "number", "of", "off", "often", "on", "once", "one", "only",
    "onto", "or", "order", "other", "others", "our", "out", "over", "own", "part", "people", "per",
    "perhaps", "person", "place", "point", "quite", "rather", "really", "refer", "refers",
    "result", "said", "same", "says", "second", "set", "several", "shall", "she", "should", "side",
    "since", "so", "some", "specific", "such", "take", "takes", "term", "than", "that", "the",
    "their", "them", "themselves", "then", "there", "therefore", "these", "they", "thing",
    "things", "this", "those", "though", "thousands", "through", "thus", "time", "times", "to",
    "too", "toward", "towards", "type", "types", "under", "until", "up", "upon", "us", "use",
    "used", "uses", "using", "usually", "various", "very", "via", "was", "way", "ways", "we",
    "well", "were", "what", "when", "where", "whether", "which", "while", "who", "whole", "whom",
    "whose", "why", "will", "with", "within", "without", "would", "year", "years", "yet", "you",
    "your",
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

pub fn is_stopword(word: &str) -> bool {
    STOPWORDS.binary_search(&word).is_ok()
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
        ] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
            assert!(list.iter().all(|w| w.to_lowercase() == *w));
        }
        assert!(is_stopword("the") && is_stopword("which") && !is_stopword("mitochondria"));
    }
}
