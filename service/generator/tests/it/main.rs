//! Integration tests of the offline generator: its quality suite over a corpus of study texts.

mod checks;
mod quality;
